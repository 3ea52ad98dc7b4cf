"""Benchmark: seed 004 (ROI extraction by a face-vs-house t-test), lazyconn vs nilearn + scipy.

The seed's steps on a synthetic Haxby-like task run
(:func:`lazyconn.datasets.make_synthetic_task_fmri`)::

    smooth_img(run, fwhm=6); mean_img; scipy.stats.ttest_ind(face volumes, house volumes);
    -log10(p) clipped to [0, 10], threshold 5; AND with the VT mask; binary_dilation; label;
    NiftiLabelsMasker(labels).transform per condition; save the labels atlas.

- nilearn + scipy: the seed as written (``get_data`` of the smoothed run: the whole run in
  memory, plus its smoothed copy), reading an uncompressed ``.nii`` (its fastest input);
- lazyconn: the same steps on the run's zarr store (made once with ``lazyconn.convert``, timed
  separately): the mean and the t-test in one pass over the run
  (``stats.compute_maps(mean, p, run=...)``: batches of block-rows, bounded memory), the
  mask steps on 3-D maps, and one ``NiftiLabelsMasker(smoothing_fwhm=6).transform`` of the
  raw run (smoothing folded into the region weights) whose rows are then split by
  condition (a second pass), instead of one pass per condition over the smoothed run.

Also timed on the store: a plain read (every chunk decompressed, nothing computed) and the
t-test alone on the raw run (no smoothing): the t-test's read pass vs a plain read.

Each step runs in its own subprocess (``benchmarks/harness.py``) reporting its wall and CPU
time (work only, imports excluded; CPU of all the process's threads) and peak RSS. The p maps and labels of both are compared.

Usage::

    python benchmarks/bench_seed004.py --small                  # 40 x 48 x 40 x 150
    python benchmarks/bench_seed004.py                          # 91 x 109 x 91 x 300 (1.1 GB)
    python benchmarks/bench_seed004.py --shape 91 109 91 1200 --skip-nilearn   # HCP (4.3 GB)
    python benchmarks/bench_seed004.py --shape 91 109 91 1200 --only read --only ttest_raw

Data go to benchmarks/_data/seed004 (git-ignored), removed at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402 - benchmarks/ is not a package

FWHM = 6.0


def _dataset(workdir: Path):
    from lazyconn.datasets import make_synthetic_task_fmri

    spec = json.loads((workdir / "spec.json").read_text())
    return make_synthetic_task_fmri(
        n_timepoints=spec["shape"][3],
        shape=tuple(spec["shape"][:3]),
        voxel_size=spec["voxel_size"],
        data_dir=workdir / "data",
    )


def _labels(data):
    import pandas as pd

    return pd.read_csv(data.session_target[0], sep=" ")["labels"]


def _roi_steps(log_p_values, vt, dilate, label):
    """The seed's 3-D steps from the clipped -log10(p) map (numpy in, numpy out)."""
    log_p_values = log_p_values.copy()
    log_p_values[log_p_values < 5] = 0
    bin_p_values_and_vt = np.logical_and(log_p_values != 0, vt)
    return label(dilate(bin_p_values_and_vt))


# ---------------------------------------------------------------------------------- children
def child_convert(workdir: Path):
    import lazyconn

    data = _dataset(workdir)
    t0, c0 = time.perf_counter(), time.process_time()
    lazyconn.convert(data.func[0], str(workdir / "run.zarr"), overwrite=True, progress=False)
    return time.perf_counter() - t0, time.process_time() - c0


def _first_voxel(block):
    # a copy: a view would keep the whole chunk alive until the end
    return np.array(block[:1, :1, :1, :1])


def child_read(workdir: Path):
    """Plain read of the store: every chunk decompressed, one value kept per chunk."""
    import lazyconn

    run = lazyconn.load(str(workdir / "run.zarr"))
    t0, c0 = time.perf_counter(), time.process_time()
    run.data.map_blocks(_first_voxel, chunks=(1,) * 4, dtype=run.dtype).compute()
    return time.perf_counter() - t0, time.process_time() - c0


def child_ttest_raw(workdir: Path):
    """The t-test alone on the raw run (the read pass of the t-test), as the seed writes it."""
    import lazyconn
    from lazyconn import stats
    from lazyconn.image import get_data

    labels = _labels(_dataset(workdir)).to_numpy()
    run = lazyconn.load(str(workdir / "run.zarr"))
    t0, c0 = time.perf_counter(), time.process_time()
    fmri_data = get_data(run, compute=False)
    result = stats.ttest_ind(
        fmri_data[..., labels == "face"], fmri_data[..., labels == "house"], axis=-1
    )
    result.pvalue.compute()
    return time.perf_counter() - t0, time.process_time() - c0


def child_lazyconn(workdir: Path):
    import lazyconn
    from lazyconn import image, stats
    from lazyconn.image import (
        binary_dilation_img,
        connected_components_img,
        get_data,
        new_img_like,
    )
    from lazyconn.maskers import NiftiLabelsMasker

    data = _dataset(workdir)
    labels = _labels(data)
    t0, c0 = time.perf_counter(), time.process_time()
    run = lazyconn.load(str(workdir / "run.zarr"))
    fmri_img = image.smooth_img(run, fwhm=FWHM)
    fmri_data = get_data(fmri_img, compute=False)
    mean_img = image.mean_img(fmri_img)
    _, p_values = stats.ttest_ind(
        fmri_data[..., labels == "face"], fmri_data[..., labels == "house"], axis=-1
    )
    # one pass over the run for both maps, in batches of block-rows (bounded memory)
    mean, p_values = stats.compute_maps(mean_img, p_values, run=fmri_img)
    log_p_values = -np.log10(p_values)
    log_p_values[np.isnan(log_p_values)] = 0.0
    log_p_values[log_p_values > 10.0] = 10.0
    vt = get_data(data.mask_vt[0]).astype(bool)

    def dilate(mask):
        return binary_dilation_img(new_img_like(fmri_img, mask.astype(np.int8)))

    def label(mask_img):
        labels_img, _ = connected_components_img(mask_img)
        return labels_img

    labels_img = _roi_steps(log_p_values, vt, dilate, label)
    # The second pass, every condition at once: smoothing folded into the region weights
    # (W . smooth(X) = smooth(W) . X), so the raw run is read, not smoothed again.
    masker = NiftiLabelsMasker(
        labels_img,
        smoothing_fwhm=FWHM,
        resampling_target=None,
        standardize=False,
        detrend=False,
    ).fit()
    signals = masker.transform(run)
    per_condition = {c: signals[(labels == c).to_numpy()] for c in labels.unique()}
    labels_img.to_filename(workdir / "atlas_lazyconn.nii.gz")
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    np.save(workdir / "p_lazyconn.npy", p_values)
    np.save(workdir / "signals_lazyconn.npy", per_condition["face"])
    del mean
    return wall, cpu


def child_nilearn(workdir: Path):
    import nibabel as nib
    from nilearn import image
    from nilearn.maskers import NiftiLabelsMasker
    from scipy import stats
    from scipy.ndimage import binary_dilation, label

    data = _dataset(workdir)
    labels = _labels(data)
    t0, c0 = time.perf_counter(), time.process_time()
    fmri_img = image.smooth_img(str(workdir / "run.nii"), fwhm=FWHM)
    image.mean_img(fmri_img)
    fmri_data = image.get_data(fmri_img)
    _, p_values = stats.ttest_ind(
        fmri_data[..., labels == "face"], fmri_data[..., labels == "house"], axis=-1
    )
    log_p_values = -np.log10(p_values)
    log_p_values[np.isnan(log_p_values)] = 0.0
    log_p_values[log_p_values > 10.0] = 10.0
    vt = image.get_data(image.load_img(data.mask_vt[0])).astype(bool)
    roi_labels, _ = _roi_steps(log_p_values, vt, binary_dilation, label)
    labels_img = image.new_img_like(fmri_img, roi_labels.astype(np.int32))
    masker = NiftiLabelsMasker(
        labels_img, resampling_target=None, standardize=False, detrend=False
    ).fit()
    per_condition = {}
    for cond in labels.unique():
        cond_maps = image.new_img_like(fmri_img, fmri_data[..., labels == cond])
        per_condition[cond] = masker.transform(cond_maps)
    labels_img.to_filename(workdir / "atlas_nilearn.nii.gz")
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    np.save(workdir / "p_nilearn.npy", p_values)
    np.save(workdir / "signals_nilearn.npy", per_condition["face"])
    del nib
    return wall, cpu


CHILDREN = {
    "convert": child_convert,
    "read": child_read,
    "ttest_raw": child_ttest_raw,
    "lazyconn": child_lazyconn,
    "nilearn": child_nilearn,
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="40 x 48 x 40 x 150 (seconds)")
    parser.add_argument("--shape", type=int, nargs=4, default=None, metavar=("X", "Y", "Z", "T"))
    parser.add_argument("--skip-nilearn", action="store_true")
    parser.add_argument(
        "--only",
        choices=["convert", "read", "ttest_raw", "lazyconn", "nilearn"],
        action="append",
        help="run only these steps (convert is always run: the others read its store)",
    )
    harness.common_arguments(parser, HERE / "_data" / "seed004", CHILDREN)
    args = parser.parse_args(argv)
    workdir = Path(args.workdir)

    if args.child:
        return harness.child_report(CHILDREN[args.child], workdir)

    shape = (
        tuple(args.shape)
        if args.shape
        else ((40, 48, 40, 150) if args.small else (91, 109, 91, 300))
    )
    voxel_size = 2.0 if shape[0] >= 80 else 4.0
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    (workdir / "spec.json").write_text(json.dumps({"shape": shape, "voxel_size": voxel_size}))
    t0 = time.perf_counter()
    data = _dataset(workdir)
    print(
        f"inputs: task run {shape} float32 ({np.prod(shape) * 4 / 2**30:.2f} GiB) written in "
        f"{time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    steps = ["convert", "read", "ttest_raw", "lazyconn"] + (
        [] if args.skip_nilearn else ["nilearn"]
    )
    if args.only:
        steps = [n for n in steps if n == "convert" or n in args.only]
    if "nilearn" in steps:
        with gzip.open(data.func[0], "rb") as src, open(workdir / "run.nii", "wb") as dst:
            shutil.copyfileobj(src, dst, 16 * 2**20)

    results = {"shape": shape}
    for name in steps:
        results[name] = harness.run_child(__file__, name, workdir)
        r = results[name]
        print(
            f"{name:10s} wall {r['wall_s']:7.1f} s   CPU {r['cpu_s']:7.1f} s"
            f"   peak RSS {r['peak_rss_bytes'] / 2**30:5.2f} GiB"
            f"   (load {harness.machine()['loadavg_end'][0]:.1f})",
            flush=True,
        )
    if "read" in results and "ttest_raw" in results:
        ratio = results["ttest_raw"]["wall_s"] / results["read"]["wall_s"]
        cpu_ratio = results["ttest_raw"]["cpu_s"] / results["read"]["cpu_s"]
        results["ttest_read_pass_over_plain_read"] = ratio
        results["ttest_read_pass_over_plain_read_cpu"] = cpu_ratio
        print(f"t-test read pass / plain read: {ratio:.2f} (CPU {cpu_ratio:.2f})")
    if "nilearn" in results and "lazyconn" in results:
        import nibabel as nib

        p_l, p_n = np.load(workdir / "p_lazyconn.npy"), np.load(workdir / "p_nilearn.npy")
        with np.errstate(divide="ignore"):
            lp_l, lp_n = -np.log10(p_l), -np.log10(p_n)
        finite = np.isfinite(lp_l) & np.isfinite(lp_n)
        diff = np.abs(lp_l[finite] - lp_n[finite])
        results["max_abs_diff_log10_p"] = float(diff.max())
        # where it is: the differences grow with -log10 p (float32 t in scipy)
        results["log10_p_at_max_diff"] = float(lp_n[finite][diff.argmax()])
        below = lp_n[finite] <= 10.0  # the range the seed keeps (clipped at 10)
        results["max_abs_diff_log10_p_up_to_10"] = float(diff[below].max(initial=0.0))
        a_l = np.asarray(nib.load(workdir / "atlas_lazyconn.nii.gz").dataobj)
        a_n = np.asarray(nib.load(workdir / "atlas_nilearn.nii.gz").dataobj)
        results["atlases_equal"] = bool(np.array_equal(a_l, a_n))
        s_l = np.load(workdir / "signals_lazyconn.npy")
        s_n = np.load(workdir / "signals_nilearn.npy")
        results["max_rel_diff_signals"] = float(np.abs(s_l - s_n).max() / np.abs(s_n).max())
        ratio = results["lazyconn"]["wall_s"] / results["nilearn"]["wall_s"]
        cpu_ratio = results["lazyconn"]["cpu_s"] / results["nilearn"]["cpu_s"]
        rss = results["lazyconn"]["peak_rss_bytes"] / results["nilearn"]["peak_rss_bytes"]
        results.update(
            time_ratio_over_nilearn=ratio,
            cpu_ratio_over_nilearn=cpu_ratio,
            rss_ratio_over_nilearn=rss,
        )
        print(
            f"lazyconn / nilearn: wall {ratio:.2f}, CPU {cpu_ratio:.2f}, peak RSS {rss:.2f}; "
            f"max |diff| of -log10 p {results['max_abs_diff_log10_p']:.1e} (at -log10 p = "
            f"{results['log10_p_at_max_diff']:.1f}; {results['max_abs_diff_log10_p_up_to_10']:.1e}"
            f" up to 10); atlases equal: {results['atlases_equal']}; "
            f"signals max rel diff {results['max_rel_diff_signals']:.1e}"
        )
    out = HERE / "_data" / f"bench_seed004_{'x'.join(map(str, shape))}.json"
    harness.write_results(out, results)
    print(harness.load_text())
    print(f"results: {out}")
    if not args.keep:
        shutil.rmtree(workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
