"""Benchmark: seed-002 region signals over many subjects, lazyconn (zarr) vs nilearn (NIfTI).

The extraction of seed 002 (Power-264 spheres)::

    NiftiSpheresMasker(power_264, radius=5, smoothing_fwhm=6, detrend=True,
                       standardize="zscore_sample", low_pass=0.1, high_pass=0.01, t_r=2)
        .fit_transform(run, confounds=<fMRIPrep TSV>)

and the same cleaning with ``NiftiLabelsMasker`` on the synthetic atlas, for every subject of
``lazyconn.datasets.make_synthetic_fmri`` (4 mm MNI grid, 50 x 59 x 48).

- lazyconn reads zarr stores (made once with ``lazyconn.convert``: its time is reported
  separately) and extracts all subjects in ONE ``dask.compute`` of their
  ``transform(run, compute=False)`` graphs (threaded scheduler, 2 workers);
- nilearn loops over the subjects reading uncompressed ``.nii`` (its fastest input) with
  confounds given as the same n/a-filled arrays;
- "read" is the floor: reading every store once (sum of each run, one graph, 2 workers).

Each step runs in its own subprocess, which reports its wall time (work only, imports and
data generation excluded) and its peak RSS (``VmHWM``). The outputs of lazyconn and
nilearn are compared (max |difference|).

Usage::

    python benchmarks/bench_maskers.py --small   # 4 subjects x 60 volumes (a minute)
    python benchmarks/bench_maskers.py           # 20 subjects x 168 volumes (development-fMRI-like)
    python benchmarks/bench_maskers.py --subjects 3 --resolution 2   # 2 mm grid, memory-bound

Data go to benchmarks/_data/maskers/ (git-ignored); use ``--keep`` to keep them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402 - benchmarks/ is not a package

CLEAN = dict(detrend=True, standardize="zscore_sample", low_pass=0.1, high_pass=0.01, t_r=2.0)
N_WORKERS = 2


def _inputs(workdir: Path):
    meta = json.loads((workdir / "inputs.json").read_text())
    return meta


def _power_coords():
    from lazyconn.datasets import fetch_coords_power_2011

    power = fetch_coords_power_2011()
    return np.vstack((power.rois["x"], power.rois["y"], power.rois["z"])).T


def _masker_kwargs(kind, meta):
    if kind == "spheres":
        return dict(seeds=_power_coords(), radius=5.0, smoothing_fwhm=6, **CLEAN)
    return dict(labels_img=meta["labels_img"], smoothing_fwhm=6, **CLEAN)


def write_inputs(workdir: Path, n_subjects: int, n_timepoints: int, resolution: float) -> dict:
    """Synthetic subjects (.nii.gz + TSV), uncompressed .nii copies, filled confounds (.npy)."""
    import nibabel as nib
    import pandas as pd

    from lazyconn.datasets.synthetic import make_synthetic_fmri
    from lazyconn.io.confounds import sanitize_confounds

    data = make_synthetic_fmri(
        n_subjects, n_timepoints=n_timepoints, resolution=resolution, data_dir=workdir / "synth"
    )
    nii, filled, tsv = [], [], []
    for i, (func, conf) in enumerate(zip(data.func, data.confounds, strict=True)):
        img = nib.load(func)
        path = workdir / f"sub{i:02d}.nii"
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header), path)
        nii.append(str(path))
        # Without fMRIPrep's cosine columns: after the 0.01 Hz high-pass they are ~1e-14
        # noise that nilearn's QR keeps and rescales, so its result would depend on
        # rounding (see benchmarks/README.md). The n/a first row is kept.
        table = pd.read_csv(conf, sep="\t", na_values="n/a")
        table = table[[c for c in table.columns if not c.startswith("cosine")]]
        tsv.append(str(workdir / f"conf{i:02d}.tsv"))
        table.to_csv(tsv[-1], sep="\t", index=False, na_rep="n/a")
        np.save(workdir / f"conf{i:02d}.npy", sanitize_confounds(tsv[-1], img.shape[3]))
        filled.append(str(workdir / f"conf{i:02d}.npy"))
    labels = (
        data.labels_img if isinstance(data.labels_img, str) else str(workdir / "labels.nii.gz")
    )
    if not isinstance(data.labels_img, str):
        nib.save(data.labels_img, labels)
    meta = dict(
        func=list(map(str, data.func)),
        tsv=tsv,
        nii=nii,
        filled=filled,
        labels_img=labels,
        zarr=[str(workdir / f"sub{i:02d}.zarr") for i in range(n_subjects)],
        shape=list(nib.load(nii[0]).shape),
    )
    (workdir / "inputs.json").write_text(json.dumps(meta))
    return meta


# ---------------------------------------------------------------------------------- children
def child_convert(workdir: Path):
    import lazyconn

    meta = _inputs(workdir)
    t0 = time.perf_counter()
    lazyconn.convert(meta["nii"], meta["zarr"], overwrite=True, progress=False)
    return time.perf_counter() - t0


def child_read(workdir: Path):
    import dask

    import lazyconn

    meta = _inputs(workdir)
    t0 = time.perf_counter()
    runs = [lazyconn.load(p) for p in meta["zarr"]]
    with dask.config.set(scheduler="threads", num_workers=N_WORKERS):
        dask.compute(*[r.data.sum() for r in runs])
    return time.perf_counter() - t0


def _child_lazyconn(workdir: Path, kind: str):
    import dask

    import lazyconn
    from lazyconn.maskers import NiftiLabelsMasker, NiftiSpheresMasker

    meta = _inputs(workdir)
    cls = NiftiSpheresMasker if kind == "spheres" else NiftiLabelsMasker
    t0 = time.perf_counter()
    runs = [lazyconn.load(p) for p in meta["zarr"]]
    masker = cls(**_masker_kwargs(kind, meta)).fit(runs[0])
    with dask.config.set(scheduler="threads", num_workers=N_WORKERS):
        lazy = [
            masker.transform(r, confounds=c, compute=False)
            for r, c in zip(runs, meta["tsv"], strict=True)
        ]
        out = dask.compute(*lazy)
    wall = time.perf_counter() - t0
    np.save(workdir / f"lazyconn_{kind}.npy", np.stack(out))
    return wall


def _child_nilearn(workdir: Path, kind: str):
    import warnings

    from nilearn.maskers import NiftiLabelsMasker, NiftiSpheresMasker

    meta = _inputs(workdir)
    cls = NiftiSpheresMasker if kind == "spheres" else NiftiLabelsMasker
    t0 = time.perf_counter()
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for nii, conf in zip(meta["nii"], meta["filled"], strict=True):
            masker = cls(**_masker_kwargs(kind, meta))
            out.append(masker.fit_transform(nii, confounds=np.load(conf)))
    wall = time.perf_counter() - t0
    np.save(workdir / f"nilearn_{kind}.npy", np.stack(out))
    return wall


CHILDREN = {
    "convert": child_convert,
    "read": child_read,
    "lazyconn_spheres": lambda w: _child_lazyconn(w, "spheres"),
    "nilearn_spheres": lambda w: _child_nilearn(w, "spheres"),
    "lazyconn_labels": lambda w: _child_lazyconn(w, "labels"),
    "nilearn_labels": lambda w: _child_nilearn(w, "labels"),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="4 subjects x 60 volumes")
    parser.add_argument("--subjects", type=int, default=None)
    parser.add_argument("--timepoints", type=int, default=None)
    parser.add_argument("--resolution", type=float, default=4.0, help="voxel size (mm)")
    harness.common_arguments(parser, HERE / "_data" / "maskers", CHILDREN)
    args = parser.parse_args(argv)
    workdir = Path(args.workdir)

    if args.child:
        return harness.child_report(CHILDREN[args.child], workdir)

    n_sub = args.subjects or (4 if args.small else 20)
    n_t = args.timepoints or (60 if args.small else 168)
    harness.fresh_dir(workdir)
    t0 = time.perf_counter()
    meta = write_inputs(workdir, n_sub, n_t, args.resolution)
    print(
        f"inputs: {n_sub} subjects of shape {tuple(meta['shape'])} float32, written in "
        f"{time.perf_counter() - t0:.1f} s",
        flush=True,
    )

    results = {
        "n_subjects": n_sub,
        "shape": meta["shape"],
        "cpu_count": os.cpu_count(),
        "resolution_mm": args.resolution,
        "dask_workers": N_WORKERS,
    }
    for name in [
        "convert",
        "read",
        "lazyconn_spheres",
        "nilearn_spheres",
        "lazyconn_labels",
        "nilearn_labels",
    ]:
        results[name] = r = harness.run_child(__file__, name, workdir)
        print(
            f"{name:17s} wall {r['wall_s']:7.1f} s   peak RSS {r['peak_rss_bytes'] / 2**20:7.0f} MiB",
            flush=True,
        )
    for kind in ("spheres", "labels"):
        a = np.load(workdir / f"lazyconn_{kind}.npy").astype(np.float64)
        b = np.load(workdir / f"nilearn_{kind}.npy").astype(np.float64)
        lz, nl = results[f"lazyconn_{kind}"], results[f"nilearn_{kind}"]
        results[kind] = {
            "max_abs_diff": float(np.abs(a - b).max()),
            "speedup_vs_nilearn": nl["wall_s"] / lz["wall_s"],
            "rss_ratio_vs_nilearn": lz["peak_rss_bytes"] / nl["peak_rss_bytes"],
            "wall_over_read": lz["wall_s"] / results["read"]["wall_s"],
        }
        s = results[kind]
        print(
            f"{kind:8s}: {s['speedup_vs_nilearn']:.2f}x faster than nilearn, peak RSS "
            f"{s['rss_ratio_vs_nilearn']:.2f}x nilearn's, wall {s['wall_over_read']:.2f}x "
            f"reading the stores once, max |diff| {s['max_abs_diff']:.1e}",
            flush=True,
        )
    out = HERE / "_data" / f"bench_maskers_{n_sub}x{n_t}_{args.resolution:g}mm.json"
    harness.finish(out, results, workdir, args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
