"""Recipe datasets: one .npz per dataset, one array per model input (by name) plus optional `labels`.

Samples lie along the first axis of every array and are fed one at a time: as a batch of one
(`array[i:i+1]`: `[N, 32]` for an input `[batch, 32]`), or, for an input whose first dim is not
symbolic, row by row (`array[i]`) when the array has one axis more than the input (`[N, 32]` for an
input `[32]` without a batch dim, `[N, 4, 32]` for a fixed `[4, 32]`). `inspect()` reads shapes and dtypes from the .npy headers inside the zip without
loading any array, so plan-time checks stay cheap even for large calibration sets.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

if TYPE_CHECKING:
    import numpy as np

LABELS = "labels"


def inspect(path: str | Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """Array name -> (shape, dtype name) for every array of the .npz at `path`, sorted by name.

    Raises FileNotFoundError when the file does not exist and ValueError when it is not an .npz
    of .npy arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(str(path))
    out: dict[str, tuple[tuple[int, ...], str]] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if info.is_dir():
                    continue
                name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                with zf.open(info) as fp:
                    out[name] = _read_header(fp)
    except zipfile.BadZipFile:
        raise ValueError("not a zip archive (an .npz written by numpy.savez)") from None
    return dict(sorted(out.items()))


# .npy dtype descriptors (kind + item size, byte order stripped) -> the dtype names recipes use
_DESCR = {"f2": "float16", "f4": "float32", "f8": "float64", "i1": "int8", "i2": "int16", "i4": "int32",
          "i8": "int64", "u1": "uint8", "u2": "uint16", "u4": "uint32", "u8": "uint64", "b1": "bool"}


def _read_header(fp: Any) -> tuple[tuple[int, ...], str]:
    """Shape and dtype name from a .npy header (format 1.0, 2.0 or 3.0), read with the standard library:
    planning must not pay for importing numpy."""
    import ast
    import struct

    try:
        magic = fp.read(8)
        if magic[:6] != b"\x93NUMPY":
            raise ValueError("no .npy magic")
        major = magic[6]
        (length,) = struct.unpack("<H" if major == 1 else "<I", fp.read(2 if major == 1 else 4))
        if major not in (1, 2, 3):
            raise ValueError(f"unknown .npy format version {major}.{magic[7]}")
        header = ast.literal_eval(fp.read(length).decode("latin1" if major < 3 else "utf-8"))
        descr = header["descr"]
        name = _DESCR.get(descr.lstrip("<>|=")) if isinstance(descr, str) else None
        return tuple(int(d) for d in header["shape"]), name or str(descr)
    except (ValueError, SyntaxError, KeyError, TypeError, struct.error) as exc:
        raise ValueError(f"an entry is not a .npy array ({exc})") from None


def count(path: str | Path, input_names: Sequence[str]) -> int:
    """Number of samples the dataset holds for these inputs (the shortest array's first dim)."""
    arrays = inspect(path)
    return min((arrays[n][0][0] if arrays[n][0] else 0) for n in input_names) if input_names else 0


def sample_shape(array_shape: Sequence[int], input_shape: Sequence[Any] | None) -> tuple[int, ...]:
    """The shape of one sample fed from an array of this shape to an input of this shape (see above)."""
    return tuple(array_shape[1:]) if _by_row(len(array_shape), input_shape) else (1, *array_shape[1:])


def _by_row(array_rank: int, input_shape: Sequence[Any] | None) -> bool:
    if input_shape is None or array_rank != len(input_shape) + 1:
        return False
    return not (input_shape and isinstance(input_shape[0], str))   # a symbolic first dim is the batch


def feeds(path: str | Path, inputs: Sequence[str] | Mapping[str, Any], limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Yield each sample as {input name: array[i:i+1] or array[i]}, the first `limit` samples (all when None).

    `inputs` names the model inputs, or maps them to their specs ({"shape": [...]}, as in a recipe's
    `model.inputs`): with the shape known, an array with one axis more than an input without a
    symbolic first dim is fed row by row.
    Each named array is read once, when the iterator starts; a name the .npz lacks is a KeyError
    naming what the file has.
    """
    import numpy as np

    names = list(inputs)
    shapes = {n: _shape(inputs[n]) for n in names} if isinstance(inputs, Mapping) else {}
    with np.load(Path(path), allow_pickle=False) as npz:
        missing = [n for n in names if n not in npz.files]
        if missing:
            raise KeyError(f"dataset {Path(path).name} has no array for input(s) {', '.join(missing)} "
                           f"(it has: {', '.join(sorted(npz.files)) or 'no arrays'})")
        arrays = {n: npz[n] for n in names}
    n = min((a.shape[0] if a.ndim else 0) for a in arrays.values()) if arrays else 0
    if limit is not None:
        n = min(n, max(int(limit), 0))
    rows = {name: _by_row(a.ndim, shapes.get(name)) for name, a in arrays.items()}
    for i in range(n):
        yield {name: np.ascontiguousarray(a[i] if rows[name] else a[i:i + 1]) for name, a in arrays.items()}


def _shape(spec: Any) -> list[Any] | None:
    shape = spec.get("shape") if isinstance(spec, Mapping) else spec
    return list(shape) if isinstance(shape, (list, tuple)) else None


def nan_problem(path: str | Path, input_names: Sequence[str]) -> str | None:
    """What is wrong when a float input array holds NaN (a calibrator or a metric would fail obscurely), or None."""
    import numpy as np

    with np.load(Path(path), allow_pickle=False) as npz:
        for name in input_names:
            if name in npz.files and npz[name].dtype.kind == "f":
                bad = np.isnan(npz[name].reshape(npz[name].shape[0], -1) if npz[name].ndim else npz[name])
                if bad.any():
                    rows = bad.any(axis=1) if bad.ndim > 1 else bad
                    return (f"array '{name}' of {Path(path).name} holds NaN values ({int(rows.sum())} of "
                            f"{rows.size} samples, the first at index {int(np.argmax(rows))})")
    return None


def load_labels(path: str | Path) -> np.ndarray | None:
    """The dataset's `labels` array, or None when it has none."""
    import numpy as np

    with np.load(Path(path), allow_pickle=False) as npz:
        return npz[LABELS] if LABELS in npz.files else None
