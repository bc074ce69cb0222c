"""``chaosgd spectrum``: the Hessian spectrum of one network of an experiment (top-k, trace, density)."""

from __future__ import annotations

import argparse
import json

import numpy as np

from chaosgd.atomic import atomic_write
from chaosgd.cli.options import add_experiment, add_out, experiment, one_point, out_folder, pyplot_free_plots
from chaosgd.experiments.store import RUNS


def add_spectrum(p: argparse.ArgumentParser) -> None:
    from chaosgd.spectrum import TRACE_METHODS

    add_experiment(p)
    add_out(p, "runs/<name>-spectrum[-eta<eta>-epoch<epochs>]")
    p.add_argument("--k", type=int, default=20, help="top eigenvalues")
    p.add_argument("--iterations", type=int, help="Lanczos steps for the top k (default: max(6k, 30))")
    p.add_argument("--trace-method", choices=list(TRACE_METHODS), default="hutch++", help="trace estimator")
    p.add_argument("--trace-products", type=int, default=60, help="Hessian-vector products for the trace")
    p.add_argument("--steps", type=int, default=80, help="Lanczos steps per probe of the density (SLQ)")
    p.add_argument("--probes", type=int, default=8, help="random probes of the density (SLQ)")
    p.add_argument("--epochs", type=int, default=0,
                   help="train this many epochs with the experiment's update rule first (default: at initialisation)")
    p.add_argument("--eta", type=float, help="learning rate for --epochs (default: the experiment's first)")
    p.add_argument("--initial-condition", type=int, default=0, help="which initial condition of ensemble.seed")
    p.add_argument("--seed", type=int, default=0, help="seed of the random vectors (Lanczos start, probes)")


def cmd_spectrum(args) -> int:
    """Top-k eigenvalues, trace and spectral density of the training loss's Hessian of one initial condition (after
    ``--epochs`` of its update rule at ``--eta``; for Adam and RMSprop then that of the preconditioned Hessian
    P^-1 H, as the sharpness): ``spectrum.json`` and ``density.png`` in the output folder."""
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    from chaosgd import spectrum
    from chaosgd.ensemble import initial_conditions
    from chaosgd.experiments.problem import build
    from chaosgd.sharpness import advance

    for option, value, least in (("--k", args.k, 1), ("--trace-products", args.trace_products, 2),
                                 ("--steps", args.steps, 1), ("--probes", args.probes, 2), ("--epochs", args.epochs, 0),
                                 ("--initial-condition", args.initial_condition, 0)):
        if value < least:
            raise ValueError(f"{option} must be >= {least}; got {value}")
    if args.initial_condition > 2**31 - 1:
        raise ValueError(f"--initial-condition must be at most 2^31 - 1; got {args.initial_condition}")
    if args.eta is not None and args.epochs == 0:
        raise ValueError("--eta is the learning rate of the --epochs trained first; give --epochs too")
    config = one_point(experiment(args), "spectrum")
    eta = config.training.etas[0] if args.eta is None else args.eta
    if not (np.isfinite(eta) and eta > 0):
        raise ValueError(f"--eta must be a positive number; got {eta}")
    rule = config.rule
    if args.epochs and rule.optimizer.schedule != "constant":
        raise ValueError(f"--epochs trains at one learning rate; the {rule.optimizer.schedule} schedule changes it "
                         "every step: set training.schedule=constant")
    problem = build(config)
    params = jax.tree_util.tree_map(lambda x: x[0], initial_conditions(
        problem.model, 1, seed=config.ensemble.seed, first=args.initial_condition))
    data = jax.tree_util.tree_map(jnp.asarray, problem.arrays)
    scale, what = None, "Hessian"
    if args.epochs:
        n_train = data["x_train"].shape[0]
        state = rule.optimizer.init(params)
        params, state = advance((problem.objective, rule, n_train, 0), params, state,
                                 jnp.asarray(eta, dtype=ravel_pytree(params)[0].dtype), data,
                                 jnp.int32(args.initial_condition), jnp.int32(0), args.epochs)
        if rule.optimizer.preconditioned:
            scale = ravel_pytree(jax.tree_util.tree_map(lambda p: 1 / jnp.sqrt(p),
                                                        rule.optimizer.preconditioner(state)))[0]
            what = "preconditioned Hessian P^-1 H"
    loss = float(problem.objective.loss(params, data)[0])
    if not np.isfinite(loss):
        raise ValueError(f"the training loss is {loss} after {args.epochs} epochs at eta = {eta:g}: training "
                         "diverged, there is no spectrum to measure; use a smaller --eta or fewer --epochs")
    top = spectrum.top_k(problem.objective, params, data, args.k, iterations=args.iterations, seed=args.seed,
                         scale=scale)
    tr = spectrum.trace(problem.objective, params, data, method=args.trace_method, products=args.trace_products,
                        seed=args.seed, scale=scale)
    slq = spectrum.density(problem.objective, params, data, steps=args.steps, probes=args.probes, seed=args.seed,
                           scale=scale)
    moments, moment_errors = spectrum.density_moments(slq, range(5))
    trained = f"-eta{eta:g}-epoch{args.epochs}" if args.epochs else ""
    out = out_folder(args, RUNS / f"{config.name}-spectrum{trained}")
    out.mkdir(parents=True, exist_ok=True)
    summary = {"of": what, "epochs": args.epochs, "eta": eta if args.epochs else None, "loss": loss,
               "initial_condition": args.initial_condition, "parameters": slq.size, "seed": args.seed,
               "top_k": {"values": top.values.tolist(), "residual_bounds": top.residuals.tolist(),
                         "products": top.products},
               "trace": {"method": tr.method, "estimate": float(tr.estimate), "stderr": float(tr.stderr),
                         "products": tr.products},
               "density": {"steps": args.steps, "probes": args.probes, "products": slq.products,
                           "nodes": slq.nodes.tolist(), "weights": slq.weights.tolist(),
                           "moments": [m if np.isfinite(m) else None for m in moments.tolist()],
                           "moment_stderr": [e if np.isfinite(e) else None for e in moment_errors.tolist()]}}
    atomic_write(out / "spectrum.json", json.dumps(summary, indent=2))
    plots = pyplot_free_plots()
    plots.save(plots.plot_density({"SLQ density": slq}, marks=top.values, title=f"spectral density of the {what}"),
               out / "density.png")
    print(f"{what} of {config.name} ({slq.size:,} parameters) "
          + (f"after {args.epochs} epochs at eta = {eta:g}" if args.epochs else "at initialisation")
          + f": top {args.k} {top.values[0]:.6g} .. {top.values[-1]:.6g} (largest residual bound "
          f"{top.residuals.max():.2g}); trace {tr.estimate:.6g} ± {tr.stderr:.2g} ({tr.method}); results in {out}")
    return 0

