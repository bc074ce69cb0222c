"""Claims on tasks, so that several jobs on one run folder (a SLURM array, two terminals, several machines on a
shared file system) compute each task once."""

from __future__ import annotations

import json
import math
import numbers
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from chaosgd.atomic import atomic_write


HEARTBEAT = 10.0  # seconds between refreshes of the claims a job holds
CLAIM_TIMEOUT = 120.0  # seconds without a refresh after which a claim is taken over (its job died)


def check_timing(timeout: float, heartbeat: float = HEARTBEAT) -> None:
    """Refuse a claim timeout that live claims could outlast: it must exceed twice the heartbeat."""
    def seconds(value) -> bool:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)

    if not seconds(heartbeat) or not heartbeat > 0:
        raise ValueError(f"the claims' heartbeat must be a number of seconds > 0; got {heartbeat!r}")
    if not seconds(timeout) or not 2 * heartbeat < timeout < math.inf:
        raise ValueError(f"claim_timeout must be a finite number of seconds over {2 * heartbeat:g}, twice the "
                         "claims' heartbeat (else live claims would be taken over, or a dead job's never); got "
                         f"{timeout!r}")


class Claims:
    """Claims on tasks, so that several jobs on one run folder compute each task once.

    A claim is a file created exclusively and whole (``atomic_write(exclusive=True)``: one job wins, and no claim
    is ever half-written) that names its job; a thread refreshes the claims this job holds every ``heartbeat``
    seconds. A claim is stale, and may be taken over, when it was not refreshed for ``timeout`` seconds (its job was
    killed or its machine lost; clocks of the machines sharing the folder must agree to well within that), or at
    once when its job ran on a machine of this host name and its process is gone (machines, or containers, that
    share a host name must then share process ids too). A job that hangs keeps its claims fresh: the others wait.
    """

    def __init__(self, folder: Path, *, timeout: float = CLAIM_TIMEOUT, heartbeat: float = HEARTBEAT):
        check_timing(timeout, heartbeat)
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
            atomic_write(path, me, exclusive=True)
        except FileExistsError:
            return False
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
