"""Download the standard files of MNIST, Fashion-MNIST and CIFAR-10, verify them, and write them atomically.

Only for users with internet access; nothing in chaosgd downloads at run time. A file already in place is kept when
it verifies (see ``verify``): its MD5 is the published one, or its decompressed content is, so a copy that was only
recompressed is not downloaded again. Every download is streamed to a temporary file (``atomic.atomic_write``),
verified, and only then renamed into place, so an interrupted or corrupted download never leaves a file that looks
complete. Without a
network, ``FetchError`` says which files to put into which folder by hand.
"""

from __future__ import annotations

import hashlib
import http.client
import shutil
import tarfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from chaosgd.atomic import atomic_write
from chaosgd.datasets.base import data_dir
from chaosgd.datasets.cifar10 import TEST_FILES, TRAIN_FILES
from chaosgd.datasets.idx import IDXError, read_bytes, read_idx
from chaosgd.errors import ChaosgdError


@dataclass(frozen=True)
class Source:
    """Where a data set's files are served and how a good copy of each is recognised.

    ``content`` and ``shapes`` only serve copies whose MD5 differs from ``files``; ``shapes`` is for data sets whose
    content digests are unknown, and never accepts a download.
    """

    base_url: str
    files: dict[str, str]  # file name -> MD5 of the file as served
    archive_members: tuple[str, ...] = field(default=())  # for a tar.gz: the members to keep
    content: dict[str, str] = field(default_factory=dict)  # file name -> SHA-256 of its decompressed content
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # file name -> IDX shape; 1-D ones hold 0..9


def _idx_shapes(n_train: int, n_test: int) -> dict[str, tuple[int, ...]]:
    return {"train-images-idx3-ubyte.gz": (n_train, 28, 28), "train-labels-idx1-ubyte.gz": (n_train,),
            "t10k-images-idx3-ubyte.gz": (n_test, 28, 28), "t10k-labels-idx1-ubyte.gz": (n_test,)}


SOURCES = {
    # The MD5s are those published with each data set (and used by torchvision).
    "mnist": Source("https://ossci-datasets.s3.amazonaws.com/mnist/", {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"},
        # SHA-256 of the uncompressed IDX files, taken from copies whose uncompressed MD5s are the published ones
        # (6bbc9ace..., a25bea73..., 2646ac64..., 27ae3e4e...; checked in tests/test_datasets.py). Those copies had
        # been recompressed, so their .gz MD5s differ from the ones above: the case these digests exist for.
        content={
            "train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"}),
    # No verified copy of Fashion-MNIST was at hand to take content digests from, so a local copy whose .gz MD5
    # differs is accepted on its structure alone: valid IDX files of these shapes with labels 0..9.
    "fashion-mnist": Source("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"},
        shapes=_idx_shapes(60000, 10000)),
    "cifar10": Source("https://www.cs.toronto.edu/~kriz/",
                      {"cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530"},
                      archive_members=TRAIN_FILES + TEST_FILES),
}


class ChecksumError(ChaosgdError, ValueError):
    """A downloaded file whose MD5 differs from the published one (and whose content does not match either)."""


class FetchError(ChaosgdError, RuntimeError):
    """A data set that could not be fetched (no network, server error, a folder in a file's place, ...).

    The one-line message names the URL or path and, for network failures, the files to put where by hand.
    """


def md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, file_name: str, source: Source, *, structural: bool = True) -> str | None:
    """How ``path`` was found to be a good copy of ``source``'s file ``file_name``, or None if it is not one.

    Tried in order: the MD5 of the file as served; the SHA-256 of its decompressed content (a recompressed copy);
    if ``structural`` (default True), its IDX shapes and labels, for data sets without content digests.
    """
    if md5(path) == source.files[file_name]:
        return "verified"
    if file_name not in source.content and not (structural and file_name in source.shapes):
        return None
    compressed = file_name.endswith(".gz")
    try:
        if file_name in source.content:
            content = hashlib.sha256(read_bytes(path, compressed=compressed)).hexdigest()
            return "content verified (recompressed copy)" if content == source.content[file_name] else None
        shape = source.shapes[file_name]
        array = read_idx(path, ndim=len(shape))
    except IDXError:
        return None
    if array.shape != shape or (array.ndim == 1 and array.size and array.max() > 9):
        return None
    return f"structure checked (IDX of shape {shape}; no published content checksum to compare)"


def fetch(name: str, *, path=None, base_url: str | None = None, sources: dict[str, Source] = SOURCES,
          timeout: float = 60.0, log=print) -> Path:
    """Download data set ``name`` into ``<data_dir>/<name>/`` and return that folder.

    Files already there that pass ``verify`` are kept. ``base_url`` replaces the source's address (a mirror);
    ``sources`` (default ``SOURCES``) is the table of data sets; ``timeout`` (default 60 s) bounds each network wait.
    Raises ``FetchError`` if the server cannot be reached or answers with an error, ``ChecksumError`` if a download
    does not verify; either way only verified files are left, and folders this call created are removed if empty.
    """
    if name not in sources:
        raise ValueError(f"no download source for {name!r}; choose one of {sorted(sources)}")
    source = sources[name]
    folder = data_dir(path) / name
    if source.archive_members and all((folder / m).is_file() for m in source.archive_members):
        log(f"{name}: already unpacked in {folder}")
        return folder
    missing = [f for f in source.files if not _present(folder / f, source, log)]
    manual = (f"Without internet, download {', '.join(missing)} from {source.base_url} elsewhere and put "
              f"{'it' if len(missing) == 1 else 'them'} in {folder}/ by hand"
              + (f" (or the unpacked {', '.join(source.archive_members)})" if source.archive_members else "")
              + ", then run the fetch again to verify them.")
    base = (base_url or source.base_url).rstrip("/") + "/"
    created = _make_folder(folder)
    try:
        for file_name in source.files:
            target = folder / file_name
            if file_name in missing:
                _download(base + file_name, target, source, timeout, log, manual)
            if source.archive_members:
                _extract(target, folder, source.archive_members)
                target.unlink()
    except BaseException:
        for made in created:
            if any(made.iterdir()):
                break
            made.rmdir()
        raise
    return folder


def _present(target: Path, source: Source, log) -> bool:
    """Whether ``target`` is already a verified copy of its file; logs what was found."""
    if not target.exists():
        return False
    if not target.is_file():
        raise FetchError(f"{target} is not a file but should be the data file {target.name}; remove it and run "
                         f"the fetch again")
    how = verify(target, target.name, source)
    if how:
        log(f"{target.parent.name}: {target.name} already present and {how}")
        return True
    log(f"{target}: neither its MD5 nor its content matches the published file; fetching it again")
    return False


def _make_folder(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; return those it created, deepest first."""
    created = []
    probe = folder
    while not probe.exists() and probe != probe.parent:
        created.append(probe)
        probe = probe.parent
    if folder.exists() and not folder.is_dir():
        raise FetchError(f"{folder} is a file, but chaosgd needs a folder there to hold the data set's files; "
                         f"move it away and run the fetch again")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise FetchError(f"cannot create the folder {folder} ({error.strerror or error})") from error
    return created


def _download(url: str, target: Path, source: Source, timeout: float, log, manual: str) -> None:
    log(f"downloading {url}")

    def stream(out):
        with urllib.request.urlopen(url, timeout=timeout) as response:
            shutil.copyfileobj(response, out, length=1 << 20)

    def verified(downloaded: Path):
        if not verify(downloaded, target.name, source, structural=False):
            raise ChecksumError(f"{url}: MD5 {md5(downloaded)} does not match the published "
                                f"{source.files[target.name]}; the download is corrupt or the mirror serves other "
                                "files. Nothing was kept.")

    try:
        atomic_write(target, stream, check=verified)
    except urllib.error.HTTPError as error:
        error.close()
        raise FetchError(f"could not download {url} (HTTP {error.code} {error.reason}). {manual}") from error
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError, ValueError) as error:
        if isinstance(error, ChecksumError):
            raise
        reason = getattr(error, "reason", None) or error
        if isinstance(reason, TimeoutError):
            reason = f"no answer within {timeout:g} s"
        raise FetchError(f"could not download {url} ({reason}). {manual}") from error
    except OSError as error:
        raise FetchError(f"could not write {target} ({error.strerror or error})") from error


def _extract(archive: Path, folder: Path, members: tuple[str, ...]) -> None:
    """Write the named regular-file members of a tar.gz into ``folder`` by base name (no paths from the archive)."""
    wanted = set(members)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                base = Path(member.name).name
                if base not in wanted or not member.isfile():
                    continue
                with tar.extractfile(member) as src:
                    atomic_write(folder / base, lambda out: shutil.copyfileobj(src, out))
                wanted.discard(base)
    except (tarfile.TarError, EOFError, zlib.error) as error:
        raise ValueError(f"{archive}: cannot unpack it ({error}); delete it and run the fetch again") from error
    if wanted:
        raise ValueError(f"{archive}: archive lacks {sorted(wanted)}")
