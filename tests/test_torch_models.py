"""PyTorch modules as chaosgd models (``from_torch``): chaosgd's gradient descent on the translated module equals a
plain torch float64 training loop on the same module and weights, and what cannot be translated is refused."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
nn = torch.nn

from chaosgd import classification, epsilon_ball, initial_conditions, run  # noqa: E402
from chaosgd.datasets import load_iris, make_blobs  # noqa: E402
from chaosgd.lyapunov import local_exponent  # noqa: E402
from chaosgd.models import UnsupportedModule, from_torch  # noqa: E402
from chaosgd.tangent import tangent_exponents  # noqa: E402


def torch_losses(module, x, y, eta, epochs):
    """Full-batch gradient descent in plain torch, float64: the loss before each step."""
    net = module.double()
    opt = torch.optim.SGD(net.parameters(), lr=eta)
    x, y = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y)
    losses = []
    for _ in range(epochs + 1):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(x), y)
        losses.append(loss.item())
        loss.backward()
        opt.step()
    return np.array(losses)


def chaosgd_losses(model, data, eta, epochs):
    params = jax.tree_util.tree_map(lambda w: w[None, None], model.init_from_weights())
    return run(classification(model), params, eta, data, epochs=epochs).loss[0, 0]


def iris_mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3))


def test_an_mlp_on_iris_follows_torch_gradient_descent():
    d = load_iris()
    module = iris_mlp()
    model = from_torch(module, d.x_train[:2])
    mine = chaosgd_losses(model, d.arrays(), 0.1, 20)
    np.testing.assert_allclose(mine, torch_losses(module, d.x_train, d.y_train, 0.1, 20), rtol=1e-10)
    assert mine[-1] < 0.8 * mine[0]  # it trains


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))


def image_blobs(n_train=60, n_test=30):
    """Three classes of 12x12 one-channel images, channels-last as chaosgd holds images."""
    d = make_blobs(n_train=n_train, n_test=n_test, n_features=144, n_classes=3, seed=2)
    return (d.x_train.reshape(-1, 12, 12, 1), d.y_train, d.x_test.reshape(-1, 12, 12, 1), d.y_test)


def test_a_cnn_follows_torch_gradient_descent_on_channels_last_images(mnist_slice):
    x_train, y_train, x_test, y_test = mnist_slice
    torch.manual_seed(1)
    module = SmallCNN() if x_train.shape[1] == 12 else MnistCNN()
    model = from_torch(module, np.moveaxis(x_train[:2], -1, 1))  # the module's layout: channels first
    data = {"x_train": x_train, "y_train": y_train.astype(np.int32), "x_test": x_test,
            "y_test": y_test.astype(np.int32)}
    mine = chaosgd_losses(model, data, 0.05, 5)
    want = torch_losses(module, np.moveaxis(x_train, -1, 1), y_train, 0.05, 5)
    np.testing.assert_allclose(mine, want, rtol=1e-10)


class MnistCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 5)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4 * 12 * 12, 10)

    def forward(self, x):
        h = self.pool(nn.functional.relu(self.conv(x)))
        return self.fc(h.view(h.size(0), -1))


@pytest.fixture(params=["blobs", "mnist"])
def mnist_slice(request):
    if request.param == "blobs":
        return image_blobs()
    from chaosgd.datasets import load
    d = load("mnist", path=request.getfixturevalue("mnist_dir"))
    return d.x_train[:200], d.y_train[:200], d.x_test[:100], d.y_test[:100]


def test_tangent_and_epsilon_ball_agree_at_a_chaotic_learning_rate():
    d = make_blobs(n_train=120, n_test=60, n_features=6, n_classes=3, seed=1)
    torch.manual_seed(3)
    model = from_torch(nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)), d.x_train[:2])
    objective = classification(model)
    params = model.init_from_weights()
    ball = epsilon_ball(jax.tree_util.tree_map(lambda w: w[None], params), 5)
    rec = run(objective, ball, 10.0, d.arrays(), epochs=100)
    fit = local_exponent(rec.distance[0])
    assert fit.exponent > 0.5 and not fit.unresolved
    tangent = tangent_exponents(objective, params, 10.0, d.arrays(), epochs=100, k=1)
    assert tangent.over(fit.start, fit.stop)[0] == pytest.approx(fit.exponent, rel=0.15)


def test_initial_conditions_follow_the_modules_own_scheme_seeded():
    module = iris_mlp()
    model = from_torch(module, np.zeros((1, 4)))
    a, b = initial_conditions(model, 3, seed=0), initial_conditions(model, 3, seed=0)
    np.testing.assert_array_equal(a["0.weight"], b["0.weight"])  # reproducible
    w = np.asarray(a["0.weight"])
    assert not np.allclose(w[0], w[1]) and w.dtype == np.float64
    bound = 1 / np.sqrt(4)  # nn.Linear's kaiming-uniform bound: 1/sqrt(fan_in)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
    same = np.asarray(from_torch(module, np.zeros((1, 4)), init="weights").init(jax.random.PRNGKey(5))["0.weight"])
    np.testing.assert_array_equal(same, module[0].weight.detach().double().numpy())
    assert module[0].weight.dtype == torch.float32  # the user's module is not changed


class Sorted(nn.Module):
    def forward(self, x):
        return torch.sort(x, dim=1).values


class Hardcoded(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x).float()


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x) if x.sum() > 0 else -self.fc(x)


class RawParameter(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 3))

    def forward(self, x):
        return x @ self.w


class PoolIndices(nn.Sequential):
    def __init__(self):
        super().__init__(nn.Conv2d(1, 2, 3, padding=1), nn.MaxPool2d(2, return_indices=True), nn.Linear(2, 3))

    def forward(self, x):
        pooled, _ = self[1](self[0](x))
        return self[2](torch.flatten(pooled, 2).mean(2))


@pytest.mark.parametrize("module, message", [
    (nn.Sequential(nn.Linear(4, 3), nn.PReLU()),
     r"layer .1. \(PReLU\) is not supported; supported: Linear, Conv1d, Conv2d, ReLU, Tanh.*BatchNorm1d/2d"),
    (nn.Sequential(nn.Linear(4, 3), nn.LSTM(3, 3)), "returns tuple; chaosgd needs a tensor of logits"),
    (nn.Sequential(nn.Linear(4, 8), Sorted()), r"operation 'sort' \(sort\) is not supported"),
    (Hardcoded(), "computes in float32 even with float64 parameters"),
    (Branchy(), "torch.fx cannot trace Branchy"),
    (RawParameter(), "layer \\(root\\) \\(RawParameter\\) holds parameters w but no reset_parameters"),
    (nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="circular")), "padding_mode='circular'"),
    (PoolIndices(), "return_indices=True"),
])
def test_what_cannot_be_translated_is_refused_by_name(module, message):
    example = np.zeros((2, 1, 5, 5)) if isinstance(module[0] if isinstance(module, nn.Sequential) else None,
                                                   nn.Conv2d) else np.zeros((2, 4))
    with pytest.raises(UnsupportedModule, match=message):
        from_torch(module, example)


def test_layers_covered_reproduce_torch(rng=np.random.default_rng(0)):
    class Wide(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 4, 3, stride=2, padding=1, dilation=1)
            self.bn = nn.BatchNorm2d(4)
            self.avg = nn.AvgPool2d(2)
            self.ada = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.GELU(), nn.Dropout(0.3), nn.Linear(8, 8),
                                    nn.LeakyReLU(0.1), nn.Linear(8, 8), nn.ELU(), nn.Softplus(), nn.SiLU(),
                                    nn.Linear(8, 3))

        def forward(self, x):
            h = self.bn(self.conv(x))
            h = h + torch.sigmoid(h)  # a residual addition
            return self.fc(self.ada(self.avg(h)))

    module = Wide().eval()
    module.bn.running_mean += 0.2
    module.bn.running_var *= 1.5
    model = from_torch(module, rng.normal(size=(3, 2, 8, 8)))  # refused unless every layer matches torch
    assert model.dropout == 0.3
    x = rng.normal(size=(4, 8, 8, 2))  # channels-last, as chaosgd holds images
    with torch.no_grad():
        want = module.double()(torch.as_tensor(np.moveaxis(x, -1, 1))).numpy()
    np.testing.assert_allclose(np.asarray(model.apply(model.init_from_weights(), x)), want, rtol=1e-10, atol=1e-12)
    dropped = model.apply(model.init_from_weights(), x, key=jax.random.PRNGKey(0))
    assert not np.allclose(np.asarray(dropped), want)  # training masks from the key


def test_convolutions_flowing_channels_first_through_other_layers_reproduce_torch(rng=np.random.default_rng(5)):
    """Convolution outputs stay channels-first through layers that act the same in either layout (activations,
    pooling, a second convolution) and reach the module's layout wherever anything else reads them (batch norm, a
    residual addition reading the same output, flatten); Conv2d -> ReLU -> MaxPool2d runs pooled at the maxima,
    unless something else reads the ReLU: values and gradients as torch's."""
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.act, self.pool = nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
            self.conv2, self.tanh, self.avg = nn.Conv2d(4, 4, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2)
            self.bn, self.same, self.fc = nn.BatchNorm2d(4), nn.Identity(), nn.Linear(4 * 2 * 2, 3)

        def forward(self, x):
            h = self.pool(self.act(self.conv1(x)))
            g = self.conv2(h)
            h = self.avg(self.tanh(self.bn(g))) + self.avg(g)  # one output read by layers of either kind
            return self.fc(torch.flatten(self.same(h), 1))

    class Shared(nn.Module):  # a ReLU between a convolution and a pooling read by something else too
        def __init__(self):
            super().__init__()
            self.conv, self.act, self.pool = nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
            self.fc, self.side = nn.Linear(3 * 4 * 4, 3), nn.Linear(3 * 8 * 8, 3)

        def forward(self, x):
            r = self.act(self.conv(x))
            return self.fc(torch.flatten(self.pool(r), 1)) + self.side(torch.flatten(r, 1))

    class Functional(nn.Module):  # the same written with torch's functions and tensor methods
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 3, 3, padding=1)
            self.conv3, self.fc = nn.Conv2d(3, 3, 1), nn.Linear(3 * 2 * 2, 3)

        def forward(self, x):
            h = F.max_pool2d(F.relu(self.conv1(x)), 2)
            h = F.max_pool2d(torch.relu(self.conv2(h)), kernel_size=2, stride=2)
            h = F.avg_pool2d(torch.tanh(self.conv3(h)).relu(), 1) + F.max_pool2d(self.conv3(h).relu(), (1, 1))
            return self.fc(torch.flatten(F.leaky_relu(h, 0.2), 1))

    branchy = Branchy().double().eval()
    branchy.bn.running_mean += 0.1
    for module, fused in [(branchy, 1), (Shared().double().eval(), 0), (Functional().double().eval(), 2)]:
        check_against_torch(module, rng.normal(size=(5, 2, 8, 8)))
        program = from_torch(module, rng.normal(size=(5, 2, 8, 8)))._program
        assert len(program.pooled) == fused
        if isinstance(module, Functional):  # the functions and methods flow channels-first as their layers do
            flowing = {"relu", "max_pool2d", "relu_1", "tanh", "relu_2", "avg_pool2d", "max_pool2d_2"}
            assert flowing <= program.layout_free


def check_against_torch(module, x):
    """The translation's values and gradients are torch's."""
    model = from_torch(module, x)
    params = model.init_from_weights()
    np.testing.assert_allclose(np.asarray(jax.jit(model.apply)(params, x)),
                               module(torch.as_tensor(x)).detach().numpy(), rtol=1e-11, atol=1e-13)
    ours = jax.jit(jax.grad(lambda p: jnp.sum(model.apply(p, x) ** 2)))(params)
    (module(torch.as_tensor(x)) ** 2).sum().backward()
    for name, parameter in module.named_parameters():
        np.testing.assert_allclose(np.asarray(ours[name]), parameter.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_a_torch_module_named_in_configuration_is_translated(tmp_path, monkeypatch):
    from chaosgd.experiments.config import Config
    from chaosgd.experiments.problem import build, pinned
    (tmp_path / "torch_user_models.py").write_text(
        "import torch\n"
        "def make(example_shape, n_classes):\n"
        "    return torch.nn.Sequential(torch.nn.Linear(example_shape[0], 8), torch.nn.Tanh(),\n"
        "                               torch.nn.Linear(8, n_classes))\n")
    monkeypatch.chdir(tmp_path)
    problem = build(pinned(Config.from_dict({"model": {"source": "torch_user_models:make"}})))
    params = initial_conditions(problem.model, 2)
    assert params["0.weight"].shape == (2, 8, 4) and params["2.weight"].shape == (2, 3, 8)


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.b.weight = self.a.weight  # one weight, two layers
        self.frozen = nn.Linear(4, 3)
        self.frozen.weight.requires_grad_(False)

    def forward(self, x):
        h = torch.cat([torch.tanh(self.a(x)), self.b(x)], dim=1)[:, :4]
        return torch.add(self.frozen(h), other=nn.functional.linear(h, self.frozen.weight), alpha=0.5)


def test_tied_frozen_lists_and_keyword_arguments_follow_torch():
    torch.manual_seed(5)
    module = Tied()
    x = np.random.default_rng(1).normal(size=(6, 4))
    model = from_torch(module, x)
    params = model.init_from_weights()
    assert "b.weight" not in params and "frozen.weight" not in params  # tied: one parameter; frozen: a constant
    with torch.no_grad():
        want = module.double()(torch.as_tensor(x)).numpy()
    np.testing.assert_allclose(np.asarray(model.apply(params, x)), want, rtol=1e-12)
    bare = from_torch(nn.Linear(4, 3), x)  # traced as F.linear
    assert set(bare.init_from_weights()) == {"weight", "bias"}


def test_data_in_either_image_layout_reaches_the_module_channels_first():
    from chaosgd.datasets import from_arrays
    from chaosgd.models.pytorch import from_torch_for_data

    x_train, y_train, x_test, y_test = image_blobs()
    torch.manual_seed(1)
    module = SmallCNN()
    first = np.moveaxis(x_train, -1, 1)  # (n, 1, 12, 12), as a torch TensorDataset holds it
    for data in (x_train, first):
        model = from_torch_for_data(module, data[:8])
        with torch.no_grad():
            want = module.double()(torch.as_tensor(first[:5])).numpy()
        np.testing.assert_allclose(np.asarray(model.apply(model.init_from_weights(), data[:5])), want, rtol=1e-10)
    cube = from_arrays(np.zeros((4, 3, 3, 3)), [0, 1, 0, 1], np.zeros((2, 3, 3, 3)), [0, 1])
    conv = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten())
    with pytest.raises(UnsupportedModule, match="both as they are and channels-first"):
        from_torch_for_data(conv, cube.x_train)
    with pytest.raises(UnsupportedModule, match="neither as they are nor channels-first"):
        from_torch_for_data(nn.Sequential(nn.Conv2d(5, 2, 3), nn.Flatten()), x_train[:2])


def test_linear_layers_take_the_blas_route_with_an_ensemble_in_one_product():
    """Linear layers and F.linear go through chaosgd.gemm: on a batch of vectors the ensemble's first-layer weights
    become one wide BLAS product (as the MLP's), with values as torch's."""
    from test_gemm import CUSTOM_CALL

    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = iris_mlp()

        def forward(self, x):
            first, second = self.inner[0], self.inner[2]
            return nn.functional.linear(torch.tanh(nn.functional.linear(x, first.weight, first.bias)),
                                        second.weight, second.bias)

    x = load_iris().x_train
    for module in (iris_mlp(), Functional()):
        model = from_torch(module, x[:2])
        params = initial_conditions(model, 3, seed=0)
        ensemble = jax.jit(jax.vmap(model.apply, in_axes=(0, None)))
        assert ensemble.lower(params, x).compile().as_text().count(CUSTOM_CALL) == 1  # the shared-input layer
        with torch.no_grad():
            expected = module.double()(torch.as_tensor(x)).numpy()
        np.testing.assert_allclose(model.apply(model.init_from_weights(), x), expected, rtol=1e-12, atol=1e-12)


def test_a_custom_autograd_function_is_refused_by_name():
    """fx traces a Function's forward inline and drops its backward: a gradient-reversal layer would train the
    other way without a word. It is refused, naming the Function; torch's own use of Functions is left alone."""
    import torch

    from chaosgd.models.pytorch import UnsupportedModule, from_torch

    class Reverse(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 1.0

        @staticmethod
        def backward(ctx, grad):
            return -grad

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(4, 8), torch.nn.Linear(8, 3)

        def forward(self, x):
            return self.b(Reverse.apply(torch.tanh(self.a(x))))

    with pytest.raises(UnsupportedModule, match="custom autograd Function Reverse is not supported"):
        from_torch(Net(), torch.zeros(2, 4, dtype=torch.float64))
    x = torch.ones(3, requires_grad=True)
    Reverse.apply(x).sum().backward()
    assert x.grad.tolist() == [-1.0, -1.0, -1.0]  # the Function itself still works after the translation
