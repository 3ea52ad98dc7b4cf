"""Benchmark: what the integrity checks and BLAS pinning cost (issue #15).

1. **Read throughput with and without the crc32c checksum.** One run (default
   91 x 109 x 91 x 120 float32, 430 MB raw, default chunks and codec) is converted with
   ``lazyconn.convert`` (Blosc LZ4 + crc32c: every chunk verified on read, and the
   missing-chunk check of a complete store); a copy of the same voxels is written with the
   same chunks and codec but no crc32c (a store as written before checksums). Both are read
   whole (``lazyconn.load(store).data.sum().compute()``, dask's threaded scheduler),
   alternating ``--repeats`` times, with a third arm: the crc32c store checked by zarr's
   codec after the read instead of as each piece is read (lazyconn's read before); the median throughput of each and the relative cost
   are reported, from wall time and from the process's CPU time (what a saturated worker
   pays; steadier than wall time on a shared machine). The same A/B for a real read: the
   264 Power spheres (radius 5 mm, ``NiftiSpheresMasker.transform``) of the run.
   The floor: the crc32c pass alone over the compressed chunk files (one thread, from
   memory as the read meets them, and as many bytes from the CPU cache), as a share of
   each unchecked read's CPU time.
2. **One BLAS thread per subject.** The per-subject computation of a connectome
   (Ledoit-Wolf covariance + partial correlation of (T, K) region signals, K = 264 Power
   regions, T = 1200) timed under ``threadpool_limits(1)`` (what ``run_subject`` now does)
   and under the machine's default BLAS threads, alternating, medians.

The machine's load average is printed with the figures (ratios measured in the same run
are what counts on a shared machine).

Usage::

    python benchmarks/bench_integrity.py            # 91 x 109 x 91 x 120
    python benchmarks/bench_integrity.py --small    # 64 x 64 x 40 x 100
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _make_run(path: Path, shape) -> None:
    import nibabel as nib

    rng = np.random.default_rng(0)
    base = 1000 + 50 * rng.standard_normal(shape[:3]).astype(np.float32)
    data = np.empty(shape, dtype=np.float32)
    for t in range(shape[3]):  # smooth baseline + 2 % noise, like the codec benchmark
        data[..., t] = base + 20 * rng.standard_normal(shape[:3]).astype(np.float32)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-90.0, -126.0, -72.0]  # MNI 2 mm: the Power spheres fall inside
    nib.save(nib.Nifti1Image(data, affine), path)


def _copy_without_checksum(src: Path, dst: Path) -> None:
    import zarr

    shutil.copytree(src, dst)
    group = zarr.open_group(dst, mode="r+")
    old = zarr.open_group(src, mode="r")["0"]
    codecs = [
        c for c in old.metadata.codecs if type(c).__name__ not in ("Crc32cCodec", "BytesCodec")
    ]
    del group["0"]
    new = group.create_array(
        "0",
        shape=old.shape,
        dtype=old.dtype,
        chunks=old.chunks,
        compressors=codecs,
        fill_value=0,
        dimension_names=old.metadata.dimension_names,
        config={"write_empty_chunks": True},
    )
    new[...] = old[...]
    meta = dict(group.attrs["lazyconn"])
    meta.pop("checksum", None)
    group.attrs["lazyconn"] = meta


def _read(store: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of reading the whole store."""
    import lazyconn

    t0, c0 = time.perf_counter(), time.process_time()
    lazyconn.load(store).data.sum().compute()
    return time.perf_counter() - t0, time.process_time() - c0


def _spheres(store: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of the Power-264 sphere signals of the store."""
    import lazyconn
    from lazyconn.datasets import fetch_coords_power_2011
    from lazyconn.maskers import NiftiSpheresMasker

    coords = fetch_coords_power_2011().rois[["x", "y", "z"]].to_numpy()
    img = lazyconn.load(store)
    ijk = (coords - img.affine[:3, 3]) / np.diag(img.affine)[:3]
    inside = np.all((ijk >= 3) & (ijk <= np.array(img.shape[:3]) - 4), axis=1)
    coords = coords[inside]  # all 264 at full size; those in the --small grid's view
    masker = NiftiSpheresMasker(coords, radius=5.0).fit(img)  # weights built outside
    t0, c0 = time.perf_counter(), time.process_time()
    masker.transform(img)
    return time.perf_counter() - t0, time.process_time() - c0


def _zarr_check(fn):
    """``fn`` with the crc32c checked by zarr's codec after the read (how lazyconn read
    before the store verified chunks as it read them)."""
    from lazyconn.io import store as store_mod

    def run(path):
        fused = store_mod._verified_reads
        store_mod._verified_reads = lambda array: array
        try:
            return fn(path)
        finally:
            store_mod._verified_reads = fused

    return run


def _ab(fn, stores: dict, repeats: int, nbytes: int) -> dict:
    arms = {"crc32c": fn, "none": fn, "zarr_check": _zarr_check(fn)}
    for k, p in stores.items():
        arms[k](p)  # warm the page cache
    times = {k: [] for k in stores}
    for _ in range(repeats):
        for k, p in stores.items():
            times[k].append(arms[k](p))
    wall = {k: statistics.median(t[0] for t in v) for k, v in times.items()}
    cpu = {k: statistics.median(t[1] for t in v) for k, v in times.items()}
    return {
        "MBps": {k: nbytes / 1e6 / v for k, v in wall.items()},
        "seconds": times,
        "cost_percent": {k: 100 * (wall[k] / wall["none"] - 1) for k in stores},
        "cpu_seconds": cpu,
        "cpu_cost_percent": {k: 100 * (cpu[k] / cpu["none"] - 1) for k in stores},
        # paired: each repeat's ratio to the no-checksum read next to it (steadier under load)
        "paired_cpu_cost_percent": {
            k: 100
            * (statistics.median(a[1] / b[1] for a, b in zip(v, times["none"], strict=True)) - 1)
            for k, v in times.items()
        },
    }


def crc_floor(store: Path, repeats: int) -> dict:
    """The crc32c pass alone over the store's voxel chunk files, one thread, page cache warm:
    over each file's mapping as the read does it (from memory: a ~20 MB chunk does not stay
    in the CPU cache), and over the same number of bytes 1 MiB at a time from the CPU cache.
    Its CPU time over a read's is the floor of the check's relative cost."""
    import google_crc32c

    from lazyconn.io.store import _mapped

    files = sorted(f for f in (store / "0" / "c").rglob("*") if f.is_file())
    nbytes = sum(f.stat().st_size for f in files)

    def from_memory():
        c0 = time.thread_time()
        for f in files:
            with open(f, "rb", buffering=0) as h:
                data = _mapped(h, f.stat().st_size)
                if data is None:  # a small chunk file: read as the store does
                    data = np.frombuffer(h.read(), dtype=np.uint8)
                google_crc32c.value(data[:-4])
        return time.thread_time() - c0

    piece = np.frombuffer(np.random.default_rng(0).bytes(1 << 20), dtype=np.uint8)

    def from_cache():
        google_crc32c.value(piece)
        c0 = time.thread_time()
        for _ in range(nbytes >> 20):
            google_crc32c.value(piece)
        return time.thread_time() - c0

    mem = statistics.median(from_memory() for _ in range(repeats))
    cache = statistics.median(from_cache() for _ in range(repeats))
    return {
        "compressed_MB": nbytes / 1e6,
        "seconds_from_memory": mem,
        "GBps_from_memory": nbytes / 1e9 / mem,
        "seconds_from_cache": cache,
        "GBps_from_cache": nbytes / 1e9 / cache,
    }


def bench_read(shape, repeats: int, work: Path) -> dict:
    import lazyconn

    work.mkdir(parents=True, exist_ok=True)
    nii = work / "run.nii"
    _make_run(nii, shape)
    with_crc, without_crc = work / "crc.zarr", work / "nocrc.zarr"
    for p in (with_crc, without_crc):
        shutil.rmtree(p, ignore_errors=True)
    lazyconn.convert(nii, with_crc, progress=False)
    _copy_without_checksum(with_crc, without_crc)
    nbytes = int(np.prod(shape)) * 4
    stores = {"crc32c": with_crc, "none": without_crc, "zarr_check": with_crc}
    out = {"shape": list(shape), "raw_MB": nbytes / 1e6}
    out.update(_ab(_read, stores, repeats, nbytes))
    out["spheres"] = _ab(_spheres, stores, repeats, nbytes)
    out["crc_floor"] = crc_floor(with_crc, repeats)
    for p in (nii, with_crc, without_crc):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    return out


def bench_blas(repeats: int, n_times: int = 1200, n_regions: int = 264) -> dict:
    from threadpoolctl import threadpool_info, threadpool_limits

    from lazyconn.connectome import ConnectivityMeasure

    rng = np.random.default_rng(0)
    signals = rng.standard_normal((n_times, n_regions)) @ rng.standard_normal(
        (n_regions, n_regions)
    )
    measure = ConnectivityMeasure(kind="partial correlation")
    default = max(
        (i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"), default=1
    )

    def step():
        t0 = time.perf_counter()
        measure.subject_connectivity(measure.subject_covariance(signals))
        return time.perf_counter() - t0

    times = {"1 thread": [], f"{default} threads": []}
    step()
    for _ in range(repeats):
        with threadpool_limits(limits=1, user_api="blas"):
            times["1 thread"].append(step())
        times[f"{default} threads"].append(step())
    return {
        "shape": [n_times, n_regions],
        "median_ms": {k: 1e3 * statistics.median(v) for k, v in times.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    shape = (64, 64, 40, 100) if args.small else (91, 109, 91, 120)
    results = {"loadavg_start": os.getloadavg(), "cpus": os.cpu_count()}
    results["read"] = bench_read(shape, args.repeats, HERE / "_data" / "integrity")
    results["blas"] = bench_blas(args.repeats)
    results["loadavg_end"] = os.getloadavg()
    read = results["read"]
    for what, r in (("whole read", read), ("Power spheres", read["spheres"])):
        for arm, label in (("crc32c", "checked as read"), ("zarr_check", "zarr's codec check")):
            print(
                f"{what} of {read['raw_MB']:.0f} MB, crc32c {label}: "
                f"{r['MBps'][arm]:.0f} MB/s, without {r['MBps']['none']:.0f} MB/s -> cost "
                f"{r['cost_percent'][arm]:+.1f} % wall, {r['cpu_cost_percent'][arm]:+.1f} % CPU "
                f"({r['cpu_seconds'][arm]:.3f} vs {r['cpu_seconds']['none']:.3f} s; medians of "
                f"{args.repeats}); paired CPU ratio {r['paired_cpu_cost_percent'][arm]:+.1f} %"
            )
    floor = read["crc_floor"]
    print(
        f"crc32c pass alone (one thread) over the {floor['compressed_MB']:.0f} MB of compressed "
        f"chunks: {floor['seconds_from_memory']:.3f} s from memory "
        f"({floor['GBps_from_memory']:.1f} GB/s), {floor['seconds_from_cache']:.3f} s for as "
        f"many bytes from the CPU cache ({floor['GBps_from_cache']:.1f} GB/s)"
    )
    for what, r in (("whole read", read), ("Power spheres", read["spheres"])):
        extra = r["cpu_seconds"]["crc32c"] - r["cpu_seconds"]["none"]
        print(
            f"{what}: the check's CPU {extra:+.3f} s against the pass alone "
            f"{floor['seconds_from_memory']:.3f} s; floor "
            f"{100 * floor['seconds_from_memory'] / r['cpu_seconds']['none']:.1f} % of the "
            f"unchecked read's CPU ({100 * floor['seconds_from_cache'] / r['cpu_seconds']['none']:.1f}"
            " % if the bytes were in cache)"
        )
    print(f"per-subject connectivity {results['blas']['shape']}: {results['blas']['median_ms']}")
    print(
        f"load average at start {results['loadavg_start']}, end {results['loadavg_end']} "
        f"on {results['cpus']} CPUs"
    )
    out = HERE / "_data" / ("bench_integrity_small.json" if args.small else "bench_integrity.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
