import gzip
import hashlib

import numpy as np
import pytest

from chaosgd.datasets import DataNotFoundError, IDXError, load, load_cifar10, load_iris, make_blobs
from chaosgd.datasets.idx import read_bytes, read_idx
from chaosgd.datasets.mnist import FILES


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(folder, n_train=12, n_test=6, compress=True, **overrides):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    contents = {
        "train_images": idx_bytes(rng.integers(0, 256, (n_train, 28, 28))),
        "train_labels": idx_bytes(rng.integers(0, 10, n_train)),
        "test_images": idx_bytes(rng.integers(0, 256, (n_test, 28, 28))),
        "test_labels": idx_bytes(rng.integers(0, 10, n_test)),
    }
    contents.update(overrides)
    for key, raw in contents.items():
        name = FILES[key] + (".gz" if compress else "")
        (folder / name).write_bytes(gzip.compress(raw) if compress else raw)
    return contents


def test_iris_split_is_stratified_fixed_and_complete():
    a, b, c = load_iris(seed=0), load_iris(seed=0), load_iris(seed=1)
    assert a.x_train.shape == (120, 4) and a.x_test.shape == (30, 4) and a.n_classes == 3
    assert np.bincount(a.y_test).tolist() == [10, 10, 10]
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert not np.array_equal(a.x_test, c.x_test)
    both = np.concatenate([a.x_train, a.x_test])
    assert both.shape == (150, 4) and len(np.unique(both, axis=0)) == 149  # one measurement repeats
    # Fisher's published species means of petal length (cm): 1.462, 4.260, 5.552.
    y = np.concatenate([a.y_train, a.y_test])
    np.testing.assert_allclose([both[y == k, 2].mean() for k in range(3)], [1.462, 4.260, 5.552], atol=1e-9)


@pytest.mark.parametrize("compress", [True, False])
def test_idx_data_set_loads_scaled_to_unit_interval(tmp_path, compress):
    contents = write_mnist(tmp_path / "mnist", compress=compress)
    data = load("mnist", path=tmp_path)
    assert data.x_train.shape == (12, 28, 28, 1) and data.x_test.shape == (6, 28, 28, 1)
    raw = np.frombuffer(contents["train_images"], dtype=np.uint8, offset=16).reshape(12, 28, 28)
    np.testing.assert_allclose(data.x_train[..., 0], raw / 255.0)
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0


def test_data_dir_comes_from_environment(tmp_path, monkeypatch):
    write_mnist(tmp_path / "fashion-mnist")
    monkeypatch.setenv("CHAOSGD_DATA", str(tmp_path))
    assert load("fashion-mnist").x_train.shape == (12, 28, 28, 1)


def test_missing_files_say_where_and_how(tmp_path, monkeypatch):
    with pytest.raises(DataNotFoundError, match=rf"(?s)looked in {tmp_path}/mnist.*chaosgd data fetch mnist"):
        load("mnist", path=tmp_path)
    # ... and where that folder came from: the option, the environment variable, or the default.
    with pytest.raises(DataNotFoundError, match="from --data-dir / data.path"):
        load("mnist", path=tmp_path)
    monkeypatch.setenv("CHAOSGD_DATA", str(tmp_path / "elsewhere"))
    with pytest.raises(DataNotFoundError, match=r"elsewhere; from \$CHAOSGD_DATA"):
        load("mnist")
    with pytest.raises(DataNotFoundError, match=r"elsewhere.*\(from \$CHAOSGD_DATA\)"):
        load("cifar10")


def test_wrong_magic_truncated_and_mismatched_files_are_refused(tmp_path):
    good = idx_bytes(np.zeros((3, 28, 28)))
    cases = {
        "magic": (dict(train_images=b"\x00\x00\x0d\x03" + good[4:]), "wrong magic"),
        "swapped": (dict(train_images=idx_bytes(np.zeros(5))), "1 dimensions, expected 3"),
        "truncated": (dict(train_images=good[:-10]), "truncated"),
        "count": (dict(train_images=good), "3 images but 12 labels"),
        "labels": (dict(test_labels=idx_bytes(np.full(6, 11))), "labels must be 0..9"),
    }
    for name, (override, message) in cases.items():
        write_mnist(tmp_path / name / "mnist", **override)
        with pytest.raises(IDXError, match=message):
            load("mnist", path=tmp_path / name)
    (tmp_path / "tiny").write_bytes(b"\x00\x00")
    with pytest.raises(IDXError, match="truncated"):
        read_idx(tmp_path / "tiny", ndim=1)


def truncate(gz: bytes) -> bytes:
    return gz[: len(gz) // 2]


def flip_payload_byte(gz: bytes) -> bytes:
    # Byte 10 is the first byte of the deflate stream (after the 10-byte gzip header): its block header.
    return gz[:10] + bytes([gz[10] ^ 0xFF]) + gz[11:]


def corrupt_crc(gz: bytes) -> bytes:
    # The gzip trailer is CRC-32 (4 bytes) then the uncompressed length (4 bytes).
    return gz[:-8] + bytes([gz[-8] ^ 0x01]) + gz[-7:]


@pytest.mark.parametrize("damage, problem", [
    (truncate, "gzip stream ends early, so the file is truncated"),
    (lambda gz: idx_bytes(np.zeros(12)), "not a valid gzip file"),
    (corrupt_crc, "gzip CRC check failed"),
    (flip_payload_byte, "compressed data is corrupt"),
])
def test_damaged_gzip_names_the_file_and_how_to_replace_it(tmp_path, damage, problem):
    write_mnist(tmp_path / "mnist")
    path = tmp_path / "mnist" / (FILES["train_labels"] + ".gz")
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(IDXError) as caught:
        load("mnist", path=tmp_path)
    message = str(caught.value)
    assert isinstance(caught.value, ValueError) and "\n" not in message
    assert message.startswith(f"{path}: ") and problem in message
    assert "Delete it and run `chaosgd data fetch mnist`, or put a good copy of train-labels-idx1-ubyte.gz there" \
        in message


def test_unreadable_and_misnamed_files_are_data_errors(tmp_path):
    (tmp_path / "folder.gz").mkdir()
    with pytest.raises(IDXError, match="folder.gz: is a folder, not a file"):
        read_bytes(tmp_path / "folder.gz")
    with pytest.raises(FileNotFoundError):
        read_bytes(tmp_path / "absent.gz")
    (tmp_path / "labels").write_bytes(gzip.compress(idx_bytes(np.zeros(3))))
    with pytest.raises(IDXError, match="gzip-compressed but its name does not end in .gz"):
        read_idx(tmp_path / "labels", ndim=1)
    # A folder where a data file belongs is named instead of reported as simply missing.
    write_mnist(tmp_path / "mnist")
    (tmp_path / "mnist" / (FILES["test_images"] + ".gz")).unlink()
    (tmp_path / "mnist" / (FILES["test_images"] + ".gz")).mkdir()
    with pytest.raises(DataNotFoundError, match="t10k-images-idx3-ubyte.gz exists but is not a file"):
        load("mnist", path=tmp_path)


def test_train_and_test_images_must_have_one_size(tmp_path):
    write_mnist(tmp_path / "mnist", test_images=idx_bytes(np.zeros((6, 32, 32))))
    with pytest.raises(IDXError, match=r"training images are \(28, 28\) pixels but test images \(32, 32\)"):
        load("mnist", path=tmp_path)


def write_cifar(folder, per_batch=4):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        records = rng.integers(0, 256, (per_batch, 3073)).astype(np.uint8)
        records[:, 0] %= 10
        (folder / name).write_bytes(records.tobytes())
    return rng


def test_cifar10_binary_records_are_decoded_channel_last(tmp_path):
    write_cifar(tmp_path / "cifar10" / "cifar-10-batches-bin")
    data = load_cifar10(tmp_path)
    assert data.x_train.shape == (20, 32, 32, 3) and data.x_test.shape == (4, 32, 32, 3)
    raw = np.frombuffer((tmp_path / "cifar10/cifar-10-batches-bin/data_batch_1.bin").read_bytes(), np.uint8)
    first = raw[:3073]
    assert data.y_train[0] == first[0]
    # Record layout: 1024 red, then green, then blue bytes, each a row-major 32x32 plane.
    assert data.x_train[0, 0, 1, 0] == first[1 + 1] / 255.0
    assert data.x_train[0, 2, 0, 1] == first[1 + 1024 + 2 * 32] / 255.0
    (tmp_path / "cifar10/cifar-10-batches-bin/test_batch.bin").write_bytes(b"\x01" * 100)
    with pytest.raises(IDXError, match="not a multiple"):
        load_cifar10(tmp_path)
    with pytest.raises(DataNotFoundError, match="chaosgd data fetch cifar10"):
        load_cifar10(tmp_path / "elsewhere")


def test_standardized_has_zero_mean_unit_std_on_train():
    data = make_blobs(n_train=300, seed=2).standardized()
    np.testing.assert_allclose(data.x_train.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(data.x_train.std(0), 1, atol=1e-12)


def test_unknown_data_set_lists_the_valid_ones():
    with pytest.raises(ValueError, match="iris.*mnist"):
        load("imagenet")


def test_real_mnist_matches_published_checksums(mnist_dir):
    # The MD5s published for the uncompressed IDX files.
    expected = {"train_images": "6bbc9ace898e44ae57da46a324031adb", "train_labels": "a25bea736e30d166cdddb491f175f624",
                "test_images": "2646ac647ad5339dbf082846283269ea", "test_labels": "27ae3e4e09519cfbb04c329615203637"}
    for key, digest in expected.items():
        path = mnist_dir / "mnist" / (FILES[key] + ".gz")
        assert hashlib.md5(gzip.open(path).read()).hexdigest() == digest
    data = load("mnist", path=mnist_dir)
    assert data.x_train.shape == (60000, 28, 28, 1) and data.x_test.shape == (10000, 28, 28, 1)
    assert data.y_train[:5].tolist() == [5, 0, 4, 1, 9]  # the well-known first training labels
    assert np.bincount(data.y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_the_class_counts_known_without_loading_match_the_loaders():
    from chaosgd.datasets import CLASSES

    # chance accuracy (1 / classes) flags stuck networks from these counts, without loading the data
    assert load("iris").n_classes == CLASSES["iris"] and load("blobs").n_classes == CLASSES["blobs"]


def test_mnist_has_the_class_count_known_without_loading(mnist_dir):
    from chaosgd.datasets import CLASSES

    assert load("mnist", path=mnist_dir).n_classes == CLASSES["mnist"]
