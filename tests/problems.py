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
