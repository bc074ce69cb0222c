"""Test problems with closed forms, and helpers, shared by the test modules."""

import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from chaosgd import Objective


def quadratic_objective() -> Objective:
    """L = 1/2 theta^T A theta with A in the data: the GD map is theta <- (I - eta A) theta, the Hessian is A."""
    return Objective(loss=lambda p, d: (0.5 * p["theta"] @ d["A"] @ p["theta"], jnp.nan),
                     test_accuracy=lambda p, d: jnp.nan)


def quadratic_problem(eigenvalues, seed=0):
    """(objective, data, params) for a randomly rotated A with the given eigenvalues and a random theta."""
    rng = np.random.default_rng(seed)
    n = len(eigenvalues)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    A = q @ np.diag(eigenvalues) @ q.T
    return quadratic_objective(), {"A": A}, {"theta": rng.standard_normal(n)}


def descendants(pid):
    """Processes whose parent is ``pid``, with their own descendants."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found += [int(entry)] + descendants(int(entry))
    return found


def iris_hessian_problem():
    """The 4-10-3 network (83 parameters) on Iris at its initialisation from PRNGKey(0), and its explicit Hessian:
    ``(objective, data, params, hessian)``."""
    import jax
    from jax.flatten_util import ravel_pytree

    from chaosgd import MLP, classification
    from chaosgd.datasets import load_iris

    model = MLP((4, 10, 3))
    objective = classification(model)
    data = load_iris().arrays()
    params = model.init(jax.random.PRNGKey(0))
    flat, unravel = ravel_pytree(params)
    hessian = np.asarray(jax.hessian(lambda f: objective.loss(unravel(f), data)[0])(flat))
    return objective, data, params, hessian
