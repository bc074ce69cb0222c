import functools
import gzip
import hashlib
import http.server
import io
import socket
import tarfile
import threading

import numpy as np
import pytest

from chaosgd.datasets import load, load_cifar10
from chaosgd.datasets.fetch import SOURCES, ChecksumError, FetchError, Source, fetch, md5
from chaosgd.datasets.mnist import FILES
from test_datasets import idx_bytes, write_cifar, write_mnist

UNREACHABLE = "http://127.0.0.1:9/"  # the discard port: nothing listens, so the connection is refused at once
NAMES = [FILES[k] + ".gz" for k in FILES]


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
    assert "train-labels-idx1-ubyte.gz" not in left and not any(n.endswith((".partial", ".tmp")) for n in left)


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


def quiet(*args):
    pass


def published_mnist(root):
    """A small MNIST served from ``root`` and its Source, with both MD5s and content digests."""
    contents = write_mnist(root)
    raw = {FILES[k] + ".gz": v for k, v in contents.items()}
    return raw, Source("unused", {n: md5(root / n) for n in NAMES},
                       content={n: hashlib.sha256(raw[n]).hexdigest() for n in NAMES})


def plant(folder, raw, names, **gzip_options):
    """Write ``raw`` content of ``names`` into ``folder``, compressed otherwise than the published files."""
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(gzip.compress(raw[n], **gzip_options))


def test_fetch_offline_says_what_to_put_where_and_leaves_nothing(tmp_path):
    source = mnist_source(tmp_path / "served")
    with pytest.raises(FetchError) as caught:
        fetch("mnist", path=tmp_path / "data", base_url=UNREACHABLE, sources={"mnist": source}, log=quiet)
    message = str(caught.value)
    assert isinstance(caught.value, RuntimeError) and "\n" not in message
    assert f"could not download {UNREACHABLE}train-images-idx3-ubyte.gz (" in message
    assert "Connection refused" in message
    assert f"put them in {tmp_path / 'data' / 'mnist'}/ by hand" in message
    assert f"download {', '.join(NAMES)} from unused elsewhere" in message
    assert not (tmp_path / "data").exists()  # fetch made data/ and data/mnist/, and removed them again


def test_fetch_offline_keeps_the_folder_and_files_it_did_not_make(tmp_path):
    source = mnist_source(tmp_path / "served")
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    (folder / NAMES[0]).write_bytes((tmp_path / "served" / NAMES[0]).read_bytes())
    with pytest.raises(FetchError, match=f"download {', '.join(NAMES[1:])} from"):
        fetch("mnist", path=tmp_path / "data", base_url=UNREACHABLE, sources={"mnist": source}, log=quiet)
    assert [p.name for p in folder.iterdir()] == [NAMES[0]]


def test_fetch_reports_a_server_error_the_same_way(tmp_path, server):
    root, url = server
    source = mnist_source(tmp_path / "elsewhere")  # nothing under root: every request is a 404
    with pytest.raises(FetchError, match=rf"could not download {url}\S+ \(HTTP 404 .*by hand"):
        fetch("mnist", path=tmp_path / "data", base_url=url, sources={"mnist": source}, log=quiet)
    assert not (tmp_path / "data").exists()


def test_fetch_reports_a_silent_server_as_a_timeout(tmp_path):
    source = mnist_source(tmp_path / "served")
    with socket.socket() as silent:  # listens, so connecting succeeds, but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        with pytest.raises(FetchError, match=rf"could not download {url}\S+ \(no answer within 0.2 s\)"):
            fetch("mnist", path=tmp_path / "data", base_url=url, sources={"mnist": source}, timeout=0.2, log=quiet)
    assert not (tmp_path / "data").exists()


def test_cli_fetch_offline_is_one_line_without_traceback(tmp_path, monkeypatch, capsys):
    from chaosgd.cli import main  # here, so that the data tests do not depend on the whole CLI importing

    monkeypatch.setitem(SOURCES, "mnist", Source(UNREACHABLE, SOURCES["mnist"].files, content=SOURCES["mnist"].content))
    assert main(["data", "fetch", "mnist", "--data-dir", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"chaosgd: error: could not download {UNREACHABLE}") and err.count("\n") == 1
    assert "Traceback" not in err and f"{tmp_path / 'data' / 'mnist'}/" in err
    assert not (tmp_path / "data").exists()


def test_fetch_keeps_a_recompressed_copy_without_downloading(tmp_path):
    raw, source = published_mnist(tmp_path / "served")
    folder = tmp_path / "data" / "mnist"
    plant(folder, raw, NAMES, compresslevel=1, mtime=1234567890)
    planted = {n: (folder / n).read_bytes() for n in NAMES}
    assert all(md5(folder / n) != source.files[n] for n in NAMES)
    messages = []
    fetch("mnist", path=tmp_path / "data", base_url=UNREACHABLE, sources={"mnist": source}, log=messages.append)
    assert len(messages) == 4 and all("already present and content verified" in m for m in messages)
    assert {n: (folder / n).read_bytes() for n in NAMES} == planted
    assert load("mnist", path=tmp_path / "data").x_train.shape == (12, 28, 28, 1)


def test_fetch_replaces_a_copy_whose_content_differs(tmp_path, server):
    root, url = server
    raw, source = published_mnist(root)
    folder = tmp_path / "data" / "mnist"
    other = dict(raw, **{NAMES[1]: idx_bytes(np.zeros(12))})  # same shape, other labels
    plant(folder, other, NAMES, mtime=0)
    with pytest.raises(FetchError, match=f"could not download {UNREACHABLE}{NAMES[1]} .*download {NAMES[1]} from"):
        fetch("mnist", path=tmp_path / "data", base_url=UNREACHABLE, sources={"mnist": source}, log=quiet)
    assert sorted(p.name for p in folder.iterdir()) == sorted(NAMES)  # the user's copy stays until a good one comes
    messages = []
    fetch("mnist", path=tmp_path / "data", base_url=url, sources={"mnist": source}, log=messages.append)
    assert any("neither its MD5 nor its content matches" in m for m in messages)
    assert messages.count(f"downloading {url}{NAMES[1]}") == 1
    assert md5(folder / NAMES[1]) == source.files[NAMES[1]]


def test_fetch_checks_structure_where_no_content_digest_is_known(tmp_path, server):
    root, url = server
    raw, published = published_mnist(root)
    shapes = {NAMES[0]: (12, 28, 28), NAMES[1]: (12,), NAMES[2]: (6, 28, 28), NAMES[3]: (6,)}
    source = Source("unused", published.files, shapes=shapes)
    folder = tmp_path / "data" / "mnist"
    plant(folder, raw, NAMES, compresslevel=1, mtime=0)
    messages = []
    fetch("mnist", path=tmp_path / "data", base_url=UNREACHABLE, sources={"mnist": source}, log=messages.append)
    assert all("already present and structure checked" in m for m in messages)
    # Wrong length, labels out of range: refused and fetched again.
    plant(folder, dict(raw, **{NAMES[1]: idx_bytes(np.zeros(11)), NAMES[3]: idx_bytes(np.full(6, 10))}),
          NAMES[1::2])
    with pytest.raises(FetchError, match=f"download {NAMES[1]}, {NAMES[3]} from"):
        fetch("mnist", path=tmp_path / "data", base_url=UNREACHABLE, sources={"mnist": source}, log=quiet)
    # A download is never accepted on its structure alone.
    plant(root, raw, [NAMES[1]], mtime=0)
    with pytest.raises(ChecksumError, match="does not match"):
        fetch("mnist", path=tmp_path / "data", base_url=url, sources={"mnist": source}, log=quiet)
    assert not any(p.name.endswith((".partial", ".tmp")) for p in folder.iterdir())


def test_fetch_refuses_folders_in_the_way(tmp_path):
    source = mnist_source(tmp_path / "served")
    (tmp_path / "data" / "mnist" / NAMES[2]).mkdir(parents=True)
    with pytest.raises(FetchError, match=f"{NAMES[2]} is not a file but should be the data file"):
        fetch("mnist", path=tmp_path / "data", base_url=UNREACHABLE, sources={"mnist": source}, log=quiet)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "mnist").write_text("not a folder")
    with pytest.raises(FetchError, match="mnist is a file, but chaosgd needs a folder there"):
        fetch("mnist", path=tmp_path / "other", base_url=UNREACHABLE, sources={"mnist": source}, log=quiet)


def test_source_table_verifies_every_idx_file():
    for name in ("mnist", "fashion-mnist"):
        source = SOURCES[name]
        assert set(source.files) == set(NAMES)
        assert set(source.content) | set(source.shapes) == set(NAMES), name
    assert set(SOURCES["mnist"].content) == set(NAMES)
    assert SOURCES["fashion-mnist"].shapes[NAMES[0]] == (60000, 28, 28)


def test_real_mnist_is_accepted_offline_by_its_content(tmp_path, mnist_dir):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for n in NAMES:
        (folder / n).symlink_to(mnist_dir / "mnist" / n)
    messages = []
    assert fetch("mnist", path=tmp_path, base_url=UNREACHABLE, log=messages.append) == folder
    assert len(messages) == 4 and all("already present and" in m and "verified" in m for m in messages)
