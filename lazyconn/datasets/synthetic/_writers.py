"""Writers: deterministic .nii.gz and .tsv files, the BOLD run streamed one slab at a time."""

from __future__ import annotations

import json
import os
import zlib

import nibabel as nib
import numpy as np
import pandas as pd

from lazyconn.datasets.synthetic import _timecourses as tc

_NEURAL_AMPLITUDE = 0.03  # fraction of the voxel baseline (BOLD percent signal change / 100)
_SLAB_BYTES = 64 * 2**20  # memory budget of one written time slab
_QUANTUM = 16.0  # voxel values are multiples of 1 / _QUANTUM


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


def _slab_length(layout, n_timepoints):
    """Volumes per written slab within ``_SLAB_BYTES``."""
    n_grid = int(np.prod(layout.shape))
    # float64 block (so BLAS blocking, which varies with the slab, cannot flip a rounding)
    # plus the float32 volume
    return max(1, min(n_timepoints, _SLAB_BYTES // (8 * len(layout.baseline) + 4 * n_grid)))


def _write_bold(path, layout, subject_series, n_timepoints, t_r, rng):
    """Stream the 4-D image to ``path`` one time slab at a time; return confound means."""
    header = _nifti_header((*layout.shape, n_timepoints), layout.affine, np.float32, t_r)
    n_grid = int(np.prod(layout.shape))
    slab = _slab_length(layout, n_timepoints)
    neural, sources = subject_series
    amp = _NEURAL_AMPLITUDE * layout.baseline[layout.signal_index] * layout.signal_weight
    means = np.zeros((n_timepoints, 4))  # global, CSF, WM means; DVARS
    previous = None
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
            # DVARS: RMS over voxels of the change from the previous volume (first: n/a)
            diffs = np.diff(block if previous is None else np.vstack([previous, block]), axis=0)
            means[t0 + (previous is None) : t1, 3] = np.sqrt(
                np.mean(np.square(diffs, dtype=np.float64), axis=1)
            )
            previous = block[-1:]
            volume = np.zeros((t1 - t0, n_grid), dtype=np.float32)
            volume[:, layout.flat_index] = block  # exact: multiples of 1/16 below 2**19
            out.write(volume)  # buffer protocol: no copy
    os.replace(tmp, path)
    return means


def write_tsv(path, frame):
    """Write a table as fMRIPrep does (tab separated, ``n/a``), atomically."""
    tmp = path.with_name(path.name + ".part")
    frame.to_csv(tmp, sep="\t", index=False, na_rep="n/a")
    os.replace(tmp, path)


def write_image(path, data, affine):
    """Save a small image as .nii.gz with a zero gzip time stamp (same bytes on every run)."""
    raw = nib.Nifti1Image(data, affine, _nifti_header(data.shape, affine, data.dtype)).to_bytes()
    tmp = path.with_name(path.name + ".part")
    with _GzipWriter(tmp) as out:
        out.write(raw)
    os.replace(tmp, path)


def reduced_path(confounds_path):
    """Path of the reduced confounds table next to the full one."""
    return confounds_path.with_name(
        confounds_path.name.replace("desc-confounds", "desc-reducedConfounds")
    )


def sidecar_path(confounds_path):
    """Path of the JSON sidecar of a confounds table (fMRIPrep's CompCor metadata)."""
    return confounds_path.with_suffix(".json")


def write_truth(layout, truth_dir, mask_path, maps_path, labels_path):
    """Write the mask, the planted maps and labels, the region table and correlation."""
    truth_dir.mkdir(parents=True, exist_ok=True)
    write_image(mask_path, layout.mask.astype(np.uint8), layout.affine)
    write_image(maps_path, layout.maps, layout.affine)
    write_image(labels_path, layout.labels, layout.affine)
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
    write_tsv(truth_dir / "regions.tsv", regions)
    np.savetxt(
        truth_dir / "region_correlation.tsv", layout.region_correlation, delimiter="\t", fmt="%.6g"
    )


def write_subject(layout, n_timepoints, t_r, seed, bold_path, confounds_path, all_confounds=False):
    """Write one subject's run and confounds (full fMRIPrep-like and reduced tables; with
    ``all_confounds`` every strategy column and the JSON sidecar)."""
    rng = np.random.default_rng(seed)
    neural, motion, sources = tc.subject_series(rng, n_timepoints, t_r, layout.region_correlation)
    means = _write_bold(bold_path, layout, (neural, sources), n_timepoints, t_r, rng)
    cosines = tc.cosine_basis(n_timepoints, t_r)
    compcor = tc.compcor(sources, layout.loadings, layout.compcor_index, cosines)
    table = tc.confounds_table(means, motion, compcor, cosines)
    reduced = table[list(tc.REDUCED_CONFOUNDS)].fillna(0.0)
    if all_confounds:
        table, sidecar = tc.strategy_columns(table, means, motion, sources, layout, cosines)
        tmp = sidecar_path(confounds_path).with_name(sidecar_path(confounds_path).name + ".part")
        tmp.write_text(json.dumps(sidecar, indent=1))
        os.replace(tmp, sidecar_path(confounds_path))
    write_tsv(confounds_path, table)
    write_tsv(reduced_path(confounds_path), reduced)
