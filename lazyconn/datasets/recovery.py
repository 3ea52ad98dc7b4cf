"""How well extracted regions and a group connectome recover a synthetic study's planted truth.

Used by the region-extraction example, ``lazyconn demo --workflow regions`` and the seed-001
benchmark, for lazyconn's results and nilearn's alike (inputs are plain images and arrays).
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
from sklearn.utils import Bunch

from lazyconn.exceptions import ParameterError
from lazyconn.image import load
from lazyconn.image.resampling import on_grid_of

__all__ = ["connectome_recovery", "match_regions"]


def _in_memory(img) -> bool:
    return isinstance(img, nib.spatialimages.SpatialImage) and isinstance(img.dataobj, np.ndarray)


def _image(img):
    """``img`` itself if it is an in-memory nibabel image (only read here: lazyconn.load
    would copy its array into dask chunks), else loaded."""
    return img if _in_memory(img) else load(img)


def _data(img):
    return np.asarray(img.dataobj) if _in_memory(img) else np.asarray(img.data.compute())


def match_regions(regions_img, labels_img):
    """Match each planted region to the extracted region that overlaps it best (Dice).

    Parameters
    ----------
    regions_img : 4-D image, one extracted region per volume (support = non-zero voxels),
        e.g. ``RegionExtractor().regions_img_``.
    labels_img : 3-D image of the planted regions (0 background, 1..n), e.g.
        ``make_synthetic_fmri().labels_img``. Resampled (nearest) onto the regions' grid
        if needed.

    Returns
    -------
    Bunch with
        - ``dice``: (n_planted,) best Dice coefficient of each planted region;
        - ``match``: (n_planted,) index of that extracted region (-1 if none overlaps);
        - ``dice_matrix``: (n_planted, n_extracted) all Dice coefficients;
        - ``mean_dice``: mean of ``dice`` over the planted regions.
    """
    regions = _image(regions_img)
    if regions.ndim != 4:
        raise ParameterError(
            f"regions_img has shape {regions.shape}; expected a 4-D image (one region per volume)."
        )
    labels = on_grid_of(_image(labels_img), regions)
    support = _data(regions) != 0
    ldata = np.rint(_data(labels)).astype(np.int64)
    n_planted = int(ldata.max())
    if n_planted < 1:
        raise ParameterError("labels_img has no planted region (every voxel is 0).")
    # voxel counts by label (0: background or a non-positive value): per extracted region
    # for the overlaps, without (voxels x regions) one-hot matrices (~35 MB for seed-001's
    # 21 regions: the benchmark's peak was here, after the pipeline)
    lab = np.where(ldata > 0, ldata, 0).ravel()
    n_extracted = support.shape[-1]
    inter = np.zeros((n_planted, n_extracted), dtype=np.int64)
    for r in range(n_extracted):
        inter[:, r] = np.bincount(lab[support[..., r].ravel()], minlength=n_planted + 1)[1:]
    planted_sizes = np.bincount(lab, minlength=n_planted + 1)[1:]
    region_sizes = support.reshape(-1, n_extracted).sum(0)
    sizes = planted_sizes[:, None] + region_sizes[None, :]
    dice = np.divide(2.0 * inter, sizes, out=np.zeros(inter.shape), where=sizes > 0)
    if dice.shape[1]:
        match = np.where(dice.max(1) > 0, dice.argmax(1), -1)
        best = dice.max(1)
    else:
        match = np.full(n_planted, -1)
        best = np.zeros(n_planted)
    return Bunch(dice=best, match=match, dice_matrix=dice, mean_dice=float(best.mean()))


def connectome_recovery(matrix, match, truth):
    """Correlation between a connectome of extracted regions and the planted one.

    Each planted region is represented by its matched extracted region (``match`` from
    :func:`match_regions`); over the pairs of planted regions matched to two different
    extracted regions, the off-diagonal entries of ``matrix`` are compared with ``truth``.

    Parameters
    ----------
    matrix : (n_extracted, n_extracted) array, e.g. the group mean correlation
    match : (n_planted,) int array, extracted region of each planted region (-1: none)
    truth : (n_planted, n_planted) array, the planted correlation

    Returns
    -------
    Bunch with ``r`` (Pearson correlation of the compared entries), ``mae`` (mean absolute
    difference), ``n_pairs`` (entries compared) and ``coverage`` (fraction of planted
    regions matched).
    """
    matrix, truth, match = np.asarray(matrix), np.asarray(truth), np.asarray(match)
    if truth.shape != (match.size, match.size):
        raise ParameterError(
            f"truth has shape {truth.shape} but match has {match.size} entries; expected a "
            "square matrix with one row per planted region."
        )
    i, j = np.triu_indices(match.size, k=1)
    ok = (match[i] >= 0) & (match[j] >= 0) & (match[i] != match[j])
    i, j = i[ok], j[ok]
    got = matrix[match[i], match[j]]
    want = truth[i, j]
    r = float(np.corrcoef(got, want)[0, 1]) if got.size > 2 and np.std(got) > 0 else float("nan")
    return Bunch(
        r=r,
        mae=float(np.mean(np.abs(got - want))) if got.size else float("nan"),
        n_pairs=int(got.size),
        coverage=float(np.mean(match >= 0)),
    )
