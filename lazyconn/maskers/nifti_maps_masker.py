"""NiftiMapsMasker: region signals by least squares on (overlapping) maps."""

from __future__ import annotations

import nibabel as nib
import numpy as np
from scipy import linalg

from lazyconn._docs import fill_doc
from lazyconn._progress import describe_imgs
from lazyconn._utils import check_in, warn
from lazyconn.config import float_dtype_for
from lazyconn.exceptions import ParameterError
from lazyconn.image import load
from lazyconn.image._niimg import check_same_fov, load_4d
from lazyconn.image.resampling import is_on_grid, to_grid
from lazyconn.maskers._region import RegionMasker, RegionPlan, mask_on_grid


class _MapsFinish:
    """(T, K) sums ``X @ M`` -> least-squares signals ``(MᵀM)⁺ Mᵀ y`` (= ``M⁺ y``)."""

    def __init__(self, gram, dtype):
        self.gram = gram
        self.dtype = np.dtype(dtype)

    def __call__(self, sums):
        sol = linalg.lstsq(self.gram, sums.T, cond=None)[0]
        return sol.T.astype(self.dtype)


@fill_doc
class NiftiMapsMasker(RegionMasker):
    """Region signals from probabilistic / continuous maps (nilearn's ``NiftiMapsMasker``).

    Parameters mirror nilearn 0.14.1 (names and defaults). ``memory``, ``memory_level``
    are accepted and ignored; ``reports`` and ``cmap`` serve ``generate_report``;
    ``verbose`` prints nilearn's step messages (on stderr).

    nilearn solves ``scipy.linalg.lstsq(M, Y)`` (LAPACK gelsd) on all selected voxels.
    lazyconn accumulates ``Mᵀ Y`` over the run's chunks (one pass; smoothing folded into
    ``M`` by its adjoint) and solves the small normal equations ``(MᵀM) x = MᵀY`` with the
    minimum-norm least-squares solver, which is the same solution ``M⁺ Y``. Differences are
    rounding-level for well-conditioned maps (relative 1e-6 in float64 for cond(M) < 1e3;
    they grow with cond(M)², so near-collinear maps differ more than in nilearn).

    ``allow_overlap=False`` reproduces nilearn's quirk: map values below the dtype's eps
    (so every negative value) are set to 0 before the overlap check and the extraction.

    Parameters
    ----------
    maps_img : 4-D image, or path
        One map per volume: the weight of every voxel in each region.
    %(mask_img_masker)s
    allow_overlap : bool, default=True
        Allow maps to share voxels; ``False`` raises ParameterError when they do.
    %(masker_cleaning)s
    %(dtype_masker)s
    %(resampling_target)s
    keep_masked_maps : bool, default=False
        Keep a zero signal for maps that ``mask_img`` removes entirely (nilearn's deprecated
        behaviour); ``False`` drops them, as nilearn will.
    %(masker_ignored)s
    %(cmap)s
    %(clean_args)s

    Attributes
    ----------
    maps_img_ : nibabel 4-D image (resampled to the data if ``resampling_target="data"``)
    mask_img_ : nibabel image or None
    n_elements_ : int, number of maps
    """

    def __init__(
        self,
        maps_img=None,
        mask_img=None,
        allow_overlap=True,
        smoothing_fwhm=None,
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
        clean_args=None,
    ):
        self.maps_img = maps_img
        self.mask_img = mask_img
        self.allow_overlap = allow_overlap
        self.smoothing_fwhm = smoothing_fwhm
        self.standardize = standardize
        self.standardize_confounds = standardize_confounds
        self.high_variance_confounds = high_variance_confounds
        self.detrend = detrend
        self.low_pass = low_pass
        self.high_pass = high_pass
        self.t_r = t_r
        self.dtype = dtype
        self.resampling_target = resampling_target
        self.keep_masked_maps = keep_masked_maps
        self.memory = memory
        self.memory_level = memory_level
        self.verbose = verbose
        self.reports = reports
        self.cmap = cmap
        self.clean_args = clean_args

    def _fit(self, imgs):
        check_in("resampling_target", self.resampling_target, ("mask", "maps", "data", None))
        if self.mask_img is None and self.resampling_target == "mask":
            raise ParameterError(
                "resampling_target='mask' but mask_img=None; provide a mask "
                "or set resampling_target to 'data', 'maps' or None."
            )
        source = self._maps_source()
        self._log("fit", f"Loading regions from {describe_imgs(source)}")
        maps = self._maps_image(source)
        mdata = self._maps_array(maps)
        if not np.all(np.isfinite(mdata)):  # zeros, silently, as nilearn
            mdata = np.where(np.isfinite(mdata), mdata, 0).astype(mdata.dtype)
        if not np.any(mdata):
            raise ParameterError("maps_img contains no map (every value is 0).")
        self.maps_img_ = nib.Nifti1Image(mdata, maps.affine)
        ref = None
        if imgs is not None:
            run = self._split_runs(imgs)[0][0]
            if self.resampling_target is None:
                others = [load(self.mask_img_)] if self.mask_img_ is not None else []
                check_same_fov(
                    maps, run, *others, names=["maps_img", "imgs"] + ["mask_img"] * len(others)
                )
            elif self.resampling_target == "data":
                ref = (run.shape[:3], run.affine)
        if self.resampling_target == "mask":
            ref = (self.mask_img_.shape, self.mask_img_.affine)
        if self.resampling_target == "maps":
            ref = (self.maps_img_.shape[:3], self.maps_img_.affine)
        if ref is not None:
            if self.resampling_target != "maps" and not is_on_grid(maps, *ref):
                self._log("fit", "Resampling regions")
            self.maps_img_ = self._maps_on_grid(*ref)
            grid_maps = np.asarray(self.maps_img_.dataobj)
            if not np.any(grid_maps):
                raise ParameterError(
                    "No map left after resampling maps_img onto the reference grid; expected "
                    "maps overlapping the images' field of view."
                )
            self._fit_mask_to(*ref, grid_maps, "map")
        if self.resampling_target is None and self.mask_img_ is not None:
            check_same_fov(maps, load(self.mask_img_), names=["maps_img", "mask_img"])
        self.n_elements_ = int(mdata.shape[3])
        if imgs is not None and self.resampling_target in ("data", None):
            self._plan_for_fit(imgs)  # weights of the data grid, built once
        return self

    def _maps_source(self):
        """The maps to fit (RegionExtractor gives its extracted regions instead)."""
        if self.maps_img is None:
            raise ParameterError("maps_img=None; expected a 4-D image of maps.")
        return self.maps_img

    def _maps_image(self, source):
        """The maps as a 4-D image (a 3-D image is one map)."""
        maps = load(source)
        if maps.ndim == 3:
            maps = maps.with_data(maps.data[..., None])
        return load_4d(maps, "maps_img")

    def _maps_array(self, maps):
        """The maps' values in memory, as floats, in an array of their own: the fitted
        ``maps_img_`` never shares memory with the user's image (nilearn deep-copies it)."""
        mdata = np.asarray(maps.data.compute())
        mdata = mdata.astype(float_dtype_for(mdata.dtype), copy=False)
        given = getattr(self._maps_source(), "dataobj", None)
        if isinstance(given, np.ndarray) and np.shares_memory(mdata, given):
            mdata = mdata.copy()
        return mdata

    def _maps_on_grid(self, shape, affine):
        img = self.maps_img_
        res = to_grid(img, shape, affine, "linear")
        if res is img:
            return img
        data = np.asarray(res.dataobj)
        if not np.any(data):
            raise ParameterError("No map left after resampling maps_img onto the images' grid.")
        return nib.Nifti1Image(data, affine)

    def _transform_run(self, img, confounds, sample_mask):
        if self.keep_masked_maps and self.mask_img_ is not None:
            warn(
                'Applying "mask_img" before signal extraction may result in empty region '
                "signals in the output. These are currently kept.\n"
                '"keep_masked_maps" parameter will be removed in version 0.15. '
                'Set "keep_masked_maps=False" to silence this warning.',
                FutureWarning,
            )
        target = self.maps_img_ if self.resampling_target in ("maps", "mask") else None
        if target is not None and not (
            tuple(img.shape[:3]) == tuple(target.shape[:3])
            and np.allclose(img.affine, target.affine)
        ):
            if self.resampling_target == "maps":
                self._warn_resampled_at_transform(
                    "images",
                    img,
                    target.shape,
                    target.affine,
                    hint="make sure to resample the images you want to transform to the "
                    "shape of the maps or set resampling_target to 'data'.",
                )
            from lazyconn.image import resample_img

            img = load(
                resample_img(img, target_affine=target.affine, target_shape=target.shape[:3])
            )
        elif self.resampling_target is None:
            check_same_fov(load(self.maps_img_), img, names=["maps_img", "imgs"])
        return super()._transform_run(img, confounds, sample_mask)

    def _plan(self, img4):
        shape, affine = img4.shape[:3], img4.affine
        self._warn_resampled_at_transform("maps", self.maps_img_, shape, affine)
        self._warn_resampled_at_transform("mask", self.mask_img_, shape, affine)
        maps_img = self._maps_on_grid(shape, affine)
        mdata = np.asarray(maps_img.dataobj)  # read only, or copied before a change
        if not self.allow_overlap:
            mdata = np.array(mdata)
            mdata[mdata < np.finfo(mdata.dtype).eps] = 0  # nilearn's quirk: negatives go
            if np.any((mdata > 0).sum(axis=-1) > 1):
                raise ParameterError(
                    "Overlap detected in the maps: a voxel belongs to several maps while "
                    "allow_overlap=False; expected non-overlapping maps or allow_overlap=True."
                )
        mask = mask_on_grid(self.mask_img_, shape, affine)
        keep = np.arange(mdata.shape[3])
        if mask is not None:
            mdata = mdata * mask[..., None]
            sums = np.abs(mdata).reshape(-1, mdata.shape[3]).sum(axis=0)
            if not self.keep_masked_maps:
                keep = np.flatnonzero(sums > 0)
                if keep.size == 0:
                    raise ParameterError("No map left after applying mask to the maps image.")
                if keep.size < mdata.shape[3]:
                    lost = sorted(set(range(mdata.shape[3])) - set(keep.tolist()))
                    warn(
                        f"After applying mask to the maps image, maps with the following "
                        f"indices were removed: {lost}. Out of {mdata.shape[3]} maps, the "
                        f"masked map image only contains {keep.size} maps."
                    )
        flat = mdata.reshape(-1, mdata.shape[3])
        if keep.size < flat.shape[1]:
            flat = flat[:, keep]
        regions, values = [], []
        for k in range(flat.shape[1]):
            idx = np.flatnonzero(flat[:, k])
            regions.append(idx)
            values.append(flat[idx, k])
        m = flat[np.any(flat != 0, axis=1)].astype(np.float64)
        gram = m.T @ m
        weights = self._weights(regions, shape, affine, values=values)
        data_dtype = self._smoothed_dtype(img4.dtype)
        dtype = linalg.get_lapack_funcs(
            "gelsd", (np.empty(0, mdata.dtype), np.empty(0, data_dtype))
        ).dtype
        return RegionPlan(weights, _MapsFinish(gram, dtype), m.shape[0])

    @fill_doc
    def inverse_transform(self, region_signals):
        """Image ``signals @ mapsᵀ`` (nilearn's ``signals_to_img_maps``).

        Parameters
        ----------
        %(region_signals)s

        Returns
        -------
        img : nibabel.Nifti1Image
            4-D for 2-D signals, 3-D for 1-D signals.
        """
        self._check_fitted()
        x = self._check_array(region_signals, "region_signals")
        mdata = np.asarray(self.maps_img_.dataobj)
        if self.mask_img_ is not None:
            mask = mask_on_grid(self.mask_img_, mdata.shape[:3], self.maps_img_.affine)
            mdata = mdata * mask[..., None]
        out = np.tensordot(mdata, np.atleast_2d(x).T, axes=([3], [0]))
        if x.ndim == 1:
            out = out[..., 0]
        # nilearn's dtype: the signals' (integer signals give truncated integer images)
        return self._output_image(out.astype(x.dtype), self.maps_img_.affine)
