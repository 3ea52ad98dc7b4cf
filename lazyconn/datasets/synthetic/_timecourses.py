"""Per-subject time courses: region signals, nuisance sources and the confound regressors."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

_MOTION_SCALE = 0.6  # head motion magnitude (mean framewise displacement ~0.15 mm)
_MOTION_RADIUS = 50.0  # mm, head radius used by framewise displacement (Power et al. 2012)
_HIGH_PASS_PERIOD = 128.0  # s, fMRIPrep's cosine basis cut-off
_N_COMPCOR = 6
_MOTION_COLUMNS = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
#: Columns of the reduced confounds files, as ``nilearn.datasets.fetch_development_fmri``
#: (``reduce_confounds=True``) keeps them.
REDUCED_CONFOUNDS = (
    *_MOTION_COLUMNS,
    "framewise_displacement",
    *(f"a_comp_cor_{k:02d}" for k in range(6)),
    "csf",
    "white_matter",
)


def smooth_series(rng, n_timepoints, n_series, t_r, sigma_s=2.0):
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


def neural_signals(rng, n_timepoints, t_r, correlation):
    """Region time courses whose sample correlation equals ``correlation`` exactly.

    The signals are free of constant and linear trend (so nilearn's detrending keeps them);
    whitening and colouring make their sample covariance exactly ``correlation``.
    """
    n_regions = correlation.shape[0]
    z = smooth_series(rng, n_timepoints, n_regions, t_r)
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


def subject_series(rng, n_timepoints, t_r, correlation):
    """One subject's region signals, motion parameters and nuisance sources.

    The sources are, in the order of the layout's loadings: 6 motion parameters, a global-like
    and a structured physiological signal, a linear and a half-cosine drift, and framewise
    displacement.
    """
    neural = neural_signals(rng, n_timepoints, t_r, correlation)
    motion = _motion(rng, n_timepoints)
    physio = smooth_series(rng, n_timepoints, 2, t_r, sigma_s=3.0)
    t = np.linspace(-0.5, 0.5, n_timepoints)
    drift = np.column_stack([t, np.cos(np.pi * (t + 0.5))])
    fd = np.nan_to_num(_framewise_displacement(motion))
    return neural, motion, np.column_stack([motion, physio, drift, fd])


def cosine_basis(n_timepoints, t_r):
    """Discrete cosine basis (128 s cut-off) without the constant: fMRIPrep's ``cosineXX``."""
    order = int(np.floor(2 * n_timepoints * t_r / _HIGH_PASS_PERIOD))
    n = np.arange(n_timepoints)[:, None]
    k = np.arange(1, max(order, 1))[None, :]
    return np.sqrt(2.0 / n_timepoints) * np.cos(np.pi / n_timepoints * (n + 0.5) * k)


def compcor(sources, loadings, compcor_index, cosines):
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


def confounds_table(means, motion, compcor, cosines):
    """fMRIPrep-like confounds: ``means`` are the global, CSF and white-matter means."""
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


def strategy_columns(table, means, motion, sources, layout, cosines):
    """Columns nilearn's ``load_confounds`` strategies read beyond the basic table, and the
    JSON sidecar describing the CompCor columns (fMRIPrep's names and ``Mask`` values)."""
    extra = {}
    first_nan = np.concatenate([[np.nan], np.zeros(len(table) - 1)])
    for base in ("global_signal", "csf", "white_matter", *_MOTION_COLUMNS):
        values = table[base].to_numpy()
        derivative = np.concatenate([[np.nan], np.diff(values)])
        if base not in _MOTION_COLUMNS:
            extra[f"{base}_derivative1"] = derivative
        extra[f"{base}_power2"] = values**2
        extra[f"{base}_derivative1_power2"] = derivative**2
    dvars = means[:, 3] + first_nan
    extra["dvars"] = dvars
    # fMRIPrep divides by the DVARS expected from an AR(1) model; here by the run's median
    extra["std_dvars"] = dvars / np.nanmedian(dvars)
    sidecar = {f"a_comp_cor_{k:02d}": {"Method": "aCompCor", "Mask": "combined"} for k in range(6)}
    groups = (
        ("a_comp_cor", 6, "WM", layout.wm_index, 2),
        ("a_comp_cor", 8, "CSF", layout.csf_index, 2),
        ("t_comp_cor", 0, None, np.arange(len(layout.baseline)), 3),
    )
    for prefix, start, mask, index, n in groups:
        components = compcor(sources, layout.loadings, index, cosines)[:, :n]
        for k in range(components.shape[1]):
            name = f"{prefix}_{start + k:02d}"
            extra[name] = components[:, k]
            sidecar[name] = {"Method": "aCompCor" if mask else "tCompCor", "Retained": True}
            if mask:
                sidecar[name]["Mask"] = mask
    # ICA-AROMA noise components: the motion's principal time courses (no ICA is run)
    u = np.linalg.svd(motion - motion.mean(axis=0), full_matrices=False)[0]
    for k in range(3):
        extra[f"aroma_motion_{k + 1:02d}"] = u[:, k]
    return pd.concat([table, pd.DataFrame(extra)], axis=1), sidecar
