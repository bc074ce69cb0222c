"""A PyTorch module as a chaosgd model: its torch.fx graph translated layer by layer into JAX.

Why a translation and not a bridge: the ensembles are ``vmap``-ped and the tangent and sharpness estimators
differentiate forward over reverse, so the forward pass must be JAX all the way. ``torch.fx.symbolic_trace`` gives
the module's graph; each node becomes the JAX operation with torch's semantics (weights keep torch's layouts:
Linear ``(out, in)``, convolutions ``(out, in, *kernel)``, activations channels-first). Covered, tested with torch
2.13: Linear, Conv1d/Conv2d (zero padding, stride, dilation, groups), ReLU, Tanh, Sigmoid, GELU, SiLU, ELU,
LeakyReLU, Softplus, Identity, Flatten, Dropout (as chaosgd's dropout: masks from the training key, off in
evaluation), MaxPool1d/2d, AvgPool1d/2d, AdaptiveAvgPool1d/2d, BatchNorm1d/2d in evaluation mode (running
statistics, not trained), residual additions and the tensor methods ``view``, ``reshape``, ``flatten``, ``size``.
Anything else is refused with the layer's name. Every conversion is checked: the JAX forward pass must equal the
module's own on the example input (to 1e-9 relative in float64), else it is refused.
"""

from __future__ import annotations

import copy
import math
import operator
import threading
from functools import lru_cache
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from chaosgd.convolution import conv2d, conv2d_max_pool, max_pool
from chaosgd.errors import ChaosgdError
from chaosgd.gemm import gemm
from chaosgd.precision import float64

INITS = ("module", "weights")
LAYOUTS = ("auto", "module", "channels_last")
_TOLERANCE = {"float64": 1e-9, "float32": 1e-4}


class UnsupportedModule(ChaosgdError, ValueError):
    """A torch module with a layer or operation chaosgd cannot translate; the message names it."""


@float64
def from_torch(module, example_input, *, init: str | Callable = "module", dtype: str = "float64",
               data_layout: str = "auto") -> "TorchModel":
    """A chaosgd model whose forward pass is ``module``'s and whose parameters are its trainable parameters.

    Args:
        module: a ``torch.nn.Module`` mapping a batch to logits ``(n, classes)``; it is copied, never changed.
        example_input: a batch of inputs in the module's own layout (e.g. ``(n, channels, height, width)``), used for
            the shapes and to check the translation. Data in chaosgd's channels-last layout ``(n, height, width,
            channels)`` or flattened are brought to this layout by ``apply``.
        init: how each initial condition starts: ``"module"`` (default) re-runs every layer's ``reset_parameters``
            with torch's generator seeded from the initial condition's key, the module's own scheme; ``"weights"``:
            every initial condition starts from the module's current weights (only the epsilon-ball differs); a
            callable ``init(module)`` re-initialises a copy in place, seeded the same way.
        dtype: of the parameters and the computation; float64 (default) is what epsilon-balls of 1e-8 need.
        data_layout: how ``apply`` reads image batches: ``"auto"`` (default: as the module takes them, or
            channels-last; refused where the two cannot be told apart, height = width = channels), ``"module"``
            or ``"channels_last"``.
    """
    import torch
    import torch.fx

    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"from_torch needs a torch.nn.Module; got {type(module).__name__}")
    if dtype not in _TOLERANCE:
        raise ValueError(f"dtype must be one of {list(_TOLERANCE)}; got {dtype!r}")
    if not (callable(init) or init in INITS):
        raise ValueError(f"init must be one of {list(INITS)} or a callable init(module); got {init!r}")
    if data_layout not in LAYOUTS:
        raise ValueError(f"data_layout must be one of {list(LAYOUTS)}; got {data_layout!r}")
    torch_dtype = getattr(torch, dtype)
    net = copy.deepcopy(module).to(torch_dtype).eval()
    example = torch.as_tensor(np.asarray(example_input.detach().cpu() if hasattr(example_input, "detach")
                                         else example_input), dtype=torch_dtype)
    try:
        with torch.no_grad():
            out = net(example)
    except Exception as error:
        raise UnsupportedModule(f"{type(module).__name__} fails on the example input of shape "
                                f"{tuple(example.shape)} ({type(error).__name__}: {error}); give an example batch in "
                                "the module's own layout") from None
    if not isinstance(out, torch.Tensor):
        raise UnsupportedModule(f"{type(module).__name__} returns {type(out).__name__}; chaosgd needs a tensor of "
                                "logits (examples, classes)")
    if out.dtype != torch_dtype:
        raise UnsupportedModule(f"{type(module).__name__} computes in {str(out.dtype).split('.')[-1]} even with "
                                f"{dtype} parameters (a dtype fixed inside its forward pass); chaosgd needs {dtype} "
                                "end to end")
    try:
        graph = _trace(net)
    except UnsupportedModule:
        raise
    except Exception as error:  # data-dependent control flow and the like
        raise UnsupportedModule(f"torch.fx cannot trace {type(module).__name__} ({type(error).__name__}: {error}); "
                                "chaosgd translates modules whose forward pass is a fixed graph of layers") from None
    program = _Program(net, graph)
    names = [name for name, p in net.named_parameters() if p.requires_grad]
    if not names:
        raise UnsupportedModule(f"{type(module).__name__} has no trainable parameters")
    if init == "module":
        _check_resettable(net)
    model = TorchModel(net, program, names, example, dtype, init, data_layout)
    model.check_against_torch()
    return model


def _trace(net):
    """The fx graph of ``net``. A custom ``torch.autograd.Function`` is refused by name: fx traces its forward
    inline and drops its backward, so the gradients that chaosgd takes of the translation would not be the
    module's (a gradient-reversal Function would train the other way)."""
    import torch
    import torch.fx
    from unittest import mock

    def refuse(cls, *args, **kwargs):
        raise UnsupportedModule(f"custom autograd Function {cls.__name__} is not supported: chaosgd differentiates "
                                "the forward pass itself, so the Function's own backward would be ignored; write "
                                "its forward and backward as one differentiable forward, or leave it out")
    with mock.patch.object(torch.autograd.Function, "apply", classmethod(refuse)):
        return torch.fx.symbolic_trace(net).graph


@float64
def from_torch_for_data(module, examples, *, dtype: str = "float64", init: str | Callable = "module"):
    """``from_torch`` for a data set whose first ``examples`` (chaosgd's layout) are given: the example batch is
    ``examples`` as they are or, for images, channels-first, whichever the module takes; the translation is checked
    on those real examples. Refused when the module takes both (height = width = channels) or neither."""
    import torch
    examples = np.asarray(examples)
    candidates = {"module": examples}
    if examples.ndim == 4:
        candidates["channels_last"] = np.moveaxis(examples, -1, 1)
    fits, errors = {}, []
    for layout, batch in candidates.items():
        try:
            with torch.no_grad():
                copy.deepcopy(module).to(getattr(torch, dtype)).eval()(torch.as_tensor(batch, dtype=getattr(torch,
                                                                                                            dtype)))
            fits[layout] = batch
        except Exception as error:
            errors.append(f"shape {batch.shape[1:]}: {type(error).__name__}: {error}")
    if len(fits) != 1:
        raise UnsupportedModule(
            f"{type(module).__name__} " + ("takes the data's examples both as they are and channels-first; call "
                                           "from_torch(module, example_input, data_layout=...) to say which" if fits
                                           else "takes the data's examples neither as they are nor channels-first ("
                                           + "; ".join(errors) + ")"))
    (layout, batch), = fits.items()
    return from_torch(module, batch, init=init, dtype=dtype, data_layout=layout)


class TorchModel:
    """``from_torch``'s model: ``init(key)``, ``apply(params, x, key=None)``; parameters are a dict by torch name."""

    def __init__(self, net, program, names, example, dtype, init, data_layout):
        self._net, self._program, self.names, self._dtype, self._init = net, program, names, dtype, init
        self._layout = data_layout
        self.example_shape = tuple(example.shape[1:])
        self._example = example
        self._weights = {n: p.detach().cpu().numpy().copy() for n, p in net.named_parameters() if n in names}
        self.dropout = max(program.dropout_rates, default=0.0)  # > 0: the objective passes training keys
        self._lock = threading.Lock()  # the host initialiser reseeds torch's global generator

    def __repr__(self) -> str:
        return f"from_torch({type(self._net).__name__}, init={self._init!r}, dtype={self._dtype})"

    @float64
    def init(self, key):
        if self._init == "weights":
            return {n: jnp.asarray(w) for n, w in self._weights.items()}
        shapes = {n: jax.ShapeDtypeStruct(w.shape, w.dtype) for n, w in self._weights.items()}
        data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
        return jax.pure_callback(self._host_init, shapes, data, vmap_method="sequential")

    def _host_init(self, key_data) -> dict:
        import torch
        seed = int.from_bytes(np.asarray(key_data, dtype=np.uint32).tobytes(), "little") % (2 ** 63)
        with self._lock, torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            fresh = copy.deepcopy(self._net)
            with torch.no_grad():
                if callable(self._init):
                    self._init(fresh)
                else:
                    for layer in fresh.modules():
                        if hasattr(layer, "reset_parameters"):
                            layer.reset_parameters()
            values = dict(fresh.named_parameters())
            return {n: values[n].detach().cpu().numpy().astype(self._dtype) for n in self.names}

    @float64
    def apply(self, params, x, *, key=None):
        return self._program.run(params, _to_layout(x, self.example_shape, self._layout), key)

    @float64
    def check_against_torch(self) -> None:
        """Refuse a translation whose forward pass is not the module's on the example input."""
        import torch
        with torch.no_grad():
            want = self._net(self._example).numpy()
        got = np.asarray(self.apply(self.init_from_weights(), jnp.asarray(self._example.numpy())))
        if want.ndim != 2:
            raise UnsupportedModule(f"{type(self._net).__name__} returns shape {want.shape} for a batch; chaosgd "
                                    "needs logits (examples, classes)")
        scale = max(float(np.abs(want).max()), 1e-300)
        error = float(np.abs(got - want).max()) / scale
        if got.shape != want.shape or not error <= _TOLERANCE[self._dtype]:
            raise UnsupportedModule(f"the translation of {type(self._net).__name__} does not reproduce its forward "
                                    f"pass (largest difference {error:.2g} relative); please report it")

    @float64
    def init_from_weights(self) -> dict:
        """The module's own (current) weights as parameters."""
        return {n: jnp.asarray(w) for n, w in self._weights.items()}


def _check_resettable(net) -> None:
    """init="module" re-runs reset_parameters; a parameter of a layer without one would not be re-initialised."""
    for layer_name, layer in net.named_modules():
        own = [n for n, p in layer.named_parameters(recurse=False) if p.requires_grad]
        if own and not hasattr(layer, "reset_parameters"):
            raise UnsupportedModule(f"init='module': layer {layer_name or '(root)'} ({type(layer).__name__}) holds "
                                    f"parameters {', '.join(own)} but no reset_parameters(), so they would start the "
                                    "same in every initial condition; pass init=callable(module) that "
                                    "re-initialises them, or init='weights'")


def _to_layout(x, shape: tuple[int, ...], layout: str = "auto"):
    """A batch in the module's per-example ``shape``: as is, from channels-last images, or from flat vectors."""
    got = tuple(x.shape[1:])
    moved = len(got) == len(shape) >= 2 and got == (*shape[1:], shape[0])  # (.., channels) -> (channels, ..)
    if layout == "auto" and moved and got == shape:
        raise ValueError(f"examples of shape {got} may be channels-last or already the module's layout: say which "
                         "with from_torch(..., data_layout='channels_last' or 'module')")
    if got == shape and layout != "channels_last":
        return x
    if moved:
        return jnp.moveaxis(x, -1, 1)
    if math.prod(got) == math.prod(shape):
        return x.reshape(x.shape[0], *shape)
    raise ValueError(f"inputs of shape {got} do not fit the module's example input {shape}")


class _Program:
    """The fx graph as a list of JAX operations."""

    def __init__(self, net, graph):
        import torch
        self.modules = dict(net.named_modules())
        # Constants: buffers (batch norm's running statistics) and frozen parameters, by their canonical names.
        trained = {n for n, p in net.named_parameters() if p.requires_grad}
        tensors = dict(net.named_parameters()) | dict(net.named_buffers())
        self.constants = {n: jnp.asarray(t.detach().cpu().numpy()) for n, t in tensors.items() if n not in trained}
        # Every path to a tensor (a tied weight has several) -> its canonical name; each layer's own tensors.
        first = {id(t): n for n, t in tensors.items()}
        self.canonical, self.own = {}, {}
        for path, layer in net.named_modules(remove_duplicate=False):
            mine = list(layer.named_parameters(recurse=False)) + list(layer.named_buffers(recurse=False))
            for local, t in mine:
                if t is not None:
                    self.canonical[f"{path}.{local}" if path else local] = first[id(t)]
            self.own[path] = [local for local, t in mine if t is not None]
        self.nodes = list(graph.nodes)
        self.dropout_rates = []
        self.dropout_index = {}
        for node in self.nodes:
            if node.op == "call_module":
                layer = self.modules[node.target]
                _module_rule(layer, node.target)  # refuses what is not covered, now rather than at run time
                if isinstance(layer, torch.nn.Dropout) and layer.p > 0:
                    self.dropout_index[node.name] = len(self.dropout_rates)
                    self.dropout_rates.append(float(layer.p))
            elif node.op in ("call_function", "call_method"):
                _function_rule(node)
        self.layout_free = {node.name for node in self.nodes if self._layout_free(node)}
        self.pooled = self._pooled_convolutions()

    def _layout_free(self, node) -> bool:
        """Whether a node computes the same on (C, batch, H, W) as on (batch, C, H, W): a layer of
        ``_any_layout()``, or its functional form (``F.relu(x)``, ``x.relu()``, ``F.max_pool2d(x, 2)``...), applied
        to one graph node with nothing else from the graph."""
        import torch
        import torch.nn.functional as F
        if node.op == "call_module":
            return type(self.modules[node.target]) in _any_layout() and len(node.args) == 1 and not node.kwargs
        functions = {F.relu, torch.relu, F.tanh, torch.tanh, F.sigmoid, torch.sigmoid, F.silu, F.gelu, F.leaky_relu,
                     F.softplus, F.max_pool2d, F.avg_pool2d}
        methods = {"relu", "tanh", "sigmoid"}
        if not (node.op == "call_function" and node.target in functions
                or node.op == "call_method" and node.target in methods):
            return False
        return (len(node.args) >= 1 and hasattr(node.args[0], "op")
                and not any(hasattr(a, "op") for a in (*node.args[1:], *node.kwargs.values())))

    def _pooled_convolutions(self) -> dict:
        """MaxPool2d(2 x 2 side by side) <- ReLU <- Conv2d chains, each node read by the next alone: the pool's node
        -> (the convolution's node, the ReLU's). They run as ``conv2d_max_pool`` with bias and ReLU after the
        pooling, on a quarter of the entries: the maximum commutes with both exactly (they are increasing), and
        the derivative goes to the same entry of each window (or is 0 in both orders) unless adding the bias
        rounds two different values of a window to a tie, where torch's picks the first and this the larger."""
        import torch
        import torch.nn as nn
        import torch.nn.functional as F
        users = {}
        for node in self.nodes:
            for source in node.all_input_nodes:
                users.setdefault(source.name, []).append(node)

        def module(node, kind):
            return (node.op == "call_module" and type(self.modules[node.target]) is kind and len(node.args) == 1
                    and not node.kwargs and hasattr(node.args[0], "op"))

        def relu(node):  # nn.ReLU, F.relu, torch.relu or x.relu() of one node
            return node.name in self.layout_free and (
                module(node, nn.ReLU) or node.op != "call_module" and node.target in (F.relu, torch.relu, "relu"))

        def pooling(node):  # the max pooling's settings, from nn.MaxPool2d or F.max_pool2d; None if neither
            if module(node, nn.MaxPool2d):
                layer = self.modules[node.target]
                return (layer.kernel_size, layer.stride, layer.padding, layer.dilation, layer.ceil_mode,
                        layer.return_indices)
            if node.op == "call_function" and node.target is F.max_pool2d and node.name in self.layout_free:
                return _max_pool2d_settings(*node.args[1:], **node.kwargs)
            return None
        pooled = {}
        for node in self.nodes:
            settings = pooling(node)
            if settings is None or not relu(node.args[0]):
                continue
            relu_node = node.args[0]
            conv = relu_node.args[0]
            if not (module(conv, nn.Conv2d) and self.modules[conv.target].groups == 1
                    and len(users[conv.name]) == 1 and len(users[relu_node.name]) == 1):
                continue
            size, stride, padding, dilation, ceil_mode, return_indices = settings
            kernel = _pairs(size, 2)
            if (kernel == (2, 2) and _pairs(stride or kernel, 2) == kernel and _pairs(padding, 2) == (0, 0)
                    and _pairs(dilation, 2) == (1, 1) and not ceil_mode and not return_indices):
                pooled[node.name] = (conv, relu_node)
        return pooled

    def run(self, params, x, key):
        env, channels_first = {}, {}

        def tensor(path):
            name = self.canonical[path]
            return params[name] if name in params else self.constants[name]

        def value(arg):  # graph nodes -> their values, inside fx's own lists and dicts too
            if hasattr(arg, "op"):
                if arg.name not in env:  # held channels-first so far: the module's layout, now that it is read
                    env[arg.name] = jnp.moveaxis(channels_first[arg.name], 0, 1)
                return env[arg.name]
            if isinstance(arg, (list, tuple)):
                return type(arg)(value(a) for a in arg) if type(arg) in (list, tuple) else [value(a) for a in arg]
            if isinstance(arg, dict):
                return {k: value(v) for k, v in arg.items()}
            return arg

        deferred = {n.name for chain in self.pooled.values() for n in chain}
        for node in self.nodes:
            if node.name in deferred:  # computed with the pooling that reads it
                continue
            if node.name in self.pooled:
                conv = self.pooled[node.name][0]
                own = {local: tensor(f"{conv.target}.{local}") for local in self.own[conv.target]}
                source = conv.args[0]
                images = channels_first.get(source.name)
                images = jnp.moveaxis(value(source), 1, 0) if images is None else images
                rule = _module_rule(self.modules[conv.target], conv.target)
                channels_first[node.name] = jax.nn.relu(rule.channels_first(own, images, pool=(2, 2)))
                continue
            if node.op == "placeholder":
                env[node.name] = x
            elif node.op == "get_attr":
                env[node.name] = tensor(node.target)
            elif node.name in self.layout_free and node.args[0].name in channels_first:
                # A 2-D convolution's output, and what layers acting the same in either layout make of it (as
                # modules or functions), flow on channels-first over the batch (C, batch, H, W), the layout
                # chaosgd.convolution computes in; it is brought to the module's layout only where something else
                # reads it (value()). Transposes around every convolution cost a CNN a third of its epoch.
                given, rest = channels_first[node.args[0].name], (node.args[1:], node.kwargs)  # (rest: constants)
                if node.op == "call_module":
                    own = {local: tensor(f"{node.target}.{local}") for local in self.own[node.target]}
                    channels_first[node.name] = _module_rule(self.modules[node.target], node.target)(own, given)
                else:
                    channels_first[node.name] = _function_rule(node)(given, *rest[0], **rest[1])
            elif node.op == "call_module":
                layer = self.modules[node.target]
                own = {local: tensor(f"{node.target}.{local}") for local in self.own[node.target]}
                rule = _module_rule(layer, node.target)
                if hasattr(rule, "channels_first") and len(node.args) == 1 and not node.kwargs:
                    given = channels_first.get(node.args[0].name) if hasattr(node.args[0], "op") else None
                    given = jnp.moveaxis(value(node.args[0]), 1, 0) if given is None else given
                    channels_first[node.name] = rule.channels_first(own, given)
                    continue
                args = value(node.args)
                if node.name in self.dropout_index:
                    env[node.name] = _dropout(args[0], layer.p, key, self.dropout_index[node.name])
                else:
                    env[node.name] = rule(own, *args, **value(node.kwargs))
            elif node.op in ("call_function", "call_method"):
                env[node.name] = _function_rule(node)(*value(node.args), **value(node.kwargs))
            elif node.op == "output":
                return value(node.args[0])
        raise UnsupportedModule("the traced graph has no output")


def _max_pool2d_settings(kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """F.max_pool2d's settings after its input, as positional or keyword arguments bind them."""
    return kernel_size, stride, padding, dilation, ceil_mode, return_indices


def _dropout(x, p, key, index):
    if key is None:
        return x
    keep = jax.random.bernoulli(jax.random.fold_in(key, index), 1 - p, x.shape)
    return jnp.where(keep, x / (1 - p), 0)


def _pairs(value, n: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * n


def _conv(layer, n: int):
    """Conv1d/Conv2d through ``chaosgd.convolution.conv2d`` (products over unfolded patches on the CPU's BLAS),
    a 1-D convolution as a 2-D one of height 1."""
    if layer.padding_mode != "zeros":
        raise UnsupportedModule(f"padding_mode={layer.padding_mode!r} (only 'zeros')")
    kernel, dilation = _pairs(layer.kernel_size, n), _pairs(layer.dilation, n)
    if layer.padding == "valid":
        padding = [(0, 0)] * n
    elif layer.padding == "same":  # PyTorch puts the odd one out after
        padding = [(d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2) for k, d in zip(kernel, dilation)]
    else:
        padding = [(p, p) for p in _pairs(layer.padding, n)]
    flat = (lambda v: (1, *v)) if n == 1 else tuple
    stride, dilation, padding = flat(_pairs(layer.stride, n)), flat(dilation), [(0, 0)] * (2 - n) + padding

    def channels_first(own, images, pool=None):
        """(C, batch, H, W) -> (O, batch, Ho, Wo): the layout chaosgd.convolution computes in; with ``pool``, max
        pooled in windows of that size before the bias is added."""
        w = own["weight"] if n == 2 else own["weight"][:, :, None]
        if pool is None:
            y = conv2d(images, w, stride=stride, padding=padding, dilation=dilation, groups=layer.groups)
        else:
            y = conv2d_max_pool(images, w, pool, stride=stride, padding=padding, dilation=dilation)
        if "bias" in own:  # added channels-first, where its gradient sums contiguous rows: in the module's
            # layout XLA's float64 sum over (batch, H, W) took longer than the whole rest of a CNN's epoch
            y = y + own["bias"].reshape(-1, 1, 1, 1)
        return y

    def conv(own, x):
        y = channels_first(own, jnp.moveaxis(x if n == 2 else x[:, :, None], 1, 0))
        return jnp.moveaxis(y, 0, 1) if n == 2 else jnp.moveaxis(y, 0, 1)[:, :, 0]
    if n == 2:
        conv.channels_first = channels_first
    return conv


def _pool(kind: str, n: int, kernel, stride=None, padding=0, dilation=1, ceil_mode=False, count_include_pad=True,
          return_indices=False):
    if return_indices:
        raise UnsupportedModule("max pooling with return_indices=True")
    if ceil_mode:
        raise UnsupportedModule("pooling with ceil_mode=True")
    if _pairs(dilation, n) != (1,) * n:
        raise UnsupportedModule("pooling with dilation")
    kernel = _pairs(kernel, n)
    stride = kernel if stride is None or stride == [] else _pairs(stride, n)
    pad = [(0, 0), (0, 0)] + [(p, p) for p in _pairs(padding, n)]
    if kind == "avg" and not count_include_pad and any(p for p, _ in pad):
        raise UnsupportedModule("average pooling with padding and count_include_pad=False")
    window, strides = (1, 1, *kernel), (1, 1, *stride)

    def pool(x):
        if kind == "max" and stride == kernel and not any(p for p, _ in pad):  # windows side by side
            return max_pool(x, kernel) if n == 2 else max_pool(x[..., None, :], (1, *kernel))[..., 0, :]
        if kind == "max":
            return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, window, strides, pad)
        return jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, pad) / math.prod(kernel)
    return pool


def _adaptive_avg(n: int, output_size):
    def pool(x):
        size = tuple(s if o is None else o for s, o in zip(x.shape[2:], _pairs(output_size, n)))
        if any(s % o for s, o in zip(x.shape[2:], size)):
            raise UnsupportedModule(f"adaptive average pooling from {x.shape[2:]} to {size} (only exact divisions)")
        shape = x.shape[:2] + sum(((o, s // o) for s, o in zip(x.shape[2:], size)), ())
        return x.reshape(shape).mean(axis=tuple(range(3, 3 + 2 * n, 2)))
    return pool


def _batch_norm(layer):
    if not layer.track_running_stats:
        raise UnsupportedModule("batch norm without running statistics (track_running_stats=False)")

    def norm(own, x):
        shape = (-1,) + (1,) * (x.ndim - 2)
        y = (x - own["running_mean"].reshape(shape)) / jnp.sqrt(own["running_var"].reshape(shape) + layer.eps)
        return y * own["weight"].reshape(shape) + own["bias"].reshape(shape) if layer.affine else y
    return norm


def _softplus(beta=1.0, threshold=20.0):
    return lambda x: jnp.where(beta * x > threshold, x, jnp.log1p(jnp.exp(beta * x)) / beta)


def _flatten(x, start_dim=0, end_dim=-1):
    end = end_dim % x.ndim
    return x.reshape(*x.shape[:start_dim], -1, *x.shape[end + 1:])


def _linear(input, weight, bias=None):
    """torch's ``linear``: ``input @ weight.T + bias``. A batch of vectors goes through ``chaosgd.gemm`` (on CPU in
    float64, the BLAS route, which folds an ensemble's weights into one wide product), as the MLP's first layer."""
    out = gemm(input, weight, trans_b=True) if input.ndim == 2 and weight.ndim == 2 else input @ weight.T
    return out if bias is None else out + bias


@lru_cache(maxsize=1)
def _any_layout() -> frozenset:
    """Layers that compute the same on (C, batch, H, W) as on (batch, C, H, W): elementwise, or pooling the last two
    axes alone (not batch norm, which reads axis 1, nor dropout, whose masks follow the shape)."""
    import torch.nn as nn
    return frozenset({nn.ReLU, nn.Tanh, nn.Sigmoid, nn.SiLU, nn.GELU, nn.ELU, nn.LeakyReLU, nn.Softplus, nn.Identity,
                      nn.MaxPool2d, nn.AvgPool2d})


def _layer_rules():
    """The supported layers, in one list: ``(classes, exact, label, make)``; ``make(layer)`` gives
    ``f(own_parameters, *inputs)``. ``exact``: the class itself only (a subclass may change what it computes)."""
    import torch.nn as nn

    def elementwise(f):
        return lambda layer: (lambda own, x: f(x))

    def pool(kind, n):
        def make(layer):
            extra = ({"return_indices": layer.return_indices} if kind == "max" else
                     {"count_include_pad": layer.count_include_pad})
            if kind == "avg" and getattr(layer, "divisor_override", None):
                raise UnsupportedModule("average pooling with divisor_override")
            return elementwise(_pool(kind, n, layer.kernel_size, layer.stride, layer.padding,
                                     getattr(layer, "dilation", 1), layer.ceil_mode, **extra))(layer)
        return make

    return [
        ((nn.Linear,), False, "Linear", lambda layer: lambda own, x: _linear(x, own["weight"], own.get("bias"))),
        ((nn.Conv1d,), False, "Conv1d", lambda layer: _conv(layer, 1)),
        ((nn.Conv2d,), False, "Conv2d", lambda layer: _conv(layer, 2)),
        ((nn.ReLU,), True, "ReLU", elementwise(jax.nn.relu)),
        ((nn.Tanh,), True, "Tanh", elementwise(jnp.tanh)),
        ((nn.Sigmoid,), True, "Sigmoid", elementwise(jax.nn.sigmoid)),
        ((nn.SiLU,), True, "SiLU", elementwise(jax.nn.silu)),
        ((nn.GELU,), False, "GELU",
         lambda layer: elementwise(lambda x: jax.nn.gelu(x, approximate=layer.approximate == "tanh"))(layer)),
        ((nn.ELU,), False, "ELU", lambda layer: elementwise(lambda x: jax.nn.elu(x, layer.alpha))(layer)),
        ((nn.LeakyReLU,), False, "LeakyReLU",
         lambda layer: elementwise(lambda x: jax.nn.leaky_relu(x, layer.negative_slope))(layer)),
        ((nn.Softplus,), False, "Softplus", lambda layer: elementwise(_softplus(layer.beta, layer.threshold))(layer)),
        ((nn.Identity,), True, "Identity", elementwise(lambda x: x)),
        ((nn.Flatten,), False, "Flatten",
         lambda layer: elementwise(lambda x: _flatten(x, layer.start_dim, layer.end_dim))(layer)),
        ((nn.Dropout,), True, "Dropout", elementwise(lambda x: x)),  # (with p > 0, _Program applies the masks)
        ((nn.MaxPool1d,), True, "MaxPool1d", pool("max", 1)),
        ((nn.MaxPool2d,), True, "MaxPool2d", pool("max", 2)),
        ((nn.AvgPool1d,), True, "AvgPool1d", pool("avg", 1)),
        ((nn.AvgPool2d,), True, "AvgPool2d", pool("avg", 2)),
        ((nn.AdaptiveAvgPool1d,), True, "AdaptiveAvgPool1d",
         lambda layer: elementwise(_adaptive_avg(1, layer.output_size))(layer)),
        ((nn.AdaptiveAvgPool2d,), True, "AdaptiveAvgPool2d",
         lambda layer: elementwise(_adaptive_avg(2, layer.output_size))(layer)),
        ((nn.BatchNorm1d, nn.BatchNorm2d), False, "BatchNorm1d/2d (evaluation mode)", _batch_norm),
    ]


def _module_rule(layer, name: str):
    """``f(own_parameters, *inputs)`` for one layer (``own``: its parameters and buffers by short name)."""
    rules = _layer_rules()
    for classes, exact, _, make in rules:
        if (type(layer) in classes) if exact else isinstance(layer, classes):
            try:
                return make(layer)
            except UnsupportedModule as error:
                raise UnsupportedModule(f"layer {name!r} ({type(layer).__name__}): {error}") from None
    raise UnsupportedModule(f"layer {name!r} ({type(layer).__name__}) is not supported; supported: "
                            + ", ".join(label for *_, label, _ in rules))


def _function_rule(node):
    """The JAX version of a torch function or tensor method the graph calls."""
    import torch
    import torch.nn.functional as F
    functions = {
        operator.add: operator.add, operator.sub: operator.sub, operator.mul: operator.mul,
        operator.truediv: operator.truediv, operator.neg: operator.neg, operator.getitem: operator.getitem,
        operator.matmul: operator.matmul, torch.matmul: operator.matmul,
        torch.add: lambda input, other, alpha=1: input + alpha * other,
        torch.sub: lambda input, other, alpha=1: input - alpha * other,
        F.linear: _linear,
        torch.mul: operator.mul, torch.relu: jax.nn.relu, torch.tanh: jnp.tanh, torch.sigmoid: jax.nn.sigmoid,
        F.relu: lambda x, inplace=False: jax.nn.relu(x), F.tanh: jnp.tanh, F.sigmoid: jax.nn.sigmoid,
        F.silu: lambda x, inplace=False: jax.nn.silu(x), F.softplus: lambda x, beta=1.0, threshold=20.0:
        _softplus(beta, threshold)(x), F.gelu: lambda x, approximate="none": jax.nn.gelu(
            x, approximate=approximate == "tanh"), F.leaky_relu: lambda x, negative_slope=0.01, inplace=False:
        jax.nn.leaky_relu(x, negative_slope), torch.flatten: _flatten,
        torch.cat: lambda tensors, dim=0: jnp.concatenate(list(tensors), axis=dim),
        F.max_pool2d: lambda x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
        return_indices=False: _pool("max", 2, kernel_size, stride, padding, dilation, ceil_mode,
                                    return_indices=return_indices)(x),
        F.avg_pool2d: lambda x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
        divisor_override=None: _pool("avg", 2, kernel_size, stride, padding, 1, ceil_mode, count_include_pad)(x),
    }
    methods = {
        "view": lambda x, *shape: x.reshape(*_shape(shape)), "reshape": lambda x, *shape: x.reshape(*_shape(shape)),
        "flatten": _flatten, "size": lambda x, dim=None: x.shape if dim is None else x.shape[dim],
        "contiguous": lambda x: x, "relu": jax.nn.relu, "tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid,
        "add": lambda input, other, alpha=1: input + alpha * other, "mul": operator.mul,
    }
    if node.op == "call_method" and node.target in methods:
        return methods[node.target]
    if node.op == "call_function" and node.target in functions:
        return functions[node.target]
    what = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
    if node.target is F.dropout:
        raise UnsupportedModule(f"operation {node.name!r}: F.dropout (its training flag is fixed when traced); use "
                                "an nn.Dropout layer, whose masks chaosgd draws in training")
    raise UnsupportedModule(f"operation {node.name!r} ({what}) is not supported; supported: +, -, *, /, @, "
                            "linear, activations, flatten, view/reshape/size, cat, max/average pooling")


def _shape(shape):
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
