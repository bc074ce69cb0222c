"""Where the test suite's time goes: its wall time and the XLA compilations of its test processes, by function.

Runs the default suite (``pytest -q``, as the README's second command does) with a fresh JAX compilation cache, as in
CI, and a small pytest plugin that turns on ``jax_log_compiles`` in each test process and adds up, per jitted
function, how many programs XLA compiled and how long that took (the command line's subprocesses and sweep workers
are not counted: they compile what the test processes mostly already put in the shared cache). Prints the totals and
the costliest functions and saves them to ``benchmarks/results/suite_compiles.json`` (``--out``).

Run:  .venv/bin/python benchmarks/suite_compiles.py [-- extra pytest arguments]
Another version's suite and code (e.g. before a change): ``git worktree add /tmp/before REV`` and
``--root /tmp/before --out benchmarks/results/suite_compiles-before.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PLUGIN = '''
import json, logging, os, re, collections
import jax
PATTERN = re.compile(r"Finished XLA compilation of (.*) in ([0-9.e+-]+) sec")
TOTALS = collections.defaultdict(lambda: [0, 0.0])


class Compiles(logging.Handler):
    def emit(self, record):
        found = PATTERN.search(record.getMessage())
        if found:
            TOTALS[found.group(1)][0] += 1
            TOTALS[found.group(1)][1] += float(found.group(2))


def pytest_configure(config):
    jax.config.update("jax_log_compiles", True)
    handler = Compiles(logging.DEBUG)
    for name in ("jax._src.dispatch", "jax._src.interpreters.pxla", "jax"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False  # (counted, not printed)


def pytest_unconfigure(config):
    with open(os.path.join(os.environ["SUITE_COMPILES_DIR"], f"compiles-{os.getpid()}.json"), "w") as f:
        json.dump(dict(TOTALS), f)
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "suite_compiles.json")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose tests and code run (default: this)")
    parser.add_argument("pytest_args", nargs="*")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="suite-compiles-") as work:
        work = Path(work)
        (work / "suite_compiles_plugin.py").write_text(PLUGIN)
        root = args.root.resolve()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(work), str(root / "src")]),  # (that checkout's code)
               "SUITE_COMPILES_DIR": str(work), "JAX_COMPILATION_CACHE_DIR": str(work / "jax-cache")}  # cold, as in CI
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "suite_compiles_plugin", *args.pytest_args],
                              cwd=root, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        counted = list(work.glob("compiles-*.json"))
        if done.returncode != 0 or not counted:  # (a failed or uncounted suite's times say nothing: not saved)
            sys.exit(f"pytest exit {done.returncode}, {len(counted)} test process(es) counted; nothing saved:\n"
                     + "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:]))
        totals: dict[str, list] = defaultdict(lambda: [0, 0.0])
        for path in counted:
            for name, (count, seconds) in json.loads(path.read_text()).items():
                totals[name][0] += count
                totals[name][1] += seconds
    summary = re.findall(r"^=*\s*(\d+ passed.*?) in ", done.stdout, flags=re.M)
    git = lambda *a: subprocess.run(["git", *a], cwd=root, capture_output=True, text=True).stdout.strip()  # noqa: E731
    result = {"date": time.strftime("%Y-%m-%d"), "revision": git("rev-parse", "--short", "HEAD"),
              "uncommitted_changes": bool(git("status", "--porcelain", "--untracked-files=no")),
              "wall_s": round(wall, 1), "pytest": summary[-1] if summary else "",
              "programs": sum(c for c, _ in totals.values()),
              "compile_s": round(sum(s for _, s in totals.values()), 1),
              "by_function": {name: {"programs": c, "compile_s": round(s, 1)}
                              for name, (c, s) in sorted(totals.items(), key=lambda kv: -kv[1][1])}}
    print(f"suite: {result['pytest']}, {wall:.0f} s wall; "
          f"{result['programs']} XLA programs compiled in the test processes, {result['compile_s']:.0f} s")
    for name, row in list(result["by_function"].items())[:args.top]:
        print(f"  {name:<40} {row['programs']:>5} programs {row['compile_s']:>7.1f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
