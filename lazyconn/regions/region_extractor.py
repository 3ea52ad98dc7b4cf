"""Regions from maps (RegionExtractor, connected_regions) and from labels images.

Maps and labels images are small (a few 3-D volumes), so the extraction itself runs in
memory, operation for operation as nilearn 0.14.1 does it (identical regions and
``index_``, unless two neighbouring values of a smoothed map tie within float32 rounding:
lazyconn's smoothing is BLAS products, equal to scipy's within that rounding). What stays lazy is ``RegionExtractor.transform`` over runs: it is lazyconn's
:class:`~lazyconn.maskers.NiftiMapsMasker` on the extracted regions, reading each run once
with the smoothing folded into the regions' weights.
"""

from __future__ import annotations

import collections.abc
import numbers

import nibabel as nib
import numpy as np
from scipy import ndimage

from lazyconn._utils import check_in, warn
from lazyconn.config import float_dtype_for
from lazyconn.exceptions import ParameterError, ParameterTypeError
from lazyconn.image import load, threshold_img
from lazyconn.image._niimg import load_3d, load_4d, load_mask_img
from lazyconn.image.resampling import on_grid_of
from lazyconn.maskers import NiftiMapsMasker
from lazyconn.ops import spatial
from lazyconn.ops.segmentation import peak_local_max, random_walker

__all__ = ["RegionExtractor", "connected_label_regions", "connected_regions"]

_EXTRACTORS = ("connected_components", "local_regions")
_STRATEGIES = ("ratio_n_voxels", "img_value", "percentile")


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _check_number(name, value, *, expected="a number"):
    if not _is_number(value) or not np.isfinite(value):
        raise ParameterTypeError(
            f"{name}={value!r} has type {type(value).__name__}; expected {expected}."
        )
    return value


def _smooth_map(map_3d, affine, fwhm):
    """nilearn's eager ``smooth_array`` (same kernels: values within float32 rounding)."""
    arr = np.asarray(map_3d)
    arr = arr.astype(float_dtype_for(arr.dtype), copy=True)
    arr = spatial.ensure_finite(arr)
    if _is_number(fwhm) and fwhm == 0:
        warn(
            f"The parameter 'fwhm' for smoothing is specified as {fwhm}. "
            "Setting it to None (no smoothing will be performed)"
        )
        return arr
    if fwhm is None:
        return arr
    if isinstance(fwhm, str):
        return spatial.fast_smooth_block(arr)
    return spatial.gaussian_block(arr, spatial.fwhm_to_sigma(fwhm, affine))


def _check_smoothing_fwhm(fwhm):
    if fwhm is None or (isinstance(fwhm, str) and fwhm == "fast"):
        return
    values = np.asarray([fwhm], dtype=object).ravel()
    if values.size not in (1, 3) or not all(
        v is None or (_is_number(v) and np.isfinite(v) and v >= 0) for v in values
    ):
        raise ParameterError(
            f"smoothing_fwhm={fwhm!r} is not valid; expected None, 'fast', a number >= 0 (mm) "
            "or 3 of them."
        )


def _region_labels(map_3d, affine, extract_type, smoothing_fwhm):
    """Integer labels of the separate regions of one map (0 = background)."""
    if extract_type == "connected_components":
        return ndimage.label(map_3d)[0]
    smooth = _smooth_map(map_3d, affine, smoothing_fwhm)
    seeds_label, _ = ndimage.label(peak_local_max(smooth))
    seeds_label[map_3d == 0.0] = -1  # inactive voxels: outside the map
    labels = random_walker(map_3d, seeds_label)
    labels[labels == -1] = 0
    return labels


def connected_regions(
    maps_img,
    min_region_size=1350,
    extract_type="local_regions",
    smoothing_fwhm=6,
    mask_img=None,
    *,
    warn_empty=True,
):
    """Extract the connected regions of each map into separate region volumes.

    Same parameters, algorithm and results as ``nilearn.regions.connected_regions``
    (nilearn 0.14.1): identical region images and indices on the same maps (the peaks
    that seed ``"local_regions"`` are found on maps smoothed within float32 rounding of
    nilearn's, so only exact ties could differ).

    Parameters
    ----------
    maps_img : 3-D/4-D image (path, nibabel image, LazyImage)
        Maps (a 3-D image is one map). Computed in memory: maps are small.
    min_region_size : float, default=1350
        Minimum volume in mm³ of a region; a region is kept if its voxel count is strictly
        greater than ``min_region_size / voxel volume`` (1350 mm³ at 4 mm: >= 22 voxels).
    extract_type : {"local_regions", "connected_components"}, default="local_regions"
        ``"connected_components"``: 6-connected components of each map's non-zero voxels
        (positive and negative together). ``"local_regions"``: seeds at the local maxima
        of the smoothed map (21-voxel neighbourhood, > 10% of the map's maximum), then a
        random-walker split of the map's non-zero voxels between the seeds (nilearn's
        algorithm, ported: negative-only blobs get no seed and are dropped).
    smoothing_fwhm : float, 3 floats, "fast" or None, default=6
        Smoothing (mm) of each map before its peaks are found (``local_regions`` only).
    mask_img : 3-D image or None, default=None
        Voxels outside it are zeroed in the maps first (resampled to the maps' grid with
        nearest interpolation if needed).
    warn_empty : bool, default=True
        lazyconn only: False returns ``(None, None)`` without nilearn's warning.

    Returns
    -------
    regions_extracted_img : nibabel 4-D float32 image, or None
        One volume per region: the (unsmoothed) map values inside the region, 0 outside.
    index_of_each_map : list of int, or None
        The map each region came from. ``(None, None)`` with a warning if no region is
        left (as nilearn); :class:`RegionExtractor` raises a clear error instead.
    """
    check_in("extract_type", extract_type, _EXTRACTORS)
    _check_number("min_region_size", min_region_size, expected="a number (mm³)")
    _check_smoothing_fwhm(smoothing_fwhm)
    img = load(maps_img) if not isinstance(maps_img, (list, tuple)) else load_4d(maps_img)
    if img.ndim == 3:
        img = img.with_data(img.data[..., None])
    img = load_4d(img, "maps_img")
    maps = np.asarray(img.data.compute())
    affine = img.affine
    min_voxels = min_region_size / np.abs(np.linalg.det(affine[:3, :3]))
    if mask_img is not None:
        mask_img = load_3d(mask_img, "mask_img")
        mask_img = on_grid_of(mask_img, img)
        mask, _ = load_mask_img(mask_img)
        maps = np.array(maps)  # a copy: the mask is applied in place
        maps[~mask] = 0.0
    # Each map's labels (in the smallest integer type) and kept label ids first, then the
    # regions written straight into the output: nilearn's list of region volumes, their
    # stack and its float32 cast held ~3 copies of the output at once.
    kept, index = [], []
    for m in range(maps.shape[-1]):
        labels = _region_labels(maps[..., m], affine, extract_type, smoothing_fwhm)
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        ids = np.flatnonzero(sizes > min_voxels)
        if ids.size:
            small = np.min_scalar_type(sizes.size - 1)  # holds every label of the map
            kept.append((m, labels.astype(small, copy=False), ids))
            index.extend([m] * ids.size)
    if not index:
        if warn_empty:
            warn("No supra threshold regions was found")
        return None, None
    # nilearn's concat_imgs casts to float32; each region is (labels == id) * map, as
    # nilearn computes it (a negative map value outside the region gives -0.0, kept)
    data = np.empty((*maps.shape[:3], len(index)), dtype=np.float32)
    r = 0
    for m, labels, ids in kept:
        for label_id in ids:
            np.multiply(labels == label_id, maps[..., m], out=data[..., r], casting="unsafe")
            r += 1
    return nib.Nifti1Image(data, affine), index


def _threshold_maps_ratio(maps, threshold):
    """Keep the ``threshold * n_voxels`` entries of largest |value| over all maps."""
    n_maps = maps.shape[-1]
    if not _is_number(threshold) or threshold <= 0 or threshold > n_maps:
        raise ParameterError(
            f"threshold={threshold!r} is not valid for thresholding_strategy='ratio_n_voxels'; "
            f"expected a number > 0 and <= the number of maps (n_maps={n_maps}): the ratio of "
            "the number of voxels of the grid to keep across all maps."
        )
    maps = spatial.ensure_finite(np.array(maps, copy=True))
    abs_maps = np.abs(maps)
    # scipy's scoreatpercentile (linear interpolation) over every entry, zeros included
    cutoff = np.percentile(abs_maps, 100.0 - (100.0 / n_maps) * threshold)
    maps[abs_maps < cutoff] = 0.0
    return maps


def _remove_small_regions(input_data, affine, min_size):
    """Zero the labelled regions of at most ``min_size`` mm³ and renumber the rest."""
    _, inverse = np.unique(input_data, return_inverse=True)
    sizes = np.bincount(inverse.ravel())
    kept = sizes > min_size / np.abs(np.linalg.det(affine[:3, :3]))
    if not np.all(kept):
        rejected = np.isin(input_data, np.flatnonzero(~kept)).reshape(input_data.shape)
        input_data = input_data.copy()
        input_data[rejected] = 0
        input_data = np.searchsorted(np.unique(input_data), input_data)
    return input_data


def connected_label_regions(labels_img, min_size=None, connect_diag=True, labels=None):
    """Split every label of a labels image into its connected components.

    Same parameters and results as ``nilearn.regions.connected_label_regions``.

    Parameters
    ----------
    labels_img : 3-D image
        Integer labels (0 = background). Non-integer or negative values are an error
        (nilearn silently compares floats for equality; lazyconn refuses them).
    min_size : float or None, default=None
        Minimum region volume in mm³: smaller components (<= min_size / voxel volume
        voxels) are removed.
    connect_diag : bool, default=True
        26-connectivity (diagonals connect) if True, else 6-connectivity.
    labels : list or 1-D array of str, or None
        One name per non-zero label (ascending label order); each is repeated for every
        component of its label.

    Returns
    -------
    new_labels_img : nibabel int32 image
        Components numbered 1..n, label by label (ascending), in scipy's raster order.
    new_labels : list of str
        Only when ``labels`` is given.
    """
    img = load_3d(labels_img, "labels_img")
    data = spatial.ensure_finite(np.asarray(img.data.compute()))
    affine = img.affine
    if min_size is not None and not _is_number(min_size):
        raise ParameterTypeError(
            f"min_size={min_size!r} has type {type(min_size).__name__}; expected None or a "
            "number (minimum region volume in mm³)."
        )
    if not isinstance(connect_diag, (bool, np.bool_)):
        raise ParameterTypeError(
            f"connect_diag={connect_diag!r} has type {type(connect_diag).__name__}; expected "
            "True or False."
        )
    values = np.unique(data)
    if data.dtype.kind == "f" and not np.all(values == np.round(values)):
        bad = values[values != np.round(values)]
        raise ParameterError(
            f"labels_img holds non-integer values ({bad[:5].tolist()}"
            f"{'...' if bad.size > 5 else ''}); expected an integer labels image "
            "(0 = background). Round or relabel it first, e.g. with np.rint."
        )
    if np.any(values < 0):
        raise ParameterError(
            f"labels_img has negative values as labels ({values[values < 0][:5].tolist()}); "
            "expected non-negative integer labels (0 = background)."
        )
    unique_labels = values[values != 0]
    if labels is not None:
        if not isinstance(labels, collections.abc.Iterable) or isinstance(labels, str):
            labels = [labels]
        labels = list(labels)
        if len(labels) != len(unique_labels):
            raise ParameterError(
                f"labels has {len(labels)} names but labels_img has {len(unique_labels)} "
                "non-zero labels; expected one name per label (ascending label order, no "
                "background)."
            )
        new_names = []
    names = [None] * len(unique_labels) if labels is None else labels
    structure = np.ones((3, 3, 3), dtype=np.int32) if connect_diag else None
    out = np.zeros(data.shape, dtype=np.int32)
    offset = 0
    for value, name in zip(unique_labels, names, strict=True):
        regions, n = ndimage.label((data == value).astype(np.int32), structure=structure)
        if min_size is not None:
            regions = _remove_small_regions(regions, affine, min_size)
            n = regions.max()
        out[regions != 0] = regions[regions != 0] + offset
        offset += n
        if name is not None:
            new_names.extend([name] * int(n))
    # nilearn's new_img_like keeps the input's header, so its data type too (int32 array)
    new_img = nib.Nifti1Image(out, affine, header=img.header)
    return (new_img, new_names) if labels is not None else new_img


class RegionExtractor(NiftiMapsMasker):
    """Split maps into separate regions, then extract their signals (nilearn's RegionExtractor).

    ``fit`` thresholds the maps, splits them into regions (:func:`connected_regions`) and
    fits a maps masker on the regions; ``transform`` extracts one signal per region from
    runs, exactly as :class:`~lazyconn.maskers.NiftiMapsMasker` on ``regions_img_`` with the
    same ``smoothing_fwhm`` (nilearn smooths the runs too: lazyconn folds the smoothing into
    the regions' weights, so each run is read once and never smoothed whole).

    Parameters
    ----------
    maps_img : 4-D image
        The maps (e.g. ``DictLearning().components_img_``); read in memory at ``fit``.
    mask_img : 3-D image or None, default=None
        Applied to the maps before extraction and to the runs at transform.
    min_region_size : float, default=1350
        Minimum region volume in mm³ (see :func:`connected_regions`).
    threshold : float, default=1.0
        Meaning depends on ``thresholding_strategy``: ``"ratio_n_voxels"``: keep about
        ``threshold`` x (voxels of the grid) entries across all maps, those of largest
        absolute value (0 < threshold <= n_maps); ``"img_value"``: keep values above it;
        ``"percentile"``: keep values above this percentile (0..100) of the maps' values
        (inside the mask if given).
    thresholding_strategy : {"ratio_n_voxels", "img_value", "percentile"}, default="ratio_n_voxels"
    two_sided : bool, default=False
        ``img_value`` / ``percentile``: keep large negative values too (|value| above the
        threshold). ``ratio_n_voxels`` always ranks by |value|.
    extractor : {"local_regions", "connected_components"}, default="local_regions"
        See :func:`connected_regions`.
    smoothing_fwhm : float, default=6
        Smoothing (mm) of the maps before finding seeds (``local_regions``) AND of the runs
        at transform, as in nilearn.
    standardize, standardize_confounds, high_variance_confounds, detrend, low_pass, \
high_pass, t_r, dtype, resampling_target, keep_masked_maps, allow_overlap, clean_args
        As :class:`~lazyconn.maskers.NiftiMapsMasker` (nilearn's defaults).
    memory, memory_level, reports, cmap
        Accepted for compatibility; ignored.
    verbose : int, default=0
        As the masker's: nilearn's step messages on stderr.

    Attributes
    ----------
    regions_img_ : nibabel 4-D float32 image, one volume per region
    index_ : list of int, the map each region comes from
    maps_img_ : nibabel image, the regions as the masker's maps (on the data's grid)
    mask_img_ : nibabel image or None
    n_elements_ : int, number of regions

    Differences from nilearn 0.14.1: when no region survives the thresholding and
    ``min_region_size``, ``fit`` raises a ParameterError saying so (nilearn warns and then
    fails inside its masker); ``thresholding_strategy="percentile"`` does not overwrite
    ``threshold`` with a string (nilearn does, so its second ``fit`` fails);
    ``transform`` takes lists of runs and ``compute=False`` (see ``BaseMasker``).
    """

    def __init__(
        self,
        maps_img=None,
        mask_img=None,
        min_region_size=1350,
        threshold=1.0,
        thresholding_strategy="ratio_n_voxels",
        two_sided=False,
        extractor="local_regions",
        smoothing_fwhm=6,
        standardize=False,
        standardize_confounds=True,
        high_variance_confounds=False,
        detrend=False,
        low_pass=None,
        high_pass=None,
        t_r=None,
        dtype=None,
        resampling_target="data",
        keep_masked_maps=False,
        memory=None,
        memory_level=0,
        verbose=0,
        reports=True,
        cmap="CMRmap_r",
        allow_overlap=True,
        clean_args=None,
    ):
        super().__init__(
            maps_img=maps_img,
            mask_img=mask_img,
            allow_overlap=allow_overlap,
            smoothing_fwhm=smoothing_fwhm,
            standardize=standardize,
            standardize_confounds=standardize_confounds,
            high_variance_confounds=high_variance_confounds,
            detrend=detrend,
            low_pass=low_pass,
            high_pass=high_pass,
            t_r=t_r,
            dtype=dtype,
            resampling_target=resampling_target,
            keep_masked_maps=keep_masked_maps,
            memory=memory,
            memory_level=memory_level,
            verbose=verbose,
            reports=reports,
            cmap=cmap,
            clean_args=clean_args,
        )
        self.min_region_size = min_region_size
        self.threshold = threshold
        self.thresholding_strategy = thresholding_strategy
        self.two_sided = two_sided
        self.extractor = extractor

    def _check_region_params(self):
        check_in("thresholding_strategy", self.thresholding_strategy, _STRATEGIES)
        check_in("extractor", self.extractor, _EXTRACTORS)
        if not isinstance(self.two_sided, (bool, np.bool_)):
            raise ParameterTypeError(
                f"two_sided={self.two_sided!r} has type {type(self.two_sided).__name__}; "
                "expected True or False."
            )
        if not _is_number(self.threshold) or not np.isfinite(self.threshold):
            raise ParameterError(
                f"threshold={self.threshold!r} is not valid; expected a number for "
                f"thresholding_strategy={self.thresholding_strategy!r} (strategies: "
                f"{', '.join(_STRATEGIES)})."
            )
        if self.thresholding_strategy == "percentile" and not 0 <= self.threshold <= 100:
            raise ParameterError(
                f"threshold={self.threshold!r} is not valid for thresholding_strategy="
                "'percentile'; expected a percentile between 0 and 100."
            )
        if self.thresholding_strategy == "img_value" and self.two_sided and self.threshold < 0:
            raise ParameterError(
                f"threshold={self.threshold!r} is not valid for thresholding_strategy="
                "'img_value' with two_sided=True; expected a value >= 0 (|value| is compared)."
            )
        _check_number("min_region_size", self.min_region_size, expected="a number (mm³)")
        if self.min_region_size < 0:
            raise ParameterError(
                f"min_region_size={self.min_region_size!r} is not valid; expected a volume "
                ">= 0 in mm³."
            )

    def _thresholded_maps(self):
        if self.maps_img is None:
            raise ParameterError("maps_img=None; expected a 4-D image of maps.")
        maps = load_4d(self.maps_img, "maps_img")
        if self.thresholding_strategy == "ratio_n_voxels":
            data = _threshold_maps_ratio(np.asarray(maps.data.compute()), self.threshold)
            return nib.Nifti1Image(data, maps.affine)
        thr = self.threshold
        if self.thresholding_strategy == "percentile":
            thr = f"{thr}%"
        out = threshold_img(maps, thr, mask_img=self.mask_img_, two_sided=self.two_sided)
        return nib.Nifti1Image(np.asarray(out.data.compute()), maps.affine)

    def _maps_source(self):
        return self.regions_img_

    def _maps_image(self, source):
        # the regions, a 4-D nibabel image made by fit: lazyconn.load would copy them (dask
        # copies an in-memory array into its chunks), and only their grid is read
        return source

    def _maps_array(self, maps):
        # The regions are this estimator's own float32 array: the masker's maps_img_ shares
        # it (another copy of every region would be held for the transforms).
        return np.asarray(maps.dataobj)

    def _fit(self, imgs):
        self._check_region_params()
        thresholded = self._thresholded_maps()
        regions_img, index = connected_regions(
            thresholded,
            self.min_region_size,
            self.extractor,
            self.smoothing_fwhm,
            mask_img=self.mask_img_,
            warn_empty=False,  # an error below says more
        )
        if regions_img is None:
            n_kept = int(np.count_nonzero(np.asanyarray(thresholded.dataobj)))
            raise ParameterError(
                f"No region left: after thresholding (thresholding_strategy="
                f"{self.thresholding_strategy!r}, threshold={self.threshold!r}: {n_kept} "
                f"non-zero entries) no region is larger than min_region_size="
                f"{self.min_region_size!r} mm³; expected a smaller min_region_size or a "
                "threshold keeping more voxels."
            )
        self.regions_img_ = regions_img
        self.index_ = index
        return super()._fit(imgs)
