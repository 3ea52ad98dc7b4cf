"""Brain masks and masking, with nilearn's names, arguments and defaults.

When things compute:

* ``unmask`` is lazy (a LazyImage). ``apply_mask`` returns numpy like nilearn, or with
  ``compute=False`` the lazy dask (T, V) array over one graph (see
  :mod:`lazyconn.ops.voxels`). Only the *mask* is read, eagerly: it is small and its voxel
  list shapes the graph.
* ``compute_epi_mask``, ``compute_background_mask``, ``compute_brain_mask``, their
  ``compute_multi_*`` variants and ``intersect_masks`` compute: a mask is the "fit" part of
  a pipeline and is small by nature. The mean image of each run is a lazy reduction (one
  pass over the run, all runs of a ``compute_multi_*`` in one ``dask.compute``); thresholding, morphology and
  connected components then run in numpy on the 3-D mean. Results are LazyImages over
  in-memory masks (uint8/int8, as nilearn).

Voxel order on V is C order of the 3-D index, as nilearn's ``data[mask]``.
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np

from lazyconn._docs import fill_doc
from lazyconn._utils import check_in, check_int, check_real, warn
from lazyconn.config import default_chunks
from lazyconn.exceptions import (
    DimensionError,
    GridMismatchError,
    MaskWarning,
    ParameterError,
    ParameterTypeError,
)
from lazyconn.image._lazyimage import LazyImage
from lazyconn.image._niimg import check_same_fov, load_3d, load_img, load_mask_img, new_img_like
from lazyconn.image.image import _smoothing, compute_mean
from lazyconn.image.resampling import resample_to_img
from lazyconn.image.templates import (
    load_mni152_gm_template,
    load_mni152_template,
    load_mni152_wm_template,
)
from lazyconn.ops import spatial
from lazyconn.ops.morphology import binary_operation
from lazyconn.ops.voxels import VoxelStream, c_positions, gather, scatter, smooth_gather

__all__ = [
    "apply_mask",
    "compute_background_mask",
    "compute_brain_mask",
    "compute_epi_mask",
    "compute_multi_background_mask",
    "compute_multi_brain_mask",
    "compute_multi_epi_mask",
    "intersect_masks",
    "load_mask_img",
    "unmask",
]


# ---------------------------------------------------------------------------------------
# apply_mask / unmask (lazy)
# ---------------------------------------------------------------------------------------
def _check_mask_grid(img, mask, mask_affine):
    if not np.allclose(mask_affine, img.affine) or mask.shape != tuple(img.shape[:3]):
        raise GridMismatchError(
            f"mask_img (shape {mask.shape}, affine {np.round(mask_affine, 4).tolist()}) and "
            f"imgs (shape {tuple(img.shape[:3])}, affine {np.round(img.affine, 4).tolist()}) "
            "are not on the same voxel grid; expected equal shapes and affines. Resample the "
            "mask with lazyconn.image.resample_to_img(mask_img, imgs, interpolation='nearest')."
        )


def _masked_array(img, mask, dtype="f", smoothing_fwhm=None, ensure_finite=True):
    """The 4-D (or 3-D) dask array that ``apply_mask`` selects from (cast, cleaned, smoothed),
    the mask on its grid, and the Gaussian sigmas still to apply (None when none are left).

    With smoothing, both are cropped to the mask's bounding box plus the kernel's
    half-width first (the image's own edges kept): a separable kernel truncated at that
    half-width gives the in-mask voxels the values of the whole volume's smoothing (scipy's
    reflect mode only touches the cropped margin), for a fraction of the work. A Gaussian
    kernel is left to ``apply_mask`` (sigmas returned, data neither smoothed nor made
    finite): it smooths and masks in one step (:func:`lazyconn.ops.voxels.smooth_gather`).
    """
    data = img.data
    if dtype == "f":
        dtype = data.dtype if data.dtype.kind == "f" else np.float32
    data = data.astype(dtype)
    if smoothing_fwhm is not None:
        box = _smoothing_box(mask, img.affine, smoothing_fwhm)
        if box is not None:
            data, mask = data[box], mask[box[:3]]
        # nilearn: smoothing implies ensure_finite (smooth_gather zeroes NaN/inf itself).
        data, step = _smoothing(data, img.affine, smoothing_fwhm, ensure_finite=False)
        if getattr(step, "func", None) is spatial.gaussian_smooth:
            return data, mask, step.keywords["sigmas"]
        data = spatial.ensure_finite(data)
        return (data if step is None else step(data)), mask, None
    if ensure_finite:
        data = spatial.ensure_finite(data)
    return data, mask, None


def _smoothing_box(mask, affine, fwhm):
    """Slices of the mask's bounding box grown by the smoothing kernel's half-width (None
    when that is the whole grid, the mask is empty or ``fwhm`` is invalid: smooth_array
    then smooths, or refuses, the whole volume)."""
    if isinstance(fwhm, str):
        halo = [1, 1, 1] if fwhm == "fast" else None
    elif isinstance(fwhm, bool):
        halo = None
    else:
        try:
            halo = [spatial.gaussian_halfwidth(s) for s in spatial.fwhm_to_sigma(fwhm, affine)]
        except ParameterError:
            halo = None
    if halo is None or not mask.any():
        return None
    box = []
    for axis in range(3):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(
            slice(max(0, hit[0] - halo[axis]), min(mask.shape[axis], hit[-1] + 1 + halo[axis]))
        )
    if all(b.stop - b.start == n for b, n in zip(box, mask.shape, strict=True)):
        return None
    return tuple(box)


@fill_doc
def apply_mask(imgs, mask_img, dtype="f", smoothing_fwhm=None, ensure_finite=True, compute=True):
    """Extract the in-mask voxels of images: a (T, V) array ((V,) for a 3-D image).

    As ``nilearn.masking.apply_mask``. The result is chunked along voxels with the whole time
    axis in every chunk; voxels are in C order of the 3-D index. A list of 3-D images is
    stacked along time. The mask is read eagerly (one small compute if it is itself a lazy
    image): its voxel list shapes the graph.

    Parameters
    ----------
    %(imgs)s
    mask_img : 3-D image, or path
        Must hold 0 and one other value and share the images' grid (GridMismatchError
        otherwise).
    dtype : numpy dtype or "f", default="f"
        ``"f"`` keeps float data and casts others to float32.
    smoothing_fwhm : float, 3 floats, "fast" or None, default=None
        Smooth the whole volume (mm) before masking, as :func:`lazyconn.image.smooth_img`;
        implies ``ensure_finite``.
    ensure_finite : bool, default=True
        Replace NaN and inf by 0; with ``False`` non-finite values propagate, as in nilearn.
    compute : bool, default=True
        lazyconn addition: True returns numpy, as nilearn; False returns the lazy dask
        array and nothing but the mask is read.

    Returns
    -------
    numpy.ndarray or dask.array.Array
        (n_volumes, n_voxels), or (n_voxels,) for a 3-D image.
    """
    mask, mask_affine = load_mask_img(mask_img)
    img = load_img(imgs, "imgs")
    _check_mask_grid(img, mask, mask_affine)
    data, mask, sigmas = _masked_array(img, mask, dtype, smoothing_fwhm, ensure_finite)
    one_volume = data.ndim == 3
    if one_volume:
        data = data[..., None]
    out = gather(data, mask) if sigmas is None else smooth_gather(data, mask, sigmas)
    if one_volume:
        out = out[0]
    return np.asarray(out.compute()) if compute else out


def stream_mask(img, mask_img, dtype="f", smoothing_fwhm=None, ensure_finite=True):
    """``apply_mask(img, ..., compute=False)`` of a 4-D run as a
    :class:`lazyconn.ops.voxels.VoxelStream` (its in-mask columns block by block, in
    bounded memory), or None where the graph stays the way: a run read in time slabs (a
    ``.nii.gz``: a block at a time would inflate it once per block) or ``"fast"``
    smoothing (a halo graph).

    Parameters
    ----------
    img : 4-D image
    mask_img : 3-D image, or path
        On the run's grid.
    dtype, smoothing_fwhm, ensure_finite
        As :func:`apply_mask`'s.

    Returns
    -------
    VoxelStream or None
    """
    mask, mask_affine = load_mask_img(mask_img)
    img = load_img(img, "imgs")
    _check_mask_grid(img, mask, mask_affine)
    if img.ndim != 4 or len(img.data.chunks[3]) > 1 or isinstance(smoothing_fwhm, str):
        return None
    box = _smoothing_box(mask, img.affine, smoothing_fwhm)
    data, mask, sigmas = _masked_array(img, mask, dtype, smoothing_fwhm, ensure_finite)
    return VoxelStream(data, mask, sigmas, reader=_frames_reader(img.data, data, box))


def _frames_reader(stored, data, box):
    """A :class:`VoxelStream` ``reader`` of ``data`` (``stored``, or its crop ``box``, not
    cast) from ``stored``'s local store, each block decoded a slab of volumes at a time
    (:func:`lazyconn.io._dask.voxel_frames`, :class:`lazyconn.io.store.ChunkSlabs`: a
    seed block held 24 MB decoded for its whole spread, ~half a subject's memory in
    flight), or None."""
    from lazyconn.io._dask import voxel_frames

    frames = voxel_frames(stored) if data.dtype == stored.dtype else None
    if frames is None:
        return None
    offset = [0, 0, 0] if box is None else [s.start for s in box[:3]]
    starts = [np.concatenate([[0], np.cumsum(c)]) for c in stored.chunks[:3]]

    def read(region):
        index, select = [], []
        for (a0, a1), o, st in zip(region, offset, starts, strict=True):
            i = int(np.searchsorted(st, a0 + o, side="right")) - 1
            if a1 + o > st[i + 1]:
                return None  # not inside one stored block
            index.append(i)
            select.append(slice(a0 + o - int(st[i]), a1 + o - int(st[i])))
        return frames.slabs((*index, 0), select)

    return read


@fill_doc
def unmask(X, mask_img, order="F"):
    """Put (T, V) data back into a lazy 4-D image ((V,) -> 3-D), zeros outside the mask.

    Parameters
    ----------
    X : numpy or dask array, or a list of them
        (n_volumes, n_voxels) or (n_voxels,) data, voxels in the order of
        :func:`apply_mask`; a list gives a list of images.
    mask_img : 3-D image, or path
        The mask the data were extracted with.
    %(order)s

    Returns
    -------
    LazyImage or list of LazyImage
        Chunked in lazyconn's spatial blocks; bool data become uint8, as nilearn.
    """
    check_in("order", order, ("F", "C"))
    if isinstance(X, list) and X and not np.isscalar(X[0]):
        return [unmask(x, mask_img, order=order) for x in X]
    if not isinstance(X, da.Array):
        X = np.asanyarray(X)
    mask, affine = load_mask_img(mask_img)
    if X.ndim not in (1, 2):
        raise DimensionError(f"Masked data X must be 2D or 1D array; got shape: {X.shape}.")
    n_vox = int(mask.sum())
    if X.shape[-1] != n_vox:
        raise ParameterTypeError(
            f"X has shape {X.shape}; expected {n_vox} voxels on its last axis (the number of "
            "voxels in mask_img): X must be of shape (samples, n_voxels) or (n_voxels,)."
        )
    x2 = X if X.ndim == 2 else X[None, :]
    if isinstance(x2, np.ndarray):
        per_vox = max(1, x2.shape[0] * x2.dtype.itemsize)
        x2 = da.from_array(x2, chunks=(-1, max(1, (32 * 2**20) // per_vox)))
    if x2.dtype == bool:
        x2 = x2.astype(np.uint8)
    chunks3 = default_chunks(mask.shape + (x2.shape[0],), x2.dtype)[:3]
    chunks3 = da.core.normalize_chunks(chunks3, mask.shape)
    out = scatter(x2, c_positions(mask), chunks3)
    if X.ndim == 1:
        out = out[..., 0]
    return LazyImage(out, affine)


# ---------------------------------------------------------------------------------------
# masks (computed: small by nature)
# ---------------------------------------------------------------------------------------
def _post_process_mask(mask, affine, opening=2, connected=True, warning_msg=""):
    """Opening, largest connected component, closing: nilearn's ``_post_process_mask``."""
    if opening:
        opening = int(opening)
        mask = binary_operation(mask, "erosion", iterations=opening)
    mask_any = mask.any()
    if not mask_any:
        warn(f"Computed an empty mask. {warning_msg}", MaskWarning)
    if connected and mask_any:
        mask = spatial.largest_connected_component(mask)
    if opening:
        mask = binary_operation(mask, "dilation", iterations=2 * opening)
        mask = binary_operation(mask, "erosion", iterations=opening)
    return mask, affine


def _check_threshold(threshold):
    check_real("threshold", threshold, low=0, high=1, expected="a number in [0, 1]")


def _check_border_size(border_size):
    check_int("border_size", border_size, low=0, expected="a number of voxels (int >= 0)")


def _check_cutoffs(lower_cutoff, upper_cutoff):
    for name, v in (("lower_cutoff", lower_cutoff), ("upper_cutoff", upper_cutoff)):
        check_real(name, v, low=0, high=1, expected="a fraction in [0, 1]")
    if lower_cutoff >= upper_cutoff:
        raise ParameterError(
            f"lower_cutoff={lower_cutoff!r} must be smaller than upper_cutoff={upper_cutoff!r}."
        )


def _epi_mask_from_mean(
    mean_epi,
    affine,
    lower_cutoff,
    upper_cutoff,
    connected,
    opening,
    exclude_zeros,
    ensure_finite,
    name="epi_img",
):
    if ensure_finite:
        mean_epi = np.asarray(spatial.ensure_finite(mean_epi))
    sorted_input = np.sort(np.ravel(mean_epi))
    if exclude_zeros:
        sorted_input = sorted_input[sorted_input != 0]
    if sorted_input.size < 2 or sorted_input[0] == sorted_input[-1]:
        value = float(sorted_input[0]) if sorted_input.size else 0.0
        raise ParameterError(
            f"{name}: its mean image is constant ({value!r} everywhere"
            f"{' once zeros are excluded' if exclude_zeros else ''}), so there is no "
            "brain/background contrast to threshold; expected an EPI run (not all zeros, "
            "not detrended)."
        )
    lo = int(np.floor(lower_cutoff * len(sorted_input)))
    up = min(int(np.floor(upper_cutoff * len(sorted_input))), len(sorted_input) - 1)
    delta = sorted_input[lo + 1 : up + 1] - sorted_input[lo:up]
    ia = delta.argmax()
    threshold = 0.5 * (sorted_input[ia + lo] + sorted_input[ia + lo + 1])
    mask = mean_epi >= threshold
    return _post_process_mask(
        mask,
        affine,
        opening=opening,
        connected=connected,
        warning_msg="Are you sure that input data are EPI images not detrended. ",
    )


def _epi_steps(
    lower_cutoff,
    upper_cutoff,
    connected,
    opening,
    exclude_zeros,
    ensure_finite,
    target_affine,
    target_shape,
):
    """(lazy_mean, mask_from_mean) of the EPI strategy: the mean is smoothed when opening."""
    _check_cutoffs(lower_cutoff, upper_cutoff)
    return (
        lambda img: compute_mean(
            img,
            target_affine=target_affine,
            target_shape=target_shape,
            smooth=(1 if opening else False),
        ),
        lambda mean, affine, name: _epi_mask_from_mean(
            mean,
            affine,
            lower_cutoff,
            upper_cutoff,
            connected,
            opening,
            exclude_zeros,
            ensure_finite,
            name=name,
        ),
    )


@fill_doc
def compute_epi_mask(
    epi_img,
    lower_cutoff=0.2,
    upper_cutoff=0.85,
    connected=True,
    opening=2,
    exclude_zeros=False,
    ensure_finite=True,
    target_affine=None,
    target_shape=None,
    memory=None,
    verbose=0,
) -> LazyImage:
    """Brain mask of an EPI run (nilearn's histogram heuristic), computed.

    Same steps and results as ``nilearn.masking.compute_epi_mask``: mean over time
    (resampled to the target if given), 1-voxel-fwhm smoothing when ``opening``, the
    least-dense point of the sorted values between the cutoffs, then opening, largest
    connected component and closing. The mean is one lazy reduction, computed once.
    A run whose mean is constant (e.g. all zeros) raises ParameterError (nilearn returns an
    arbitrary box).

    Parameters
    ----------
    epi_img : 3-D/4-D image, or path
        The run, opened lazily.
    %(lower_cutoff)s
    %(upper_cutoff)s
    %(connected_opening_2)s
    %(exclude_zeros)s
    ensure_finite : bool, default=True
        Replace NaN and inf by 0 before the mean.
    %(target_affine_mask)s
    %(target_shape_mask)s
    %(mask_ignored)s

    Returns
    -------
    %(mask_returns)s
    """
    del memory, verbose
    return _one_mask(
        epi_img,
        "epi_img",
        *_epi_steps(
            lower_cutoff,
            upper_cutoff,
            connected,
            opening,
            exclude_zeros,
            ensure_finite,
            target_affine,
            target_shape,
        ),
    )


def _one_mask(imgs, name, lazy_mean, mask_from_mean):
    """Mask of one run: its lazy mean (``lazy_mean(img)``) computed once, then
    ``mask_from_mean(mean, affine, name)`` in numpy."""
    img = load_img(imgs, name)
    mean, affine = lazy_mean(img)
    mask, affine = mask_from_mean(np.asarray(mean.compute()), affine, name)
    return new_img_like(img, mask, affine)


def intersect_masks(mask_imgs, threshold=0.5, connected=True) -> LazyImage:
    """Voxels in more than ``threshold`` x n of the masks (int8), as nilearn (computed).

    Parameters
    ----------
    mask_imgs : list of 3-D images, or paths
        Masks on one grid.
    threshold : float in [0, 1], default=0.5
        1: intersection, 0: union (clipped to 1 - 1e-7).
    connected : bool, default=True
        Keep only the largest 6-connected component.

    Returns
    -------
    %(mask_returns)s
    """
    _check_threshold(threshold)
    if not isinstance(mask_imgs, (list, tuple)) or len(mask_imgs) == 0:
        raise ParameterError(
            f"mask_imgs={mask_imgs!r}: no mask provided for intersection; expected a "
            "non-empty list of 3-D masks."
        )
    imgs = [load_3d(m, f"mask_imgs[{i}]") for i, m in enumerate(mask_imgs)]
    check_same_fov(*imgs, names=[f"mask_imgs[{i}]" for i in range(len(imgs))])
    masks = [
        load_mask_img(m, allow_empty=True, name=f"mask_imgs[{i}]")[0]
        for i, m in enumerate(mask_imgs)
    ]
    grp = _intersect(masks, threshold, connected)
    return new_img_like(imgs[0], grp, imgs[0].affine)


def _intersect(masks, threshold, connected):
    """int8 count > threshold x n (threshold already validated), largest component."""
    threshold = min(threshold, 1 - 1.0e-7)
    grp = sum(m.astype(int) for m in masks)
    grp = grp > (threshold * len(masks))
    if np.any(grp) and connected:
        grp = spatial.largest_connected_component(grp)
    return grp.astype(np.int8)


@fill_doc
def compute_multi_epi_mask(
    epi_imgs,
    lower_cutoff=0.2,
    upper_cutoff=0.85,
    connected=True,
    opening=2,
    threshold=0.5,
    target_affine=None,
    target_shape=None,
    exclude_zeros=False,
    n_jobs=1,
    memory=None,
    verbose=0,
) -> LazyImage:
    """Common EPI mask of several runs: per-run ``compute_epi_mask``, then ``intersect_masks``.

    All runs' mean images are computed in one ``dask.compute`` (dask parallelises).

    Parameters
    ----------
    epi_imgs : list of 3-D/4-D images, or paths
        The runs, opened lazily.
    %(lower_cutoff)s
    %(upper_cutoff)s
    connected : bool, default=True
        Keep only the largest connected component of the common mask.
    opening : bool or int, default=2
        Opening iterations of each run's mask (as :func:`compute_epi_mask`).
    %(multi_threshold)s
    %(target_affine_mask)s
    %(target_shape_mask)s
    %(exclude_zeros)s
    %(n_jobs_ignored)s
    %(mask_ignored)s

    Returns
    -------
    %(mask_returns)s
    """
    del n_jobs, memory, verbose
    return _multi_mask(
        epi_imgs,
        "epi_imgs",
        *_epi_steps(
            lower_cutoff,
            upper_cutoff,
            connected,
            opening,
            exclude_zeros,
            True,
            target_affine,
            target_shape,
        ),
        threshold,
        connected,
    )


def _multi_mask(imgs, name, lazy_mean, mask_from_mean, threshold, connected):
    """Common mask of several runs: every run's lazy mean in one ``dask.compute``, a mask
    per mean (``mask_from_mean(mean, affine, name)``), then ``intersect_masks``' rule."""
    if not isinstance(imgs, (list, tuple)) or len(imgs) == 0:
        raise ParameterTypeError(
            f"{name}={imgs!r}: an empty object was passed instead of a list of images."
        )
    _check_threshold(threshold)
    imgs = [load_img(e, f"{name}[{i}]") for i, e in enumerate(imgs)]
    lazy = [lazy_mean(img) for img in imgs]
    means = dask.compute(*[m for m, _ in lazy])
    masks = [
        mask_from_mean(np.asarray(mean), affine, f"{name}[{i}]")[0]
        for i, (mean, (_, affine)) in enumerate(zip(means, lazy, strict=True))
    ]
    # Every mask is on the grid of its mean, i.e. the (common) target grid.
    shapes = {m.shape for m in masks}
    if len(shapes) > 1:
        raise GridMismatchError(
            f"{name} have different grids (mask shapes {sorted(shapes)}); give target_affine "
            "and target_shape to resample them onto one grid."
        )
    return new_img_like(imgs[0], _intersect(masks, threshold, connected), lazy[0][1])


def _background_mask_from_mean(mean, affine, border_size, connected, opening):
    border = spatial.border_data(mean, border_size)
    if np.isnan(border).any():
        mask = np.logical_not(np.isnan(mean))  # NaN background, as SPM writes
    else:
        mask = mean != np.median(border)
    return _post_process_mask(
        mask,
        affine,
        opening=opening,
        connected=connected,
        warning_msg="Are you sure that input images have a homogeneous background.",
    )


def _background_steps(border_size, connected, opening, target_affine, target_shape):
    """(lazy_mean, mask_from_mean) of the background strategy (the mean is not smoothed)."""
    return (
        lambda img: compute_mean(img, target_affine=target_affine, target_shape=target_shape),
        lambda mean, affine, name: _background_mask_from_mean(
            mean, affine, border_size, connected, opening
        ),
    )


@fill_doc
def compute_background_mask(
    data_imgs,
    border_size=2,
    connected=False,
    opening=False,
    target_affine=None,
    target_shape=None,
    memory=None,
    verbose=0,
) -> LazyImage:
    """Brain mask of images with a homogeneous background, computed (nilearn's rule).

    Same steps and results as ``nilearn.masking.compute_background_mask``: mean over time
    (resampled to the target if given, not smoothed); if the outer shell of thickness
    ``border_size`` holds a NaN the mask is the non-NaN voxels, else the background is the
    shell's median and the mask is every voxel that differs from it; then opening, largest
    connected component and closing. The mean is one lazy reduction, computed once.

    Parameters
    ----------
    data_imgs : 3-D/4-D image, or path
        The image, opened lazily.
    %(border_size)s
    connected : bool, default=False
        Keep only the largest connected component (6-connectivity).
    opening : bool or int, default=False
        Morphological opening with this many iterations (``True`` = 2), then the same number
        of closings.
    %(target_affine_mask)s
    %(target_shape_mask)s
    %(mask_ignored)s

    Returns
    -------
    %(mask_returns)s
    """
    del memory, verbose
    _check_border_size(border_size)
    return _one_mask(
        data_imgs,
        "data_imgs",
        *_background_steps(border_size, connected, opening, target_affine, target_shape),
    )


@fill_doc
def compute_multi_background_mask(
    data_imgs,
    border_size=2,
    connected=True,
    opening=2,
    threshold=0.5,
    target_affine=None,
    target_shape=None,
    n_jobs=1,
    memory=None,
    verbose=0,
) -> LazyImage:
    """Common background mask of several runs: per-run ``compute_background_mask``, then
    ``intersect_masks`` (nilearn's rule; note the defaults differ from the single-run ones).

    All runs' mean images are computed in one ``dask.compute`` (dask parallelises).

    Parameters
    ----------
    data_imgs : list of 3-D/4-D images, or paths
        The runs, opened lazily.
    %(border_size)s
    connected : bool, default=True
        Keep only the largest connected component of the common mask.
    opening : bool or int, default=2
        Opening iterations of each run's mask.
    %(multi_threshold)s
    %(target_affine_mask)s
    %(target_shape_mask)s
    %(n_jobs_ignored)s
    %(mask_ignored)s

    Returns
    -------
    %(mask_returns)s
    """
    del n_jobs, memory, verbose
    _check_border_size(border_size)
    return _multi_mask(
        data_imgs,
        "data_imgs",
        *_background_steps(border_size, connected, opening, target_affine, target_shape),
        threshold,
        connected,
    )


_BRAIN_TEMPLATES = {
    "whole-brain": load_mni152_template,
    "gm": load_mni152_gm_template,
    "wm": load_mni152_wm_template,
}


@fill_doc
def compute_brain_mask(
    target_img,
    threshold=0.5,
    connected=True,
    opening=2,
    memory=None,
    verbose=0,
    mask_type="whole-brain",
) -> LazyImage:
    """Whole-brain, grey- or white-matter mask from the MNI152 templates, computed.

    The 1 mm template of ``mask_type`` resampled (cubic, no clip) onto the grid of
    ``target_img``, kept where >= ``threshold``, then nilearn's opening/closing.

    Parameters
    ----------
    target_img : 3-D/4-D image, or path
        Only its shape and affine are used (its voxels are never read).
    %(brain_threshold)s
    %(connected_opening_2)s
    %(mask_ignored)s
    %(mask_type)s

    Returns
    -------
    %(mask_returns)s
    """
    del memory, verbose
    check_in("mask_type", mask_type, tuple(_BRAIN_TEMPLATES))
    target = load_img(target_img, "target_img")
    template = _BRAIN_TEMPLATES[mask_type](resolution=1)
    resampled = resample_to_img(template, target)
    mask = (np.asarray(resampled.data.compute()) >= threshold).astype("int8")
    mask, affine = _post_process_mask(
        mask,
        target.affine,
        opening=opening,
        connected=connected,
        warning_msg=f"{mask_type} mask is empty, lower the threshold or check your input FOV",
    )
    return new_img_like(target, mask, affine)


@fill_doc
def compute_multi_brain_mask(
    target_imgs,
    threshold=0.5,
    connected=True,
    opening=2,
    memory=None,
    verbose=0,
    mask_type="whole-brain",
) -> LazyImage:
    """``compute_brain_mask`` on the grid of the first of ``target_imgs``.

    As nilearn: all are loaded, which checks they are images; only the first one's
    shape/affine is used.

    Parameters
    ----------
    target_imgs : list of 3-D/4-D images, or paths
        The runs; their voxels are never read.
    %(brain_threshold)s
    connected : bool, default=True
        Keep only the largest connected component (6-connectivity).
    opening : bool or int, default=2
        Morphological opening with this many iterations, then as many closings.
    %(mask_ignored)s
    %(mask_type)s

    Returns
    -------
    %(mask_returns)s
    """
    if not isinstance(target_imgs, (list, tuple)) or len(target_imgs) == 0:
        raise ParameterTypeError(
            f"target_imgs={target_imgs!r}: an empty object was passed instead of a list of images."
        )
    for i, img in enumerate(target_imgs):
        load_img(img, f"target_imgs[{i}]")
    return compute_brain_mask(
        target_imgs[0],
        threshold=threshold,
        connected=connected,
        opening=opening,
        memory=memory,
        verbose=verbose,
        mask_type=mask_type,
    )
