"""The ``chaosgd`` command line."""

from __future__ import annotations

import argparse
import sys

from chaosgd.cli.experiments import (add_report, add_sweep, add_sweetspot, add_toymap, cmd_report,
                                     cmd_reproduce, cmd_sweep, cmd_sweetspot, cmd_toymap)
from chaosgd.cli.train import add_lyapunov, add_run, add_sharpness, cmd_lyapunov, cmd_run, cmd_sharpness


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chaosgd", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, add, handler, help_text in (
            ("run", add_run, cmd_run, "train an ensemble over learning rates and record it"),
            ("lyapunov", add_lyapunov, cmd_lyapunov, "local and network Lyapunov exponents at one learning rate "
                                                   "(figures 2 and 3)"),
            ("sharpness", add_sharpness, cmd_sharpness, "top Hessian eigenvalue along training against 2/eta "
                                                      "(figure 14)"),
            ("toymap", add_toymap, cmd_toymap, "the toy double-well map: orbit diagram and exponent (figures 6, 7)"),
            ("sweep", add_sweep, cmd_sweep, "run (or resume) a preset's or a TOML file's learning-rate sweep"),
            ("report", add_report, cmd_report, "write the HTML report and results.csv of a run folder"),
            ("reproduce", add_sweep, cmd_reproduce, "sweep a preset, add the toy map, and write the report"),
            ("sweetspot", add_sweetspot, cmd_sweetspot, "find the learning rate where chaos becomes fully developed")):
        sub = commands.add_parser(name, help=help_text)
        add(sub)
        sub.set_defaults(handler=handler)
    data = commands.add_parser("data", help="data sets").add_subparsers(dest="data_command", required=True)
    fetch = data.add_parser("fetch", help="download a data set's standard files (needs internet)")
    fetch.add_argument("name", choices=["mnist", "fashion-mnist", "cifar10"])
    fetch.add_argument("--data-dir", help="folder that will hold <name>/ (default: $CHAOSGD_DATA or ~/.chaosgd/data)")
    fetch.set_defaults(handler=cmd_fetch)
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"chaosgd: error: {error}", file=sys.stderr)
        return 2


def cmd_fetch(args) -> int:
    from chaosgd.datasets.fetch import fetch

    print(fetch(args.name, path=args.data_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
