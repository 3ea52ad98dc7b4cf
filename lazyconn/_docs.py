"""Shared parameter texts for docstrings, filled in by :func:`fill_doc` (as nilearn's ``fill_doc``).

A docstring names an entry as ``%(name)s`` on a line of its own, at the indentation of the
other parameters; :func:`fill_doc` replaces it with the text of ``docdict[name]``, indented
like the line. An unknown name is an error when the module is imported, so a typo cannot
ship. Other ``%`` signs need no escaping (only ``%(word)s`` is a placeholder).

Each entry starts with numpydoc's ``name : type`` line. Write one entry per parameter that
two or more public objects share with the same meaning; say in it where lazyconn differs
from nilearn, and why.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

__all__ = ["docdict", "fill_doc"]

_T = TypeVar("_T", bound=Callable)

docdict: dict[str, str] = {}

# --- images -------------------------------------------------------------------------------

docdict["img"] = """img : LazyImage, nibabel image, or path / URL
    The image, opened lazily with :func:`lazyconn.load` (a ``.nii``, ``.nii.gz`` or
    lazyconn zarr store)."""

docdict["imgs"] = """imgs : LazyImage, nibabel image, path / URL, or a list of them
    The image(s), opened lazily with :func:`lazyconn.load`."""

docdict["copy_header"] = """copy_header : bool, default=True
    Copy the header of the input to the result (nilearn 0.14.1's default). The header's
    scaling is reset and its data dtype follows the result."""

docdict["target_affine"] = """target_affine : (3, 3) or (4, 4) array, optional
    Affine of the grid to resample to (nilearn's meaning: a 3x3 affine gives the bounding
    box of the data plus one voxel). ``None``: no resampling."""

docdict["target_shape"] = """target_shape : 3 ints, optional
    Shape of the grid to resample to; needs a 4x4 ``target_affine``."""

docdict["interpolation"] = """interpolation : {"continuous", "linear", "nearest"}, \
default="continuous"
    "continuous" is a cubic spline with prefilter, as nilearn's."""

docdict["copy"] = """copy : bool, default=True
    Accepted for nilearn parity, no effect: dask arrays are never modified in place."""

docdict["order"] = """order : "F" or "C", default="F"
    Accepted for nilearn parity, no effect: the memory layout of a dask array is chosen
    per chunk."""

docdict["fill_value"] = """fill_value : float, default=0
    Value of the voxels of the target grid outside the input's field of view."""

docdict["force_resample"] = """force_resample : bool, default=True
    Accepted for nilearn parity, no effect: lazyconn always resamples (the padding shortcut
    of ``force_resample=False`` gives the same voxels up to spline rounding)."""

docdict["clip_resample"] = """clip : bool
    Clip the result to ``[min(data, 0), max(data, 0)]`` (a lazy reduction over the input);
    spline interpolation overshoots near edges."""

docdict["two_sided"] = """two_sided : bool, default=True
    Threshold the absolute values (keep large negative values too); ``False`` keeps only
    values at or above ``threshold``."""

docdict["threshold_img"] = """threshold : float, or str ending with "%"
    Voxels at or below it (in absolute value with ``two_sided``) become 0. ``"q%"`` is the
    q-th percentile of |data| (``two_sided``) or of the non-negative values, computed as an
    exact lazy reduction (one task over all voxels: for statistical maps, not long runs)."""

docdict["mask_img_image"] = """mask_img : 3-D image, or path, optional
    Voxels outside it are set to 0; percentiles use only the voxels inside it. Resampled
    (nearest) onto the image's grid if needed."""

docdict["ensure_finite"] = """ensure_finite : bool
    Replace NaN and inf by 0 before anything else."""

docdict["verbose_ignored"] = """verbose : int, default=0
    Accepted for nilearn parity and ignored: progress is dask's (use its diagnostics)."""

docdict["n_jobs_ignored"] = """n_jobs : int, default=1
    Accepted for nilearn parity and ignored: dask's scheduler runs the work in parallel."""

docdict["memory_ignored"] = """memory : None, str or joblib.Memory, default=None
    Accepted for nilearn parity and ignored: lazyconn does not cache with joblib (the
    group layer caches results in its own store)."""

docdict["resolution"] = """resolution : float, optional
    Voxel size in mm (default 1, the template's grid). Other values resample the 1 mm
    template with a 3x3 affine ``eye(3) * resolution`` (cubic, clipped), as nilearn does."""

# --- masks --------------------------------------------------------------------------------

docdict["connected"] = """connected : bool
    Keep only the largest connected component (6-connectivity)."""

docdict["opening"] = """opening : bool or int
    Morphological opening with this many iterations (``True`` = 2) before keeping the
    largest component, then the same number of closings, as nilearn."""

docdict["multi_threshold"] = """threshold : float in [0, 1]
    A voxel is in the common mask when it is in more than ``threshold`` x n of the runs'
    masks (1: intersection, 0: union), as :func:`intersect_masks`."""

docdict["target_affine_mask"] = """target_affine : (3, 3) or (4, 4) array, optional
    Grid of the mask: the mean image is resampled (continuous) onto it first."""

docdict["target_shape_mask"] = """target_shape : 3 ints, optional
    Shape of the mask's grid (with a 4x4 ``target_affine``)."""

docdict["lower_cutoff"] = """lower_cutoff : float in [0, 1], default=0.2
    Lower fraction of the sorted mean values searched for the threshold (nilearn's
    histogram heuristic)."""

docdict["upper_cutoff"] = """upper_cutoff : float in [0, 1], default=0.85
    Upper fraction of the sorted mean values searched for the threshold."""

docdict["exclude_zeros"] = """exclude_zeros : bool, default=False
    Leave zero-valued voxels out of the histogram (for images with a zero background)."""

docdict["border_size"] = """border_size : int, default=2
    Thickness (voxels) of the outer shell whose median value is the background."""

docdict["mask_type"] = """mask_type : {"whole-brain", "gm", "wm"}, default="whole-brain"
    Template to threshold: the MNI152 brain, grey-matter or white-matter template."""

docdict["brain_threshold"] = """threshold : float, default=0.5
    Template values at or above it are in the mask."""

# --- maskers ------------------------------------------------------------------------------

docdict["mask_img_masker"] = """mask_img : 3-D image, or path, optional
    Voxels outside it are left out of every region. Resampled (nearest) onto the data's
    grid when it differs, as nilearn."""

docdict["smoothing_fwhm"] = """smoothing_fwhm : float, 3 floats, "fast" or None, default=None
    Gaussian smoothing (full width at half maximum, mm) before extraction; ``None``: none.
    lazyconn also accepts ``"fast"`` (nilearn's maskers reject it). Region maskers fold the
    smoothing into their weights (its exact adjoint), so the run is read once."""

docdict["standardize"] = """standardize : {"zscore_sample", "psc", True, False, None}, \
default=False
    Scale each signal, as :func:`lazyconn.signal.clean`: z-score (sample standard
    deviation) or percent signal change; ``False`` / ``None``: no scaling. ``True`` means
    ``"zscore_sample"`` (without nilearn's FutureWarning)."""

docdict["standardize_confounds"] = """standardize_confounds : bool, default=True
    Z-score the confounds before regressing them out (removes their mean too)."""

docdict["high_variance_confounds"] = """high_variance_confounds : bool, default=False
    Add the 5 CompCor-like confounds of the run's highest-variance voxels (computed as a
    lazy reduction; see :func:`lazyconn.image.high_variance_confounds`)."""

docdict["detrend"] = """detrend : bool, default=False
    Remove a linear trend from each signal."""

docdict["low_pass"] = """low_pass : float, optional
    Low cut-off frequency (Hz) of the Butterworth filter; needs ``t_r``."""

docdict["high_pass"] = """high_pass : float, optional
    High cut-off frequency (Hz) of the Butterworth filter; needs ``t_r``."""

docdict["t_r"] = """t_r : float, optional
    Repetition time (s), needed to filter. As in nilearn it is not read from the image
    header; unlike nilearn, filtering without it fails at ``fit`` with a clear error."""

docdict["dtype_masker"] = """dtype : numpy dtype, "auto" or None, default=None
    dtype the data are cast to before extraction, as nilearn: ``"auto"`` is int32 for
    integer data and float32 otherwise; ``None`` keeps the data's dtype."""

docdict["memory_masker"] = """memory : None, str or joblib.Memory, default=None
    Accepted for nilearn parity and ignored: lazyconn does not cache with joblib (the
    group layer caches results in its own store)."""

docdict["memory_level"] = """memory_level : int
    Accepted for nilearn parity and ignored (see ``memory``)."""

docdict["verbose_masker"] = """verbose : int, default=0
    As nilearn: 0 is silent; 1 prints each step (``[NiftiMasker.fit] Loading data from
    ...``, ``Computing mask``, ``Extracting region signals``, ``Finished fit``...); 2 also
    the mask function's message. lazyconn writes these lines on stderr (nilearn on stdout),
    and at 1 or more also shows the progress of ``transform``'s compute."""

docdict["reports"] = """reports : bool, default=True
    As nilearn: ``fit`` keeps what ``generate_report()`` draws (here the middle volume of
    the first run, lazily: nothing is read at fit)."""

docdict["cmap"] = """cmap : str or matplotlib colormap
    Colours of the regions or maps in ``generate_report()``'s figures (the NiftiMasker's
    mask is drawn as a contour: its ``cmap`` is accepted and unused)."""

docdict["clean_args"] = """clean_args : dict, optional
    Extra keyword arguments of :func:`lazyconn.signal.clean` (e.g. ``{"filter": "cosine"}``)."""

docdict["resampling_target"] = """resampling_target : {"data", "labels", "maps", None}, \
default="data"
    Grid the regions and the data meet on: ``"data"`` resamples the regions (nearest for
    labels, continuous for maps) onto each run's grid; ``"labels"`` / ``"maps"`` resample
    the runs onto the regions' grid; ``None`` requires one grid (GridMismatchError)."""

docdict["runs"] = """runs : array-like, optional
    Run label of every volume: with several runs, cleaning is done run by run, as nilearn."""

docdict["target_affine_masker"] = """target_affine : (3, 3) or (4, 4) array, optional
    Resample the mask (and the data) to this affine, as nilearn."""

docdict["target_shape_masker"] = """target_shape : 3 ints, optional
    Shape of the resampling grid (with a 4x4 ``target_affine``)."""

docdict["mask_strategy"] = """mask_strategy : {"background", "epi", "whole-brain-template", \
"gm-template", "wm-template"}, default="background"
    How ``fit`` computes the mask when ``mask_img`` is not given: the functions of
    :mod:`lazyconn.masking` of nilearn's names (``compute_background_mask``...)."""

docdict["mask_args"] = """mask_args : dict, optional
    Extra keyword arguments of the mask function of ``mask_strategy``."""

# --- masker methods -----------------------------------------------------------------------

docdict["masker_imgs"] = """imgs : 3-D/4-D image (path, nibabel image, LazyImage) or list of images
    A 3-D image gives a 1-D output. Multi maskers: a list of runs gives a list of outputs.
    Other maskers, as nilearn: a list of 3-D images is one 4-D run, and a list holding a 4-D
    image is a DimensionError (transform runs one by one with ``compute=False`` to compute
    many in one graph)."""

docdict["confounds"] = """confounds : confounds of one run, or a list with one entry per run
    Arrays, DataFrames or TSV/CSV paths (nilearn's ``signal.clean`` inputs); ``n/a`` in the
    first row (fMRIPrep) is filled with the second row's values."""

docdict["sample_mask"] = """sample_mask : kept volumes of one run, or a list with one entry per run
    Indices or a boolean mask of the volumes to keep (scrubbing), applied after the
    confounds are regressed out, as nilearn."""

docdict["compute"] = """compute : bool, default=True
    lazyconn only. True: numpy arrays, all runs computed in one ``dask.compute``. False:
    the lazy dask arrays (a list for a list input); nothing is read."""

docdict["masker_transform_returns"] = """signals : numpy.ndarray, dask array, or a list of them
    (n_volumes, n_elements_) per run (1-D for a 3-D image); dask arrays with
    ``compute=False``."""

docdict["region_signals"] = """region_signals : (n_volumes, n_elements_) or (n_elements_,) array
    Signals of the regions, as ``transform`` returns them (numpy or dask)."""


# --- group estimators ---------------------------------------------------------------------

docdict["group_fit_params"] = """imgs : list of runs
    One 4-D run per subject: paths (``.nii``, ``.nii.gz``, zarr stores), URLs,
    nibabel images or LazyImages.
y : ignored
confounds : list, optional
    One entry per subject (array, DataFrame, TSV path such as fMRIPrep's, or None).
sample_mask : list, optional
    One entry per subject (kept volumes, or None).
subjects : list of str, optional
    Subject names used in ``subjects_``, ``failed_``, messages and the store
    (default: the BIDS entities of the file names that tell the runs apart, such as
    ``sub-01`` or ``sub-01_ses-2``; else the file names without extension, or
    ``subject-<i>``)."""

# --- groups of entries that always appear together ------------------------------------------

docdict["tissue_mask_params"] = """threshold : float, default=0.2
    Template values strictly above it are in the mask.
n_iter : int, default=2
    Iterations of the binary closing."""

docdict["tissue_mask_returns"] = """LazyImage
    uint8 (computed from the cached template)."""

docdict["template_returns"] = """LazyImage
    float32, package data read (and resampled) eagerly once per resolution and cached."""

docdict["connected_opening_2"] = """connected : bool, default=True
    Keep only the largest connected component (6-connectivity).
opening : bool or int, default=2
    Morphological opening with this many iterations (``True`` = 2), then the same number of
    closings, as nilearn."""

docdict["mask_returns"] = """LazyImage
    The mask (int8), computed: its voxels are in memory."""


def _join(*names: str) -> str:
    return "\n".join(docdict[name] for name in names)


docdict["resample_tail"] = _join("fill_value", "force_resample", "copy_header")
docdict["masker_cleaning"] = _join(
    "smoothing_fwhm",
    "standardize",
    "standardize_confounds",
    "high_variance_confounds",
    "detrend",
    "low_pass",
    "high_pass",
    "t_r",
)
docdict["masker_ignored"] = _join("memory_masker", "memory_level", "verbose_masker", "reports")
docdict["masker_transform_params"] = _join("confounds", "sample_mask", "compute")
docdict["mask_ignored"] = _join("memory_ignored", "verbose_ignored")

_PLACEHOLDER = re.compile(r"^([ \t]*)%\((\w+)\)s[ \t]*$", re.MULTILINE)


def _indented(text: str, indent: str) -> str:
    return "\n".join(indent + line if line else line for line in text.splitlines())


def fill_doc(obj: _T) -> _T:
    """Replace ``%(name)s`` lines in ``obj.__doc__`` by ``docdict[name]``; return ``obj``.

    Parameters
    ----------
    obj : function or class
        Decorated object; its docstring is rewritten in place.

    Returns
    -------
    obj : function or class
        The same object.

    Raises
    ------
    KeyError
        A placeholder names no entry of ``docdict``.
    """
    doc = obj.__doc__
    if not doc:
        return obj

    def fill(match: re.Match) -> str:
        indent, name = match.groups()
        if name not in docdict:
            raise KeyError(
                f"{getattr(obj, '__qualname__', obj)!s} docstring: %({name})s is not an entry "
                "of lazyconn._docs.docdict."
            )
        return _indented(docdict[name], indent)

    obj.__doc__ = _PLACEHOLDER.sub(fill, doc)
    return obj
