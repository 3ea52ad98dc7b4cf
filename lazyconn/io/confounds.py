"""Loading confound regressors: arrays, DataFrames, TSV/CSV files (local or fsspec URLs), lists.

Follows nilearn's ``signal.sanitize_confounds``, with two documented differences:

* ``n/a`` in the **first row** of a column (fMRIPrep writes it in derivative columns and
  ``framewise_displacement``) is replaced by that column's second-row value, exactly as
  ``nilearn.interfaces.fmriprep.load_confounds`` does. nilearn's ``signal.clean`` would
  fail on such a table ("array must not contain infs or NaNs").
* Any other NaN or infinite value is an error naming the column and the row, instead of
  a failure deep inside the QR decomposition.
"""

from __future__ import annotations

import csv
import io

import numpy as np
import pandas as pd

from lazyconn._utils import is_path_like
from lazyconn.exceptions import (
    DimensionError,
    InputFileError,
    InputNotFoundError,
    ParameterError,
    ParameterTypeError,
)

_MISSING_TOKENS = {"", "n/a", "na", "nan", "none", "null"}


def _open_text(path, storage_options, what="confounds file"):
    import fsspec

    try:
        with fsspec.open(str(path), mode="rt", **(storage_options or {})) as handle:
            return handle.read()
    except FileNotFoundError as exc:
        raise InputNotFoundError(f"{what} {str(path)!r} does not exist.") from exc
    except UnicodeDecodeError as exc:
        raise InputFileError(f"{what} {str(path)!r} is not a text file: {exc}") from exc


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def read_confounds_file(path, *, storage_options=None) -> tuple[np.ndarray, list[str]]:
    """Read a TSV/CSV (or whitespace-separated) confounds table, with an optional header.

    Parameters
    ----------
    path : str or os.PathLike
        Local path or fsspec URL (``s3://...``, ``file://...``).
    storage_options : dict, optional
        Passed to :func:`fsspec.open` (credentials, endpoint...).

    Returns
    -------
    values : ndarray of float64, shape (n_rows, n_columns)
        ``n/a`` and empty cells are NaN (fill/validate with :func:`sanitize_confounds`).
    names : list of str
        Column names from the header, else ``"column <j>"``.

    Notes
    -----
    Like nilearn's ``csv_to_array``, the delimiter is a tab, comma, semicolon or
    whitespace. The header is detected from the first line: it is a header if one of its
    fields is neither a number nor a missing-value token (nilearn instead treats the first
    line as a header whenever its first value reads as NaN, which silently drops a data row
    from a header-less fMRIPrep-like file).
    """
    text = _open_text(path, storage_options)
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise InputFileError(f"confounds file {str(path)!r} is empty.")
    first = lines[0]
    try:
        delimiter = csv.Sniffer().sniff(first, "\t,;").delimiter
    except csv.Error:
        delimiter = None  # whitespace
    if delimiter is not None and delimiter not in first:
        delimiter = None
    fields = [
        f.strip().strip('"') for f in (first.split(delimiter) if delimiter else first.split())
    ]
    has_header = any(not _is_number(f) and f.lower() not in _MISSING_TOKENS for f in fields)
    body = lines[1:] if has_header else lines
    try:
        with np.errstate(invalid="ignore"):
            values = np.genfromtxt(
                io.StringIO("\n".join(body)),
                delimiter=delimiter,
                dtype=np.float64,
                invalid_raise=True,
                ndmin=2,
            )
    except ValueError as exc:
        raise InputFileError(
            f"confounds file {str(path)!r} could not be read as a table of numbers "
            f"(delimiter {delimiter or 'whitespace'!r}): {exc}"
        ) from exc
    if values.size == 0:
        raise InputFileError(f"confounds file {str(path)!r} has a header but no rows.")
    if has_header and len(fields) != values.shape[1]:
        # pandas (nilearn) would take the extra columns for an index and shift the names.
        raise InputFileError(
            f"confounds file {str(path)!r} has {len(fields)} names in its header but "
            f"{values.shape[1]} columns of values; expected one name per column."
        )
    names = fields if has_header else [f"column {j}" for j in range(values.shape[1])]
    return values, names


def read_confounds_frame(path, *, storage_options=None) -> pd.DataFrame:
    """Read a tab-separated confounds table with a header (fMRIPrep's) as a DataFrame.

    ``n/a`` and empty cells are NaN; columns keep the file's order and names. Local paths
    or fsspec URLs. Used by :mod:`lazyconn.interfaces.fmriprep`.
    """
    text = _open_text(path, storage_options)
    if not text.strip():
        raise InputFileError(f"confounds file {str(path)!r} is empty.")
    try:
        return pd.read_csv(io.StringIO(text), sep="\t", na_values=["n/a"])
    except (ValueError, pd.errors.ParserError) as exc:
        raise InputFileError(
            f"confounds file {str(path)!r} could not be read as a tab-separated table: {exc}"
        ) from exc


def read_json_sidecar(path, *, storage_options=None) -> dict:
    """Read a JSON sidecar (e.g. fMRIPrep's ``*_desc-confounds_timeseries.json``)."""
    import json

    text = _open_text(path, storage_options, what="JSON sidecar")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InputFileError(f"JSON sidecar {str(path)!r} is not valid JSON: {exc}") from exc


def _as_table(confound, where: str, storage_options) -> tuple[np.ndarray, list[str]]:
    """One confound input -> (float64 2-D array, column names)."""
    if isinstance(confound, pd.DataFrame):
        try:
            values = confound.to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError) as exc:
            bad = [c for c in confound.columns if not pd.api.types.is_numeric_dtype(confound[c])]
            raise ParameterTypeError(
                f"{where} is a DataFrame with non-numeric column(s) {bad!r}; expected numeric "
                "confound regressors only."
            ) from exc
        return values, [str(c) for c in confound.columns]
    if is_path_like(confound):
        return read_confounds_file(confound, storage_options=storage_options)
    if isinstance(confound, np.ndarray):
        if confound.ndim == 1:
            confound = confound[:, np.newaxis]
        elif confound.ndim != 2:
            raise DimensionError(
                f"{where} is an array of shape {confound.shape}; expected 1-D (one "
                "regressor) or 2-D (time points x regressors)."
            )
        if confound.dtype.kind not in "fiub":
            raise ParameterTypeError(
                f"{where} has dtype {confound.dtype}; expected a numeric array."
            )
        return confound.astype(np.float64), [f"column {j}" for j in range(confound.shape[1])]
    raise ParameterTypeError(
        f"{where}={confound!r} has type {type(confound).__name__}; expected a numpy array, a "
        "pandas DataFrame, a path or URL to a TSV/CSV file, or a list of those."
    )


def fill_first_row(values: np.ndarray) -> np.ndarray:
    """Replace NaN in row 0 by the row-1 value (nilearn ``load_confounds``'s fix for fMRIPrep)."""
    if values.shape[0] < 2:
        return values
    first_nan = np.isnan(values[0])
    if first_nan.any():
        values = values.copy()
        values[0, first_nan] = values[1, first_nan]
    return values


def _check_finite(values: np.ndarray, names: list[str], where: str) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        n_bad = int(bad.sum())
        raise ParameterError(
            f"{where} column {names[col]!r} has a non-finite value ({float(values[row, col])!r}) at "
            f"row {row} ({n_bad} non-finite value(s) in total). Only n/a in the first row is "
            "filled (with the second-row value, as nilearn's load_confounds does); fill or "
            "drop the other missing values before cleaning."
        )


def sanitize_confounds(confounds, n_samples: int, *, storage_options=None) -> np.ndarray | None:
    """Turn any confounds input into one float64 (n_samples, n_regressors) array.

    Parameters
    ----------
    confounds : None, ndarray, pandas.DataFrame, str, os.PathLike, or list/tuple of those
        A list is stacked horizontally in order (as nilearn does).
    n_samples : int
        Number of volumes of the signals; every input must have this many rows.
    storage_options : dict, optional
        fsspec options for URLs.

    Returns
    -------
    ndarray of float64 or None
    """
    if confounds is None:
        return None
    items = list(confounds) if isinstance(confounds, (list, tuple)) else [confounds]
    if not items:
        raise ParameterError("confounds=[] is empty; expected None or at least one confound.")
    arrays = []
    for i, item in enumerate(items):
        where = (
            "confounds"
            if len(items) == 1 and not isinstance(confounds, (list, tuple))
            else f"confounds[{i}]"
        )
        if isinstance(item, (list, tuple)):
            raise ParameterTypeError(
                f"{where} is a nested {type(item).__name__}; expected a numpy array, a "
                "DataFrame or a path (lists of confounds cannot be nested)."
            )
        values, names = _as_table(item, where, storage_options)
        if values.shape[0] != n_samples:
            raise ParameterError(
                f"{where} has {values.shape[0]} rows but the signals have {n_samples} time "
                "points; expected one confound row per volume."
            )
        values = fill_first_row(values)
        _check_finite(values, names, where)
        arrays.append(values)
    return np.hstack(arrays)


__all__ = [
    "fill_first_row",
    "read_confounds_file",
    "read_confounds_frame",
    "read_json_sidecar",
    "sanitize_confounds",
]
