"""Synthetic resting-state fMRI in an fMRIPrep-like layout, with a planted ground truth.

The generator is small, deterministic and fast, so tests, examples and benchmarks can run the
whole connectome workflow on data whose answer is known. See :func:`make_synthetic_fmri`.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage
from sklearn.utils import Bunch

from lazyconn._utils import check_positive, check_type, is_path_like
from lazyconn.exceptions import OutputExistsError, ParameterError, ParameterTypeError
from lazyconn.image.templates import MNI152_FILE_PATH, load_mni152_template

__all__ = ["NETWORKS", "REDUCED_CONFOUNDS", "make_synthetic_fmri"]

# Bump when the generated data change, so cached datasets are regenerated.
_GENERATOR_VERSION = 4

SPACE = "MNI152NLin2009cAsym"
TASK = "rest"

#: Planted networks: name and left-hemisphere blob centres (MNI mm). Every blob is mirrored to
#: the right hemisphere (x -> -x). Blobs of one network are >= 31 mm apart, blobs of different
#: networks >= 29 mm, so regions of ``region_radius`` 10 mm never touch.
NETWORKS: tuple[tuple[str, tuple[tuple[int, int, int], ...]], ...] = (
    ("visual", ((-18, -86, 4), (-44, -72, -8))),
    ("somatomotor", ((-38, -22, 56), (-56, -8, 30))),
    ("default_mode", ((-46, -66, 30), (-58, -16, -18))),
    ("frontoparietal", ((-44, 30, 28), (-28, -58, 52))),
    ("salience", ((-36, 16, 0), (-60, -40, 26))),
    ("limbic", ((-40, 14, -30), (-26, -22, -16))),
)
# Correlation between network time courses (the rest are 0); one anti-correlated pair.
_NETWORK_LINKS = {
    ("visual", "somatomotor"): 0.3,
    ("default_mode", "limbic"): 0.3,
    ("frontoparietal", "salience"): 0.3,
    ("default_mode", "salience"): -0.5,
}
# Region correlation = _SHARE_NETWORK * network correlation (+ _SHARE_PAIR for mirrored regions).
_SHARE_NETWORK = 0.6
_SHARE_PAIR = 0.15

# Amplitudes, as fractions of the voxel baseline (BOLD percent signal change / 100).
_NEURAL_AMPLITUDE = 0.03
_NOISE_LEVEL = 0.008
_PHYSIO_AMPLITUDE = (0.01, 0.006)  # global-like, spatially structured
_DRIFT_AMPLITUDE = 0.02
_FD_SPIKE = 0.02  # intensity drop per mm of framewise displacement
_MOTION_SCALE = 0.6  # head motion magnitude (mean framewise displacement ~0.15 mm)
_EDGE_BLUR_MM = 4.0  # sigma of the blur of the baseline whose gradient makes motion artifacts
_MOTION_RADIUS = 50.0  # mm, head radius used by framewise displacement (Power et al. 2012)
_HIGH_PASS_PERIOD = 128.0  # s, fMRIPrep's cosine basis cut-off
_N_COMPCOR = 6
_MOTION_COLUMNS = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
#: Columns of the reduced confounds files, as ``nilearn.datasets.fetch_development_fmri``
#: (``reduce_confounds=True``) keeps them.
REDUCED_CONFOUNDS = _MOTION_COLUMNS + (
    "framewise_displacement",
    *(f"a_comp_cor_{k:02d}" for k in range(6)),
    "csf",
    "white_matter",
)
_SLAB_BYTES = 64 * 2**20  # memory budget of one written time slab
_QUANTUM = 16.0  # voxel values are multiples of 1 / _QUANTUM


def _default_data_dir() -> Path:
    return Path(os.environ.get("LAZYCONN_DATA", Path.home() / "lazyconn_data"))


# --- grid and anatomy ---------------------------------------------------------------------


def _template_on_grid(resolution: float) -> tuple[np.ndarray, np.ndarray]:
    """MNI template scaled to [0, 1] and affine, as ``load_mni152_template(resolution)``."""
    if not float(resolution).is_integer():
        template = load_mni152_template(resolution)
        return np.asarray(template.data.compute()), template.affine
    # Cubic resampling at integer voxel positions returns the samples themselves, so for
    # integer resolutions subsampling gives the same values ~30x faster.
    img = nib.load(MNI152_FILE_PATH)
    data = np.asarray(img.dataobj)  # uint8: subsample before converting
    step = int(resolution)
    # nilearn's grid: the 1 mm bounding box, plus one voxel
    shape = tuple(int(np.ceil((n - 1) / step)) + 1 for n in data.shape)
    out = np.zeros(shape, dtype=np.float32)
    sub = data[::step, ::step, ::step]
    out[: sub.shape[0], : sub.shape[1], : sub.shape[2]] = sub
    out /= np.float32(data.max())
    affine = img.affine.copy()
    affine[:3, :3] = np.eye(3) * step
    return out, affine


@dataclass
class _Layout:
    """Everything about the synthetic brain that does not depend on the subject."""

    affine: np.ndarray
    shape: tuple[int, int, int]
    mask: np.ndarray  # bool (x, y, z)
    flat_index: np.ndarray  # in-mask voxels, index in the NIfTI (Fortran) order
    baseline: np.ndarray  # (n_vox,) float32
    labels: np.ndarray  # int (x, y, z), 0 = background, 1..n_regions
    maps: np.ndarray  # float32 (x, y, z, n_networks)
    signal_index: np.ndarray  # in-mask positions carrying neural signal
    signal_region: np.ndarray  # region (0-based) of each of those
    signal_weight: np.ndarray  # blob weight (0, 1] of each of those
    loadings: np.ndarray  # (n_vox, n_sources) float64 contamination weights
    nuisance: float  # scale of the contamination in the data (not in the aCompCor directions)
    noise_sd: np.ndarray  # (n_vox,) float32
    csf_index: np.ndarray
    wm_index: np.ndarray
    compcor_index: np.ndarray
    region_names: list[str]
    region_networks: list[str]
    region_coords: np.ndarray  # (n_regions, 3) float64, MNI mm
    network_names: list[str]
    region_correlation: np.ndarray
    network_correlation: np.ndarray


def _smooth_field(rng, shape, sigma_vox):
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma_vox, mode="wrap")
    return field / field.std()


def _planted_correlations(network_names):
    n_net = len(network_names)
    net_corr = np.eye(n_net)
    for (a, b), value in _NETWORK_LINKS.items():
        if a in network_names and b in network_names:
            i, j = network_names.index(a), network_names.index(b)
            net_corr[i, j] = net_corr[j, i] = value
    return net_corr


def _region_table(n_networks):
    names, networks, coords, pairs = [], [], [], []
    for name, blobs in NETWORKS[:n_networks]:
        for k, (x, y, z) in enumerate(blobs, start=1):
            for hemi, sign in (("L", 1), ("R", -1)):
                names.append(f"{name}_{k}_{hemi}")
                networks.append(name)
                coords.append((sign * x, y, z))
                pairs.append(len(pairs) // 2)
    return names, networks, np.array(coords, dtype=np.float64), np.array(pairs)


def _region_correlation(network_names, region_networks, pairs, net_corr):
    net_index = np.array([network_names.index(n) for n in region_networks])
    corr = _SHARE_NETWORK * net_corr[np.ix_(net_index, net_index)]
    corr += _SHARE_PAIR * (pairs[:, None] == pairs[None, :])
    np.fill_diagonal(corr, 1.0)
    return corr


def _motion_loadings(baseline_img, mask, affine, resolution):
    """Intensity change per unit of each motion parameter: I(x - d) ~ I(x) - grad I . d."""
    # EPI edges are blurred (point-spread function), which softens edge artifacts
    blurred = ndimage.gaussian_filter(baseline_img, _EDGE_BLUR_MM / resolution)
    grad = np.stack(np.gradient(blurred, resolution), axis=-1)[mask]  # per mm
    ijk = np.argwhere(mask)
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
    centre = np.array([0.0, -18.0, 18.0])  # rotate about the middle of the brain
    r = xyz - centre
    # displacement of rot_x, rot_y, rot_z (small angles, rad): omega x r
    rot = [np.cross(np.eye(3)[k], r) for k in range(3)]
    columns = [-grad[:, k] for k in range(3)] + [-(grad * d).sum(axis=1) for d in rot]
    return np.stack(columns, axis=1)


def _build_layout(resolution, n_networks, region_radius, seed, nuisance=1.0) -> _Layout:
    template, affine = _template_on_grid(resolution)
    mask = template > 0.2  # nilearn's load_mni152_brain_mask rule
    shape = template.shape
    # EPI-like baseline: positive, a few hundred to ~1500, with tissue contrast.
    baseline_img = np.where(mask, 400.0 + 1000.0 * template, 0.0).astype(np.float32)
    baseline = baseline_img[mask]
    fortran_index = np.arange(np.prod(shape)).reshape(shape, order="F")
    flat_index = fortran_index[mask]

    network_names = [name for name, _ in NETWORKS[:n_networks]]
    region_names, region_networks, coords, pairs = _region_table(n_networks)
    net_corr = _planted_correlations(network_names)
    region_corr = _region_correlation(network_names, region_networks, pairs, net_corr)

    # Blobs: Gaussians (sigma = 0.6 radius) cut at the radius; a voxel goes to its nearest blob.
    ijk = np.argwhere(mask)
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
    nearest = np.zeros(len(xyz), dtype=np.intp)
    near_dist = np.full(len(xyz), np.inf)
    closest_voxel = []
    for region, centre in enumerate(coords):  # one region at a time: memory O(voxels)
        dist = np.sqrt(((xyz - centre) ** 2).sum(axis=1))
        closer = dist < near_dist
        nearest[closer], near_dist[closer] = region, dist[closer]
        closest_voxel.append((dist.argmin(), dist.min()))
    inside = near_dist <= region_radius
    # at coarse resolutions a small region may hold no voxel centre: keep its nearest voxel
    for region, (v, d) in enumerate(closest_voxel):
        if not np.any(inside & (nearest == region)):
            nearest[v], near_dist[v], inside[v] = region, d, True
    sigma = 0.6 * region_radius
    weight = np.exp(-0.5 * (near_dist / sigma) ** 2)
    signal_index = np.flatnonzero(inside)
    signal_region = nearest[signal_index]
    signal_weight = weight[signal_index].astype(np.float32)

    labels = np.zeros(shape, dtype=np.int32)
    labels[tuple(ijk[signal_index].T)] = signal_region + 1
    maps = np.zeros(shape + (n_networks,), dtype=np.float32)
    region_net = np.array([network_names.index(n) for n in region_networks])
    sel = tuple(ijk[signal_index].T)
    maps[sel + (region_net[signal_region],)] = signal_weight

    # Tissue classes from T1 contrast: dark = CSF, bright = white matter.
    eroded = ndimage.binary_erosion(mask)
    csf = mask & eroded & (template < 0.5)
    wm = mask & (template > 0.8)
    if not csf.any():
        csf = mask & (template < np.percentile(template[mask], 10))
    if not wm.any():
        wm = mask & (template > np.percentile(template[mask], 90))
    csf_index = np.flatnonzero(csf[mask])
    wm_index = np.flatnonzero(wm[mask])
    compcor_index = np.setdiff1d(np.union1d(csf_index, wm_index), signal_index)

    rng = np.random.default_rng(seed)
    smooth = 20.0 / resolution  # physiological fields vary over ~ 2 cm
    # Global-like physiology, stronger in CSF; structured physiology with both signs.
    physio_global = (1.0 + 0.5 * np.clip(_smooth_field(rng, shape, smooth), -1.5, 1.5))[mask]
    physio_global *= np.where(csf[mask], 2.0, 1.0)
    physio_local = _smooth_field(rng, shape, smooth)[mask]
    drift = rng.normal(0.0, 1.0, size=(mask.sum(), 2))
    drift[:, 0] += 0.5  # slow signal increase on average (scanner warm-up)
    fd_spike = 0.5 + rng.random(mask.sum())
    loadings = np.column_stack(
        [
            _motion_loadings(baseline_img, mask, affine, resolution),
            baseline * _PHYSIO_AMPLITUDE[0] * physio_global,
            baseline * _PHYSIO_AMPLITUDE[1] * physio_local,
            baseline[:, None] * _DRIFT_AMPLITUDE * drift,
            -baseline * _FD_SPIKE * fd_spike,
        ]
    ).astype(np.float64)
    noise_sd = (_NOISE_LEVEL * baseline * (0.75 + 0.5 * rng.random(mask.sum()))).astype(np.float32)
    return _Layout(
        affine=affine,
        shape=shape,
        mask=mask,
        flat_index=flat_index,
        baseline=baseline,
        labels=labels,
        maps=maps,
        signal_index=signal_index,
        signal_region=signal_region,
        signal_weight=signal_weight,
        loadings=loadings,
        nuisance=nuisance,
        noise_sd=noise_sd,
        csf_index=csf_index,
        wm_index=wm_index,
        compcor_index=compcor_index,
        region_names=region_names,
        region_networks=region_networks,
        region_coords=coords,
        network_names=network_names,
        region_correlation=region_corr,
        network_correlation=net_corr,
    )


# --- time courses -------------------------------------------------------------------------


def _smooth_series(rng, n_timepoints, n_series, t_r, sigma_s=2.0):
    """Unit-variance Gaussian noise smoothed over ``sigma_s`` s (BOLD-like autocorrelation)."""
    x = rng.standard_normal((n_timepoints, n_series))
    sigma = sigma_s / t_r
    if sigma > 0.3:
        x = ndimage.gaussian_filter1d(x, sigma, axis=0, mode="reflect")
    x -= x.mean(axis=0)
    return x / x.std(axis=0)


def _trend_basis(n_timepoints):
    t = np.arange(n_timepoints, dtype=np.float64)
    return np.column_stack([np.ones(n_timepoints), t - t.mean()])


def _neural_signals(rng, n_timepoints, t_r, correlation):
    """Region time courses whose sample correlation equals ``correlation`` exactly.

    The signals are free of constant and linear trend (so nilearn's detrending keeps them);
    whitening and colouring make their sample covariance exactly ``correlation``.
    """
    n_regions = correlation.shape[0]
    z = _smooth_series(rng, n_timepoints, n_regions, t_r)
    trend = _trend_basis(n_timepoints)
    z -= trend @ np.linalg.lstsq(trend, z, rcond=None)[0]
    evals, evecs = np.linalg.eigh(z.T @ z)
    white = z @ (evecs / np.sqrt(evals)) @ evecs.T
    chol = np.linalg.cholesky(correlation)
    return white @ chol.T * np.sqrt(n_timepoints - 1)


def _motion(rng, n_timepoints):
    """Six rigid-body parameters (mm, rad): slow wander, slow slide, a few transient jerks."""
    mover = np.exp(rng.normal(0.0, 0.5))  # some subjects move more than others
    scale = np.array([1.0, 1.0, 1.0, 0.02, 0.02, 0.02]) * mover * _MOTION_SCALE  # rad ~ mm/50
    steps = rng.normal(0.0, 0.05, size=(n_timepoints, 6))
    jerks = rng.random((n_timepoints, 1)) < 0.03
    steps += jerks * rng.normal(0.0, 0.25, size=(n_timepoints, 6))
    params = np.zeros((n_timepoints, 6))
    for t in range(1, n_timepoints):
        params[t] = 0.85 * params[t - 1] + steps[t]
    slide = np.linspace(0.0, 1.0, n_timepoints)[:, None] * rng.normal(0.0, 0.2, size=6)
    return (params + slide) * scale


def _framewise_displacement(motion):
    """Power et al. (2012) FD as fMRIPrep writes it (first value undefined)."""
    diff = np.abs(np.diff(motion, axis=0))
    fd = diff[:, :3].sum(axis=1) + _MOTION_RADIUS * diff[:, 3:].sum(axis=1)
    return np.concatenate([[np.nan], fd])


def _cosine_basis(n_timepoints, t_r):
    """Discrete cosine basis (128 s cut-off) without the constant: fMRIPrep's ``cosineXX``."""
    order = int(np.floor(2 * n_timepoints * t_r / _HIGH_PASS_PERIOD))
    n = np.arange(n_timepoints)[:, None]
    k = np.arange(1, max(order, 1))[None, :]
    return np.sqrt(2.0 / n_timepoints) * np.cos(np.pi / n_timepoints * (n + 0.5) * k)


def _compcor(sources, loadings, compcor_index, cosines):
    """aCompCor components of the planted contamination in the white-matter + CSF voxels.

    fMRIPrep high-passes the voxel time series and keeps their top principal components in time.
    The white noise adds the same variance in every direction, so the components are those of
    the noise-free part ``sources @ loadings.T``, obtained from a small (n_sources, n_sources)
    Gram matrix instead of the (voxels x time) data.
    """
    basis = np.column_stack([np.ones(len(sources)), cosines])
    hp = sources - basis @ np.linalg.lstsq(basis, sources, rcond=None)[0]
    w = loadings[compcor_index]
    gram = w.T @ w
    evals, evecs = np.linalg.eigh(gram)
    root = evecs * np.sqrt(np.clip(evals, 0.0, None)) @ evecs.T
    u = np.linalg.svd(hp @ root, full_matrices=False)[0]
    u = u[:, :_N_COMPCOR]
    # deterministic signs: largest entry positive
    signs = np.sign(u[np.abs(u).argmax(axis=0), np.arange(u.shape[1])])
    return u * signs


# --- writing ------------------------------------------------------------------------------


class _GzipWriter:
    """Write a .gz file with zlib's run-length strategy.

    On these images (zero background, quantised floats) it is ~1.5x faster than gzip level 1
    and compresses a little better. The gzip header has no time stamp or name, so the same
    data always give the same bytes.
    """

    def __init__(self, path):
        self._file = open(path, "wb")  # noqa: SIM115 - closed in __exit__
        self._zip = zlib.compressobj(6, zlib.DEFLATED, 31, 9, zlib.Z_RLE)  # 31: gzip wrapper

    def write(self, data):
        self._file.write(self._zip.compress(data))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            if exc[0] is None:
                self._file.write(self._zip.flush())
        finally:
            self._file.close()


def _nifti_header(shape, affine, dtype, t_r=1.0):
    zooms = tuple(np.sqrt((affine[:3, :3] ** 2).sum(axis=0))) + (t_r,) * (len(shape) - 3)
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_zooms(zooms)
    header.set_xyzt_units("mm", "sec")
    header.set_qform(affine, code="mni")
    header.set_sform(affine, code="mni")
    header.set_data_offset(352)  # single-file NIfTI-1: 348-byte header + 4-byte extension flag
    return header


def _write_bold(path, layout, subject_series, n_timepoints, t_r, rng):
    """Stream the 4-D image to ``path`` one time slab at a time; return confound means."""
    shape4 = layout.shape + (n_timepoints,)
    header = _nifti_header(shape4, layout.affine, np.float32, t_r)
    n_grid = int(np.prod(layout.shape))
    # float64 block (so BLAS blocking, which varies with the slab, cannot flip a rounding)
    # plus the float32 volume
    slab = max(1, min(n_timepoints, _SLAB_BYTES // (8 * len(layout.baseline) + 4 * n_grid)))
    neural, sources = subject_series
    amp = _NEURAL_AMPLITUDE * layout.baseline[layout.signal_index] * layout.signal_weight
    means = np.zeros((n_timepoints, 3))
    tmp = path.with_name(path.name + ".part")
    with _GzipWriter(tmp) as out:
        header.write_to(out)  # 348 bytes + the empty extension flag: voxels start at 352
        for t0 in range(0, n_timepoints, slab):
            t1 = min(t0 + slab, n_timepoints)
            block = (sources[t0:t1] * layout.nuisance) @ layout.loadings.T
            block += layout.baseline
            block += rng.standard_normal(block.shape, dtype=np.float32) * layout.noise_sd
            block[:, layout.signal_index] += neural[t0:t1, layout.signal_region] * amp
            # a 1/16 grid (far below the noise) leaves zero low mantissa bits: faster gzip
            np.round(block * _QUANTUM, out=block)
            block /= _QUANTUM
            means[t0:t1, 0] = block.mean(axis=1, dtype=np.float64)
            means[t0:t1, 1] = block[:, layout.csf_index].mean(axis=1, dtype=np.float64)
            means[t0:t1, 2] = block[:, layout.wm_index].mean(axis=1, dtype=np.float64)
            volume = np.zeros((t1 - t0, n_grid), dtype=np.float32)
            volume[:, layout.flat_index] = block  # exact: multiples of 1/16 below 2**19
            out.write(volume)  # buffer protocol: no copy
    os.replace(tmp, path)
    return means


def _confounds_table(means, motion, compcor, cosines):
    table = {
        "global_signal": means[:, 0],
        "csf": means[:, 1],
        "white_matter": means[:, 2],
        "framewise_displacement": _framewise_displacement(motion),
    }
    for k in range(compcor.shape[1]):
        table[f"a_comp_cor_{k:02d}"] = compcor[:, k]
    for k in range(cosines.shape[1]):
        table[f"cosine{k:02d}"] = cosines[:, k]
    for k, name in enumerate(_MOTION_COLUMNS):
        table[name] = motion[:, k]
        table[f"{name}_derivative1"] = np.concatenate([[np.nan], np.diff(motion[:, k])])
    return pd.DataFrame(table)


def _write_tsv(path, frame):
    tmp = path.with_name(path.name + ".part")
    frame.to_csv(tmp, sep="\t", index=False, na_rep="n/a")
    os.replace(tmp, path)


def _write_image(path, data, affine):
    """Save a small image as .nii.gz with a zero gzip time stamp (same bytes on every run)."""
    raw = nib.Nifti1Image(data, affine, _nifti_header(data.shape, affine, data.dtype)).to_bytes()
    tmp = path.with_name(path.name + ".part")
    with _GzipWriter(tmp) as out:
        out.write(raw)
    os.replace(tmp, path)


def _generate_subject(layout, n_timepoints, t_r, seed, bold_path, confounds_path):
    """Write one subject's run and confounds (full fMRIPrep-like and reduced tables)."""
    rng = np.random.default_rng(seed)
    neural = _neural_signals(rng, n_timepoints, t_r, layout.region_correlation)
    motion = _motion(rng, n_timepoints)
    physio = _smooth_series(rng, n_timepoints, 2, t_r, sigma_s=3.0)
    t = np.linspace(-0.5, 0.5, n_timepoints)
    drift = np.column_stack([t, np.cos(np.pi * (t + 0.5))])
    fd = np.nan_to_num(_framewise_displacement(motion))
    sources = np.column_stack([motion, physio, drift, fd])
    means = _write_bold(bold_path, layout, (neural, sources), n_timepoints, t_r, rng)
    cosines = _cosine_basis(n_timepoints, t_r)
    compcor = _compcor(sources, layout.loadings, layout.compcor_index, cosines)
    table = _confounds_table(means, motion, compcor, cosines)
    _write_tsv(confounds_path, table)
    _write_tsv(_reduced_path(confounds_path), table[list(REDUCED_CONFOUNDS)].fillna(0.0))


def _reduced_path(confounds_path):
    return confounds_path.with_name(
        confounds_path.name.replace("desc-confounds", "desc-reducedConfounds")
    )


# --- public API ---------------------------------------------------------------------------


def _check_int(name, value, low, high=None):
    check_type(name, value, (int, np.integer), "an int")
    if isinstance(value, bool) or value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ParameterError(f"{name}={value!r} is not valid; expected an int {bound}.")
    return int(value)


def _seed_from(random_state):
    if random_state is None:
        return int(np.random.SeedSequence().entropy % 2**63)
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**63))
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(2**31))
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        if random_state < 0:
            raise ParameterError(
                f"random_state={random_state!r} is not valid; expected an int >= 0."
            )
        return int(random_state)
    raise ParameterTypeError(
        f"random_state={random_state!r} has type {type(random_state).__name__}; expected an "
        "int, a numpy Generator or RandomState, or None."
    )


def _subject_ids(n_subjects):
    width = max(2, len(str(n_subjects)))
    return [f"sub-{i:0{width}d}" for i in range(1, n_subjects + 1)]


def make_synthetic_fmri(
    n_subjects: int = 10,
    *,
    n_timepoints: int = 100,
    resolution: float = 4,
    t_r: float = 2.0,
    n_networks: int = 6,
    region_radius: float = 10.0,
    nuisance: float = 1.0,
    random_state=0,
    data_dir=None,
    overwrite: bool = False,
    n_jobs: int = 1,
) -> Bunch:
    """Write synthetic resting-state fMRI with a planted connectome, laid out like fMRIPrep.

    Each subject gets a 4-D float32 BOLD run on the MNI ICBM152 grid at ``resolution`` mm
    (the grid of ``nilearn.datasets.load_mni152_template(resolution)``), non-zero inside the
    template's brain mask, and an fMRIPrep-like confounds table. The data contain a known
    ground truth (networks of bilateral regions with a known correlation matrix) buried under
    realistic nuisance signals that the confounds describe, so a correct pipeline recovers the
    truth and cleaning with the confounds measurably helps.

    Parameters
    ----------
    n_subjects : int, default=10
        Number of subjects (``sub-01``, ``sub-02``...; 3 digits from 100 subjects).
    n_timepoints : int, default=100
        Volumes per run. Must be at least ``n_regions + 3`` (so the planted correlation can be
        exact; ``n_regions = 4 * n_networks``).
    resolution : float, default=4
        Voxel size in mm. 4 mm gives shape (50, 59, 48) like nilearn's development dataset
        grid, 8 mm (26, 30, 25) for quick tests.
    t_r : float, default=2.0
        Repetition time in seconds, written in the header (pixdim[4], units mm and s).
    n_networks : int, default=6
        Number of planted networks, the first ones of :data:`NETWORKS` (1 to 6): visual,
        somatomotor, default_mode, frontoparietal, salience, limbic.
    region_radius : float, default=10.0
        Radius (mm) of each planted region. Its voxels carry the region's signal with a
        Gaussian weight of sigma ``0.6 * region_radius``, cut at the radius. Up to ~14 mm the
        regions stay apart (a voxel between two regions goes to the nearer one).
    nuisance : float, default=1.0
        Scale of the nuisance signals (motion artifacts, physiology, drift) in the voxels.
        0 gives clean data (the confounds files are still written); values below 1 make
        voxel-level decompositions of uncleaned data easier (see Notes).
    random_state : int, numpy Generator or RandomState, or None, default=0
        Seed. Subject ``i`` uses a seed derived from it and ``i``, so the same seed gives
        byte-identical files, and the first subjects do not depend on ``n_subjects``.
    data_dir : str or pathlib.Path, optional
        Root folder of the dataset. Default: ``$LAZYCONN_DATA/synthetic_fmri/<key>`` (else
        ``~/lazyconn_data/...``) where ``<key>`` hashes the parameters. A folder already holding
        a complete dataset with the same parameters is reused without writing anything.
    overwrite : bool, default=False
        Regenerate into a ``data_dir`` that holds a dataset made with other parameters (else
        :class:`~lazyconn.exceptions.OutputExistsError`).
    n_jobs : int, default=1
        Subjects written in parallel (threads; -1 = all CPUs). Files do not depend on it.

    Returns
    -------
    data : :class:`sklearn.utils.Bunch`
        Dictionary-like object, as nilearn's fetchers return, with:

        - ``func``: list of str, paths of the BOLD runs
          ``sub-XX/func/sub-XX_task-rest_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz``.
        - ``confounds``: list of str, paths of ``sub-XX_task-rest_desc-confounds_timeseries.tsv``:
          columns ``global_signal, csf, white_matter, framewise_displacement,
          a_comp_cor_00`` ... ``a_comp_cor_05``, ``cosineXX`` (discrete cosine basis, 128 s
          cut-off, as many as fMRIPrep writes), then ``trans_x, trans_x_derivative1, trans_y``
          ... ``rot_z_derivative1``. As in fMRIPrep, ``framewise_displacement`` and the
          ``*_derivative1`` columns are ``n/a`` in the first row (fill them before using the
          table as nilearn confounds, e.g. ``pd.read_csv(path, sep="\\t").fillna(0)``).
        - ``reduced_confounds``: list of str, paths of
          ``sub-XX_task-rest_desc-reducedConfounds_timeseries.tsv``: the 15 columns
          nilearn's ``fetch_development_fmri(reduce_confounds=True)`` keeps (``trans_x`` ...
          ``rot_z``, ``framewise_displacement``, ``a_comp_cor_00`` ... ``05``, ``csf``,
          ``white_matter``), with the first-row ``n/a`` replaced by 0, so the paths can be
          passed as ``confounds=`` to nilearn's or lazyconn's maskers as they are.
        - ``mask``: str, path of the brain mask (uint8, also written per subject as
          ``..._desc-brain_mask.nii.gz``); nilearn's ``load_mni152_brain_mask(resolution)``.
        - ``t_r``: float, the repetition time.
        - ``subjects``: list of str, subject ids.
        - ``maps``: str, path of the planted network maps, a 4-D float32 image with one
          volume per network in [0, 1]: the weight with which each voxel carries its
          network's signal (zero outside the network's regions).
        - ``labels_img``: str, path of the planted regions, a 3-D int32 image, 0 background,
          ``k`` for region ``k`` (1-based, the order of ``region_names``).
        - ``networks``: list of str, network names (the volumes of ``maps``).
        - ``region_names``: list of str, ``"<network>_<blob>_<L|R>"`` for labels 1..n.
        - ``region_networks``: list of str, the network of each region.
        - ``region_coords``: (n_regions, 3) ndarray, planted region centres in MNI mm
          (usable as ``NiftiSpheresMasker`` seeds).
        - ``region_correlation``: (n_regions, n_regions) ndarray, the planted correlation of
          the region signals (see Notes).
        - ``network_correlation``: (n_networks, n_networks) ndarray.
        - ``data_dir``: str, the dataset root. It also holds ``dataset_description.json``
          (parameters and file list, written last: a dataset without it is incomplete) and,
          in ``truth/``, ``regions.tsv`` (index, name, network, x, y, z) and
          ``region_correlation.tsv``.
        - ``description``: str.

    Notes
    -----
    The planted truth. Each network has 4 regions: two blobs per hemisphere, mirrored about
    x = 0 (left region first). Region signals are built per subject so that their sample
    correlation equals ``region_correlation`` exactly, after removing a constant and a linear
    trend (nilearn's ``detrend``): 1 on the diagonal, 0.75 between mirrored regions, 0.6
    between other regions of one network, and ``0.6 * network_correlation`` between networks,
    where the network correlation is 0.3 for visual-somatomotor, default_mode-limbic and
    frontoparietal-salience, -0.5 (anti-correlated) for default_mode-salience, else 0.
    Region signals have a BOLD-like autocorrelation (Gaussian smoothing over 2 s). ICA tends
    to return the anti-correlated pair as one bipolar component.

    Voxel ``v`` at time ``t`` holds ``B_v (1 + 0.03 w_v s_r(t))`` + nuisance + noise, where
    ``B_v`` is a positive baseline (400 + 1000 x template: ~600-1400 in the brain, 0 outside),
    ``w_v`` the region weight (the ``maps`` value: a Gaussian of sigma ``0.6 *
    region_radius`` cut at ``region_radius``) and ``s_r`` the unit-variance signal of the
    voxel's region. Nuisance, with spatially varying weights: head motion through the image
    gradient (``I(x - d) ~ I(x) - grad I . d`` for the six rigid-body parameters, strongest at
    tissue edges), an intensity drop proportional to framewise displacement, a global-like
    (1 %, stronger in CSF) and a spatially structured (0.6 %) physiological signal, and a
    linear plus half-cosine drift. Noise is white, 0.6-1 % of the baseline. Values are
    rounded to multiples of 1/16 (far below the noise; it makes compression faster).

    The confounds are what fMRIPrep would measure: the motion parameters (mm, rad) and their
    backward differences, Power's framewise displacement (head radius 50 mm), the means of
    the written data over the brain (``global_signal``), dark (CSF) and bright (white matter)
    template voxels, and aCompCor: the top 6 temporal components (unit norm) of the
    high-passed nuisance in white matter + CSF voxels outside the regions (computed from the
    noise-free nuisance, which has the same principal directions as the noisy data in
    expectation). Together with ``cosineXX`` and ``framewise_displacement`` they span the
    nuisance exactly, so cleaning with them recovers the planted correlation up to sampling
    error; ``global_signal`` also contains the neural signals (regressing it shifts
    correlations, as in real data). With 100 volumes at 8 mm, nilearn's
    ``NiftiLabelsMasker`` + ``ConnectivityMeasure`` recovers ``region_correlation`` with a
    correlation of ~0.92 per subject and ~0.98 for the group mean (~0.6 without confounds).

    The nuisance is widespread while the planted regions are small (~5 % of the brain), so
    voxel-level decompositions (``CanICA``, ``DictLearning``) of *uncleaned* data find the
    nuisance rather than the networks: pass ``confounds=data.reduced_confounds`` (or the
    cleaned tables) to their ``fit``, or lower ``nuisance``. With confounds, ``CanICA`` with
    ``n_components=4`` on 6 subjects x 100 volumes at 8 mm (``n_networks=4``) matches every
    planted map with a spatial correlation of ~0.75-0.8.

    Memory stays small: one subject and one slab of volumes at a time (64 MB budget).
    Generating 20 subjects at 4 mm x 100 volumes costs ~9 s of CPU (half of it compression);
    ``n_jobs=2`` writes two subjects at a time.

    lazyconn-specific (nilearn has no such generator).
    """
    n_subjects = _check_int("n_subjects", n_subjects, 1)
    n_networks = _check_int("n_networks", n_networks, 1, len(NETWORKS))
    n_regions = 4 * n_networks
    n_timepoints = _check_int("n_timepoints", n_timepoints, 1)
    if n_timepoints < n_regions + 3:
        raise ParameterError(
            f"n_timepoints={n_timepoints!r} is too small for {n_regions} planted regions; "
            f"expected at least {n_regions + 3} (or fewer n_networks)."
        )
    check_positive("resolution", resolution)
    check_positive("t_r", t_r)
    check_positive("region_radius", region_radius)
    check_positive("nuisance", nuisance, strict=False)
    check_type("overwrite", overwrite, bool, "a bool")
    n_jobs = _check_int("n_jobs", n_jobs, -1)
    if n_jobs == 0:
        raise ParameterError("n_jobs=0 is not valid; expected a positive int or -1 (all CPUs).")
    if n_jobs == -1:
        n_jobs = os.cpu_count() or 1
    seed = _seed_from(random_state)
    params = {
        "generator_version": _GENERATOR_VERSION,
        "n_subjects": n_subjects,
        "n_timepoints": n_timepoints,
        "resolution": float(resolution),
        "t_r": float(t_r),
        "n_networks": n_networks,
        "region_radius": float(region_radius),
        "nuisance": float(nuisance),
        "seed": seed,
    }
    if data_dir is None:
        key = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
        root = _default_data_dir() / "synthetic_fmri" / key
    elif is_path_like(data_dir):
        root = Path(data_dir)
    else:
        raise ParameterTypeError(
            f"data_dir={data_dir!r} has type {type(data_dir).__name__}; expected a path or None."
        )

    subjects = _subject_ids(n_subjects)
    func_dirs = [root / sub / "func" for sub in subjects]
    func = [
        d / f"{s}_task-{TASK}_space-{SPACE}_desc-preproc_bold.nii.gz"
        for d, s in zip(func_dirs, subjects)
    ]
    confounds = [
        d / f"{s}_task-{TASK}_desc-confounds_timeseries.tsv" for d, s in zip(func_dirs, subjects)
    ]
    sub_masks = [
        d / f"{s}_task-{TASK}_space-{SPACE}_desc-brain_mask.nii.gz"
        for d, s in zip(func_dirs, subjects)
    ]
    truth_dir = root / "truth"
    mask_path = truth_dir / f"space-{SPACE}_res-{resolution:g}mm_desc-brain_mask.nii.gz"
    maps_path = truth_dir / f"space-{SPACE}_res-{resolution:g}mm_desc-networks_probseg.nii.gz"
    labels_path = truth_dir / f"space-{SPACE}_res-{resolution:g}mm_desc-regions_dseg.nii.gz"
    description_path = root / "dataset_description.json"

    layout = _build_layout(
        float(resolution), n_networks, float(region_radius), seed, float(nuisance)
    )
    found = _read_description(description_path)
    if found is None or found["Parameters"] != params:
        if found is not None:
            if not overwrite:
                raise OutputExistsError(
                    f"data_dir={str(root)!r} already holds a synthetic dataset made with other "
                    f"parameters ({found['Parameters']!r}); pass overwrite=True or another "
                    "data_dir."
                )
            description_path.unlink()  # the folder is incomplete until the end
            for name in found["Files"]:  # the old dataset's files, nothing else
                (root / name).unlink(missing_ok=True)
                for parent in (root / name).parents:  # and its folders left empty
                    if parent == root or any(parent.iterdir()):
                        break
                    parent.rmdir()
        files = [
            mask_path,
            maps_path,
            labels_path,
            truth_dir / "regions.tsv",
            truth_dir / "region_correlation.tsv",
        ]
        files += func + confounds + [_reduced_path(c) for c in confounds] + sub_masks
        _write_truth(layout, truth_dir, mask_path, maps_path, labels_path)
        seeds = np.random.SeedSequence(seed).spawn(n_subjects)

        def write(k):
            func_dirs[k].mkdir(parents=True, exist_ok=True)
            _write_image(sub_masks[k], layout.mask.astype(np.uint8), layout.affine)
            _generate_subject(layout, n_timepoints, float(t_r), seeds[k], func[k], confounds[k])

        # zlib and numpy release the GIL, so threads overlap compression and generation
        with ThreadPoolExecutor(max_workers=min(n_jobs, n_subjects)) as pool:
            for future in [pool.submit(write, k) for k in range(n_subjects)]:
                future.result()
        description = {
            "Name": "lazyconn synthetic resting-state fMRI",
            "BIDSVersion": "1.9.0",
            "DatasetType": "derivative",
            "GeneratedBy": [
                {
                    "Name": "lazyconn.datasets.make_synthetic_fmri",
                    "Parameters": params,
                    "Files": [str(f.relative_to(root)) for f in files],
                }
            ],
        }
        description_path.write_text(json.dumps(description, indent=2))

    return Bunch(
        func=[str(p) for p in func],
        confounds=[str(p) for p in confounds],
        reduced_confounds=[str(_reduced_path(p)) for p in confounds],
        mask=str(mask_path),
        t_r=float(t_r),
        subjects=subjects,
        maps=str(maps_path),
        labels_img=str(labels_path),
        networks=list(layout.network_names),
        region_names=list(layout.region_names),
        region_networks=list(layout.region_networks),
        region_coords=layout.region_coords.copy(),
        region_correlation=layout.region_correlation.copy(),
        network_correlation=layout.network_correlation.copy(),
        data_dir=str(root),
        description=_DESCRIPTION,
    )


_DESCRIPTION = (
    "Synthetic resting-state fMRI made by lazyconn.datasets.make_synthetic_fmri, laid out like "
    "fMRIPrep derivatives, with planted networks of bilateral regions and a known "
    "region-to-region correlation matrix (see the function's docstring)."
)


def _read_description(path: Path) -> dict | None:
    """Parameters and files of the dataset recorded in ``path`` (None if there is none)."""
    if not path.exists():
        return None
    try:
        found = json.loads(path.read_text())["GeneratedBy"][0]
        return {"Parameters": found["Parameters"], "Files": list(found["Files"])}
    except (ValueError, KeyError, IndexError, TypeError):
        return {"Parameters": None, "Files": []}


def _write_truth(layout, truth_dir, mask_path, maps_path, labels_path):
    truth_dir.mkdir(parents=True, exist_ok=True)
    _write_image(mask_path, layout.mask.astype(np.uint8), layout.affine)
    _write_image(maps_path, layout.maps, layout.affine)
    _write_image(labels_path, layout.labels, layout.affine)
    n_regions = len(layout.region_names)
    regions = pd.DataFrame(
        {
            "index": np.arange(1, n_regions + 1),
            "name": layout.region_names,
            "network": layout.region_networks,
            "x": layout.region_coords[:, 0],
            "y": layout.region_coords[:, 1],
            "z": layout.region_coords[:, 2],
        }
    )
    _write_tsv(truth_dir / "regions.tsv", regions)
    np.savetxt(
        truth_dir / "region_correlation.tsv", layout.region_correlation, delimiter="\t", fmt="%.6g"
    )
