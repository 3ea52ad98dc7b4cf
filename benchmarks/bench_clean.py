"""Benchmark: smooth + clean a BOLD run, lazyconn (zarr -> zarr) vs nilearn (NIfTI -> memory).

The pipeline of issue #3::

    clean_img(smooth_img(run, 6), detrend=True, standardize="zscore_sample",
              low_pass=0.1, high_pass=0.01, t_r=0.72, confounds=<(T, 6)>, mask_img=<mask>)

- lazyconn reads the run from a lazyconn zarr store (made once with ``lazyconn.convert``;
  its time and memory are reported separately) and writes the result to a zarr store
  (``LazyImage.to_zarr``, in batches of block-rows within its ``batch_bytes``; with
  ``--one-graph`` also as one graph, the behaviour before batching), 2 threads;
- nilearn reads the same run from an uncompressed ``.nii`` (its fastest input) and keeps
  the result in memory (no write: favours nilearn).

Each step runs in its own subprocess, which reports its wall time (work only, imports
excluded) and its peak RSS (``harness.peak_rss``). Outputs are compared on
a strided sample of voxels (every 7th along each axis, all time points).

``--kernel`` instead times the smoothing kernel alone on single blocks (the seed's 4 mm
block and an HCP-size 2 mm block, 6 mm FWHM, with their halos): lazyconn's
``gaussian_block`` (BLAS products) against scipy's ``gaussian_filter1d`` passes on the same
block (what nilearn runs, and lazyconn's kernel before; C-ordered), lazyconn's also on an
F-ordered block (Zarr and NIfTI blocks are), one block on one thread and 8 blocks on 2
threads (BLAS limited to one thread per call, as the group engine runs its tasks). CPU
time over wall time on 2 threads says whether the kernel holds the GIL (~1) or not (~2,
on an idle machine).

Usage::

    python benchmarks/bench_clean.py --kernel            # the smoothing kernel, ~1 min
    python benchmarks/bench_clean.py --small             # 40 x 48 x 40 x 150, seconds
    python benchmarks/bench_clean.py                     # 91 x 109 x 91 x 400 (1.4 GB)
    python benchmarks/bench_clean.py --shape 91 109 91 1200   # HCP size (4.3 GB)

Data go to benchmarks/_data/ (git-ignored); big files are removed at the end unless
``--keep``.
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
from bench_convert import fmri_like_volumes  # noqa: E402

T_R = 0.72
FWHM = 6.0
SAMPLE = (slice(None, None, 7),) * 3


def write_inputs(workdir: Path, shape):
    """Uncompressed run .nii (streamed volume by volume), brain mask .nii.gz, confounds .npy."""
    import nibabel as nib

    shape3, n_vols = tuple(shape[:3]), int(shape[3])
    affine = np.diag([-2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [90, -126, -72]
    header = nib.Nifti1Header()
    header.set_data_shape(shape3 + (n_vols,))
    header.set_data_dtype(np.float32)
    header.set_zooms((2.0, 2.0, 2.0, T_R))
    header.set_xyzt_units("mm", "sec")
    header.set_sform(affine, code=4)
    header.set_qform(affine, code=4)
    header.set_data_offset(352)
    mask = None
    with open(workdir / "run.nii", "wb") as f:
        header.write_to(f)
        f.write(b"\0" * (352 - f.tell()))
        for vol in fmri_like_volumes(shape3, n_vols):
            if mask is None:
                mask = vol != 0
            f.write(vol.tobytes(order="F"))
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), workdir / "mask.nii.gz")
    rng = np.random.default_rng(42)
    np.save(workdir / "confounds.npy", rng.standard_normal((n_vols, 6)))
    return int(mask.sum())


# ---------------------------------------------------------------------------------- children
def child_convert(workdir: Path):
    import lazyconn

    t0 = time.perf_counter()
    lazyconn.convert(
        str(workdir / "run.nii"), str(workdir / "run.zarr"), overwrite=True, progress=False
    )
    return time.perf_counter() - t0


def _lazy_pipeline(workdir: Path):
    import lazyconn
    from lazyconn import image

    confounds = np.load(workdir / "confounds.npy")
    run = lazyconn.load(str(workdir / "run.zarr"))
    return image.clean_img(
        image.smooth_img(run, FWHM),
        detrend=True,
        standardize="zscore_sample",
        low_pass=0.1,
        high_pass=0.01,
        t_r=T_R,
        confounds=confounds,
        mask_img=str(workdir / "mask.nii.gz"),
    )


def _save_sample(workdir: Path, store: str):
    import lazyconn

    out = lazyconn.load(str(workdir / store))
    np.save(workdir / "sample_lazyconn.npy", np.asarray(out.data[SAMPLE].compute()))


def child_lazyconn(workdir: Path):
    """``LazyImage.to_zarr`` as is (batches of block-rows within its default budget)."""
    t0 = time.perf_counter()
    batch_bytes = os.environ.get("BENCH_BATCH_BYTES")  # set by --batch-bytes
    _lazy_pipeline(workdir).to_zarr(
        str(workdir / "clean.zarr"),
        overwrite=True,
        batch_bytes=int(batch_bytes) if batch_bytes else None,
    )
    wall = time.perf_counter() - t0
    _save_sample(workdir, "clean.zarr")
    return wall


def child_lazyconn_one_graph(workdir: Path):
    """The same write as one graph (``batch_bytes`` larger than the run): dask's scheduler
    then keeps most blocks alive (halos of smoothing + whole-time-axis steps)."""
    t0 = time.perf_counter()
    _lazy_pipeline(workdir).to_zarr(
        str(workdir / "clean_one.zarr"), overwrite=True, batch_bytes=2**62
    )
    wall = time.perf_counter() - t0
    _save_sample(workdir, "clean_one.zarr")
    return wall


def child_nilearn(workdir: Path):
    from nilearn import image

    confounds = np.load(workdir / "confounds.npy")
    t0 = time.perf_counter()
    cleaned = image.clean_img(
        image.smooth_img(str(workdir / "run.nii"), FWHM),
        detrend=True,
        standardize="zscore_sample",
        low_pass=0.1,
        high_pass=0.01,
        t_r=T_R,
        confounds=confounds,
        mask_img=str(workdir / "mask.nii.gz"),
    )
    data = np.asanyarray(cleaned.dataobj)
    wall = time.perf_counter() - t0
    np.save(workdir / "sample_nilearn.npy", np.asarray(data[SAMPLE]))
    return wall


#: (name, block's own voxels, volumes, voxel size mm) for ``--kernel``: the default chunks
#: of the seed's 4 mm runs and of HCP-size 2 mm runs
KERNEL_BLOCKS = [
    ("seed 4 mm", (23, 28, 23), 168, 4.0),
    ("HCP 2 mm", (12, 14, 23), 1200, 2.0),
]


def child_kernel(workdir: Path):
    """Time ``gaussian_block`` and scipy's passes per block, 1 and 2 threads (JSON file)."""
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    from lazyconn.ops import spatial

    def timed(func, repeat):
        best = None
        for _ in range(repeat):
            w, c = time.perf_counter(), time.process_time()
            func()
            t = (time.perf_counter() - w, time.process_time() - c)
            best = t if best is None or t[0] < best[0] else best
        return best

    rng = np.random.default_rng(0)
    rows = []
    t_start = time.perf_counter()
    for name, own, n_t, vox in KERNEL_BLOCKS:
        sigma = FWHM / spatial.FWHM_OVER_SIGMA / vox
        r = spatial.gaussian_halfwidth(sigma)
        halos = [(r, r)] * 3
        shape = tuple(n + 2 * r for n in own) + (n_t,)
        block = (1000 + 10 * rng.standard_normal(shape)).astype(np.float32)
        block_f = np.asfortranarray(block)
        kernels = {
            "scipy": lambda b=block, h=halos, s=sigma: spatial._gaussian_block_scipy(
                b, [s] * 3, 4.0, h
            ),
            "lazyconn": lambda b=block, h=halos, s=sigma: spatial.gaussian_block(
                b, [s] * 3, halos=h
            ),
            # F-ordered, as Zarr and NIfTI blocks are (the kernel then works on the transpose)
            "lazyconn_F": lambda b=block_f, h=halos, s=sigma: spatial.gaussian_block(
                b, [s] * 3, halos=h
            ),
        }
        exact = spatial._gaussian_block_scipy(block.astype(np.float64), [sigma] * 3, 4.0, halos)
        ulp = float(np.spacing(np.float32(np.abs(exact).max())))
        row = {"block": name, "shape": shape}
        with threadpool_limits(1):
            for kname, func in kernels.items():
                func()  # warm: operators cached, pages touched
                row[f"{kname}_max_err_ulps"] = float(np.abs(func() - exact).max() / ulp)
                row[f"{kname}_1_thread_s"] = timed(func, 5)[0]

                def eight(func=func):
                    with ThreadPoolExecutor(2) as pool:
                        list(pool.map(lambda _: func(), range(8)))

                wall, cpu = timed(eight, 3)
                row[f"{kname}_8_blocks_2_threads_s"] = wall
                row[f"{kname}_cpu_over_wall_2_threads"] = cpu / wall
        rows.append(row)
    wall = time.perf_counter() - t_start
    (workdir / "kernel.json").write_text(json.dumps(rows))
    return wall


CHILDREN = {
    "kernel": child_kernel,
    "convert": child_convert,
    "lazyconn": child_lazyconn,
    "lazyconn_one_graph": child_lazyconn_one_graph,
    "nilearn": child_nilearn,
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="40 x 48 x 40 x 150 (seconds)")
    parser.add_argument("--shape", type=int, nargs=4, default=None, metavar=("X", "Y", "Z", "T"))
    parser.add_argument("--skip-nilearn", action="store_true")
    parser.add_argument(
        "--kernel", action="store_true", help="time the smoothing kernel on single blocks"
    )
    parser.add_argument(
        "--one-graph",
        action="store_true",
        help="also time to_zarr as one graph (batch_bytes=inf; high memory)",
    )
    parser.add_argument(
        "--batch-bytes",
        type=int,
        default=None,
        help="to_zarr's batch_bytes (default: its own, 128 MiB)",
    )
    harness.common_arguments(parser, HERE / "_data" / "clean", CHILDREN)
    args = parser.parse_args(argv)
    workdir = Path(args.workdir)

    if args.child:
        return harness.child_report(CHILDREN[args.child], workdir)

    if args.kernel:
        return _kernel_table(workdir, args.keep)
    if args.batch_bytes:
        os.environ["BENCH_BATCH_BYTES"] = str(args.batch_bytes)
    shape = (
        tuple(args.shape)
        if args.shape
        else ((40, 48, 40, 150) if args.small else (91, 109, 91, 400))
    )
    harness.fresh_dir(workdir)
    t0 = time.perf_counter()
    n_mask = write_inputs(workdir, shape)
    print(
        f"inputs: run {shape} float32 ({np.prod(shape) * 4 / 2**30:.2f} GiB), "
        f"{n_mask} mask voxels, written in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )

    results = {"shape": shape, "n_mask_voxels": n_mask, "cpu_count": os.cpu_count()}
    names = (
        ["convert", "lazyconn"]
        + (["lazyconn_one_graph"] if args.one_graph else [])
        + ([] if args.skip_nilearn else ["nilearn"])
    )
    samples = {}
    for name in names:
        results[name] = harness.run_child(__file__, name, workdir)
        r = results[name]
        print(
            f"{name:16s} wall {r['wall_s']:7.1f} s   peak RSS {r['peak_rss_bytes'] / 2**30:5.2f} GiB",
            flush=True,
        )
        if name.startswith("lazyconn"):
            samples[name] = np.load(workdir / "sample_lazyconn.npy").astype(np.float64)
    if not args.skip_nilearn:
        b = np.load(workdir / "sample_nilearn.npy").astype(np.float64)
        for name in samples:
            diff = float(np.abs(samples[name] - b).max() / np.abs(b).max())
            ratio = results[name]["wall_s"] / results["nilearn"]["wall_s"]
            results[name].update(max_abs_diff_over_max_abs=diff, time_ratio_over_nilearn=ratio)
            print(
                f"{name}: wall ratio to nilearn {ratio:.2f}; max |diff| / max |nilearn| on "
                f"the sample {diff:.2e}"
            )
    if len(samples) > 1:
        results["max_abs_diff_batched_vs_one_graph"] = float(
            np.abs(samples["lazyconn"] - samples["lazyconn_one_graph"]).max()
        )
        print(
            f"batched vs one graph: max |diff| {results['max_abs_diff_batched_vs_one_graph']:.1e}"
        )
    out = HERE / "_data" / f"bench_clean_{'x'.join(map(str, shape))}.json"
    harness.finish(out, results, workdir, args.keep)
    return 0


def _kernel_table(workdir: Path, keep: bool) -> int:
    harness.fresh_dir(workdir)
    results = {"kernel": harness.run_child(__file__, "kernel", workdir)}
    rows = json.loads((workdir / "kernel.json").read_text())
    results["blocks"] = rows
    print(
        "| block (with halo) | kernel | 1 block, 1 thread | 8 blocks, 2 threads | CPU/wall "
        "| max error (float32 ulps of the data) |"
    )
    print("|---|---|---|---|---|---|")
    for row in rows:
        for k in ("scipy", "lazyconn", "lazyconn_F"):
            print(
                f"| {row['block']} {tuple(row['shape'])} | {k} | {row[f'{k}_1_thread_s']:.3f} s "
                f"| {row[f'{k}_8_blocks_2_threads_s']:.3f} s "
                f"| {row[f'{k}_cpu_over_wall_2_threads']:.2f} | {row[f'{k}_max_err_ulps']:.1f} |"
            )
    harness.finish(HERE / "_data" / "bench_clean_kernel.json", results, workdir, keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
