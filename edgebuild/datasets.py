"""Recipe datasets: one .npz per dataset, one array per model input (by name) plus optional `labels`.

Samples lie along the first axis of every array and are fed one at a time as a batch of one
(`array[i:i+1]`). `inspect()` reads shapes and dtypes from the .npy headers inside the zip without
loading any array, so plan-time checks stay cheap even for large calibration sets.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from numpy.lib import format as npy_format

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
                    shape, dtype = _read_header(fp)
                out[name] = (tuple(int(d) for d in shape), _dtype_name(dtype))
    except zipfile.BadZipFile:
        raise ValueError("not a zip archive (an .npz written by numpy.savez)") from None
    return dict(sorted(out.items()))


def _read_header(fp) -> tuple[tuple[int, ...], np.dtype]:
    try:
        version = npy_format.read_magic(fp)
        if version == (1, 0):
            shape, _fortran, dtype = npy_format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, _fortran, dtype = npy_format.read_array_header_2_0(fp)
        elif version == (3, 0):
            shape, dtype = _read_header_3_0(fp)
        else:
            raise ValueError(f"unknown .npy format version {version}")
    except (ValueError, SyntaxError, KeyError, TypeError) as exc:
        raise ValueError(f"an entry is not a .npy array ({exc})") from None
    return shape, dtype


def _read_header_3_0(fp) -> tuple[tuple[int, ...], np.dtype]:
    """Format 3.0 is 2.0 with a utf-8 header (numpy has no public reader for it)."""
    import ast
    import struct

    (length,) = struct.unpack("<I", fp.read(4))
    header = ast.literal_eval(fp.read(length).decode("utf-8"))
    return tuple(header["shape"]), npy_format.descr_to_dtype(header["descr"])


def _dtype_name(dtype: np.dtype) -> str:
    return "bool" if dtype == np.bool_ else dtype.name


def count(path: str | Path, input_names: Sequence[str]) -> int:
    """Number of samples the dataset holds for these inputs (the shortest array's first dim)."""
    arrays = inspect(path)
    return min((arrays[n][0][0] if arrays[n][0] else 0) for n in input_names) if input_names else 0


def feeds(path: str | Path, input_names: Sequence[str], limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Yield each sample as {input name: array[i:i+1]}, the first `limit` samples (all when None).

    Each named array is read once, when the iterator starts; a name the .npz lacks is a KeyError
    naming what the file has.
    """
    names = list(input_names)
    with np.load(Path(path), allow_pickle=False) as npz:
        missing = [n for n in names if n not in npz.files]
        if missing:
            raise KeyError(f"dataset {Path(path).name} has no array for input(s) {', '.join(missing)} "
                           f"(it has: {', '.join(sorted(npz.files)) or 'no arrays'})")
        arrays = {n: npz[n] for n in names}
    n = min((a.shape[0] if a.ndim else 0) for a in arrays.values()) if arrays else 0
    if limit is not None:
        n = min(n, max(int(limit), 0))
    for i in range(n):
        yield {name: np.ascontiguousarray(a[i:i + 1]) for name, a in arrays.items()}


def load_labels(path: str | Path) -> np.ndarray | None:
    """The dataset's `labels` array, or None when it has none."""
    with np.load(Path(path), allow_pickle=False) as npz:
        return npz[LABELS] if LABELS in npz.files else None
