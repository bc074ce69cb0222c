"""Reader for the IDX format of MNIST and Fashion-MNIST (plain or gzip-compressed).

Format (LeCun et al.): magic ``0x00 0x00 <type> <ndim>``, then ``ndim`` big-endian uint32 sizes, then the data.
MNIST uses type 0x08 (unsigned byte): ndim 3 for images, 1 for labels.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np


class IDXError(ValueError):
    """An IDX file that is not what it should be (wrong magic, truncated, wrong shape)."""


def read_idx(path: str | Path, *, ndim: int) -> np.ndarray:
    """The uint8 array stored in the IDX file ``path`` (``.gz`` is decompressed), which must have ``ndim`` axes."""
    path = Path(path)
    raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4:
        raise IDXError(f"{path}: file is truncated ({len(raw)} bytes; an IDX header alone has at least 4)")
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise IDXError(f"{path}: wrong magic number {raw[:4].hex()}; expected 000008{ndim:02x} "
                       f"(unsigned-byte IDX with {ndim} dimensions)")
    if raw[3] != ndim:
        raise IDXError(f"{path}: holds {raw[3]} dimensions, expected {ndim} "
                       f"({'images' if ndim == 3 else 'labels'} file); are image and label files swapped?")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IDXError(f"{path}: file is truncated inside its header")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    size = int(np.prod(shape))
    if len(raw) - header != size:
        what = "truncated" if len(raw) - header < size else "longer than its header says"
        raise IDXError(f"{path}: file is {what}: header promises shape {shape} = {size} bytes of data, "
                       f"found {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)
