"""The run folder: its layout, the task files it holds and how they are checked, and the claims that let several
jobs share one folder.

Layout (``RunDir``)::

    RUN/config.toml            the configuration (restored from the task files if deleted)
    RUN/run.json               configuration hash, versions, machine
    RUN/tasks/<task>.npz       one finished task: records, timing, sharpness, and a header naming its run and task
    RUN/claims/<task>.claim    a task some job is computing now (exclusive create; refreshed while it runs)
    RUN/results.csv, results.parquet, report.html, toymap/, sweetspot/

A task file is trusted only after it is checked: the format, the configuration hash, the task's identity (learning
rate and initial conditions) and a SHA-256 digest over its header and arrays; a missing, truncated, corrupted or
foreign file is recomputed on resume, and the reason is said. Every file is written by ``atomic_write``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import sys
import threading
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chaosgd.atomic import atomic_write
from chaosgd.experiments.config import Config, ConfigError
from chaosgd.experiments.problem import Task
from chaosgd.records import Records

FORMAT = 2  # of task files; files of other formats are recomputed
_SHARPNESS = ("epoch", "value", "residual", "loss")


class TaskFileError(ValueError):
    """A task file that cannot be trusted; the message says which file and why."""


@dataclass(frozen=True)
class TaskResult:
    """What a task file holds."""

    task: Task
    records: Records
    seconds: float
    host: str
    sharpness: object | None  # sharpness.SharpnessTrack when training.sharpness_every > 0


class RunDir:
    """One run folder (see the module docstring); every path of the layout is made here."""

    def __init__(self, root: "str | Path | RunDir"):
        self.root = root.root if isinstance(root, RunDir) else Path(root)

    config_path = property(lambda self: self.root / "config.toml")
    info_path = property(lambda self: self.root / "run.json")
    tasks_dir = property(lambda self: self.root / "tasks")
    claims_dir = property(lambda self: self.root / "claims")
    report_path = property(lambda self: self.root / "report.html")
    csv_path = property(lambda self: self.root / "results.csv")
    parquet_path = property(lambda self: self.root / "results.parquet")
    toymap_dir = property(lambda self: self.root / "toymap")

    def task_path(self, task: Task) -> Path:
        return self.tasks_dir / f"{task.name}.npz"

    def __str__(self) -> str:
        return str(self.root)

    # -- the run: which configuration this folder belongs to --------------------------------------------------

    def prepare(self, config: Config, log=print) -> "RunDir":
        """Create the folder for ``config``, or check that an existing one belongs to it, before any compute.

        Refused: a folder whose run.json, config.toml or task files name another configuration (task files carry
        the hash, so deleting run.json does not let another configuration take the folder over). A deleted
        config.toml or run.json is written again."""
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"{self.root} exists and is not a folder")
        theirs = self._recorded_hash()
        if theirs is not None and theirs != config.hash():
            raise ConfigError(f"{self.root} holds a run of another configuration (hash {theirs}, this one is "
                              f"{config.hash()}); resume it with its own config.toml or choose another folder")
        self.tasks_dir.mkdir(parents=True, exist_ok=True)
        if not self.config_path.is_file():
            if theirs is not None:
                log(f"{self.config_path} was missing: written again from this configuration (same hash {theirs})")
            atomic_write(self.config_path, config.to_toml())
        if not self.info_path.is_file():
            atomic_write(self.info_path, json.dumps(_run_info(config), indent=2))
        return self

    def config(self) -> Config:
        """The configuration of an existing run, checked against its hash; a deleted config.toml is restored from
        the task files (their headers hold it) when they agree with run.json."""
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root} is not a run folder (no such folder)")
        recorded = self.info().get("config_hash")
        if self.config_path.is_file():
            config = Config.load(self.config_path)
            if recorded is not None and config.hash() != recorded:
                raise ConfigError(f"{self.config_path} does not match the run (its hash is {config.hash()}, run.json "
                                  f"says {recorded}): it was edited after the run started; restore it or start a new "
                                  "run folder")
            return config
        for path in sorted(self.tasks_dir.glob("*.npz")):
            header = _header(path)
            if header and (recorded is None or header.get("config_hash") == recorded):
                config = Config.from_toml(header["config_toml"], source=str(path))
                if config.hash() == header["config_hash"]:
                    atomic_write(self.config_path, config.to_toml())
                    return config
        raise FileNotFoundError(f"{self.root} has no config.toml and no task file to restore it from; it is not a "
                                "run folder, or its configuration is lost")

    def info(self) -> dict:
        if not self.info_path.is_file():
            return {}
        try:
            return json.loads(self.info_path.read_text())
        except (ValueError, UnicodeDecodeError):
            raise ConfigError(f"{self.info_path} is not valid JSON; delete it and it will be written again from "
                              "config.toml") from None

    def _recorded_hash(self) -> str | None:
        """The configuration hash this folder already belongs to: run.json's, else config.toml's, else that of
        its task files; None for a new folder."""
        recorded = self.info().get("config_hash")
        if recorded is not None:
            return recorded
        if self.config_path.is_file():
            return Config.load(self.config_path).hash()
        for path in sorted(self.tasks_dir.glob("*.npz")) if self.tasks_dir.is_dir() else []:
            header = _header(path)
            if header and "config_hash" in header:
                return header["config_hash"]
        return None

    # -- task files --------------------------------------------------------------------------------------------

    def write_task(self, config: Config, task: Task, records: Records, *, seconds: float, sharpness=None) -> Path:
        header = {"format": FORMAT, "config_hash": config.hash(), "config_toml": config.to_toml(),
                  "task": task.identity(), "seconds": seconds, "host": platform.node(),
                  "chaosgd": __import__("chaosgd").__version__,
                  "network_epochs": records.network_epochs, "naive_network_epochs": records.naive_network_epochs}
        arrays = records.arrays()
        if sharpness is not None:
            arrays.update({f"sharpness_{k}": np.asarray(getattr(sharpness, k)) for k in _SHARPNESS})
        arrays["header"] = np.array(json.dumps(header, sort_keys=True))
        arrays["digest"] = np.array(_digest(arrays))
        return atomic_write(self.task_path(task), lambda f: np.savez(f, **arrays))

    def load_task(self, task: Task, config_hash: str) -> TaskResult:
        """The checked contents of a task's file; ``TaskFileError`` says why a file cannot be trusted."""
        path = self.task_path(task)
        if not path.is_file():
            raise TaskFileError(f"{path.name}: missing")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as error:
            raise TaskFileError(f"{path.name}: unreadable, truncated or corrupted ({type(error).__name__}: "
                                f"{error})") from None
        if "header" not in arrays or "digest" not in arrays:
            raise TaskFileError(f"{path.name}: written by an older chaosgd without a header; cannot be checked")
        header = json.loads(str(arrays.pop("header")))
        digest = str(arrays.pop("digest"))
        if header.get("format") != FORMAT:
            raise TaskFileError(f"{path.name}: file format {header.get('format')}, this chaosgd reads {FORMAT}")
        if digest != _digest({**arrays, "header": np.array(json.dumps(header, sort_keys=True))}):
            raise TaskFileError(f"{path.name}: corrupted (its contents do not match its SHA-256 digest)")
        if header["config_hash"] != config_hash:
            raise TaskFileError(f"{path.name}: belongs to another configuration (hash {header['config_hash']}, "
                                f"this run is {config_hash})")
        if header["task"] != task.identity():
            raise TaskFileError(f"{path.name}: holds another task ({header['task']}, expected {task.identity()})")
        try:
            records = Records.from_arrays(arrays)
        except (KeyError, TypeError, IndexError) as error:
            raise TaskFileError(f"{path.name}: incomplete records ({error})") from None
        if (records.loss.shape[0] != task.count or not np.all(records.eta == task.eta)
                or not np.array_equal(records.initial_condition, task.first + np.arange(task.count))):
            raise TaskFileError(f"{path.name}: its records are not those of {task.name}")
        sharpness = None
        if "sharpness_value" in arrays:
            from chaosgd.sharpness import SharpnessTrack
            sharpness = SharpnessTrack(task.eta, *(arrays[f"sharpness_{k}"] for k in _SHARPNESS))
        return TaskResult(task, records, float(header["seconds"]), header["host"], sharpness)

    def scan(self, config: Config, all_tasks: list[Task]) -> tuple[dict[str, TaskResult], dict[str, str]]:
        """Check every task file: the results of the trusted ones by task name, and why each other file that
        exists cannot be trusted (missing files are simply pending)."""
        done, problems = {}, {}
        config_hash = config.hash()
        for task in all_tasks:
            try:
                done[task.name] = self.load_task(task, config_hash)
            except TaskFileError as error:
                if self.task_path(task).exists():
                    problems[task.name] = str(error)
        return done, problems

    def claims(self, *, timeout: float = 120.0, heartbeat: float = 10.0) -> "Claims":
        return Claims(self.claims_dir, timeout=timeout, heartbeat=heartbeat)


def _header(path: Path) -> dict | None:
    """A task file's header, without checking the file; None if it has none or cannot be read."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return json.loads(str(z["header"])) if "header" in z.files else None
    except Exception:  # any unreadable file is simply not evidence
        return None


def _digest(arrays: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(k for k in arrays if k != "digest"):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes() if a.dtype.kind != "U" else str(a).encode())
    return h.hexdigest()


def _run_info(config: Config) -> dict:
    import jax
    return {"config_hash": config.hash(), "name": config.name, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": {"chaosgd": __import__("chaosgd").__version__, "jax": jax.__version__,
                         "numpy": np.__version__, "python": sys.version.split()[0]},
            "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                        "cpus": os.cpu_count(), "jax_backend": jax.default_backend()}}


class Claims:
    """Claims on tasks, so that several jobs on one run folder compute each task once.

    A claim is a file created exclusively (``O_CREAT | O_EXCL``: one job wins) that names its job; a thread
    refreshes the claims this job holds every ``heartbeat`` seconds. A claim is stale, and may be taken over, when
    it was not refreshed for ``timeout`` seconds (its job died or hangs: clocks of the machines sharing the folder
    must agree to well within that), or at once when its job ran on this machine and its process is gone.
    """

    def __init__(self, folder: Path, *, timeout: float = 120.0, heartbeat: float = 10.0):
        self.folder, self.timeout, self.heartbeat = Path(folder), float(timeout), float(heartbeat)
        self.token = uuid.uuid4().hex
        self.held: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self) -> "Claims":
        self.folder.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._beat, name="chaosgd-claims", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for name in list(self.held):
            self.release(name)

    def _path(self, name: str) -> Path:
        return self.folder / f"{name}.claim"

    def claim(self, name: str) -> bool:
        """Take the claim on task ``name``: True if this job now holds it."""
        path = self._path(name)
        if self._stale(path):
            self._break(path)
        me = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "token": self.token,
                         "since": time.time()})
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(me)
        with self._lock:
            self.held.add(name)
        return True

    def release(self, name: str) -> None:
        with self._lock:
            self.held.discard(name)
        path = self._path(name)
        if self._owner(path).get("token") == self.token:
            path.unlink(missing_ok=True)

    def taken_by_others(self, name: str) -> bool:
        """Whether another live job holds the claim on ``name``."""
        path = self._path(name)
        return path.exists() and name not in self.held and not self._stale(path)

    def _owner(self, path: Path) -> dict:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return {}

    def _stale(self, path: Path) -> bool:
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return False
        owner = self._owner(path)
        if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int):
            if owner["pid"] != os.getpid() and not _alive(owner["pid"]):
                return True
        return age > self.timeout

    def _break(self, path: Path) -> None:
        """Remove a stale claim so that it can be taken; the rename lets one job alone do it."""
        aside = path.with_name(f"{path.name}.stale-{self.token}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return
        if not self._stale(aside):  # another job re-claimed it between our look and the rename: give it back
            try:
                os.link(aside, path)
            except FileExistsError:
                pass
        aside.unlink(missing_ok=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            with self._lock:
                names = list(self.held)
            for name in names:
                try:
                    os.utime(self._path(name))
                except FileNotFoundError:
                    pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
