"""Download the standard files of MNIST, Fashion-MNIST and CIFAR-10, verify them, and write them atomically.

Only for users with internet access; nothing in chaosgd downloads at run time. Every file is streamed to a
``.partial`` file, its MD5 compared with the published checksum, and only then renamed into place, so an
interrupted or corrupted download never leaves a file that looks complete.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from chaosgd.datasets.base import data_dir
from chaosgd.datasets.cifar10 import TEST_FILES, TRAIN_FILES


@dataclass(frozen=True)
class Source:
    base_url: str
    files: dict[str, str]  # file name -> MD5 of the file as served
    archive_members: tuple[str, ...] = field(default=())  # for a tar.gz: the members to keep


SOURCES = {
    # The checksums are those published with each data set (and used by torchvision).
    "mnist": Source("https://ossci-datasets.s3.amazonaws.com/mnist/", {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"}),
    "fashion-mnist": Source("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"}),
    "cifar10": Source("https://www.cs.toronto.edu/~kriz/",
                      {"cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530"},
                      archive_members=TRAIN_FILES + TEST_FILES),
}


class ChecksumError(ValueError):
    """A downloaded file whose MD5 differs from the published one."""


def md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(name: str, *, path=None, base_url: str | None = None, sources: dict[str, Source] = SOURCES,
          timeout: float = 60.0, log=print) -> Path:
    """Download data set ``name`` into ``<data_dir>/<name>/`` and return that folder.

    Files already there with the right checksum are kept. ``base_url`` replaces the source's address (a mirror).
    Raises ``ChecksumError`` if a file does not match, leaving nothing but the files that did.
    """
    if name not in sources:
        raise ValueError(f"no download source for {name!r}; choose one of {sorted(sources)}")
    source = sources[name]
    folder = data_dir(path) / name
    folder.mkdir(parents=True, exist_ok=True)
    base = (base_url or source.base_url).rstrip("/") + "/"
    for file_name, expected in source.files.items():
        target = folder / file_name
        if source.archive_members and all((folder / m).is_file() for m in source.archive_members):
            log(f"{name}: already unpacked in {folder}")
            break
        if target.is_file() and md5(target) == expected:
            log(f"{name}: {file_name} already present and verified")
        else:
            _download(base + file_name, target, expected, timeout, log)
        if source.archive_members:
            _extract(target, folder, source.archive_members)
            target.unlink()
    return folder


def _download(url: str, target: Path, expected_md5: str, timeout: float, log) -> None:
    partial = target.with_name(target.name + ".partial")
    log(f"downloading {url}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)
        got = md5(partial)
        if got != expected_md5:
            raise ChecksumError(f"{url}: MD5 {got} does not match the published {expected_md5}; "
                                f"the download is corrupt or the mirror serves other files. Nothing was kept.")
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)


def _extract(archive: Path, folder: Path, members: tuple[str, ...]) -> None:
    """Write the named regular-file members of a tar.gz into ``folder`` by base name (no paths from the archive)."""
    wanted = set(members)
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            base = Path(member.name).name
            if base not in wanted or not member.isfile():
                continue
            partial = folder / (base + ".partial")
            with tar.extractfile(member) as src, open(partial, "wb") as out:
                shutil.copyfileobj(src, out)
            partial.replace(folder / base)
            wanted.discard(base)
    if wanted:
        raise ValueError(f"{archive}: archive lacks {sorted(wanted)}")
