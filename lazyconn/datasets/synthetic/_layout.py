"""The synthetic brain: grid, mask, planted regions, tissue classes and nuisance weights.

Everything here is the same for every subject; :func:`build_layout` assembles it.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
from scipy import ndimage

from lazyconn.datasets.synthetic import _truth
from lazyconn.image.templates import MNI152_FILE_PATH, load_mni152_template

# Amplitudes, as fractions of the voxel baseline (BOLD percent signal change / 100).
_NOISE_LEVEL = 0.008
_PHYSIO_AMPLITUDE = (0.01, 0.006)  # global-like, spatially structured
_DRIFT_AMPLITUDE = 0.02
_FD_SPIKE = 0.02  # intensity drop per mm of framewise displacement
_EDGE_BLUR_MM = 4.0  # sigma of the blur of the baseline whose gradient makes motion artifacts


@dataclass
class Layout:
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


def template_on_grid(resolution: float) -> tuple[np.ndarray, np.ndarray]:
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


def _voxel_coords(mask, affine):
    """MNI coordinates (mm) of the in-mask voxels, and their indices."""
    ijk = np.argwhere(mask)
    return ijk, ijk @ affine[:3, :3].T + affine[:3, 3]


def _assign_blobs(xyz, coords, region_radius):
    """Nearest region of each voxel, its distance, and whether it lies within the radius."""
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
    return nearest, near_dist, inside


def _planted_images(shape, ijk, signal_index, signal_region, signal_weight, region_net, n_nets):
    """Region labels (1-based) and network maps (the signal weight of each voxel)."""
    sel = tuple(ijk[signal_index].T)
    labels = np.zeros(shape, dtype=np.int32)
    labels[sel] = signal_region + 1
    maps = np.zeros((*shape, n_nets), dtype=np.float32)
    maps[(*sel, region_net[signal_region])] = signal_weight
    return labels, maps


def _tissue_classes(mask, template):
    """CSF and white-matter voxels (in-mask positions) from T1 contrast: dark and bright."""
    eroded = ndimage.binary_erosion(mask)
    csf = mask & eroded & (template < 0.5)
    wm = mask & (template > 0.8)
    if not csf.any():
        csf = mask & (template < np.percentile(template[mask], 10))
    if not wm.any():
        wm = mask & (template > np.percentile(template[mask], 90))
    return csf, np.flatnonzero(csf[mask]), np.flatnonzero(wm[mask])


def _smooth_field(rng, shape, sigma_vox):
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma_vox, mode="wrap")
    return field / field.std()


def _motion_loadings(baseline_img, mask, affine, resolution):
    """Intensity change per unit of each motion parameter: I(x - d) ~ I(x) - grad I . d."""
    # EPI edges are blurred (point-spread function), which softens edge artifacts
    blurred = ndimage.gaussian_filter(baseline_img, _EDGE_BLUR_MM / resolution)
    grad = np.stack(np.gradient(blurred, resolution), axis=-1)[mask]  # per mm
    _, xyz = _voxel_coords(mask, affine)
    centre = np.array([0.0, -18.0, 18.0])  # rotate about the middle of the brain
    r = xyz - centre
    # displacement of rot_x, rot_y, rot_z (small angles, rad): omega x r
    rot = [np.cross(np.eye(3)[k], r) for k in range(3)]
    columns = [-grad[:, k] for k in range(3)] + [-(grad * d).sum(axis=1) for d in rot]
    return np.stack(columns, axis=1)


def _nuisance_weights(rng, baseline_img, mask, csf, affine, resolution):
    """Voxel weights of the nuisance sources (motion, physiology, drift, FD) and noise SD.

    The sources, in the order of ``timecourses.nuisance_sources``: 6 motion parameters, a
    global-like and a structured physiological signal, 2 drifts, framewise displacement.
    """
    baseline = baseline_img[mask]
    n_vox = len(baseline)
    smooth = 20.0 / resolution  # physiological fields vary over ~ 2 cm
    # Global-like physiology, stronger in CSF; structured physiology with both signs.
    physio_global = (1.0 + 0.5 * np.clip(_smooth_field(rng, mask.shape, smooth), -1.5, 1.5))[mask]
    physio_global *= np.where(csf[mask], 2.0, 1.0)
    physio_local = _smooth_field(rng, mask.shape, smooth)[mask]
    drift = rng.normal(0.0, 1.0, size=(n_vox, 2))
    drift[:, 0] += 0.5  # slow signal increase on average (scanner warm-up)
    fd_spike = 0.5 + rng.random(n_vox)
    loadings = np.column_stack(
        [
            _motion_loadings(baseline_img, mask, affine, resolution),
            baseline * _PHYSIO_AMPLITUDE[0] * physio_global,
            baseline * _PHYSIO_AMPLITUDE[1] * physio_local,
            baseline[:, None] * _DRIFT_AMPLITUDE * drift,
            -baseline * _FD_SPIKE * fd_spike,
        ]
    ).astype(np.float64)
    noise_sd = (_NOISE_LEVEL * baseline * (0.75 + 0.5 * rng.random(n_vox))).astype(np.float32)
    return loadings, noise_sd


def build_layout(resolution, n_networks, region_radius, seed, nuisance=1.0) -> Layout:
    """The subject-independent part of the dataset (see ``make_synthetic_fmri``'s Notes)."""
    template, affine = template_on_grid(resolution)
    mask = template > 0.2  # nilearn's load_mni152_brain_mask rule
    shape = template.shape
    # EPI-like baseline: positive, a few hundred to ~1500, with tissue contrast.
    baseline_img = np.where(mask, 400.0 + 1000.0 * template, 0.0).astype(np.float32)
    flat_index = np.arange(np.prod(shape)).reshape(shape, order="F")[mask]

    network_names = [name for name, _ in _truth.NETWORKS[:n_networks]]
    region_names, region_networks, coords, pairs = _truth.region_table(n_networks)
    net_corr = _truth.network_correlation(network_names)
    region_corr = _truth.region_correlation(network_names, region_networks, pairs, net_corr)

    # Blobs: Gaussians (sigma = 0.6 radius) cut at the radius; a voxel goes to its nearest blob.
    ijk, xyz = _voxel_coords(mask, affine)
    nearest, near_dist, inside = _assign_blobs(xyz, coords, region_radius)
    weight = np.exp(-0.5 * (near_dist / (0.6 * region_radius)) ** 2)
    signal_index = np.flatnonzero(inside)
    signal_region = nearest[signal_index]
    signal_weight = weight[signal_index].astype(np.float32)
    region_net = np.array([network_names.index(n) for n in region_networks])
    labels, maps = _planted_images(
        shape, ijk, signal_index, signal_region, signal_weight, region_net, n_networks
    )

    csf, csf_index, wm_index = _tissue_classes(mask, template)
    loadings, noise_sd = _nuisance_weights(
        np.random.default_rng(seed), baseline_img, mask, csf, affine, resolution
    )
    return Layout(
        affine=affine,
        shape=shape,
        mask=mask,
        flat_index=flat_index,
        baseline=baseline_img[mask],
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
        compcor_index=np.setdiff1d(np.union1d(csf_index, wm_index), signal_index),
        region_names=region_names,
        region_networks=region_networks,
        region_coords=coords,
        network_names=network_names,
        region_correlation=region_corr,
        network_correlation=net_corr,
    )
