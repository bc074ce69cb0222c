"""Sharpness: the largest eigenvalue of the training loss's Hessian, compared with 2/eta (the paper's Appendix C,
after Cohen et al., "Gradient descent on neural networks typically occurs at the edge of stability", 2021).

Hessian-vector products come from ``jax.linearize`` of the gradient (forward over reverse); the Hessian is never
formed. Two methods:

- ``"lanczos"`` (default): m steps of Lanczos with full re-orthogonalisation, in one compiled loop; the largest
  Ritz value of the tridiagonal matrix is the largest *algebraic* eigenvalue, and its residual bound says how far
  it can be off.
- ``"power"``: power iteration (the paper's method). It converges to the eigenvalue largest in *absolute* value,
  which can be a negative one far from the top; the result flags that case.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from chaosgd.dynamics import FULL_BATCH_GD, UpdateRule, batch_order, member_epoch
from chaosgd.hessian import lanczos_steps, over_members, power_steps, ritz
from chaosgd.objective import Objective
from chaosgd.precision import float64
from chaosgd.spectrum import density, top_k

METHODS = ("lanczos", "power")


@dataclass(frozen=True)
class TopEigenvalue:
    """Result of one eigenvalue estimate.

    Attributes:
        value: the estimate of the top eigenvalue (largest algebraic for Lanczos; largest in magnitude, with its
            sign, for power iteration).
        vector: the corresponding unit eigenvector estimate (flat, as ``ravel_pytree`` orders the parameters).
        residual: ``||H v - value v||``, a bound on the distance of ``value`` to the spectrum.
        products: Hessian-vector products spent.
        method: ``"lanczos"`` or ``"power"``.
        dominant_negative: power iteration only: True when the dominant eigenvalue it found is negative, so the
            largest algebraic eigenvalue (the sharpness) is something else; use Lanczos.
    """

    value: float
    vector: np.ndarray
    residual: float
    products: int
    method: str
    dominant_negative: bool = False


@float64
def top_eigenvalue(objective: Objective, params, data, *, method: str = "lanczos", iterations: int = 30,
                   start=None, seed: int = 0, scale=None) -> TopEigenvalue:
    """The top Hessian eigenvalue of the training loss at ``params`` (one network).

    Keyword arguments:
        method: ``"lanczos"`` (largest algebraic eigenvalue, default) or ``"power"`` (largest magnitude).
        iterations: Lanczos steps (Krylov dimension) or power iterations; each costs one Hessian-vector product.
        start: starting vector (flat); a previous eigenvector makes tracking along a trajectory converge faster.
        seed: for the random starting vector when ``start`` is None.
        scale: a flat vector s: the top eigenvalue of ``diag(s) H diag(s)`` instead (``P^-1/2``: of ``P^-1 H``).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {list(METHODS)}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1; got {iterations}")
    return top_eigenvalues(objective, jax.tree_util.tree_map(lambda x: x[None], params), data, method=method,
                           iterations=iterations, start=None if start is None else np.asarray(start)[None],
                           seed=seed, scale=None if scale is None else np.asarray(scale)[None])[0]


@float64
def top_eigenvalues(objective: Objective, params, data, *, method: str = "lanczos", iterations: int = 30,
                    start=None, seed: int = 0, scale=None) -> list[TopEigenvalue]:
    """``top_eigenvalue`` for a whole ensemble at once: ``params`` stacked on a leading axis of K members.

    All K estimates run in one compiled, vectorised loop; ``start`` and ``scale`` are None or one flat vector per
    member.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {list(METHODS)}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1; got {iterations}")
    flats = jax.vmap(lambda p: ravel_pytree(p)[0])(params)
    _, unravel = ravel_pytree(jax.tree_util.tree_map(lambda x: x[0], params))
    n_members, size = flats.shape
    if start is None:
        start = np.random.default_rng(seed).standard_normal((n_members, size))
    starts = jnp.asarray(start, dtype=flats.dtype).reshape(n_members, size)
    scales = None if scale is None else jnp.asarray(scale, dtype=flats.dtype).reshape(n_members, size)
    data = jax.tree_util.tree_map(jnp.asarray, data)
    if method == "power":
        values, vectors, residuals = over_members(power_steps, objective, unravel, flats, starts, scales, data,
                                                  int(iterations))
        return [TopEigenvalue(float(v), np.asarray(vec), float(r), int(iterations), method, dominant_negative=v < 0)
                for v, vec, r in zip(np.asarray(values), np.asarray(vectors), np.asarray(residuals))]
    m = int(min(iterations, size))
    alphas, betas, bases = over_members(lanczos_steps, objective, unravel, flats, starts, scales, data, m)
    results = []
    for alpha, beta, basis in zip(np.asarray(alphas), np.asarray(betas), np.asarray(bases)):
        values, s, residuals = ritz(alpha, beta)  # residual: ||H V s - theta V s|| from the Lanczos relation
        results.append(TopEigenvalue(float(values[-1]), basis.T @ s[:, -1], float(residuals[-1]), m, method))
    return results


KINDS = ("hessian", "batch", "preconditioned")


@dataclass(frozen=True)
class SharpnessTrack:
    """Sharpness along one training trajectory: ``value[i]`` at epoch ``epoch[i]``, with the update rule's
    stability limit to compare (``edge_of_stability``).

    ``kind``: ``"hessian"``, the top eigenvalue of the full training loss's Hessian (GD, heavy ball, Nesterov);
    ``"batch"``, the batch sharpness of Andreyev & Beneventano (2024) for minibatch SGD and momentum: the mean
    over the epoch's minibatches B of ``g_B . H_B g_B / |g_B|^2``, each minibatch's curvature along its own
    gradient (no eigenvalue method, ``hessian_examples`` or residual: one Hessian-vector product per batch);
    ``"preconditioned"``, the top eigenvalue of ``P^-1 H`` with the adaptive optimiser's preconditioner P (Adam,
    RMSprop; Cohen et al. 2022).
    """

    eta: float
    epoch: np.ndarray
    value: np.ndarray
    residual: np.ndarray
    loss: np.ndarray
    limit: float | None = None  # None: 2 / eta (tracks stored before 0.4.0 are all full-batch GD)
    kind: str = "hessian"
    top: np.ndarray | None = None  # (epochs, k): the k largest eigenvalues, largest first, when k > 1 was tracked,
    top_residual: np.ndarray | None = None  # and their residual bounds (Ritz values converge from the top down)
    density_epoch: np.ndarray | None = None  # epochs with a spectral density (stochastic Lanczos quadrature), and
    density_nodes: np.ndarray | None = None  # its nodes and weights there, (epochs, probes, steps) each
    density_weights: np.ndarray | None = None

    @property
    def edge_of_stability(self) -> float:
        return 2.0 / self.eta if self.limit is None else self.limit


def sharpness_kind(rule: UpdateRule, n_train: int) -> str:
    """Which sharpness the stability limit of ``rule`` is about (``SharpnessTrack.kind``); adamw and custom
    optimisers have none here (ValueError)."""
    from chaosgd.optimizers import SPECS

    opt = rule.optimizer
    if opt.name not in SPECS or SPECS[opt.name].limit is None:
        why = SPECS[opt.name].no_limit if opt.name in SPECS else "a custom optimiser's limit is not known"
        with_limit = ", ".join(name for name, spec in SPECS.items() if spec.limit is not None)
        raise ValueError(f"no stability limit is defined here for optimizer {opt.name!r} ({why}); track sharpness "
                         f"with {with_limit}")
    if opt.preconditioned:
        return "preconditioned"
    return "hessian" if rule.full_batch(n_train) else "batch"


@float64
def track_sharpness(objective: Objective, params, eta: float, data, *, epochs: int, every: int = 5,
                    method: str = "lanczos", iterations: int = 20, hessian_examples: int | None = None,
                    seed: int = 0, rule: UpdateRule | None = None, initial_condition: int = 0, top: int = 1,
                    density_at=()) -> SharpnessTrack:
    """Sharpness every ``every`` epochs along the training trajectory of one network from ``params``.

    With ``top`` k > 1 (Lanczos only), the k largest eigenvalues each time (``chaosgd.spectrum.top_k``, from the
    same ``iterations`` steps: the sharpness is the first); at the epochs ``density_at`` (visited besides the
    ``every`` grid), the spectral density too (``chaosgd.spectrum.density``, its default probes and steps).

    ``rule`` (default full-batch GD) sets the trajectory, which follows the minibatch order of
    ``initial_condition`` as in a sweep, and which sharpness is compared with which limit (``sharpness_kind``,
    ``Optimizer.stability_limit``). The Hessian is that of the full training loss, or, with ``hessian_examples=n``,
    of the loss on a fixed random subset of n training examples (drawn once from ``seed``), which is cheaper and,
    for n of a few thousand, close; the batch sharpness uses the minibatches of the coming epoch (and refuses
    ``hessian_examples``). Each estimate
    starts from the previous eigenvector. Epochs at which the trajectory is no longer finite get NaN, and so do the
    preconditioned sharpness's before the first step (the preconditioner is not yet formed).
    """
    rule = FULL_BATCH_GD if rule is None else rule
    if every < 1 or epochs < 0:
        raise ValueError("need every >= 1 and epochs >= 0")
    density_at = sorted({int(e) for e in density_at})
    if any(not 0 <= e <= epochs for e in density_at):
        raise ValueError(f"density_at: epochs must be in [0, {epochs}]; got {density_at}")
    if top < 1 or (top > 1 and method != "lanczos"):
        raise ValueError(f"top must be >= 1, and > 1 only with method lanczos; got {top} with {method}")
    data = jax.tree_util.tree_map(jnp.asarray, data)
    n_train = data["x_train"].shape[0] if "x_train" in data else 0
    kind = sharpness_kind(rule, n_train)
    if kind == "batch" and hessian_examples is not None:
        raise ValueError("the batch sharpness uses the epoch's own minibatches; hessian_examples is for the full-batch "
                         "Hessian")
    if kind == "batch" and (top > 1 or density_at):
        raise ValueError("the batch sharpness is one number per epoch, not a Hessian's spectrum: top and density_at "
                         "need full batches")
    if rule.optimizer.schedule != "constant":
        raise ValueError(f"the stability limit moves with the learning rate, and the {rule.optimizer.schedule} "
                         "schedule changes it every step; track sharpness under the constant schedule")
    hessian_data = data
    if hessian_examples is not None:
        if not 0 < hessian_examples <= n_train:
            raise ValueError(f"hessian_examples must be in 1 .. {n_train}; got {hessian_examples}")
        pick = np.sort(np.random.default_rng(seed).choice(n_train, hessian_examples, replace=False))
        hessian_data = dict(data, x_train=data["x_train"][pick], y_train=data["y_train"][pick])
    eta_arr = jnp.asarray(eta, dtype=ravel_pytree(params)[0].dtype)
    state = rule.optimizer.init(params)
    program = (objective, rule, n_train, int(epochs) if rule.optimizer.schedule != "constant" else 0)
    epochs_out, values, residuals, losses, tops, densities = [], [], [], [], [], []
    start = None
    t = 0
    while True:
        loss = float(objective.loss(params, data)[0])
        value = residual = np.nan
        eigenvalues = bounds = np.full(top, np.nan)
        if np.isfinite(loss):
            if kind == "batch":
                value = _batch_sharpness(objective, params, data, rule, initial_condition, t)
            else:
                scale = None
                if kind == "preconditioned":
                    scale = ravel_pytree(jax.tree_util.tree_map(lambda p: 1 / jnp.sqrt(p),
                                                                rule.optimizer.preconditioner(state)))[0]
                if scale is None or bool(jnp.all(jnp.isfinite(scale))):
                    if top > 1:
                        found = top_k(objective, params, hessian_data, top, iterations=iterations, start=start,
                                      seed=seed, scale=scale)
                        eigenvalues, bounds = found.values, found.residuals
                        start, value, residual = found.vectors.sum(axis=0), found.values[0], found.residuals[0]
                    else:
                        result = top_eigenvalue(objective, params, hessian_data, method=method,
                                                iterations=iterations, start=start, seed=seed, scale=scale)
                        start, value, residual = result.vector, result.value, result.residual
                    if t in density_at:
                        densities.append((t, density(objective, params, hessian_data, seed=seed, scale=scale)))
        epochs_out.append(t)
        values.append(value)
        residuals.append(residual)
        losses.append(loss)
        tops.append((eigenvalues, bounds))
        if t >= epochs or not np.isfinite(loss):
            break
        # To the next epoch on the every-grid, or a density epoch before it.
        n_steps = min(every - t % every, epochs - t, *(e - t for e in density_at if e > t))
        params, state = advance(program, params, state, eta_arr, data, jnp.int32(initial_condition), jnp.int32(t),
                                 n_steps)
        t += n_steps
    spectrum = {}
    if top > 1:
        spectrum["top"], spectrum["top_residual"] = (np.array([t[j] for t in tops]) for j in (0, 1))
    if density_at:  # epochs the trajectory did not reach finite (or the preconditioner not yet formed): NaN
        shape = next((d.nodes.shape for _, d in densities), (1, 1))
        found = dict(densities)
        spectrum.update(density_epoch=np.array(density_at),
                        density_nodes=np.array([found[e].nodes if e in found else np.full(shape, np.nan)
                                                for e in density_at]),
                        density_weights=np.array([found[e].weights if e in found else np.full(shape, np.nan)
                                                  for e in density_at]))
    return SharpnessTrack(float(eta), np.array(epochs_out), np.array(values), np.array(residuals), np.array(losses),
                          limit=rule.optimizer.stability_limit(float(eta)), kind=kind, **spectrum)


def _batch_sharpness(objective, params, data, rule, ic, t):
    """The batch sharpness at epoch t: the mean over its minibatches B of ``g_B . H_B g_B / |g_B|^2``, the curvature
    of each minibatch's loss along its own gradient (one Hessian-vector product per batch, all in one vectorised
    call)."""
    n_train = data["x_train"].shape[0]
    index, weight = batch_order(rule, n_train, jnp.int32(ic), 0, jnp.int32(t))
    batches = {"x_train": data["x_train"][index], "y_train": data["y_train"][index],
               "weight": weight.astype(data["x_train"].dtype)}
    return float(jnp.mean(_directional_curvatures(objective, params, batches)))


@partial(jax.jit, static_argnums=(0,))
def _directional_curvatures(objective, params, batches):
    def one(batch):
        flat, unravel = ravel_pytree(params)

        def grad_flat(theta):
            return ravel_pytree(jax.grad(lambda p: objective.loss(p, batch)[0])(unravel(theta)))[0]

        g, hg = jax.jvp(grad_flat, (flat,), (grad_flat(flat),))
        return g @ hg / (g @ g)

    return jax.vmap(one)(batches)


@partial(jax.jit, static_argnums=(0, 7))
def advance(program, params, state, eta, data, ic, t0, n_steps):
    """One network (``params`` with its optimiser ``state``) trained ``n_steps`` epochs from epoch ``t0``:
    ``program`` is ``(objective, rule, n_train, epochs)`` as ``dynamics.member_epoch`` takes it (epochs: the
    run's length, for schedules that end with it)."""
    epoch = member_epoch(*program)

    def body(i, carry):
        params, state = carry
        return epoch(params, state, eta, data, ic, 0, t0 + i)[:2]

    return jax.lax.fori_loop(0, n_steps, body, (params, state))
