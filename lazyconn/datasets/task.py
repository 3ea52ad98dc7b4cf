"""Synthetic task fMRI with a block design and planted condition effects (Haxby-like layout).

Made for nilearn's "ROI extraction" workflow (seed 004): a run whose volumes are labelled by
condition (face, house, ... and rest), an anatomical ventral-temporal (VT) mask, and effects
planted inside the VT mask (face-selective and house-selective regions in each hemisphere)
and outside it (an occipital region that also prefers faces), so that thresholding a
face-vs-house t-test, intersecting with the VT mask and splitting connected components has
a known answer. See :func:`make_synthetic_task_fmri`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

from lazyconn._utils import check_int, check_positive, check_type, is_path_like
from lazyconn.datasets.synthetic._generate import (
    _default_data_dir,
    _read_description,
    _seed_from,
)
from lazyconn.datasets.synthetic._writers import _GzipWriter, _nifti_header, write_image
from lazyconn.exceptions import OutputExistsError, ParameterError, ParameterTypeError

__all__ = ["TASK_EFFECTS", "make_synthetic_task_fmri"]

_GENERATOR_VERSION = 1
_SLAB_BYTES = 64 * 2**20  # memory budget of one written time slab
_QUANTUM = 16.0  # voxel values are multiples of 1 / _QUANTUM (exact in float32, faster gzip)
_REST = "rest"

#: Planted effects: (name, preferred condition, centre and radius in brain-normalised
#: coordinates: x left-right, y posterior-anterior, z inferior-superior, each in [-1, 1]
#: across the brain ellipsoid), and whether the region is inside the VT mask.
TASK_EFFECTS: tuple[tuple[str, str, tuple[float, float, float], float, bool], ...] = (
    ("face_L", "face", (-0.5, -0.5, -0.45), 0.14, True),
    ("face_R", "face", (0.5, -0.5, -0.45), 0.14, True),
    ("house_L", "house", (-0.32, -0.05, -0.42), 0.12, True),
    ("house_R", "house", (0.32, -0.05, -0.42), 0.12, True),
    ("occipital", "face", (0.0, -0.78, 0.05), 0.14, False),
)
# VT mask: one ellipsoid per hemisphere (centre, radii), brain-normalised coordinates.
_VT = (((-0.42, -0.3, -0.45), (0.26, 0.38, 0.17)), ((0.42, -0.3, -0.45), (0.26, 0.38, 0.17)))
_BRAIN_RADIUS = 0.92  # of the half field of view


def _normalised_grid(shape):
    """Voxel coordinates scaled to [-1, 1] over the brain ellipsoid, per axis."""
    half = (np.asarray(shape, dtype=np.float64) - 1) / 2
    return [(np.arange(n) - h) / (h * _BRAIN_RADIUS) for n, h in zip(shape, half, strict=True)]


def _ellipsoid(axes, centre, radii):
    x, y, z = axes
    return (
        ((x[:, None, None] - centre[0]) / radii[0]) ** 2
        + ((y[None, :, None] - centre[1]) / radii[1]) ** 2
        + ((z[None, None, :] - centre[2]) / radii[2]) ** 2
    ) <= 1


def _anatomy(shape):
    axes = _normalised_grid(shape)
    brain = _ellipsoid(axes, (0, 0, 0), (1, 1, 1))
    vt = np.zeros(shape, dtype=bool)
    for centre, radii in _VT:
        vt |= _ellipsoid(axes, centre, radii)
    vt &= brain
    effects = np.zeros(shape, dtype=np.int32)
    for k, (_, _, centre, radius, inside) in enumerate(TASK_EFFECTS, start=1):
        region = _ellipsoid(axes, centre, (radius,) * 3) & brain
        if inside:
            region &= vt
        effects[region & (effects == 0)] = k
    # Baseline: brighter in the centre (a smooth "anatomy"), 0 outside the brain.
    x, y, z = axes
    r2 = x[:, None, None] ** 2 + y[None, :, None] ** 2 + z[None, None, :] ** 2
    baseline = np.where(brain, 600.0 + 400.0 * np.exp(-r2), 0.0).astype(np.float32)
    return brain, vt, effects, baseline


def _design(n_timepoints, conditions, block_volumes, rest_volumes, rng):
    """Per-volume labels and run ("chunk") numbers: rest, block, rest, block, ...

    Each cycle shows every condition once in a random order; a run is one cycle.
    """
    labels, chunks = [], []
    run = 0
    while len(labels) < n_timepoints:
        for condition in rng.permutation(conditions):
            labels += [_REST] * rest_volumes + [str(condition)] * block_volumes
            chunks += [run] * (rest_volumes + block_volumes)
        run += 1
    return np.asarray(labels[:n_timepoints]), np.asarray(chunks[:n_timepoints])


def _hrf(t_r):
    """A gamma-shaped haemodynamic response sampled at ``t_r`` (peak ~5 s, unit sum)."""
    t = np.arange(0, 25.0, t_r)
    h = (t / 5.0) ** 5 * np.exp(-(t - 5.0))
    return h / h.sum()


def _regressors(labels, t_r):
    """(n_timepoints, n_effects) expected response of each effect (boxcar * HRF, max 1)."""
    hrf = _hrf(t_r)
    out = np.zeros((len(labels), len(TASK_EFFECTS)))
    for k, (_, condition, _, _, _) in enumerate(TASK_EFFECTS):
        boxcar = (labels == condition).astype(np.float64)
        out[:, k] = np.convolve(boxcar, hrf)[: len(labels)]
    peak = out.max(axis=0)
    return out / np.where(peak > 0, peak, 1.0)


def _write_run(path, shape, affine, t_r, baseline, effects, regressors, amplitude, noise, rng):
    """Stream the run to ``path`` a slab of volumes at a time (memory: one slab)."""
    n_timepoints = regressors.shape[0]
    header = _nifti_header((*shape, n_timepoints), affine, np.float32, t_r)
    flat = np.flatnonzero(baseline.ravel(order="F") > 0)  # brain voxels, NIfTI order
    base = baseline.ravel(order="F")[flat]
    region = effects.ravel(order="F")[flat]  # 0 or effect index + 1
    in_effect = region > 0
    n_grid = int(np.prod(shape))
    slab = max(1, min(n_timepoints, _SLAB_BYTES // (8 * len(flat) + 4 * n_grid)))
    drift = np.linspace(-0.5, 0.5, n_timepoints) * 0.01  # a slow 1 % drift
    tmp = path.with_name(path.name + ".part")
    with _GzipWriter(tmp) as out:
        header.write_to(out)
        for t0 in range(0, n_timepoints, slab):
            t1 = min(t0 + slab, n_timepoints)
            block = rng.standard_normal((t1 - t0, len(flat)), dtype=np.float32)
            block *= np.float32(noise)
            block += np.float32(1.0) + drift[t0:t1, None].astype(np.float32)
            response = regressors[t0:t1][:, region[in_effect] - 1] * amplitude
            block[:, in_effect] += response.astype(np.float32)
            block *= base
            np.round(block * _QUANTUM, out=block)
            block /= _QUANTUM
            volume = np.zeros((t1 - t0, n_grid), dtype=np.float32)
            volume[:, flat] = block
            out.write(volume)
    os.replace(tmp, path)


def make_synthetic_task_fmri(
    n_timepoints: int = 120,
    *,
    shape=(32, 38, 32),
    voxel_size: float = 4.0,
    t_r: float = 2.5,
    conditions=("face", "house", "cat", "chair"),
    block_volumes: int = 9,
    rest_volumes: int = 6,
    effect_size: float = 0.05,
    noise: float = 0.02,
    random_state=0,
    data_dir=None,
    overwrite: bool = False,
) -> Bunch:
    """Write a synthetic block-design task run with condition labels and planted effects.

    The layout follows nilearn's Haxby dataset (``fetch_haxby``): one subject folder with
    ``bold.nii.gz`` (4-D float32), ``labels.txt`` (space-separated columns ``labels`` and
    ``chunks``: the condition of each volume and its run), ``mask4_vt.nii.gz`` (the
    ventral-temporal mask), ``anat.nii.gz`` and ``mask.nii.gz`` (brain), so the ROI
    extraction example runs on it as on Haxby's data.

    Parameters
    ----------
    n_timepoints : int, default=120
        Volumes in the run (e.g. 1200 for an HCP-length run). The design is cut to it.
    shape : tuple of 3 ints, default=(32, 38, 32)
        Voxel grid (x, y, z); ``(91, 109, 91)`` with ``voxel_size=2`` is the HCP / MNI 2 mm
        grid. Each axis must be at least 12.
    voxel_size : float, default=4.0
        Isotropic voxel size in mm (the affine is centred on the grid).
    t_r : float, default=2.5
        Repetition time in seconds (Haxby's), written in the header.
    conditions : sequence of str, default=("face", "house", "cat", "chair")
        Stimulus conditions; must include "face" and "house" (the planted effects). Every
        cycle of the design shows each condition once in random order.
    block_volumes, rest_volumes : int, default=9 and 6
        Length (volumes) of a stimulus block and of the rest period before it.
    effect_size : float, default=0.05
        Peak response of a planted region to its preferred condition, as a fraction of the
        voxel baseline (5 % signal change).
    noise : float, default=0.02
        Standard deviation of the white noise, as a fraction of the baseline.
    random_state : int, numpy Generator or RandomState, or None, default=0
        Seed; the same seed gives byte-identical files.
    data_dir : str or pathlib.Path, optional
        Folder of the dataset. Default: ``$LAZYCONN_DATA/synthetic_task_fmri/<key>`` (else
        ``~/lazyconn_data/...``), ``<key>`` a hash of the parameters. A folder already
        holding a complete dataset with the same parameters is reused as it is.
    overwrite : bool, default=False
        Regenerate into a ``data_dir`` holding a dataset made with other parameters (else
        :class:`~lazyconn.exceptions.OutputExistsError`).

    Returns
    -------
    data : :class:`sklearn.utils.Bunch`
        With the keys of nilearn's ``fetch_haxby`` (lists of one path): ``func``,
        ``session_target`` (``labels.txt``), ``mask_vt``, ``anat``, and ``mask`` (str);
        plus ``t_r``, ``conditions``, ``labels`` (the per-volume labels, an ndarray),
        ``effects_img`` (path of an int32 image: 0 background, ``k`` for the planted region
        ``effect_names[k - 1]``), ``effect_names``, ``effect_conditions`` (the preferred
        condition of each region), ``effect_in_vt`` (bools), ``effect_coords`` ((n, 3)
        region centres in mm), ``data_dir`` and ``description``.

    Notes
    -----
    Voxel ``v`` at time ``t`` holds ``B_v (1 + d(t) + a x_r(t) + noise)`` inside an
    ellipsoidal brain (0 outside), where ``B_v`` is a smooth baseline (600-1000), ``d`` a
    1 % linear drift, ``a = effect_size`` and ``x_r`` the block regressor of the region's
    preferred condition convolved with a gamma HRF (peak 1), only in the planted regions.
    Regions: a face-preferring and a house-preferring region in each hemisphere's VT, and
    a face-preferring occipital region outside the VT mask (an intersection with the VT
    mask removes it). The VT ellipsoids are larger than the regions, so a VT mask step
    matters and the ROI steps have a known answer. Memory stays bounded (one slab of at
    most 64 MB of volumes at a time), so HCP-size runs (4.3 GB as float32) can be made.
    lazyconn-specific (nilearn fetches the real Haxby data instead).
    """
    n_timepoints = check_int("n_timepoints", n_timepoints, low=2)
    if not isinstance(shape, (tuple, list)) or len(shape) != 3:
        raise ParameterError(f"shape={shape!r} is not valid; expected 3 ints (x, y, z).")
    shape = tuple(check_int(f"shape[{i}]", s, low=12) for i, s in enumerate(shape))
    check_positive("voxel_size", voxel_size)
    check_positive("t_r", t_r)
    check_positive("effect_size", effect_size, strict=False)
    check_positive("noise", noise, strict=False)
    block_volumes = check_int("block_volumes", block_volumes, low=1)
    rest_volumes = check_int("rest_volumes", rest_volumes, low=0)
    check_type("overwrite", overwrite, bool, "a bool")
    if isinstance(conditions, str) or not all(isinstance(c, str) for c in conditions):
        raise ParameterTypeError(
            f"conditions={conditions!r} is not valid; expected a sequence of str."
        )
    conditions = tuple(conditions)
    if not {"face", "house"} <= set(conditions) or _REST in conditions:
        raise ParameterError(
            f"conditions={conditions!r} is not valid; expected names including 'face' and "
            f"'house' (the planted effects), not {_REST!r} (the label between blocks)."
        )
    seed = _seed_from(random_state)
    params = {
        "generator_version": _GENERATOR_VERSION,
        "n_timepoints": n_timepoints,
        "shape": list(shape),
        "voxel_size": float(voxel_size),
        "t_r": float(t_r),
        "conditions": list(conditions),
        "block_volumes": block_volumes,
        "rest_volumes": rest_volumes,
        "effect_size": float(effect_size),
        "noise": float(noise),
        "seed": seed,
    }
    if data_dir is None:
        key = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
        root = _default_data_dir() / "synthetic_task_fmri" / key
    elif is_path_like(data_dir):
        root = Path(data_dir)
    else:
        raise ParameterTypeError(
            f"data_dir={data_dir!r} has type {type(data_dir).__name__}; expected a path or None."
        )
    subj = root / "subj1"
    paths = {
        "func": subj / "bold.nii.gz",
        "session_target": subj / "labels.txt",
        "mask_vt": subj / "mask4_vt.nii.gz",
        "anat": subj / "anat.nii.gz",
        "mask": subj / "mask.nii.gz",
        "effects_img": root / "truth" / "effects.nii.gz",
    }
    description_path = root / "dataset_description.json"

    affine = np.diag([voxel_size] * 3 + [1.0])
    affine[:3, 3] = -(np.asarray(shape) - 1) / 2 * voxel_size
    rng = np.random.default_rng(seed)
    labels, chunks = _design(n_timepoints, conditions, block_volumes, rest_volumes, rng)
    brain, vt, effects, baseline = _anatomy(shape)

    found = _read_description(description_path)
    if found is None or found["Parameters"] != params:
        if found is not None:
            if not overwrite:
                raise OutputExistsError(
                    f"data_dir={str(root)!r} already holds a synthetic dataset made with other "
                    f"parameters ({found['Parameters']!r}); pass overwrite=True or another "
                    "data_dir."
                )
            description_path.unlink()  # incomplete until the end
            for name in found["Files"]:
                (root / name).unlink(missing_ok=True)
        subj.mkdir(parents=True, exist_ok=True)
        paths["effects_img"].parent.mkdir(parents=True, exist_ok=True)
        write_image(paths["mask_vt"], vt.astype(np.uint8), affine)
        write_image(paths["mask"], brain.astype(np.uint8), affine)
        write_image(paths["anat"], baseline, affine)
        write_image(paths["effects_img"], effects, affine)
        table = pd.DataFrame({"labels": labels, "chunks": chunks})
        tmp = paths["session_target"].with_name("labels.txt.part")
        table.to_csv(tmp, sep=" ", index=False)
        os.replace(tmp, paths["session_target"])
        regressors = _regressors(labels, float(t_r))
        _write_run(
            paths["func"],
            shape,
            affine,
            float(t_r),
            baseline,
            effects,
            regressors,
            float(effect_size),
            float(noise),
            rng,
        )
        description = {
            "Name": "lazyconn synthetic task fMRI (Haxby-like)",
            "GeneratedBy": [
                {
                    "Name": "lazyconn.datasets.make_synthetic_task_fmri",
                    "Parameters": params,
                    "Files": [str(p.relative_to(root)) for p in paths.values()],
                }
            ],
        }
        description_path.write_text(json.dumps(description, indent=2))

    centres = []
    for k in range(1, len(TASK_EFFECTS) + 1):
        idx = np.argwhere(effects == k).mean(axis=0)
        centres.append(affine[:3, :3] @ idx + affine[:3, 3])
    return Bunch(
        func=[str(paths["func"])],
        session_target=[str(paths["session_target"])],
        mask_vt=[str(paths["mask_vt"])],
        anat=[str(paths["anat"])],
        mask=str(paths["mask"]),
        t_r=float(t_r),
        conditions=list(conditions),
        labels=labels,
        effects_img=str(paths["effects_img"]),
        effect_names=[e[0] for e in TASK_EFFECTS],
        effect_conditions=[e[1] for e in TASK_EFFECTS],
        effect_in_vt=[e[4] for e in TASK_EFFECTS],
        effect_coords=np.asarray(centres),
        data_dir=str(root),
        description=_DESCRIPTION,
    )


_DESCRIPTION = (
    "Synthetic block-design task fMRI made by lazyconn.datasets.make_synthetic_task_fmri, laid "
    "out like nilearn's Haxby dataset, with face- and house-preferring regions planted in a "
    "ventral-temporal mask and a face-preferring region outside it (see the docstring)."
)
