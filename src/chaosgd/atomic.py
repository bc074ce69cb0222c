"""One way to write a file: all of it or nothing, even when the process is killed or the machine loses power."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Callable


def atomic_write(path: str | Path, content: bytes | str | Callable, *, check: Callable | None = None,
                 exclusive: bool = False) -> Path:
    """Write ``content`` (bytes, text, or a function that writes to a binary file object) to ``path`` atomically.

    The data goes to a temporary file with a unique name in the same folder (so that concurrent writers never share
    one), is flushed to disk with fsync, and is then renamed over ``path``; the folder is fsynced too, so the rename
    survives a crash. Readers see the old file or the new one, never a part. ``check(temporary_path)``, if given,
    may raise to refuse the data (a checksum that does not match): then nothing is written. With ``exclusive``, the
    file is created only if there is none (``FileExistsError`` otherwise): of several processes, exactly one wins.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "wb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode() if isinstance(content, str) else content)
            f.flush()
            os.fsync(f.fileno())
        if check is not None:
            check(tmp)
        if exclusive:
            os.link(tmp, path)  # a hard link fails if the name exists: an atomic create-if-absent
            tmp.unlink()
        else:
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)
    return path


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some file systems do not open folders; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
