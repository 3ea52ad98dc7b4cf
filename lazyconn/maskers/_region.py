"""Base of the region maskers (spheres, labels, maps): signals = finish(X @ W).

``W`` (sparse, voxels x regions) depends only on the image grid, so it is built once per
grid (shape, affine) and reused for every run on that grid; smoothing is folded into it
(see ``_weights``). ``finish`` turns the (T, K) float64 sums into nilearn's signals
(divide by region sizes, least-squares solve, dtype).
"""

from __future__ import annotations

import threading

import nibabel as nib
import numpy as np

from lazyconn._utils import warn
from lazyconn.config import float_dtype_for
from lazyconn.exceptions import ParameterError
from lazyconn.image.resampling import is_on_grid, to_grid
from lazyconn.maskers.base_masker import BaseMasker, as_4d
from lazyconn.ops.weights import region_reduce, region_weights

#: Held while a plan is built (rarely: once per grid and dtype of a masker).
_PLAN_LOCK = threading.RLock()


class RegionPlan:
    """Weights of one grid and the per-run finishing step (and, for labels, the masked
    atlas of that grid: ``region_atlas_``)."""

    __slots__ = ("atlas", "blocks", "finish", "n_voxels", "weights")

    def __init__(self, weights, finish, n_voxels, atlas=None):
        self.weights = weights
        self.finish = finish
        self.n_voxels = n_voxels
        self.atlas = atlas
        self.blocks = {}  # per-chunking block weights, shared by the runs of this grid


def mask_on_grid(mask_img, shape, affine):
    """The fitted mask's boolean data on the (shape, affine) grid (nearest resampling)."""
    if mask_img is None:
        return None
    return np.asarray(to_grid(mask_img, shape, affine).dataobj).astype(bool)


class RegionMasker(BaseMasker):
    """Shared ``_extract`` of the region maskers (one pass over the run's chunks)."""

    def _smoothed_dtype(self, in_dtype):
        """Voxel dtype after nilearn's smoothing step (floats kept, ints promoted)."""
        return (
            float_dtype_for(in_dtype)
            if self._fitted_smoothing() is not None
            else np.dtype(in_dtype)
        )

    def _fit_mask_to(self, shape, affine, regions: np.ndarray, what: str) -> None:
        """nilearn's fit-time mask steps: resample ``mask_img_`` onto the reference grid
        (nearest) and refuse a mask that leaves no region (``regions``: (x, y, z[, k])
        labels or maps on that grid, background 0)."""
        if self.mask_img_ is None:
            return
        mdata = mask_on_grid(self.mask_img_, shape, affine)
        if mdata.shape != tuple(np.asarray(self.mask_img_.dataobj).shape) or not np.allclose(
            self.mask_img_.affine, affine
        ):
            self._log("fit", "Resampling mask")
            self.mask_img_ = nib.Nifti1Image(mdata.astype(np.int8), affine)
        if not np.any(regions[mdata]):
            raise ParameterError(
                f"No {what} left after applying mask to the {what}s image: mask_img and the "
                f"{what}s do not overlap; expected a mask covering at least one {what}."
            )

    @staticmethod
    def _warn_resampled_at_transform(what, img, shape, affine, hint=None) -> None:
        """nilearn's notice when ``what`` (labels, maps, mask, images) is resampled at
        transform time: ``img`` (a nibabel image or None) is not on the (shape, affine) grid."""
        if img is None or is_on_grid(img, shape, affine):
            return
        hint = hint or (
            "make sure to pass the images you want to transform to fit() first, or directly "
            "use fit_transform()."
        )
        warn(f"Resampling {what} at transform time...\nTo avoid this warning, {hint}")

    def _plan(self, img4) -> RegionPlan:  # pragma: no cover - abstract
        raise NotImplementedError

    def _weights(self, regions, shape, affine, values=None):
        return region_weights(regions, shape, affine, self._fitted_smoothing(), values=values)

    def _get_plan(self, img4) -> RegionPlan:
        """The plan of this grid and dtype, built once (at fit when images are given)."""
        key = (tuple(img4.shape[:3]), np.asarray(img4.affine).tobytes(), str(img4.dtype))
        cache = self.__dict__.setdefault("_weights_cache", {})
        plan = cache.get(key)
        if plan is None:
            # one thread builds it while the others wait: subjects on dask's threads start
            # together, and each built its own copy (twice the memory, the work done twice)
            with _PLAN_LOCK:
                plan = cache.get(key)
                if plan is None:
                    plan = cache[key] = self._plan(img4)
        return plan

    def _plan_for_fit(self, imgs):
        """Build the plan of the first run's grid at fit (errors surface at fit)."""
        img4, _ = as_4d(self._split_runs(imgs)[0][0])
        in_dtype = self._input_dtype(img4)
        return self._get_plan(img4.with_data(img4.data.astype(in_dtype)))

    def _extract(self, img4):
        # here, not at module level: io._dask imports zarr and numcodecs (~120 modules,
        # ~6.6 MiB), which `import lazyconn.decomposition` / `lazyconn.maskers` then did too
        from lazyconn.io._dask import voxel_frames

        plan = self._get_plan(img4)
        # A store's chunks are read in pieces of time frames, unless the high-variance
        # confounds read the run's chunks too (each chunk is then read once, whole).
        frames = None if self.high_variance_confounds else voxel_frames(img4.data)
        sums = region_reduce(img4.data, plan.weights, cache=plan.blocks, frames=frames)
        out = sums.map_blocks(plan.finish, dtype=plan.finish.dtype)
        return out
