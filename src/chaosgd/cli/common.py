"""Options and builders shared by the commands: data set, model, epsilon-ball ensemble."""

from __future__ import annotations

import argparse

DEFAULT_HIDDEN = {"iris": (10,), "cifar10": (256,)}  # others: (64,), the paper's MNIST MLP
DEFAULT_TARGET = {"cifar10": 0.3, "cnn": 0.8}  # by data set, then by model; 0.9 otherwise (the paper's choices)


def add_problem(p: argparse.ArgumentParser, *, default_out: str) -> None:
    """Options that define the data, the model and the ensemble (shared by run and lyapunov)."""
    add_data_and_model(p, default_out=default_out)
    p.add_argument("--initial", type=int, default=50, help="initial conditions |S| (default 50)")
    p.add_argument("--copies", type=int, default=5, help="perturbed copies M per initial condition (default 5)")
    p.add_argument("--epsilon", type=float, default=1e-8, help="radius of the epsilon-ball (default 1e-8)")
    p.add_argument("--perturb", default="all", help="all | weights: parameters the ball perturbs (default all)")
    p.add_argument("--groups-per-chunk", type=int, help="groups trained at once (default: fit half the memory)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_data_and_model(p: argparse.ArgumentParser, *, default_out: str) -> None:
    p.add_argument("--dataset", default="iris", help="iris | mnist | fashion-mnist | cifar10 | blobs (default iris)")
    p.add_argument("--data-dir", help="folder holding <dataset>/ (default: $CHAOSGD_DATA or ~/.chaosgd/data)")
    p.add_argument("--standardize", action="store_true", help="standardise features (the paper does not)")
    p.add_argument("--model", default="mlp", help="mlp | cnn (default mlp)")
    p.add_argument("--hidden", type=int, nargs="+", help="hidden widths of the MLP (default: 10 Iris, 64 MNIST)")
    p.add_argument("--activation", default="tanh", help="tanh | sigmoid | relu (default tanh)")
    p.add_argument("--sigma", type=float, help="weights ~ N(0, sigma^2) (default 1 MLP, 0.01 CNN)")
    p.add_argument("--epochs", type=int, default=201, help="gradient-descent steps (default 201)")
    p.add_argument("--l2", type=float, default=0.0, help="L2 coefficient lambda in L + lambda/2 |W|^2 (default 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of initial conditions, perturbations, Iris split")
    p.add_argument("--dtype", default="float64", help="float64 (default) | float32")
    p.add_argument("--out", default=default_out, help=f"output folder (default {default_out})")


def data_and_model(args):
    from chaosgd.datasets import load
    from chaosgd.models import for_dataset

    dataset = load(args.dataset, path=args.data_dir, standardize=args.standardize, seed=args.seed)
    hidden = tuple(args.hidden) if args.hidden else DEFAULT_HIDDEN.get(args.dataset, (64,))
    model = for_dataset(args.model, dataset.example_shape, dataset.n_classes, hidden=hidden,
                        activation=args.activation, sigma=args.sigma, dtype=args.dtype)
    return dataset, model


def build_ensemble(args, n_etas: int):
    """Data set, model and epsilon-ball ensemble from the shared options; prints what will run."""
    from chaosgd.ensemble import epsilon_ball, initial_conditions
    from chaosgd.models import count_parameters

    dataset, model = data_and_model(args)
    centres = initial_conditions(model, args.initial, seed=args.seed)
    ball = epsilon_ball(centres, args.copies, epsilon=args.epsilon, perturb=args.perturb, seed=args.seed)
    print(f"{dataset.name}: {len(dataset.y_train)} train / {len(dataset.y_test)} test; {model} with "
          f"{count_parameters(model):,} parameters; {n_etas} learning rate(s) x {args.initial} initial "
          f"conditions x (1 + {args.copies}) copies, {args.epochs} epochs")
    return dataset, model, ball


def pyplot_free_plots():
    """The plots module with a non-interactive backend (works without a display)."""
    import matplotlib
    matplotlib.use("Agg")
    from chaosgd import plots
    return plots
