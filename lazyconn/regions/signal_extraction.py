"""Region signals from images and back (nilearn's ``regions.signal_extraction`` functions).

``img_to_signals_*`` run lazyconn's maskers without cleaning and without resampling (as
nilearn's functions do no resampling): each run is read once, chunk by chunk, and the
region sums / least-squares products are accumulated in float64. ``signals_to_img_*`` build
the (small or moderate) image in memory, as nilearn does.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np

from lazyconn._utils import check_in, warn
from lazyconn.exceptions import GridMismatchError, ParameterError
from lazyconn.image import load
from lazyconn.image._niimg import load_3d, load_4d
from lazyconn.maskers import NiftiLabelsMasker, NiftiMapsMasker
from lazyconn.ops import spatial

__all__ = [
    "img_to_signals_labels",
    "img_to_signals_maps",
    "signals_to_img_labels",
    "signals_to_img_maps",
]

#: nilearn's affine tolerance in these functions
_AFFINE_TOL = 1000 * np.finfo(np.float32).eps


def _check_grid(img, other, name, other_name):
    """nilearn's shape + affine check (no resampling in these functions)."""
    if tuple(img.shape[:3]) != tuple(other.shape[:3]) or (
        np.abs(np.asarray(img.affine) - np.asarray(other.affine)).max() > _AFFINE_TOL
    ):
        raise GridMismatchError(
            f"{name} (shape {tuple(img.shape[:3])}) and {other_name} (shape "
            f"{tuple(other.shape[:3])}) are not on the same voxel grid (shape and affine); "
            "these functions do not resample: expected images on one grid (resample with "
            "lazyconn.image.resample_to_img, or use a masker, which resamples)."
        )


def _result(out, compute, order):
    return np.asarray(out.compute(), order=order) if compute else out


def img_to_signals_labels(
    imgs,
    labels_img,
    mask_img=None,
    background_label=0,
    order="F",
    strategy="mean",
    keep_masked_labels=False,
    return_masked_atlas=True,
    n_jobs=1,
    *,
    compute=True,
):
    """Signal of each labelled region of a 4-D image (mean by default).

    Same parameters and results as ``nilearn.regions.img_to_signals_labels``: no
    resampling (images, labels and mask must share a grid), NaN/inf -> 0, one column per
    label in ascending order (``background_label`` excluded; labels outside the mask are
    dropped with a warning, or kept as zero columns with ``keep_masked_labels``). nilearn's
    "Non-finite values detected" about the run is not emitted (it would read the run early).

    Parameters
    ----------
    imgs : 4-D image (path, nibabel image, LazyImage) or list of 3-D images
    labels_img : 3-D labels image
    mask_img : 3-D image or None
        Labelled voxels outside it become background.
    background_label : number, default=0
    order : {"F", "C"}, default="F"
        Memory order of the returned array.
    strategy : {"mean", "median", "sum", "minimum", "maximum", "standard_deviation", \
"variance"}, default="mean"
    keep_masked_labels : bool, default=False
    return_masked_atlas : bool, default=True
        Also return the labels image after masking (int32).
    n_jobs : int, default=1
        Accepted and ignored (dask schedules the work).
    compute : bool, default=True
        lazyconn only: False returns the signals as a lazy dask array.

    Returns
    -------
    signals : (n_scans, n_labels) array (float32 for float32 data, else float64)
    labels : list, the label of each column
    masked_atlas : nibabel int32 image (if ``return_masked_atlas``)
    """
    del n_jobs
    check_in("order", order, ("F", "C"))
    imgs = load_4d(imgs, "imgs")
    labels = load_3d(labels_img, "labels_img")
    _check_grid(imgs, labels, "imgs", "labels_img")
    if mask_img is not None:
        _check_grid(imgs, load_3d(mask_img, "mask_img"), "imgs", "mask_img")
    masker = NiftiLabelsMasker(
        labels,
        background_label=background_label,
        mask_img=mask_img,
        strategy=strategy,
        keep_masked_labels=keep_masked_labels,
        resampling_target=None,
    )
    out = masker.fit(imgs).transform(imgs, compute=False)
    ids = masker.region_ids_
    region_labels = [ids[k] for k in range(masker.n_elements_)]
    signals = _result(out, compute, order)
    if not return_masked_atlas:
        warn(
            'In version 0.15, "return_masked_atlas" parameter will be removed and the masked '
            'atlas will always be returned. Set "return_masked_atlas" to True to avoid this '
            "warning.",
            FutureWarning,
        )
        return signals, region_labels
    ldata = np.asarray(masker.labels_img_.dataobj)
    if mask_img is not None:
        mask = np.asarray(masker.mask_img_.dataobj).astype(bool)
        ldata = np.where(mask, ldata, background_label)
    return signals, region_labels, nib.Nifti1Image(ldata.astype(np.int32), labels.affine)


def _maps_data(maps_img):
    maps = load(maps_img) if not isinstance(maps_img, (list, tuple)) else load_4d(maps_img)
    maps = load_4d(maps, "maps_img")
    return maps, spatial.ensure_finite(np.asarray(maps.data.compute()))


def _trim_maps(mdata, mask, keep_empty):
    """Maps zeroed outside the mask, the union of their supports, the kept map indices."""
    sums = np.abs(mdata[mask]).sum(axis=0)
    keep = np.arange(mdata.shape[-1]) if keep_empty else np.flatnonzero(sums > 0)
    trimmed = np.where(mask[..., None], mdata, 0)[..., keep]
    return trimmed, np.any(trimmed != 0, axis=-1), keep


def img_to_signals_maps(imgs, maps_img, mask_img=None, keep_masked_maps=False, *, compute=True):
    """Signals of regions given as maps: least-squares fit of each volume on the maps.

    Same parameters and results as ``nilearn.regions.img_to_signals_maps`` (no
    resampling). nilearn solves ``lstsq(maps[V], data[V])`` on every selected voxel;
    lazyconn accumulates ``mapsᵀ · data`` over the run's chunks in one pass and solves the
    small normal equations with the same minimum-norm least-squares solution (see
    :class:`~lazyconn.maskers.NiftiMapsMasker`): rounding-level differences. nilearn's
    "Non-finite values detected" about the run is not emitted (it would read the run early).

    Parameters
    ----------
    imgs : 4-D image or list of 3-D images
    maps_img : 4-D image of maps, on the grid of ``imgs``
    mask_img : 3-D image or None
        Maps are restricted to it; maps left empty are dropped with a warning unless
        ``keep_masked_maps``.
    keep_masked_maps : bool, default=False
    compute : bool, default=True
        lazyconn only: False returns the signals as a lazy dask array.

    Returns
    -------
    region_signals : (n_scans, n_maps_kept) array
    labels : list of int, the map index of each column
    """
    imgs = load_4d(imgs, "imgs")
    maps, mdata = _maps_data(maps_img)
    _check_grid(imgs, maps, "imgs", "maps_img")
    keep = list(range(mdata.shape[-1]))
    if mask_img is not None:
        mask = load_3d(mask_img, "mask_img")
        _check_grid(imgs, mask, "imgs", "mask_img")
        mask = np.asarray(mask.data.compute()) != 0
        keep = _trim_maps(mdata, mask, keep_masked_maps)[2].tolist()
    masker = NiftiMapsMasker(
        nib.Nifti1Image(mdata, maps.affine),
        mask_img=mask_img,
        keep_masked_maps=keep_masked_maps,
        resampling_target=None,
    )
    out = masker.fit(imgs).transform(imgs, compute=False)
    return _result(out, compute, "C"), keep


def signals_to_img_labels(signals, labels_img, mask_img=None, background_label=0, order="F"):
    """Image where each labelled voxel holds its region's signal (nilearn's function).

    Parameters
    ----------
    signals : (n_scans, n_labels) or (n_labels,) array
        One column per label left after masking, in ascending label order.
    labels_img : 3-D labels image
    mask_img : 3-D image or None, on the grid of ``labels_img``
    background_label : number, default=0
    order : {"F", "C"}, default="F"

    Returns
    -------
    nibabel image (4-D, or 3-D for 1-D signals) with the dtype of ``signals``.
    """
    check_in("order", order, ("F", "C"))
    labels = load_3d(labels_img, "labels_img")
    ldata = spatial.ensure_finite(np.asarray(labels.data.compute()))
    if mask_img is not None:
        mask = load_3d(mask_img, "mask_img")
        _check_grid(labels, mask, "labels_img", "mask_img")
        mask = np.asarray(mask.data.compute()) != 0
        before = set(np.unique(ldata).tolist())
        ldata = np.where(mask, ldata, background_label)
        after = set(np.unique(ldata).tolist())
        if before - after:
            if len(after) == 1:
                raise ParameterError("No label left after applying mask to the labels image.")
            warn(
                f"After applying mask to the labels image, the following labels were removed: "
                f"{before - after}. Out of {len(before)} labels, the masked labels image only "
                f"contains {len(after)} labels (including background)."
            )
    values = [v for v in np.unique(ldata).tolist() if v != background_label]
    signals = np.asarray(signals)
    if signals.ndim not in (1, 2) or signals.shape[-1] != len(values):
        raise ParameterError(
            f"signals has shape {signals.shape}; expected (n_scans, {len(values)}) or "
            f"({len(values)},): one column per label of labels_img (after masking)."
        )
    shape = ldata.shape + ((signals.shape[0],) if signals.ndim == 2 else ())
    data = np.zeros(shape, dtype=signals.dtype, order=order)
    for k, value in enumerate(values):
        data[ldata == value] = signals[..., k]
    return nib.Nifti1Image(data, labels.affine)


def signals_to_img_maps(region_signals, maps_img, mask_img=None):
    """Image ``signals · mapsᵀ`` (nilearn's ``signals_to_img_maps``).

    Parameters
    ----------
    region_signals : (n_scans, n_maps) or (n_maps,) array
    maps_img : 4-D image of maps
    mask_img : 3-D image or None, on the grid of ``maps_img``; maps are zeroed outside

    Returns
    -------
    nibabel image (4-D, or 3-D for 1-D signals), affine and shape of ``maps_img``.
    """
    maps, mdata = _maps_data(maps_img)
    support = np.ones(mdata.shape[:3], dtype=bool)
    if mask_img is not None:
        mask = load_3d(mask_img, "mask_img")
        _check_grid(maps, mask, "maps_img", "mask_img")
        mdata, support, _ = _trim_maps(mdata, np.asarray(mask.data.compute()) != 0, True)
    x = np.asarray(region_signals)
    if x.ndim not in (1, 2) or x.shape[-1] != mdata.shape[-1]:
        raise ParameterError(
            f"region_signals has shape {x.shape}; expected (n_scans, {mdata.shape[-1]}) or "
            f"({mdata.shape[-1]},): one column per map of maps_img."
        )
    values = np.dot(x, mdata[support].T)
    shape = mdata.shape[:3] + ((x.shape[0],) if x.ndim == 2 else ())
    out = np.zeros(shape, dtype=values.dtype)
    out[support] = values.T if x.ndim == 2 else values
    return nib.Nifti1Image(out, maps.affine)
