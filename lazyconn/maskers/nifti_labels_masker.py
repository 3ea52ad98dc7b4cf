"""NiftiLabelsMasker: one signal per label of an atlas (mean by default)."""

from __future__ import annotations

import dask.array as da
import nibabel as nib
import numpy as np
from scipy import ndimage

from lazyconn._docs import fill_doc
from lazyconn._progress import describe_imgs
from lazyconn._utils import check_in, rechunk, warn
from lazyconn.exceptions import ParameterError, ParameterTypeError
from lazyconn.image import load
from lazyconn.image._niimg import check_same_fov, finite_data, load_3d
from lazyconn.image.resampling import is_on_grid, to_grid
from lazyconn.maskers._region import RegionMasker, RegionPlan, mask_on_grid
from lazyconn.ops import spatial
from lazyconn.ops.voxels import gather

_STRATEGIES = ("mean", "median", "sum", "minimum", "maximum", "standard_deviation", "variance")
_LINEAR = ("mean", "sum")


def _labels_dtype(data_dtype):
    """nilearn's ``img_to_signals_labels`` output dtype."""
    return np.dtype(np.float32) if np.dtype(data_dtype) == np.float32 else np.dtype(np.float64)


class _LabelsFinish:
    """sums (T, K) -> per-label mean (or sum), zero columns for masked-out kept labels."""

    def __init__(self, counts, dtype, strategy):
        self.counts = np.asarray(counts, dtype=np.float64)
        self.dtype = np.dtype(dtype)
        self.strategy = strategy

    def __call__(self, sums):
        if self.strategy == "sum":
            return sums.astype(self.dtype)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(self.counts > 0, sums / np.maximum(self.counts, 1), 0.0)
        return out.astype(self.dtype)


def _reduce_gathered(x, labels_of_rows, index, strategy, dtype):
    """Non-linear strategies: scipy.ndimage per volume on the gathered (T, V_sel) voxels."""
    func = getattr(ndimage, strategy)
    out = np.asarray([func(row, labels=labels_of_rows, index=index) for row in x], dtype=dtype)
    return out.reshape(x.shape[0], len(index))


@fill_doc
class NiftiLabelsMasker(RegionMasker):
    """Region signals from a labels image (nilearn's ``NiftiLabelsMasker``).

    Parameters mirror nilearn 0.14.1 (names and defaults). ``memory``, ``memory_level``
    are accepted and ignored; ``reports`` and ``cmap`` serve ``generate_report``;
    ``verbose`` prints nilearn's step messages (on stderr). ``lut_`` is built from
    ``labels``, ``lut`` or the label values (nilearn's columns ``index`` and ``name``).
    nilearn's ``memory_`` (a joblib cache) is not there: nothing is cached.

    ``strategy="mean"`` and ``"sum"`` are linear: each run is read once, chunk by chunk,
    and the per-label sums are accumulated in float64 (smoothing folded into the weights
    by its adjoint). ``"median"``, ``"minimum"``, ``"maximum"``, ``"standard_deviation"``
    and ``"variance"`` need each label's voxels together: the labelled voxels of the run
    (smoothed first if asked) are gathered into one (V_labelled, T) array and reduced with
    ``scipy.ndimage`` like nilearn, so memory grows with the labelled volume.

    Parameters
    ----------
    labels_img : 3-D image of integers, or path
        The atlas: one region per label value other than ``background_label``.
    labels : list of str, optional
        Region names, in the order of the sorted label values (background included when
        it is a label value, as nilearn).
    lut : DataFrame or path to a TSV, optional
        Look-up table with BIDS columns ``index`` (label value) and ``name``: region names.
    background_label : int or float, default=0
        Label value of the voxels outside every region.
    %(mask_img_masker)s
    %(masker_cleaning)s
    %(dtype_masker)s
    %(resampling_target)s
    %(masker_ignored)s
    strategy : {"mean", "median", "sum", "minimum", "maximum", "standard_deviation", \
"variance"}, default="mean"
        How a region's voxels are summarised at each volume.
    keep_masked_labels : bool, default=False
        Keep a zero signal for labels that ``mask_img`` removes entirely (nilearn's
        deprecated behaviour); ``False`` drops them, as nilearn will.
    %(cmap)s
    %(clean_args)s

    Attributes
    ----------
    labels_img_ : nibabel image (resampled to the data if ``resampling_target="data"``)
    mask_img_ : nibabel image or None
    n_elements_ : int, number of regions (labels other than ``background_label``)
    region_ids_ : dict, {"background": background_label, 0: first label, ...}
    region_names_ : dict, {0: name, ...}
    region_atlas_ : nibabel int32 image, set by ``transform`` (as nilearn)
        The labels the signals were extracted from: on the grid of the extraction, with
        ``background_label`` outside ``mask_img``; ``region_ids_[i]`` is the label of
        column ``i``.
    """

    def __init__(
        self,
        labels_img=None,
        labels=None,
        lut=None,
        background_label=0,
        mask_img=None,
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
        memory=None,
        memory_level=1,
        verbose=0,
        strategy="mean",
        keep_masked_labels=False,
        reports=True,
        cmap=None,
        clean_args=None,
    ):
        self.labels_img = labels_img
        self.labels = labels
        self.lut = lut
        self.background_label = background_label
        self.mask_img = mask_img
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
        self.memory = memory
        self.memory_level = memory_level
        self.verbose = verbose
        self.strategy = strategy
        self.keep_masked_labels = keep_masked_labels
        self.reports = reports
        self.cmap = cmap
        self.clean_args = clean_args

    # ------------------------------------------------------------------ fit
    def _fit(self, imgs):
        check_in("strategy", self.strategy, _STRATEGIES)
        check_in("resampling_target", self.resampling_target, ("labels", "data", None))
        if self.labels_img is None:
            raise ParameterError("labels_img=None; expected a 3-D labels image (atlas).")
        if self.labels is not None:
            if self.lut is not None:
                raise ParameterError(
                    "Pass either labels or a lookup table (lut) to the masker, but not both."
                )
            if not isinstance(self.labels, list) or not all(
                isinstance(x, str) for x in self.labels
            ):
                raise ParameterTypeError(f"labels={self.labels!r}; expected a list of strings.")
        self._log("fit", f"Loading regions from {describe_imgs(self.labels_img)}")
        labels = load_3d(self.labels_img, "labels_img")
        ldata = np.asarray(labels.data.compute())
        ldata = finite_data(ldata)
        if np.all(ldata == self.background_label):
            raise ParameterError(
                f"labels_img has no label: every voxel equals background_label="
                f"{self.background_label!r} (nilearn: 'Image has no label.')."
            )
        self.labels_img_ = nib.Nifti1Image(ldata, labels.affine)
        self._all_labels = [v for v in np.unique(ldata).tolist() if v != self.background_label]
        self._fit_labels = list(self._all_labels)  # lut_'s rows: the atlas as given (nilearn)
        if self.labels is not None:
            n_names = len([n for n in self.labels if n.lower() != "background"])
            if n_names < len(self._fit_labels):
                warn("Too many indices for the names. Padding 'names' with 'unknown'.")
            elif n_names > len(self._fit_labels):
                warn("Too many names for the indices. Dropping excess names values.")
        if imgs is not None:
            run = self._split_runs(imgs)[0][0]
            if self.resampling_target is None:
                imgs_ = [labels, run] + ([load(self.mask_img_)] if self.mask_img_ else [])
                names = ["labels_img", "imgs"] + (["mask_img"] if self.mask_img_ else [])
                check_same_fov(*imgs_, names=names)
            elif self.resampling_target == "data":
                if not is_on_grid(labels, run.shape, run.affine):
                    self._log("fit", "Resampling regions")
                self.labels_img_ = self._labels_on_grid(run.shape[:3], run.affine)
        if self.resampling_target == "labels" or (
            self.resampling_target == "data" and imgs is not None
        ):
            lab = self.labels_img_
            lab_data = np.asarray(lab.dataobj)
            self._fit_mask_to(lab.shape, lab.affine, lab_data != self.background_label, "label")
        self.n_elements_ = len(self._all_labels)
        if self.mask_img_ is not None and self.resampling_target is None:
            check_same_fov(labels, load(self.mask_img_), names=["labels_img", "mask_img"])
        if imgs is not None and self.resampling_target in ("data", None):
            self._plan_for_fit(imgs)  # weights of the data grid, built once
        return self

    def _labels_on_grid(self, shape, affine):
        """Fitted labels on a grid (nearest resampling), as a nibabel image."""
        img = self.labels_img_
        res = to_grid(img, shape, affine)
        if res is img:
            return img
        data = np.asarray(load(res).data.compute())
        before = set(np.unique(np.asarray(img.dataobj)).tolist())
        after = set(np.unique(data).tolist())
        if len(after) <= 1:
            raise ParameterError(
                "No label left after resampling the labels image onto the images' grid "
                f"(shape {tuple(shape)}); expected labels overlapping the images."
            )
        if lost := before - after:
            warn(
                "After resampling the label image to the data image, the following labels "
                f"were removed: {lost}. Label image only contains {len(after)} labels "
                "(including background)."
            )
        return nib.Nifti1Image(data, affine)

    @property
    def labels_(self):
        """Label values of the fitted atlas, background first (as nilearn)."""
        self._check_fitted()
        return [self.background_label, *self._all_labels]

    @property
    def region_ids_(self):
        self._check_fitted()
        ids = {"background": self.background_label}
        ids.update(dict(enumerate(self._all_labels)))
        return ids

    @property
    def region_names_(self):
        self._check_fitted()
        names = self._names()
        return {i: names.get(v, "unknown") for i, v in enumerate(self._all_labels)}

    def _names(self) -> dict:
        """{label value: name} of the labels of the atlas as given at fit."""
        if self.labels is not None:
            names = [n for n in self.labels if n.lower() != "background"]
            return dict(zip(self._fit_labels, names, strict=False))
        if self.lut is not None:
            return self._lut_names()
        return {v: str(v) for v in self._fit_labels}

    def _lut_names(self) -> dict:
        """{label value: name} of the user's look-up table (BIDS columns index, name)."""
        import pandas as pd

        lut = self.lut
        if not isinstance(lut, pd.DataFrame):
            lut = pd.read_csv(lut, sep="\t")
        missing = [c for c in ("index", "name") if c not in lut.columns]
        if missing:
            raise ParameterError(
                f"lut has columns {list(lut.columns)!r}; expected the BIDS look-up table "
                "columns 'index' and 'name'."
            )
        return {v: str(n) for v, n in zip(lut["index"].tolist(), lut["name"], strict=True)}

    @property
    def lut_(self):
        """Look-up table of the atlas given at fit (columns ``index``, ``name``), background
        first, as nilearn's ``lut_``: it keeps the labels a mask or resampling removes
        (``region_names_`` and ``region_ids_`` follow the last transform)."""
        import pandas as pd

        self._check_fitted()
        names = self._names()
        return pd.DataFrame(
            {
                "index": [self.background_label, *self._fit_labels],
                "name": ["Background", *(names.get(v, "unknown") for v in self._fit_labels)],
            }
        )

    def get_feature_names_out(self, input_features=None):
        """Region names (nilearn returns the label names)."""
        del input_features
        return np.asarray(list(self.region_names_.values()), dtype=object)

    # ------------------------------------------------------------------ transform
    def _transform_run(self, img, confounds, sample_mask):
        if self.keep_masked_labels:
            warn(
                'In version 0.15.0, "keep_masked_labels" parameter will be removed.', FutureWarning
            )
        if self.resampling_target == "labels":
            lab = self.labels_img_
            if tuple(img.shape[:3]) != tuple(lab.shape[:3]) or not np.allclose(
                img.affine, lab.affine
            ):
                self._warn_resampled_at_transform(
                    "images",
                    img,
                    lab.shape,
                    lab.affine,
                    hint="make sure to resample the images you want to transform to the "
                    "shape of the maps or set resampling_target to 'data'.",
                )
                from lazyconn.image import resample_img

                img = load(resample_img(img, target_affine=lab.affine, target_shape=lab.shape[:3]))
        elif self.resampling_target is None:
            check_same_fov(load(self.labels_img_), img, names=["labels_img", "imgs"])
        return super()._transform_run(img, confounds, sample_mask)

    def _plan(self, img4):
        shape, affine = img4.shape[:3], img4.affine
        self._warn_resampled_at_transform("labels", self.labels_img_, shape, affine)
        self._warn_resampled_at_transform("mask", self.mask_img_, shape, affine)
        ldata = np.asarray(self._labels_on_grid(shape, affine).dataobj)
        mask = mask_on_grid(self.mask_img_, shape, affine)
        before = set(np.unique(ldata).tolist())
        if mask is not None:
            ldata = np.where(mask, ldata, self.background_label)
            after = set(np.unique(ldata).tolist())
            lost = before - after
            if lost and not self.keep_masked_labels:
                if len(after - {self.background_label}) == 0:
                    raise ParameterError(
                        "No label left after applying mask to the labels "
                        "image (mask_img and labels_img do not overlap)."
                    )
                warn(
                    f"After applying mask to the labels image, the following labels were "
                    f"removed: {sorted(lost)}. Out of {len(before)} labels, the masked labels "
                    f"image only contains {len(after)} labels (including background)."
                )
        present = np.unique(ldata).tolist()
        index = sorted(before) if self.keep_masked_labels else present
        index = [v for v in index if v != self.background_label]
        if not self.keep_masked_labels:  # regions = labels left after masking (nilearn)
            self._all_labels = index
            self.n_elements_ = len(index)
        flat = ldata.ravel()
        order = np.argsort(flat, kind="stable")
        sorted_vals = flat[order]
        regions = []
        for v in index:
            lo, hi = (
                np.searchsorted(sorted_vals, [v, v], side="left")[0],
                np.searchsorted(sorted_vals, v, side="right"),
            )
            regions.append(np.sort(order[lo:hi]))
        dtype = _labels_dtype(self._smoothed_dtype(img4.dtype))
        counts = [r.size for r in regions]
        # nilearn's masked atlas: the labels of this grid, background outside the mask, int32
        atlas = nib.Nifti1Image(ldata.astype(np.int32), affine)
        if self.strategy in _LINEAR:
            weights = self._weights(regions, shape, affine)
            finish = _LabelsFinish(counts, dtype, self.strategy)
            return RegionPlan(weights, finish, sum(counts), atlas)
        return RegionPlan(None, (regions, index, dtype), sum(counts), atlas)

    def _extract(self, img4):
        plan = self._get_plan(img4)
        self.region_atlas_ = plan.atlas  # set by transform, as nilearn
        if self.strategy in _LINEAR:
            return super()._extract(img4)
        regions, index, dtype = plan.finish
        data = img4
        fwhm = self._fitted_smoothing()
        if fwhm is not None:
            from lazyconn.image import smooth_img

            data = load(smooth_img(img4, fwhm))
        selected = np.zeros(img4.shape[:3], dtype=bool)
        row_labels = np.zeros(img4.shape[:3], dtype=np.float64)
        for r, v in zip(regions, index, strict=True):
            selected.flat[r] = True
            row_labels.flat[r] = v
        # (T, V_labelled) in C order, NaN -> 0 as nilearn; one chunk: ndimage needs a label whole
        x = rechunk(gather(spatial.ensure_finite(data.data), selected, order="C"), -1)
        return da.map_blocks(
            _reduce_gathered,
            x,
            row_labels[selected],
            np.asarray(index),
            self.strategy,
            dtype,
            dtype=dtype,
            chunks=((img4.shape[3],), (len(index),)),
        )

    def inverse_transform(self, signals):
        """Image from region signals: each labelled voxel gets its region's signal.

        Parameters
        ----------
        signals : (n_volumes, n_elements_) or (n_elements_,) array
            Signals of the regions, as ``transform`` returns them.

        Returns
        -------
        img : nibabel.Nifti1Image
            4-D for 2-D signals, 3-D for 1-D signals.
        """
        self._check_fitted()
        x = self._check_array(signals, "signals")
        ldata = np.asarray(self.labels_img_.dataobj)
        if self.mask_img_ is not None:
            mask = mask_on_grid(self.mask_img_, ldata.shape, self.labels_img_.affine)
            ldata = np.where(mask, ldata, self.background_label)
        x2 = np.atleast_2d(x)
        out = np.zeros(ldata.shape + (x2.shape[0],), dtype=x.dtype)
        for k, v in enumerate(self._all_labels):
            out[ldata == v] = x2[:, k]
        if x.ndim == 1:
            out = out[..., 0]
        return self._output_image(out, self.labels_img_.affine)
