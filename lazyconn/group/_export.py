"""Group results as labelled data: subject matrices with subject and region names.

Two file formats, both readable without lazyconn:

* ``.npz`` (``numpy.load(path)``, no pickle): arrays ``matrices``, ``group_matrix``,
  ``subjects``, ``regions``, ``kind``, ``vectorize``, ``discard_diagonal`` and, for vectors,
  ``edges`` (the two region indices of every coefficient);
* ``.zarr`` (a Zarr v3 group, ``zarr.open_group(path)``): arrays ``matrices`` (one chunk per
  subject), ``group_matrix`` and ``edges``; names and parameters in the group attributes;
  ``"complete": true`` is written last, so an interrupted export never looks finished.

Both may be written to a URL (``s3://...``) with ``storage_options``.
"""

from __future__ import annotations

import io

import numpy as np
import zarr

from lazyconn.exceptions import ParameterError
from lazyconn.io._fs import atomic_local_file, check_url, get_fs, is_local, local_path, redact
from lazyconn.io.store import _zarr_store, prepare_destination

FORMAT_NAME = "lazyconn-group-matrices"
FORMAT_VERSION = 1


def edges(n_regions: int, discard_diagonal: bool) -> np.ndarray:
    """(n_coefficients, 2) region indices (row, column) in ``sym_matrix_to_vec`` order."""
    rows, cols = np.tril_indices(n_regions, k=-1 if discard_diagonal else 0)
    return np.stack([rows, cols], axis=1)


def labelled(group) -> dict:
    """Everything an export holds, as plain numpy / Python values."""
    measure = group.connectivity_
    regions = [str(r) for r in group.regions_]
    out = {
        "matrices": np.asarray(group.subject_matrices_),
        "group_matrix": np.asarray(group.group_matrix_),
        "subjects": list(group.subjects_),
        "regions": regions,
        "kind": measure.kind,
        "vectorize": bool(measure.vectorize),
        "discard_diagonal": bool(measure.vectorize and measure.discard_diagonal),
    }
    if out["vectorize"]:
        out["edges"] = edges(len(regions), out["discard_diagonal"])
    return out


def _note(data: dict) -> str:
    if not data["vectorize"]:
        return "square matrices (subject, region_row, region_col)"
    if data["discard_diagonal"]:
        return "strictly lower triangles (row > col), as nilearn's sym_matrix_to_vec"
    return (
        "lower triangles (row >= col) as nilearn's sym_matrix_to_vec: diagonal entries are "
        "divided by sqrt(2)"
    )


def to_xarray(group):
    """``subject_matrices_`` as an ``xarray.DataArray`` labelled by subject and region."""
    try:
        import xarray as xr
    except ImportError as exc:
        raise ImportError(
            "to_xarray needs the xarray package (pip install xarray); without it use "
            "export('results.npz') or export('results.zarr')."
        ) from exc
    data = labelled(group)
    attrs = {
        "kind": data["kind"],
        "vectorize": int(data["vectorize"]),
        "discard_diagonal": int(data["discard_diagonal"]),
        "layout": _note(data),
    }
    regions = np.asarray(data["regions"], dtype=object)
    if data["vectorize"]:
        rows, cols = data["edges"].T
        return xr.DataArray(
            data["matrices"],
            dims=("subject", "edge"),
            coords={
                "subject": data["subjects"],
                "edge": np.arange(rows.size),
                "region_row": ("edge", regions[rows]),
                "region_col": ("edge", regions[cols]),
            },
            name="connectivity",
            attrs=attrs,
        )
    return xr.DataArray(
        data["matrices"],
        dims=("subject", "region_row", "region_col"),
        coords={"subject": data["subjects"], "region_row": regions, "region_col": regions},
        name="connectivity",
        attrs=attrs,
    )


def export(group, path, *, storage_options=None, overwrite=False) -> str:
    """Write the labelled subject matrices to ``path`` (``.npz`` or ``.zarr``); return it."""
    path = check_url("path", path)
    base = path.rstrip("/")
    if base.endswith(".npz"):
        kind = "npz"
    elif base.endswith(".zarr"):
        kind = "zarr"
    else:
        raise ParameterError(
            f"path={redact(path)!r} has no known extension; expected a path ending in '.npz' "
            "(numpy.load) or '.zarr' (a Zarr v3 group)."
        )
    prepare_destination(path, storage_options, overwrite, name="path")
    data = labelled(group)
    if kind == "npz":
        _write_npz(path, data, storage_options)
    else:
        _write_zarr(path, data, storage_options)
    return path


def _write_npz(path: str, data: dict, storage_options) -> None:
    arrays = {
        "matrices": data["matrices"],
        "group_matrix": data["group_matrix"],
        "subjects": np.asarray(data["subjects"], dtype=str),
        "regions": np.asarray(data["regions"], dtype=str),
        "kind": np.asarray(data["kind"]),
        "vectorize": np.asarray(data["vectorize"]),
        "discard_diagonal": np.asarray(data["discard_diagonal"]),
        "format": np.asarray(f"{FORMAT_NAME} {FORMAT_VERSION}"),
    }
    if "edges" in data:
        arrays["edges"] = data["edges"]
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    if is_local(path):
        # Written beside, then renamed: a crash never leaves a truncated file under the name.
        with atomic_local_file(local_path(path)) as f:
            f.write(buffer.getvalue())
    else:
        fs, key = get_fs(path, storage_options)
        fs.pipe_file(key, buffer.getvalue())  # one PUT: an object appears whole or not at all


def _write_zarr(path: str, data: dict, storage_options) -> None:
    store = _zarr_store(path, storage_options, read_only=False)
    root = zarr.open_group(store, mode="w")
    root.attrs.update({"format": FORMAT_NAME, "version": FORMAT_VERSION, "complete": False})
    matrices = data["matrices"]
    root.create_array("matrices", data=matrices, chunks=(1, *matrices.shape[1:]))
    root.create_array("group_matrix", data=data["group_matrix"])
    if "edges" in data:
        root.create_array("edges", data=data["edges"])
    root.attrs.update(
        {
            "subjects": data["subjects"],
            "regions": data["regions"],
            "kind": data["kind"],
            "vectorize": data["vectorize"],
            "discard_diagonal": data["discard_diagonal"],
            "layout": _note(data),
        }
    )
    root.attrs["complete"] = True
