"""The options every experiment command shares, and the configuration they build.

One grammar: ``COMMAND [EXPERIMENT] [--quick] [--SECTION.FIELD VALUE ...] [--set SECTION.FIELD=VALUE ...]
[--out DIR]``. EXPERIMENT is a preset or a TOML file; every configuration field is an option of its own, parsed by
the field's declared type, and the whole configuration is checked before any folder is created.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from pathlib import Path

from chaosgd.experiments.config import Config, field_names, field_type, parse_assignment, parse_text
from chaosgd.experiments.executors import DEVICES, EXECUTORS


def add_experiment(p: argparse.ArgumentParser) -> None:
    from chaosgd.experiments.presets import PRESETS

    p.add_argument("experiment", nargs="?", default="iris",
                   help=f"a preset ({', '.join(sorted(PRESETS))}) or a TOML configuration file")
    p.add_argument("--quick", action="store_true", help="the preset's quick scale (minutes on a laptop)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="set a configuration field, e.g. --set training.epochs=50 --set training.etas=[1,10] "
                        "(repeatable; the same as --FIELD VALUE)")
    p.add_argument("--data-dir", help="folder holding the data set (sets data.path; default: $CHAOSGD_DATA, then "
                                      "~/.chaosgd/data)")
    fields = p.add_argument_group("configuration fields (defaults: the experiment's; shown: chaosgd's own)")
    for key, f in field_names().items():
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        shown = list(default) if isinstance(default, tuple) else default
        text = f.metadata.get("help", "")
        if "default" not in text:
            text += f" (default {shown})"
        fields.add_argument(f"--{key}", dest=f"field:{key}", metavar=_metavar(field_type(key)),
                            help=text.replace("%", "%%"))


def _metavar(hint) -> str:
    text = str(hint)
    for word, name in (("tuple", "LIST"), ("bool", "BOOL"), ("int", "INT"), ("float", "NUMBER"), ("str", "TEXT")):
        if word in text:
            return name
    return "VALUE"


def add_out(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--out", metavar="DIR", help=f"output folder (default {default})")


def add_execution(p: argparse.ArgumentParser) -> None:
    p.add_argument("--executor", choices=list(EXECUTORS),
                   help="where tasks run (default: processes on a CPU, serial with --device gpu)")
    p.add_argument("--workers", type=int, help="worker processes (default: one per core)")
    p.add_argument("--scheduler", help="address of a running Dask scheduler (default: start a LocalCluster)")
    p.add_argument("--device", choices=DEVICES,
                   help="where JAX computes (default: JAX's choice, a GPU when jax[cuda] is installed)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def experiment(args, say_replaced: bool = True, **overrides) -> Config:
    """The configuration the options name: the experiment, then --data-dir, the field options and --set in the
    order given, then ``overrides`` (the command's own); checked as a whole. With ``say_replaced``, a value that a
    configuration file writes and an override replaces is named on stderr."""
    from chaosgd.experiments.presets import preset

    path = Path(args.experiment)
    path_given = path.suffix == ".toml" or path.is_file()
    if path_given:
        if args.quick:
            raise ValueError(f"--quick scales a preset down; {path} is a configuration file: set its fields instead")
        config = Config.load(path)
    else:
        config = preset(args.experiment, quick=args.quick)
    changes, given = {}, {}  # field -> value, and the option that gave it
    if args.data_dir:
        changes["data.path"], given["data.path"] = args.data_dir, "--data-dir"
    for key in field_names():
        text = getattr(args, f"field:{key}", None)
        if text is not None:
            if key in changes:  # (--data-dir sets data.path too)
                raise ValueError(f"{key} is given twice ({given[key]} and --{key}); give each field once")
            changes[key], given[key] = parse_text(key, text), f"--{key}"
    for item in args.set:  # a field given twice would silently take the last value
        key, value = parse_assignment(item)
        if key in given:
            raise ValueError(f"{key} is given twice ({given[key]} and --set {item}); give each field once")
        given[key] = f"--set {item}"
        changes[key] = value
    for key, value in overrides.items():  # a field the command sets from its own options would silently win
        if key in changes and changes[key] != value:
            raise ValueError(f"{key} = {changes[key]!r} is given, but chaosgd {args.command} sets it to {value!r} "
                             f"from its own options (see chaosgd {args.command} --help); leave it out")
    if path_given and say_replaced:  # a value the file itself sets is replaced: said, not silent
        written = _fields_written(path)
        for key, value in overrides.items():
            if key in written and key not in changes and config.value(key) != value:
                print(f"note: {path} sets {key} = {config.value(key)!r}; chaosgd {args.command} uses {value!r} "
                      "(from its own options)", file=sys.stderr)
    changes.update(overrides)
    data = changes.get("data.name", config.data.name)
    if not path_given and "name" not in changes and data != config.data.name:
        # A preset on other data is another experiment: named (and foldered) after both, not as the preset.
        what = Path(changes.get("data.path") or "data").stem if data == "npz" else data
        changes["name"] = (config.name + "-" + re.sub(r"[^A-Za-z0-9._-]+", "-", what))[:100]
    if changes.get("model.source") and config.model.source is None:
        # The user's model replaces the preset's built-in one: the preset's values of its fields go back to their
        # defaults (unless given here too, which the check then refuses by name).
        from chaosgd.experiments.config import BUILT_IN_MODEL, Model
        changes = {**{f"model.{name}": getattr(Model(), name) for name in BUILT_IN_MODEL}, **changes}
    return config.with_values(**changes) if changes else config


def _fields_written(path: Path) -> set[str]:
    """The dotted names of the fields a configuration file writes itself (``Config.load`` has read it already)."""
    import tomllib

    table = tomllib.loads(path.read_text(encoding="utf-8"))
    return {f"{name}.{key}" if isinstance(value, dict) else name
            for name, value in table.items() for key in (value if isinstance(value, dict) else [None])}


def one_point(config: Config, command: str) -> Config:
    """Refuse a 2-D sweep's configuration for a command that measures at one point of it."""
    axis = config.training.axis
    if axis is not None:
        first = config.training.axis_values[0]
        one = (f"model.hidden=[{', '.join(str(h) for h in config.at(first).model.hidden)}]"
               if axis in ("model.width", "model.depth") else f"{axis}={first:g}")
        raise ValueError(f"{command} measures one configuration, and this one sweeps {axis} too (training.axis): "
                         f"choose one value, e.g. --set training.axis=none --set training.axis_values=[] --set {one}")
    return config


def out_folder(args, default: Path | None = None) -> Path | None:
    """--out, or the command's default (None: the plan's, runs/<name>); refused: an empty --out, a path that exists
    and is not a folder, and one under a file."""
    if args.out is not None and not args.out.strip():
        raise ValueError("--out: empty; give a folder, or leave --out out for the default")
    out = Path(args.out) if args.out else default
    if out is not None and out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder")
    for parent in out.parents if out is not None else ():
        if parent.exists() and not parent.is_dir():
            raise ValueError(f"--out {out}: {parent} is a file, not a folder")
    return out


def run_sweep(args, config=None, folder=None):
    """Options -> configuration -> plan -> executor: the sweep every experiment command runs. Returns the plan
    (``summarize`` and the report take it as it is: its results and fits are not read or computed again)."""
    from chaosgd.experiments.executors import Execution
    from chaosgd.experiments.plan import make_plan
    from chaosgd.experiments.sweep import run_plan

    folder = folder or out_folder(args)
    config = config or experiment(args)
    plan = make_plan(config, folder, execution=Execution(args.executor, args.workers, args.scheduler,
                                                         device=args.device))
    run_plan(plan, progress=not args.quiet)
    return plan


def pyplot_free_plots():
    """The plots module with a non-interactive backend (works without a display): set here, at the edge."""
    import matplotlib
    matplotlib.use("Agg")
    from chaosgd import plots
    return plots
