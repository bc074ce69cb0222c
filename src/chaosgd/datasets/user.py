"""A user's own data: arrays, torch tensors and datasets, pandas frames, and ``.npz`` files.

Everything becomes a ``Dataset`` after the same checks, so that a value read as something else is refused, not
trained on: inputs must be finite numbers, labels whole numbers 0 .. classes - 1 (strings, fractions and negative
labels are refused), train and test examples of one shape.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np

from chaosgd.datasets.base import DataNotFoundError, Dataset
from chaosgd.errors import ChaosgdError

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


class DataError(ChaosgdError, ValueError):
    """User data that cannot be trained on as given; the message says which array, what is wrong and what is
    allowed."""


def as_dataset(train, test, *, label: str | None = None, name: str = "user", n_classes: int | None = None) -> Dataset:
    """A ``Dataset`` from a training and a test set, each one of:

    - a pair ``(x, y)`` of NumPy arrays, torch tensors or anything ``numpy.asarray`` reads;
    - a torch ``TensorDataset`` of two tensors (inputs, labels);
    - a pandas ``DataFrame`` whose column ``label`` holds the labels and whose other columns are the features.

    ``n_classes`` defaults to the largest label + 1 over both sets. Inputs become float64 (the model's dtype is
    applied later, ``Dataset.arrays``); images are ``(n, height, width, channels)`` for chaosgd's CNN.
    """
    if _is_frame(train) and _is_frame(test) and set(train.columns) == set(test.columns):
        test = test[list(train.columns)]  # features matched by name, not by position
    x_train, y_train = _split(train, "train", label)
    x_test, y_test = _split(test, "test", label)
    return from_arrays(x_train, y_train, x_test, y_test, name=name, n_classes=n_classes)


def _is_frame(part) -> bool:
    return hasattr(part, "columns") and hasattr(part, "drop")


def from_arrays(x_train, y_train, x_test, y_test, *, name: str = "user", n_classes: int | None = None) -> Dataset:
    """A ``Dataset`` from four arrays (NumPy, torch tensors, lists), checked (see the module's docstring)."""
    x_train, x_test = _inputs(x_train, "x_train"), _inputs(x_test, "x_test")
    y_train, y_test = _labels(y_train, "y_train"), _labels(y_test, "y_test")
    for x, y, which in ((x_train, y_train, "train"), (x_test, y_test, "test")):
        if len(x) != len(y):
            raise DataError(f"x_{which} holds {len(x)} examples but y_{which} {len(y)} labels; they must match")
        if len(x) == 0:
            raise DataError(f"the {which} set is empty")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(f"train examples have shape {x_train.shape[1:]} but test examples {x_test.shape[1:]}; "
                        "they must be the same")
    largest = int(max(y_train.max(), y_test.max()))
    if n_classes is None:
        present = np.union1d(y_train, y_test)
        n_absent = largest + 1 - present.size
        if n_absent:  # (they would count as classes: chance accuracy and the model's outputs would be wrong)
            # The first absent labels lie below present.size + 8: never a list as long as the largest label.
            first = np.setdiff1d(np.arange(min(largest + 1, present.size + 8)), present)[:8].tolist()
            some = ", ".join(map(str, first)) + (f", ... ({n_absent} in all)" if n_absent > len(first) else "")
            raise DataError(f"labels go up to {largest} but class(es) {some} have no example: labels must "
                            "be 0, 1, ..., classes - 1 (remap them: numpy.unique(y, return_inverse=True)), or give "
                            "n_classes= if some classes are really absent")
        n_classes = largest + 1
    elif (isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or largest >= n_classes):
        raise DataError(f"n_classes must be an integer above every label (the largest is {largest}); got "
                        f"{n_classes!r}")
    if n_classes < 2:
        raise DataError(f"every label is {largest}: classification needs at least two classes")
    return Dataset(name, x_train, y_train, x_test, y_test, int(n_classes))


def load_npz(path, *, sha256: str | None = None) -> Dataset:
    """The data set in a ``.npz`` file holding ``x_train, y_train, x_test, y_test`` (``numpy.savez``).

    ``sha256``: the file's expected digest (``file_sha256``); a file that no longer matches is refused, so a run is
    never resumed on other data. Pickled (object) arrays are refused rather than unpickled.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataNotFoundError(f"{path}: no such file (data.name = 'npz' needs data.path = a .npz file holding "
                                f"{', '.join(NPZ_KEYS)}, e.g. from numpy.savez)")
    if sha256 is not None and file_sha256(path) != sha256:
        raise DataError(f"{path} has changed: its SHA-256 is {file_sha256(path)}, the run was made with {sha256} "
                        "(data.sha256); restore the file, or start a new run folder for the new data")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path} is not a readable .npz file (numpy.savez writes a zip archive of .npy arrays)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in NPZ_KEYS if k not in npz.files]
            if missing:
                raise DataError(f"{path} lacks {', '.join(missing)}; it holds {', '.join(npz.files) or 'nothing'} "
                                f"(needed: {', '.join(NPZ_KEYS)})")
            arrays = {k: npz[k] for k in NPZ_KEYS}
    except DataError:
        raise
    except ValueError as error:  # pickled object arrays
        raise DataError(f"{path}: {error} (save plain numeric arrays)") from None
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise DataError(f"{path} is not a readable .npz file ({error})") from None
    try:
        return from_arrays(**arrays, name=path.stem)
    except DataError as error:
        raise DataError(f"{path}: {error}") from None


def file_sha256(path) -> str:
    """SHA-256 of a file's bytes, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _split(part, which: str, label: str | None):
    """(x, y) of one set given in any of ``as_dataset``'s forms."""
    if _is_frame(part):  # a pandas DataFrame
        if label is None or label not in part.columns:
            raise DataError(f"the {which} frame needs label= naming its label column; columns: "
                            f"{', '.join(map(str, part.columns))}")
        features = part.drop(columns=[label])
        from pandas.api.types import is_numeric_dtype
        text = [c for c in features.columns if not is_numeric_dtype(features[c])]
        if text:
            raise DataError(f"the {which} frame's columns {', '.join(map(str, text))} are not numeric; encode them "
                            "as numbers (or drop them) first")
        return features.to_numpy(dtype=np.float64), part[label].to_numpy()
    if hasattr(part, "tensors"):  # a torch TensorDataset
        if len(part.tensors) != 2:
            raise DataError(f"the {which} TensorDataset holds {len(part.tensors)} tensors; it must hold two "
                            "(inputs, labels)")
        return part.tensors
    if isinstance(part, (tuple, list)) and len(part) == 2:
        return part
    raise DataError(f"the {which} set must be a pair (x, y), a torch TensorDataset or a pandas DataFrame with "
                    f"label=; got {type(part).__name__}")


def _numpy(values, what: str) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor
        values = values.detach().cpu().numpy()
    try:
        return np.asarray(values)
    except (TypeError, ValueError) as error:
        raise DataError(f"{what} is not an array ({error})") from None


def _inputs(values, what: str) -> np.ndarray:
    x = _numpy(values, what)
    if x.dtype.kind not in "biuf":
        raise DataError(f"{what} must hold numbers; got dtype {x.dtype}")
    if x.ndim < 2:
        raise DataError(f"{what} must have shape (examples, features...); got shape {x.shape}")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        bad = np.argwhere(~np.isfinite(x))[0]
        raise DataError(f"{what} holds a value that is not finite (NaN or inf), e.g. at index {tuple(bad.tolist())}")
    return x


def _labels(values, what: str) -> np.ndarray:
    y = _numpy(values, what)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{what} must be one class label per example, shape (examples,); got shape {y.shape} "
                        "(one-hot labels: take argmax first)")
    if y.dtype.kind == "f" and len(y) and np.isfinite(y).all() and (y == np.round(y)).all():
        if np.abs(y).max() >= 2 ** 62:
            raise DataError(f"{what} holds the label {np.abs(y).max():g}, too large for a class index; labels must "
                            "be 0, 1, ..., classes - 1")
        y = y.astype(np.int64)  # whole numbers stored as floats
    if y.dtype.kind not in "iu":
        raise DataError(f"{what} must hold whole-number class labels 0, 1, ...; got dtype {y.dtype}"
                        + (" with values that are not whole numbers" if y.dtype.kind == "f" else
                           " (map the classes to 0, 1, ... first)"))
    if len(y) and y.min() < 0:
        raise DataError(f"{what} holds the negative label {int(y.min())}; labels must be 0, 1, ..., classes - 1")
    return y.astype(np.int64)
