"""Benchmark: a study's Power-264 partial-correlation connectomes, lazyconn's GroupConnectome vs
nilearn's loop over subjects.

The workflow of ``lazyconn demo`` (issue #5): spheres of radius 5 mm at the 264 Power ROIs,
smoothing 6 mm, detrend, z-score, band-pass 0.01-0.1 Hz, 15 fMRIPrep confounds, partial
correlation (Ledoit-Wolf), group mean. For each study size it measures:

- lazyconn on a ``LocalCluster`` of 1 and of 2 single-threaded worker processes (fresh results
  store each time; workers started and warmed up on one subject each before the clock
  starts; nilearn is warmed up the same way):
  wall time, speedup, and the peak RSS of each worker (sampled every 20 ms with psutil);
- a re-run with every subject in the results store;
- nilearn 0.14.1's loop (``NiftiSpheresMasker.fit_transform`` per subject, then
  ``ConnectivityMeasure.fit_transform``) in this process, on the ``.nii.gz`` runs (its usual
  input); lazyconn reads the Zarr stores made once by ``lazyconn.convert`` (time reported
  separately). The matrices of both are compared.

With ``--nii-gz`` (issue #13) it measures instead a **cold** ``GroupConnectome`` on the
``.nii.gz`` runs themselves (a fresh ``client="local"`` of 2 worker processes, started inside
``fit``, in a process of its own) against the decompression floor: ``gzip -dc`` over the same
files split on 2 cores (two processes, each over half the files); ``--zlib-too`` repeats the
lazyconn run with ``isal`` hidden (zlib; the default install has ``isal`` since session 6).

Usage::

    python benchmarks/bench_group.py --small      # 4 and 12 subjects, 8 mm, 60 volumes
    python benchmarks/bench_group.py              # 20 and 100 subjects, 4 mm, 100 volumes
    python benchmarks/bench_group.py --nii-gz --zlib-too   # 10 subjects, 2 mm, 150 volumes

Data go to benchmarks/_data/ (git-ignored). Results are printed and written as JSON to
benchmarks/_data/bench_group[_small].json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402 - benchmarks/ is not a package

DATA = HERE / "_data"
#: Set by ``--hide-isal`` for the child and the LocalCluster's workers (spawned processes
#: import this script again): ``isal`` hidden, i.e. zlib (where isal cannot be imported).
HIDE_ISAL = "LAZYCONN_BENCH_HIDE_ISAL"
if os.environ.get(HIDE_ISAL):
    sys.modules["isal"] = None


def generate_study(n_subjects, n_timepoints, resolution):
    """(study, its root folder, seconds): the synthetic fMRIPrep-like runs (reused if there)."""
    from lazyconn.datasets import make_synthetic_fmri

    root = DATA / f"group-{n_timepoints}tp-{resolution:g}mm"
    t0 = time.perf_counter()
    study = make_synthetic_fmri(
        n_subjects,
        n_timepoints=n_timepoints,
        resolution=resolution,
        data_dir=root / f"bids-{n_subjects}",
        overwrite=True,
    )
    return study, root, time.perf_counter() - t0


def make_study(n_subjects, n_timepoints, resolution):
    from lazyconn.io.convert import convert

    study, root, generate = generate_study(n_subjects, n_timepoints, resolution)
    stores = [str(root / "zarr" / f"{s}.zarr") for s in study.subjects]
    (root / "zarr").mkdir(parents=True, exist_ok=True)
    todo = [
        (f, z)
        for f, z in zip(study.func, stores, strict=True)
        if not Path(z, "zarr.json").exists()
    ]
    t0 = time.perf_counter()
    if todo:
        convert([f for f, _ in todo], [z for _, z in todo], overwrite=True, progress=False)
    return (
        study,
        stores,
        {"generate_s": generate, "convert_s": time.perf_counter() - t0, "converted": len(todo)},
    )


def power_masker(t_r):
    from lazyconn.datasets import fetch_coords_power_2011

    coords = fetch_coords_power_2011().rois[["x", "y", "z"]].to_numpy()
    return dict(
        seeds=coords,
        radius=5.0,
        smoothing_fwhm=6,
        detrend=True,
        standardize="zscore_sample",
        low_pass=0.1,
        high_pass=0.01,
        t_r=t_r,
    )


def confounds_of(study):
    # nilearn's development-dataset "reduced" set (15 columns, first-row n/a as 0)
    return [pd.read_csv(p, sep="\t") for p in study.reduced_confounds]


def run_lazyconn(stores, confounds, masker_kw, n_workers, cache_dir):
    from distributed import Client, LocalCluster

    from lazyconn.connectome import ConnectivityMeasure
    from lazyconn.group import GroupConnectome
    from lazyconn.maskers import NiftiSpheresMasker

    t0 = time.perf_counter()
    with (
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        startup = time.perf_counter() - t0
        pids = list(client.run(os.getpid).values())

        def fit(runs, confs, cache):
            return GroupConnectome(
                NiftiSpheresMasker(**masker_kw),
                ConnectivityMeasure(kind="partial correlation"),
                cache_dir=cache,
                client=client,
                progress=False,
            ).fit(runs, confounds=confs)

        # Warm-up (imports, first-call costs) on every worker: one subject each, no store.
        fit(stores[:n_workers], confounds[:n_workers], None)

        with harness.PeakRSS(pids) as rss:
            t0 = time.perf_counter()
            group = fit(stores, confounds, cache_dir)
            wall = time.perf_counter() - t0
        t0 = time.perf_counter()
        cached = fit(stores, confounds, cache_dir)
        rerun = time.perf_counter() - t0
    assert cached.n_cached_ == len(stores)
    return group, {
        "n_workers": n_workers,
        "startup_s": startup,
        "wall_s": wall,
        "rerun_cached_s": rerun,
        "peak_rss_per_worker_mb": [round(v / 2**20, 1) for v in rss.peak.values()],
    }


def run_nilearn(study, confounds, masker_kw):
    from nilearn.connectome import ConnectivityMeasure
    from nilearn.maskers import NiftiSpheresMasker

    # Warm-up (imports, first-call costs), as for lazyconn's workers.
    NiftiSpheresMasker(**masker_kw).fit_transform(study.func[0], confounds=confounds[0].to_numpy())
    t0 = time.perf_counter()
    series = [
        NiftiSpheresMasker(**masker_kw).fit_transform(f, confounds=c.to_numpy())
        for f, c in zip(study.func, confounds, strict=True)
    ]
    matrices = ConnectivityMeasure(kind="partial correlation").fit_transform(series)
    return matrices, time.perf_counter() - t0


def bench(n_subjects, n_timepoints, resolution, workers, skip_nilearn=False):
    import shutil

    study, stores, prep = make_study(n_subjects, n_timepoints, resolution)
    confounds = confounds_of(study)
    masker_kw = power_masker(study.t_r)
    out = {
        "n_subjects": n_subjects,
        "n_timepoints": n_timepoints,
        "resolution_mm": resolution,
        **prep,
        "lazyconn": [],
    }
    group = None
    for n_workers in workers:
        cache = DATA / f"group-cache-{n_subjects}-{n_workers}"
        shutil.rmtree(cache, ignore_errors=True)
        group, result = run_lazyconn(stores, confounds, masker_kw, n_workers, cache)
        shutil.rmtree(cache, ignore_errors=True)
        out["lazyconn"].append(result)
        print(f"  lazyconn {n_workers} worker(s): {result}", flush=True)
    if skip_nilearn:
        return out
    matrices, nilearn_s = run_nilearn(study, confounds, masker_kw)
    out["nilearn_loop_s"] = nilearn_s
    diffs = np.abs(group.subject_matrices_ - matrices).max(axis=(1, 2))
    out["max_abs_diff_vs_nilearn"] = float(diffs.max())
    out["subjects_within_1e-3_of_nilearn"] = int((diffs < 1e-3).sum())
    best = min(r["wall_s"] for r in out["lazyconn"])
    out["speedup_vs_nilearn"] = nilearn_s / best
    print(
        f"  nilearn loop: {nilearn_s:.1f} s; max |diff| {out['max_abs_diff_vs_nilearn']:.2e}, "
        f"{out['subjects_within_1e-3_of_nilearn']}/{n_subjects} subjects within 1e-3",
        flush=True,
    )
    return out


def child_nii_gz(workdir):
    """A cold GroupConnectome on the .nii.gz runs: ``fit`` starts its own LocalCluster."""
    from lazyconn.connectome import ConnectivityMeasure
    from lazyconn.group import GroupConnectome
    from lazyconn.maskers import NiftiSpheresMasker

    inputs = json.loads((workdir / "inputs.json").read_text())
    confounds = [pd.read_csv(p, sep="\t") for p in inputs["confounds"]]
    masker_kw = power_masker(inputs["t_r"])
    t0 = time.perf_counter()
    group = GroupConnectome(
        NiftiSpheresMasker(**masker_kw),
        ConnectivityMeasure(kind="partial correlation"),
        client="local",
        n_workers=2,
        progress=False,
    ).fit(inputs["func"], confounds=confounds)
    wall = time.perf_counter() - t0
    name = "zlib" if sys.modules.get("isal", 0) is None else "isal"
    np.save(workdir / f"nii_gz_{name}.npy", group.subject_matrices_)
    (workdir / f"nii_gz_{name}_timings.json").write_text(json.dumps(group.timings_))
    return wall


CHILDREN = {"nii-gz": child_nii_gz}


def bench_nii_gz(n_subjects, n_timepoints, resolution, zlib_too):
    """Cold GroupConnectome(client="local") on the .nii.gz runs vs the decompression floor."""
    study, root, generate = generate_study(n_subjects, n_timepoints, resolution)
    workdir = root / f"nii-gz-{n_subjects}"
    workdir.mkdir(parents=True, exist_ok=True)
    func = [str(f) for f in study.func]
    inputs = {"func": func, "confounds": study.reduced_confounds, "t_r": study.t_r}
    (workdir / "inputs.json").write_text(json.dumps(inputs))
    out = {
        "n_subjects": n_subjects,
        "n_timepoints": n_timepoints,
        "resolution_mm": resolution,
        "generate_s": generate,
        "gz_bytes": sum(Path(f).stat().st_size for f in func),
    }
    harness.gunzip_two_cores(func)  # page cache: both sides then read the files from memory
    floors = [harness.gunzip_two_cores(func)]
    variants = [("isal", [])] + ([("zlib", ["--hide-isal"])] if zlib_too else [])
    for name, extra in variants:
        cpu = harness.children_cpu()
        r = harness.run_child(__file__, "nii-gz", workdir, *extra)
        r["process_cpu_s"] = harness.children_cpu() - cpu  # workers and imports included
        r["timings"] = json.loads((workdir / f"nii_gz_{name}_timings.json").read_text())
        floors.append(harness.gunzip_two_cores(func))
        out[f"lazyconn_{name}"] = r
        print(f"  lazyconn ({name}): {r}", flush=True)
    out["gunzip_2_cores"] = floors
    floor = min(f["wall_s"] for f in floors)
    for name, _ in variants:
        out[f"ratio_{name}"] = out[f"lazyconn_{name}"]["wall_s"] / floor
    if zlib_too:
        a, b = (np.load(workdir / f"nii_gz_{n}.npy") for n in ("isal", "zlib"))
        out["max_abs_diff_isal_vs_zlib"] = float(np.abs(a - b).max())
    print(f"  gzip -dc on 2 cores: {floors}", flush=True)
    print(f"  ratios to the floor: {[out[f'ratio_{n}'] for n, _ in variants]}", flush=True)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    harness.study_size_arguments(parser)
    parser.add_argument(
        "--nii-gz",
        action="store_true",
        help="cold GroupConnectome on the .nii.gz runs vs gzip -dc on 2 cores (default: 10 "
        "subjects, 2 mm, --volumes 150)",
    )
    parser.add_argument("--volumes", type=int, default=150, help="volumes per run (--nii-gz)")
    parser.add_argument("--zlib-too", action="store_true", help="--nii-gz with isal hidden too")
    parser.add_argument("--hide-isal", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--skip-nilearn",
        action="store_true",
        help="lazyconn only (nilearn's loop takes minutes at full size)",
    )
    harness.common_arguments(parser, DATA, CHILDREN)
    args = parser.parse_args(argv)
    if args.child:
        if args.hide_isal:
            os.environ[HIDE_ISAL] = "1"  # for the workers too
            sys.modules["isal"] = None  # zlib, as where isal cannot be imported
        return harness.child_report(CHILDREN[args.child], Path(args.workdir))
    DATA.mkdir(exist_ok=True)
    if args.nii_gz:
        sizes = args.subjects or [10]
        results = [bench_nii_gz(n, args.volumes, 2.0, args.zlib_too) for n in sizes]
        path = harness.write_results(DATA / "bench_group_nii_gz.json", {"results": results})
        print(harness.load_text())
        print(f"written {path}")
        return
    sizes, n_t, res = harness.study_sizes(args)
    results = []
    for n in sizes:
        print(f"{n} subjects, {n_t} volumes, {res:g} mm", flush=True)
        results.append(bench(n, n_t, res, args.workers, args.skip_nilearn))
    summary = {}
    by_workers = {
        w: [next(r for r in res_["lazyconn"] if r["n_workers"] == w) for res_ in results]
        for w in args.workers
    }
    if 1 in by_workers and 2 in by_workers:
        summary["speedup_2_vs_1_worker"] = [
            round(a["wall_s"] / b["wall_s"], 2)
            for a, b in zip(by_workers[1], by_workers[2], strict=True)
        ]
    top = max(args.workers)
    peaks = [max(r["peak_rss_per_worker_mb"]) for r in by_workers[top]]
    summary["peak_worker_rss_mb"] = dict(zip(sizes, peaks, strict=True))
    summary["peak_growth_first_to_last"] = round(peaks[-1] / peaks[0] - 1, 3)
    summary["rerun_cached_fraction"] = [
        round(r["rerun_cached_s"] / r["wall_s"], 4) for r in by_workers[top]
    ]
    if not args.skip_nilearn:
        summary["speedup_vs_nilearn"] = [round(r["speedup_vs_nilearn"], 2) for r in results]
    print(json.dumps(summary, indent=2))
    suffix = ("_small" if args.small else "") + ("_lazyconn" if args.skip_nilearn else "")
    path = DATA / f"bench_group{suffix}.json"
    harness.write_results(path, {"results": results, "summary": summary})
    print(harness.load_text())
    print(f"written {path}")


if __name__ == "__main__":
    main()
