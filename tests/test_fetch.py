import functools
import http.server
import io
import tarfile
import threading

import numpy as np
import pytest

from chaosgd.datasets import load, load_cifar10
from chaosgd.datasets.fetch import ChecksumError, Source, fetch, md5
from chaosgd.datasets.mnist import FILES
from test_datasets import write_cifar, write_mnist


@pytest.fixture()
def server(tmp_path):
    """A static HTTP server on 127.0.0.1 serving tmp_path/served."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def mnist_source(root):
    write_mnist(root)
    names = [FILES[k] + ".gz" for k in FILES]
    return Source("unused", {n: md5(root / n) for n in names})


def test_fetch_downloads_verifies_and_loads(tmp_path, server):
    root, url = server
    source = mnist_source(root)
    folder = fetch("mnist", path=tmp_path / "data", base_url=url, sources={"mnist": source}, log=lambda *a: None)
    assert sorted(p.name for p in folder.iterdir()) == sorted(source.files)
    assert load("mnist", path=tmp_path / "data").x_train.shape == (12, 28, 28, 1)
    # A second fetch keeps the verified files instead of downloading again.
    messages = []
    fetch("mnist", path=tmp_path / "data", base_url=url, sources={"mnist": source}, log=messages.append)
    assert all("already present" in m for m in messages)


def test_fetch_refuses_a_corrupt_file_and_keeps_nothing_of_it(tmp_path, server):
    root, url = server
    source = mnist_source(root)
    bad = dict(source.files, **{"train-labels-idx1-ubyte.gz": "0" * 32})
    with pytest.raises(ChecksumError, match="does not match"):
        fetch("mnist", path=tmp_path / "data", base_url=url, sources={"mnist": Source("x", bad)},
              log=lambda *a: None)
    left = sorted(p.name for p in (tmp_path / "data" / "mnist").iterdir())
    assert "train-labels-idx1-ubyte.gz" not in left and not any(n.endswith(".partial") for n in left)


def test_fetch_unpacks_cifar10_binary_archive(tmp_path, server):
    root, url = server
    batches = tmp_path / "batches"
    write_cifar(batches)
    with tarfile.open(root / "cifar-10-binary.tar.gz", "w:gz") as tar:
        for f in sorted(batches.iterdir()):
            tar.add(f, arcname=f"cifar-10-batches-bin/{f.name}")
        readme = b"not kept"
        info = tarfile.TarInfo("cifar-10-batches-bin/readme.html")
        info.size = len(readme)
        tar.addfile(info, io.BytesIO(readme))
    source = Source("x", {"cifar-10-binary.tar.gz": md5(root / "cifar-10-binary.tar.gz")},
                    archive_members=tuple(sorted(p.name for p in batches.iterdir())))
    folder = fetch("cifar10", path=tmp_path / "data", base_url=url, sources={"cifar10": source},
                   log=lambda *a: None)
    assert sorted(p.name for p in folder.iterdir()) == sorted(source.archive_members)
    data = load_cifar10(tmp_path / "data")
    assert data.x_train.shape == (20, 32, 32, 3)
    assert data.y_train.tolist() == [int(r[0]) for name in sorted(source.archive_members)[:5]
                                     for r in np.frombuffer((batches / name).read_bytes(), np.uint8).reshape(-1, 3073)]


def test_fetch_unknown_name():
    with pytest.raises(ValueError, match="cifar10.*fashion-mnist.*mnist"):
        fetch("svhn")
