"""The ``chaosgd`` command line: chaos in the training of neural networks, measured."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from chaosgd.cli.boundary import add_boundary, cmd_boundary
from chaosgd.cli.experiments import (add_report, add_sweep, add_sweetspot, cmd_report, cmd_reproduce, cmd_run,
                                     cmd_sweep, cmd_sweetspot)
from chaosgd.cli.measure import add_lyapunov, add_sharpness, add_toymap, cmd_lyapunov, cmd_sharpness, cmd_toymap
from chaosgd.cli.spectrum import add_spectrum, cmd_spectrum
from chaosgd.cli.uncertainty import add_uncertainty, cmd_uncertainty

COMMANDS = (
    ("sweep", add_sweep, cmd_sweep, "run (or resume) a preset's or a TOML file's learning-rate sweep, and report it"),
    ("run", add_sweep, cmd_run, "a sweep, then its whole per-learning-rate table"),
    ("reproduce", add_sweep, cmd_reproduce, "a sweep, the toy map, and the report: a figure set of the paper"),
    ("report", add_report, cmd_report, "write the HTML report and results.csv of a run folder"),
    ("sweetspot", add_sweetspot, cmd_sweetspot,
     "recommend a learning rate to train with, and locate the onset of chaos"),
    ("lyapunov", add_lyapunov, cmd_lyapunov,
     "local and network Lyapunov exponents at one learning rate (figures 2, 3)"),
    ("sharpness", add_sharpness, cmd_sharpness,
     "sharpness along training against the stability limit (2/eta for GD; figure 14)"),
    ("boundary", add_boundary, cmd_boundary,
     "the trainability boundary over two hyperparameters, its fractal dimension, and chaos beside it"),
    ("spectrum", add_spectrum, cmd_spectrum,
     "the Hessian's spectrum of one network: top-k eigenvalues, trace and spectral density"),
    ("toymap", add_toymap, cmd_toymap,
     "the toy double-well map: orbit diagram, exponent (figures 6, 7) and Feigenbaum's delta"),
    ("uncertainty", add_uncertainty, cmd_uncertainty,
     "final-state sensitivity: the uncertainty exponent phi of training's outcome at each learning rate"),
)


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default unless its help already says it or there is none to show, and texts taken from
    docstrings without their reStructuredText quotes."""

    def _get_help_string(self, action):
        text = (action.help or "").replace("``", "")
        if "default" in text or action.default in (None, False, [], argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)

    def _format_text(self, text):
        return super()._format_text(text.replace("``", ""))


class _Parser(argparse.ArgumentParser):
    """argparse, with the nearest option of the chosen command named when one is misspelled, and no abbreviations
    (``--training.epoch`` would be taken for ``--training.epochs``: a misspelling is named instead)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        self._refuse_repeats(args)
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            import difflib

            known = self._options(getattr(parsed, "command", None))
            message = f"unrecognized arguments: {' '.join(extras)}"
            for word in extras:
                name = word.split("=")[0]  # a one-letter slip in a name of 6 or more letters scores >= 0.85
                near = difflib.get_close_matches(name, known, n=1, cutoff=0.85) if word.startswith("--") else []
                if near:
                    message += f"; did you mean {near[0]}?"
            self.error(message + f" ({self.prog} {getattr(parsed, 'command', 'COMMAND')} --help lists its options)")
        return parsed

    def _refuse_repeats(self, argv: list[str]) -> None:
        """An option that takes a value, given twice, would silently keep the last: refused (``--set`` adds up)."""
        actions, parsers = {}, [self]
        while parsers:
            parser = parsers.pop()
            for action in parser._actions:
                actions.update(dict.fromkeys(action.option_strings, action))
                if isinstance(action, argparse._SubParsersAction):
                    parsers.extend(action.choices.values())
        seen = {}
        for token in argv:
            if token == "--":
                break
            action = actions.get(token.split("=", 1)[0]) if token.startswith("--") else None
            if action is None or action.nargs == 0 or isinstance(action, argparse._AppendAction):
                continue
            if action in seen:
                self.error(f"{seen[action]} is given twice; give each option once")
            seen[action] = token.split("=", 1)[0]

    def _options(self, command) -> list[str]:
        """The long options of ``command``'s parser (of this parser when there is none)."""
        parsers = [a.choices[command] for a in self._actions
                   if isinstance(a, argparse._SubParsersAction) and command in a.choices] or [self]
        return [o for a in parsers[0]._actions for o in a.option_strings if o.startswith("--")]


def parser() -> argparse.ArgumentParser:
    from chaosgd import __version__

    formatter = _Help
    top = _Parser(prog="chaosgd", description=__doc__, formatter_class=formatter)
    top.add_argument("--version", action="version", version=f"chaosgd {__version__}")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, add, handler, help_text in COMMANDS:
        sub = commands.add_parser(name, help=help_text, description=help_text, formatter_class=formatter)
        add(sub)
        sub.set_defaults(handler=handler)
    data = commands.add_parser("data", help="data sets", formatter_class=formatter)
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    fetch = data_commands.add_parser("fetch", help="download a data set's standard files (needs internet)",
                                     formatter_class=formatter)
    from chaosgd.datasets.fetch import SOURCES
    fetch.add_argument("name", choices=list(SOURCES), help="the data set")
    fetch.add_argument("--data-dir", help="folder that will hold <name>/ (default: $CHAOSGD_DATA, then "
                                          "~/.chaosgd/data)")
    fetch.set_defaults(handler=cmd_fetch)
    return top


def main(argv: list[str] | None = None) -> int:
    from chaosgd.experiments.executors import clear_stop, request_stop, worker_pools_started
    from chaosgd.precision import float64, whole_process

    received = []

    def stop(signum, frame):  # Ctrl-C, and SIGTERM (a batch scheduler's stop), end the command the same way
        received.append(signum)
        # Raised inside a garbage-collection callback (JAX has one), a KeyboardInterrupt is printed with its
        # traceback and dropped: the stop request alone is then seen at the executors' next look.
        in_gc_callback = frame is not None and frame.f_code.co_name.endswith("gc_callback")
        if request_stop() and not in_gc_callback:
            raise KeyboardInterrupt

    clear_stop()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        args = parser().parse_args(argv)  # (building the parser imports modules: a stop there is seen too)
        if argv is None:  # the `chaosgd` command: this process is chaosgd's alone
            whole_process()
        return float64(args.handler)(args)
    except KeyboardInterrupt as interrupted:
        print(f"chaosgd: {interrupted}" if str(interrupted) else "chaosgd: interrupted", file=sys.stderr)
        code = 128 + (received[0] if received else signal.SIGINT)  # the shell's convention: 130, 143
        if argv is None and not worker_pools_started():
            # The command ends here. The interpreter's own ending would kill XLA's threads mid-work (an abandoned
            # task compiling in this process), which aborts it ("terminate called ..."); nothing is lost by skipping
            # it: task files are written atomically and claims are released. (With worker pools, the work was in
            # the workers, and the pools' semaphores need the interpreter's ending to be released.)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        return code
    except (ValueError, OSError, RuntimeError) as error:
        print(f"chaosgd: error: {error}", file=sys.stderr)
        return 2
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def cmd_fetch(args) -> int:
    from chaosgd.datasets.fetch import fetch

    print(fetch(args.name, path=args.data_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
