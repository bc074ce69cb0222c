"""Reader for the IDX format of MNIST and Fashion-MNIST (plain or gzip-compressed).

Format (LeCun et al.): magic ``0x00 0x00 <type> <ndim>``, then ``ndim`` big-endian uint32 sizes, then the data.
MNIST uses type 0x08 (unsigned byte): ndim 3 for images, 1 for labels.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from chaosgd.errors import ChaosgdError

GZIP_MAGIC = b"\x1f\x8b"


class IDXError(ChaosgdError, ValueError):
    """A data file that is not what it should be (damaged gzip, wrong magic, truncated, wrong shape).

    The message names the file and says how to replace it.
    """


def file_error(path: Path, problem: str, dataset: str | None = None) -> IDXError:
    """An ``IDXError`` saying that ``path`` has ``problem`` and how to replace it with a good copy."""
    command = f"`chaosgd data fetch {dataset or '<name>'}`"
    return IDXError(f"{path}: {problem}. Delete it and run {command}, or put a good copy of {path.name} there")


def read_bytes(path: str | Path, *, dataset: str | None = None, compressed: bool | None = None) -> bytes:
    """The content of ``path``, decompressed when ``compressed`` (default: when its name ends in ``.gz``).

    A file that cannot be read or decompressed (truncated or damaged gzip, a folder) raises ``IDXError`` whose message
    names the file and the command that fetches data set ``dataset`` again; a missing one raises ``FileNotFoundError``.
    """
    path = Path(path)
    compressed = path.suffix == ".gz" if compressed is None else compressed
    try:
        if not compressed:
            return path.read_bytes()
        with gzip.open(path) as f:
            return f.read()
    except FileNotFoundError:
        raise
    except EOFError as error:
        raise file_error(path, "the gzip stream ends early, so the file is truncated (an interrupted download "
                               "or copy?)", dataset) from error
    except gzip.BadGzipFile as error:
        problem = ("its gzip CRC check failed, so the file is corrupt" if "CRC" in str(error)
                   else f"not a valid gzip file ({error})")
        raise file_error(path, problem, dataset) from error
    except zlib.error as error:
        raise file_error(path, f"its compressed data is corrupt ({error})", dataset) from error
    except IsADirectoryError as error:
        raise file_error(path, "is a folder, not a file", dataset) from error
    except OSError as error:
        raise file_error(path, f"cannot be read ({error.strerror or error})", dataset) from error


def read_idx(path: str | Path, *, ndim: int, dataset: str | None = None) -> np.ndarray:
    """The uint8 array stored in the IDX file ``path`` (``.gz`` is decompressed), which must have ``ndim`` axes.

    Every defect raises ``IDXError`` naming the file; ``dataset`` (default none) names the data set in its advice.
    """
    path = Path(path)
    raw = read_bytes(path, dataset=dataset)

    def fail(problem: str) -> IDXError:
        return file_error(path, problem, dataset)

    if len(raw) < 4:
        raise fail(f"file is truncated ({len(raw)} bytes; an IDX header alone has at least 4)")
    if raw[:2] == GZIP_MAGIC:
        raise fail(f"file is gzip-compressed but its name does not end in .gz (rename it to {path.name}.gz)")
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise fail(f"wrong magic number {raw[:4].hex()}; expected 000008{ndim:02x} "
                   f"(unsigned-byte IDX with {ndim} dimensions)")
    if raw[3] != ndim:
        raise fail(f"holds {raw[3]} dimensions, expected {ndim} ({'images' if ndim == 3 else 'labels'} file); "
                   f"are image and label files swapped?")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise fail("file is truncated inside its header")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    size = math.prod(shape)  # exact: numpy's int64 product could wrap for a garbage header
    if len(raw) - header != size:
        what = "truncated" if len(raw) - header < size else "longer than its header says"
        raise fail(f"file is {what}: header promises shape {shape} = {size} bytes of data, found {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)
