"""NiftiSpheresMasker: mean signals in spheres around world-coordinate seeds."""

from __future__ import annotations

import numpy as np
from scipy import sparse

from lazyconn._docs import fill_doc
from lazyconn._utils import check_real
from lazyconn.exceptions import ParameterError
from lazyconn.maskers._region import RegionMasker, RegionPlan, mask_on_grid
from lazyconn.ops.spheres import sphere_voxels


class _SphereFinish:
    """sums (T, K) -> means in the voxels' dtype (integers truncated, as nilearn stores them)."""

    def __init__(self, counts, dtype):
        self.counts = np.asarray(counts, dtype=np.float64)
        self.dtype = np.dtype(dtype)

    def __call__(self, sums):
        means = sums / self.counts
        return means.astype(self.dtype)  # float -> int truncates toward zero, like nilearn


@fill_doc
class NiftiSpheresMasker(RegionMasker):
    """Signals averaged in spheres around seeds (nilearn's ``NiftiSpheresMasker``).

    Parameters mirror nilearn 0.14.1 (same names and defaults). ``memory``,
    ``memory_level`` are accepted and ignored; ``reports`` serves ``generate_report``;
    ``verbose`` prints nilearn's step messages (on stderr).

    Voxels are chosen exactly as nilearn chooses them: world-space centres within
    ``radius`` mm of the seed, plus the nearest voxel (numpy half-to-even rounding) and
    nilearn's truncated-coordinates voxel (see ``lazyconn.ops.spheres``).
    ``radius=None`` takes the nearest voxel only.

    Differences from nilearn: signals are computed in one pass over the run's chunks,
    with the smoothing folded into the sphere weights (its exact adjoint, so results equal
    smoothing the data first up to float rounding); sums are accumulated in float64.
    NaN/inf voxels are zeroed silently (nilearn warns about NaN). ``transform`` accepts
    ``compute=False`` and lists of runs.

    Parameters
    ----------
    seeds : list of 3 floats
        Sphere centres in world coordinates (mm, the images' space).
    radius : float, optional
        Sphere radius in mm; ``None`` takes the nearest voxel of each seed only.
    %(mask_img_masker)s
    allow_overlap : bool, default=False
        Allow spheres to share voxels; ``False`` raises ParameterError when they do.
    %(masker_cleaning)s
    %(dtype_masker)s
    %(masker_ignored)s
    %(clean_args)s

    Attributes
    ----------
    seeds_ : list of [x, y, z]
    n_elements_ : int, number of seeds
    mask_img_ : nibabel image or None
    clean_args_ : dict
    """

    def __init__(
        self,
        seeds=None,
        radius=None,
        mask_img=None,
        allow_overlap=False,
        smoothing_fwhm=None,
        standardize=False,
        standardize_confounds=True,
        high_variance_confounds=False,
        detrend=False,
        low_pass=None,
        high_pass=None,
        t_r=None,
        dtype=None,
        memory=None,
        memory_level=1,
        verbose=0,
        reports=True,
        clean_args=None,
    ):
        self.seeds = seeds
        self.radius = radius
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
        self.memory = memory
        self.memory_level = memory_level
        self.verbose = verbose
        self.reports = reports
        self.clean_args = clean_args

    def _fit(self, imgs):
        error = "Seeds must be a list of triplets of coordinates in native space.\n"
        if not hasattr(self.seeds, "__iter__") or isinstance(self.seeds, str):
            raise ParameterError(
                f"{error}Given seed list is of type: {type(self.seeds)}; seeds={self.seeds!r}."
            )
        check_real(
            "radius", self.radius, low=0, allow_none=True, expected="None or a number >= 0 (mm)"
        )
        seeds = []
        for i, seed in enumerate(self.seeds):
            if not hasattr(seed, "__len__"):
                raise ParameterError(
                    f"{error}Seed #{i} is not a valid triplet of coordinates. "
                    f"It is of type {seed.__class__.__name__}."
                )
            seed = seed.tolist() if isinstance(seed, np.ndarray) else list(seed)
            if len(seed) != 3:
                raise ParameterError(f"{error}Seed #{i} is of length {len(seed)} instead of 3.")
            seeds.append(seed)
        self.seeds_ = seeds
        self.n_elements_ = len(seeds)
        if imgs is not None:  # build (and cache) this grid's spheres: bad seeds fail at fit
            self._plan_for_fit(imgs)
        return self

    def _sphere_indices(self, shape, affine):
        mask = mask_on_grid(self.mask_img_, shape, affine)
        return sphere_voxels(
            self.seeds_, affine, shape, self.radius, mask=mask, allow_overlap=self.allow_overlap
        )

    def _plan(self, img4):
        shape, affine = img4.shape[:3], img4.affine
        spheres = self._sphere_indices(shape, affine)
        weights = self._weights(spheres, shape, affine)
        finish = _SphereFinish([s.size for s in spheres], self._smoothed_dtype(img4.dtype))
        return RegionPlan(weights, finish, sum(s.size for s in spheres))

    @fill_doc
    def inverse_transform(self, region_signals):
        """Voxel signals from sphere signals (needs ``mask_img``), as nilearn.

        Each in-mask voxel of a sphere gets the sphere's signal (averaged over the spheres
        that contain it when ``allow_overlap``).

        Parameters
        ----------
        %(region_signals)s

        Returns
        -------
        img : nibabel.Nifti1Image
            4-D for 2-D signals, 3-D for 1-D signals.
        """
        self._check_fitted()
        if self.mask_img_ is None:
            raise ParameterError(
                "Please provide mask_img at initialization to provide a reference for the "
                "inverse_transform (mask_img=None)."
            )
        x = self._check_array(region_signals, "region_signals")
        mask = np.asarray(self.mask_img_.dataobj).astype(bool)
        spheres = sphere_voxels(
            self.seeds_,
            self.mask_img_.affine,
            mask.shape,
            self.radius,
            mask=mask,
            allow_overlap=self.allow_overlap,
        )
        n_vox = int(np.prod(mask.shape))
        adj = sparse.lil_matrix((self.n_elements_, n_vox))
        for i, s in enumerate(spheres):
            adj[i, s] = 1.0
        adj = adj.tocsr()
        if self.allow_overlap:
            n_adj = np.asarray(adj.sum(axis=0)).ravel()
            adj = adj @ sparse.diags(1.0 / np.maximum(1, n_adj))
        flat = np.asarray(adj.T.dot(np.atleast_2d(x).T).T)  # (T, V_box)
        out_dtype = (
            x.dtype
            if self.dtype is None
            else np.dtype(np.float32 if self.dtype == "auto" else self.dtype)
        )
        data = flat.reshape((-1, *mask.shape)).transpose(1, 2, 3, 0).astype(out_dtype)
        if x.ndim == 1:
            data = data[..., 0]
        return self._output_image(data, self.mask_img_.affine)
