"""Benchmark: nilearn's region-extraction workflow (seed 001), lazyconn vs nilearn, same run.

The pipeline of ``examples/plot_extract_regions_dictlearning_maps.py``:
``DictLearning(n_components=8, smoothing_fwhm=6, standardize="zscore_sample",
random_state=0)`` fitted on every run (with the confounds of ``load_confounds(strategy=("motion",
"wm_csf"), motion="basic")``, the demo's) -> ``RegionExtractor(threshold=0.5,
thresholding_strategy="ratio_n_voxels", extractor="local_regions", min_region_size=1350,
standardize="zscore_sample", standardize_confounds=True)`` -> one correlation connectome per
subject -> mean. Each variant runs in its own fresh process (peak RSS of the process tree,
LocalCluster workers included, sampled every 20 ms with psutil):

- ``nilearn``: nilearn 0.14.1 on the ``.nii.gz`` runs (its loop over subjects);
- ``zarr``: lazyconn from Zarr stores made beforehand (``lazyconn.group.region_connectome``
  on a LocalCluster of ``--n-workers`` single-threaded workers);
- ``nii``: lazyconn from the ``.nii.gz`` runs, conversion to Zarr included in the time.

For each: wall time, peak RSS (whole tree, and the largest worker), the number of regions and
the recovery of the planted truth (mean best Dice of the planted regions; correlation of the
mean matrix with the planted correlations). ``--subjects 100 --only zarr`` measures the
per-worker RSS at 100 subjects.

Usage::

    python benchmarks/bench_seed001.py --small        # 4 subjects, 8 mm, 80 volumes
    python benchmarks/bench_seed001.py                # 20 subjects, 4 mm, 168 volumes
    python benchmarks/bench_seed001.py --subjects 100 --only zarr

Data go to benchmarks/_data/ (git-ignored); results are printed and written as JSON to
benchmarks/_data/bench_seed001_<subjects>x<volumes>_<resolution>mm.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "_data"
sys.path.insert(0, str(HERE))

from harness import PeakRSS, load_text, write_results  # noqa: E402

# The seed's parameters and confounds, as the demo (`lazyconn demo --workflow regions`) has them.
from lazyconn.group._demo_regions import DENOISE, DICT_LEARNING, EXTRACTOR  # noqa: E402


def study_dir(n_subjects, n_timepoints, resolution):
    return DATA / f"seed001-{n_subjects}x{n_timepoints}-{resolution:g}mm"


def make_study(n_subjects, n_timepoints, resolution):
    from lazyconn.datasets import make_synthetic_fmri

    return make_synthetic_fmri(
        n_subjects,
        n_timepoints=n_timepoints,
        resolution=resolution,
        nuisance=0.2,
        data_dir=study_dir(n_subjects, n_timepoints, resolution) / "bids",
    )


def _confounds(study):
    """The demo's confounds (nilearn gets the same tables)."""
    from lazyconn.interfaces.fmriprep import load_confounds

    return load_confounds(study.func, **DENOISE)[0]


def _recovery(regions_img, mean, study):
    from lazyconn.datasets.recovery import connectome_recovery, match_regions

    match = match_regions(regions_img, study.labels_img)
    rec = connectome_recovery(mean, match.match, study.region_correlation)
    return {
        "mean_dice": match.mean_dice,
        "r": rec.r,
        "mae": rec.mae,
        "n_pairs": rec.n_pairs,
        "coverage": rec.coverage,
    }


# ---------------------------------------------------------------------------- variants
def run_nilearn(study, confounds):
    import warnings

    import numpy as np
    from nilearn.connectome import ConnectivityMeasure
    from nilearn.decomposition import DictLearning
    from nilearn.regions import RegionExtractor

    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    maps = DictLearning(**DICT_LEARNING).fit(study.func, confounds=confounds).components_img_
    t_maps = time.perf_counter() - t0
    extractor = RegionExtractor(maps, **EXTRACTOR).fit()
    correlations = []
    measure = ConnectivityMeasure(kind="correlation")
    for filename, confound in zip(study.func, confounds, strict=True):
        series = extractor.transform(filename, confounds=confound)
        correlations.append(measure.fit_transform([series])[0])
    mean = np.mean(correlations, axis=0)
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "decomposition_s": t_maps}, extractor.regions_img_, mean


def run_lazyconn(study, confounds, stores, n_workers, convert_first, scheduler):
    import contextlib
    import warnings

    from lazyconn.decomposition import DictLearning
    from lazyconn.group import region_connectome
    from lazyconn.io.convert import convert
    from lazyconn.regions import RegionExtractor

    warnings.simplefilter("ignore")
    with contextlib.ExitStack() as stack:
        client = None  # dask's threaded scheduler in this process
        t_start = time.perf_counter()
        if scheduler == "local":
            # lazyconn's own LocalCluster (what client="local" starts), opened here so that
            # its start is timed apart and the workers' peaks can be read at the end
            from lazyconn.group._cluster import client_context

            client = stack.enter_context(client_context("local", n_workers=n_workers))
        t_cluster = time.perf_counter() - t_start
        t0 = time.perf_counter()
        t_convert = 0.0
        if convert_first:
            convert(study.func, stores, overwrite=True, progress=False)
            t_convert = time.perf_counter() - t0
        out = region_connectome(
            stores,
            DictLearning(**DICT_LEARNING, client=client),
            RegionExtractor(**EXTRACTOR),
            confounds=confounds,
            client=client,
            progress=False,
        )
        wall = time.perf_counter() - t0
        # each worker's high-water mark (VmHWM); the process's own with threads
        peaks = client.run(_own_peak_rss) if client is not None else {0: _own_peak_rss()}
    info = {
        "wall_s": wall,
        "cluster_start_s": t_cluster,
        "decomposition_s": out.timings["decomposition"],
        "regions_s": out.timings["regions"],
        "connectomes_s": out.timings["connectomes"],
        "convert_s": t_convert,
        "peak_rss_worker_mib": max(peaks.values()) / 2**20,
    }
    return info, out.extractor.regions_img_, out.mean_matrix


def _own_peak_rss():
    """VmHWM of the calling process (defined here so it is shipped to workers by value)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def worker(args):
    """One variant in this (fresh) process; prints a JSON line."""
    import numpy as np

    study = make_study(args.subjects, args.volumes, args.resolution)
    confounds = _confounds(study)
    root = study_dir(args.subjects, args.volumes, args.resolution)
    if args.worker == "nilearn":
        info, regions, mean = run_nilearn(study, confounds)
    else:
        folder = root / ("zarr" if args.worker == "zarr" else "zarr-converted")
        folder.mkdir(parents=True, exist_ok=True)
        stores = [str(folder / f"{s}.zarr") for s in study.subjects]
        info, regions, mean = run_lazyconn(
            study,
            confounds,
            stores,
            args.n_workers,
            convert_first=args.worker == "nii",
            scheduler=args.scheduler,
        )
    info.update(_recovery(regions, mean, study))
    info["n_regions"] = int(regions.shape[-1])
    np.save(root / f"mean_{args.worker}.npy", mean)
    print("RESULT " + json.dumps(info), flush=True)


def measure(variant, args):
    """Run one variant in a subprocess: wall time from inside, peak RSS of its process tree."""
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        variant,
        "--subjects",
        str(args.subjects),
        "--volumes",
        str(args.volumes),
        "--resolution",
        str(args.resolution),
        "--n-workers",
        str(args.n_workers),
        "--scheduler",
        args.scheduler,
    ]
    load_start = os.getloadavg()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    with PeakRSS([proc.pid], tree=True) as sampler:
        out, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"variant {variant} failed (exit {proc.returncode})")
    info = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
    info["peak_rss_total_mib"] = sampler.peak[proc.pid] / 2**20
    info["loadavg_start"] = load_start
    info["loadavg_end"] = os.getloadavg()
    return info


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="4 subjects, 8 mm, 80 volumes")
    parser.add_argument("--subjects", type=int, default=None)
    parser.add_argument("--volumes", type=int, default=None)
    parser.add_argument("--resolution", type=float, default=None)
    parser.add_argument("--n-workers", type=int, default=2, help="LocalCluster workers")
    parser.add_argument(
        "--scheduler",
        choices=["threads", "local"],
        default="threads",
        help="lazyconn on dask's threads (default) or a LocalCluster of --n-workers processes",
    )
    parser.add_argument("--only", choices=["nilearn", "zarr", "nii"], action="append")
    parser.add_argument("--worker", choices=["nilearn", "zarr", "nii"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    defaults = (4, 80, 8.0) if args.small else (20, 168, 4.0)
    args.subjects = args.subjects or defaults[0]
    args.volumes = args.volumes or defaults[1]
    args.resolution = args.resolution or defaults[2]
    if args.worker:
        return worker(args)

    t0 = time.perf_counter()
    study = make_study(args.subjects, args.volumes, args.resolution)
    generate = time.perf_counter() - t0
    root = study_dir(args.subjects, args.volumes, args.resolution)
    stores = [str(root / "zarr" / f"{s}.zarr") for s in study.subjects]
    if not all(Path(s, "zarr.json").exists() for s in stores):
        from lazyconn.io.convert import convert

        (root / "zarr").mkdir(parents=True, exist_ok=True)
        convert(study.func, stores, overwrite=True, progress=False)
    results = {
        "study": {
            "subjects": args.subjects,
            "volumes": args.volumes,
            "resolution_mm": args.resolution,
            "generate_s": generate,
        },
        "scheduler": args.scheduler,
        "n_workers": args.n_workers,
        "cpus": os.cpu_count(),
    }
    for variant in args.only or ["nilearn", "zarr", "nii"]:
        print(f"running {variant}...", flush=True)
        results[variant] = measure(variant, args)
        print(json.dumps(results[variant], indent=1), flush=True)
    if "nilearn" in results:
        base = results["nilearn"]
        for variant in ("zarr", "nii"):
            if variant in results:
                r = results[variant]
                r["wall_ratio"] = r["wall_s"] / base["wall_s"]
                r["rss_ratio"] = r["peak_rss_total_mib"] / base["peak_rss_total_mib"]
    name = f"bench_seed001_{args.subjects}x{args.volumes}_{args.resolution:g}mm.json"
    print(f"\nwritten {write_results(DATA / name, results)}; {load_text()}")
    print(
        f"{'variant':8} {'wall s':>8} {'ratio':>6} {'RSS MiB':>8} {'ratio':>6} "
        f"{'worker':>7} {'regions':>7} {'Dice':>5} {'r':>5} {'load':>5}"
    )
    for v in ("nilearn", "zarr", "nii"):
        if v in results:
            r = results[v]
            print(
                f"{v:8} {r['wall_s']:8.1f} {r.get('wall_ratio', 1):6.2f} "
                f"{r['peak_rss_total_mib']:8.0f} {r.get('rss_ratio', 1):6.2f} "
                f"{r.get('peak_rss_worker_mib', 0):7.0f} {r['n_regions']:7d} {r['mean_dice']:5.2f} "
                f"{r['r']:5.2f} {r['loadavg_start'][0]:5.1f}"
            )


if __name__ == "__main__":
    main()
