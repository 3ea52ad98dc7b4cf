"""Benchmark: streaming NIfTI.gz -> lazyconn zarr conversion of an HCP-sized run.

Writes (streaming) a 91 x 109 x 91 x 1200 float32 run (4.3 GB raw) as .nii.gz with
zlib level 1, then reports, in the same run on the same file:

- ``gzip -dc FILE > /dev/null`` wall time (the reference) and conversion wall time,
  as a throughput ratio (goal >= 0.8x in the default install, which has ``isal`` since
  session 6: ``--zlib-too`` adds the conversion with ``isal`` hidden, i.e. zlib; xarray, a
  test extra that dask imports eagerly, is hidden in both);
- peak RSS of the conversion, run in a subprocess (psutil polling of the process
  tree every 20 ms, and ``getrusage(RUSAGE_CHILDREN).ru_maxrss``) (goal <= 1 GB);
- ``lazyconn.load`` time of the .nii.gz and of the store, and the time to read the
  whole store back (decompress every chunk);
- with ``--codecs``: size ratio and speeds of a few codecs on one stored chunk;
- with ``--to-nifti``: writing the store back to ``.nii`` and ``.nii.gz``
  (``LazyImage.to_nifti``, streamed) with its default staged reorder and with slab-by-slab
  reads (every chunk read once per slab), wall, CPU and peak RSS each in a subprocess; the
  ``.nii`` is checked byte for byte against the decompressed source; under 1 GB of voxels
  also nibabel's ``to_filename`` of the loaded run (it holds the whole run).

Usage::

    python benchmarks/bench_convert.py            # HCP size (~2-3 min, ~6 GB temp disk)
    python benchmarks/bench_convert.py --small    # 91 x 109 x 91 x 100, seconds
    python benchmarks/bench_convert.py --codecs   # add the codec table
    python benchmarks/bench_convert.py --small --to-nifti --only-to-nifti   # writing back

Data go to benchmarks/_data/ (git-ignored) and big files are deleted at the end
(``--keep`` keeps them).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
import zlib
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402 - benchmarks/ is not a package

SHAPE3 = (91, 109, 91)


def fmri_like_volumes(shape3, n_vols, seed=0):
    """Yield float32 volumes like a masked, preprocessed BOLD run.

    A smooth positive "brain" (an ellipsoid, ~30% of the box, zeros outside as in
    HCP's masked MNI-space runs) times (1 + slow drift + 2% Gaussian noise per voxel).
    """
    rng = np.random.default_rng(seed)
    axes = [np.linspace(-1, 1, n, dtype=np.float32) for n in shape3]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    inside = (x**2 / 0.75 + y**2 / 0.85 + z**2 / 0.7) < 0.68
    base = np.where(inside, 9000 + 2500 * np.cos(3 * x) * np.sin(2 * y) + 800 * z, 0)
    base = base.astype(np.float32)
    drift = np.cumsum(rng.standard_normal(n_vols)) * 0.001
    for t in range(n_vols):
        noise = rng.standard_normal(shape3, dtype=np.float32)
        vol = base * (np.float32(1 + drift[t]) + np.float32(0.02) * noise)
        yield vol.astype(np.float32)


def write_run(path: Path, shape3, n_vols, compresslevel=1):
    """Stream a .nii.gz: nibabel's header bytes, then one volume at a time through zlib."""
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape(shape3 + (n_vols,))
    header.set_data_dtype(np.float32)
    header.set_zooms((2.0, 2.0, 2.0, 0.72))
    header.set_xyzt_units("mm", "sec")
    affine = np.diag([-2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [90, -126, -72]
    header.set_sform(affine, code=4)
    header.set_qform(affine, code=4)
    header.set_data_offset(352)
    import io

    buf = io.BytesIO()
    header.write_to(buf)
    comp = zlib.compressobj(compresslevel, zlib.DEFLATED, 31)
    with open(path, "wb") as f:
        f.write(comp.compress(buf.getvalue().ljust(352, b"\0")))
        for vol in fmri_like_volumes(shape3, n_vols):
            f.write(comp.compress(vol.tobytes(order="F")))
        f.write(comp.flush())


def codec_table(shape3, n_vols):
    """Size ratio and speeds of codecs on one default-sized chunk of the synthetic run."""
    import numcodecs

    from lazyconn.config import default_chunks

    cx, cy, cz, _ = default_chunks(shape3 + (n_vols,), np.float32)
    x0, y0, z0 = shape3[0] // 2 - cx // 2, shape3[1] // 2 - cy // 2, shape3[2] // 3
    block = np.stack(
        [v[x0 : x0 + cx, y0 : y0 + cy, z0 : z0 + cz] for v in fmri_like_volumes(shape3, n_vols)]
    )
    block = np.ascontiguousarray(block.transpose(0, 3, 2, 1))  # stored (t, z, y, x)
    codecs = {
        "blosc zstd-1 shuffle": numcodecs.Blosc("zstd", 1, numcodecs.Blosc.SHUFFLE),
        "blosc zstd-3 shuffle": numcodecs.Blosc("zstd", 3, numcodecs.Blosc.SHUFFLE),
        "blosc zstd-5 shuffle": numcodecs.Blosc("zstd", 5, numcodecs.Blosc.SHUFFLE),
        "blosc zstd-1 bitshuffle": numcodecs.Blosc("zstd", 1, numcodecs.Blosc.BITSHUFFLE),
        "blosc zstd-1 noshuffle": numcodecs.Blosc("zstd", 1, numcodecs.Blosc.NOSHUFFLE),
        "blosc lz4-5 shuffle (default)": numcodecs.Blosc("lz4", 5, numcodecs.Blosc.SHUFFLE),
        "zstd-1 (no shuffle)": numcodecs.Zstd(1),
        "zstd-3 (no shuffle)": numcodecs.Zstd(3),
        "lz4 (no shuffle)": numcodecs.LZ4(),
        "zlib-1 (gzip's deflate)": numcodecs.Zlib(1),
    }
    rows = []
    nbytes = block.nbytes
    for name, codec in codecs.items():
        enc = codec.encode(block)
        reps = 3
        start = time.perf_counter()
        for _ in range(reps):
            enc = codec.encode(block)
        enc_s = (time.perf_counter() - start) / reps
        start = time.perf_counter()
        for _ in range(reps):
            codec.decode(enc)
        dec_s = (time.perf_counter() - start) / reps
        rows.append((name, nbytes / len(enc), nbytes / enc_s / 1e6, nbytes / dec_s / 1e6))
    print(
        f"\nCodecs on one stored chunk {block.shape} (t, z, y, x) float32, {nbytes / 2**20:.1f} MiB:"
    )
    print("| codec | ratio | compress MB/s | decompress MB/s |\n|---|---|---|---|")
    for name, ratio, c, d in rows:
        print(f"| {name} | {ratio:.2f} | {c:.0f} | {d:.0f} |")
    return rows


def to_nifti_table(src: Path, dst: Path, data: Path, raw_bytes: int) -> list[dict]:
    """Write the store back to NIfTI: each way in its own measured subprocess."""
    import hashlib
    import subprocess

    expected = hashlib.sha256(
        subprocess.run(["gzip", "-dc", str(src)], capture_output=True, check=True).stdout
    ).hexdigest()
    rows = []
    cases = [
        ("staged", ".nii"),
        ("staged", ".nii.gz"),
        ("slabs", ".nii"),
    ]
    if raw_bytes < 2**30:
        cases.append(("nibabel", ".nii.gz"))
    timing = data / "write_s.txt"
    for strategy, ext in cases:
        out = data / f"back{ext}"
        if strategy == "nibabel":
            code = (
                "import time, nibabel as nib; t = time.perf_counter(); "
                f"nib.load({str(src)!r}).to_filename({str(out)!r})"
            )
        else:
            code = (
                "import sys, time; sys.modules['xarray'] = None; import lazyconn, dask; "
                "import dask.array as da; da.ones(2).compute(); "  # dask's lazy imports
                "from lazyconn.io.writers import write_nifti; t = time.perf_counter(); "
                f"write_nifti(lazyconn.load({str(dst)!r}), {str(out)!r}, "
                f"strategy={strategy!r}, scratch_dir={str(data / 'scratch')!r})"
            )
        # The write alone (imports excluded), timed in the child.
        code += f"; open({str(timing)!r}, 'w').write(str(time.perf_counter() - t))"
        measured = harness.run_measured([sys.executable, "-c", code])
        body = out.read_bytes() if ext == ".nii" else None
        row = {
            "how": strategy,
            "ext": ext,
            "write_s": float(timing.read_text()),
            "process_wall_s": measured["wall_s"],
            "cpu_s": measured["cpu_s"],
            "peak_rss_bytes": measured["peak_rss_bytes"],
            "bytes": out.stat().st_size,
            "equal_to_source": None
            if body is None
            else hashlib.sha256(body).hexdigest() == expected,
        }
        del body
        out.unlink()
        rows.append(row)
        print(
            f"write {strategy:8s} {ext:7s} {row['write_s']:6.1f} s (process {row['process_wall_s']:.1f} "
            f"s wall, {row['cpu_s']:.1f} s CPU) "
            f"peak RSS {row['peak_rss_bytes'] / 2**20:6.0f} MiB  equal {row['equal_to_source']}  "
            f"{harness.load_text()}",
            flush=True,
        )
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="100 volumes instead of 1200")
    parser.add_argument("--volumes", type=int, help="number of volumes (overrides --small)")
    parser.add_argument("--compresslevel", type=int, default=1, help="gzip level of the run")
    parser.add_argument("--codecs", action="store_true", help="also measure codecs")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument(
        "--zlib-too", action="store_true", help="also convert with ISA-L hidden (plain zlib)"
    )
    parser.add_argument("--to-nifti", action="store_true", help="also write the store back")
    parser.add_argument(
        "--only-to-nifti", action="store_true", help="skip the gunzip/convert comparison"
    )
    parser.add_argument("--data-dir", default=str(HERE / "_data"))
    args = parser.parse_args(argv)

    n_vols = args.volumes or (100 if args.small else 1200)
    data = Path(args.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    src = data / f"run_{n_vols}.nii.gz"
    dst = data / f"run_{n_vols}.zarr"
    scratch = data / "scratch"
    results = {"shape": list(SHAPE3) + [n_vols], "raw_bytes": int(np.prod(SHAPE3)) * n_vols * 4}
    try:
        if not src.exists():
            start = time.perf_counter()
            write_run(src, SHAPE3, n_vols, args.compresslevel)
            results["write_s"] = time.perf_counter() - start
        results["gz_bytes"] = src.stat().st_size
        if args.only_to_nifti:
            shutil.rmtree(dst, ignore_errors=True)
            import lazyconn

            lazyconn.convert(str(src), str(dst), scratch_dir=str(scratch), progress=False)
            results["to_nifti"] = to_nifti_table(src, dst, data, results["raw_bytes"])
            return results
        gunzip = [harness.timed(f"gzip -dc {src} > /dev/null", shell=True)]
        shutil.rmtree(dst, ignore_errors=True)
        # As in the default install: xarray is a test extra, and dask.array imports it
        # eagerly when present (~1.4 s of pandas/xarray imports on this machine).
        code = (
            "import sys; sys.modules['xarray'] = None; import lazyconn; "
            f"lazyconn.convert({str(src)!r}, {str(dst)!r}, scratch_dir={str(scratch)!r}, "
            "progress=False)"
        )
        measured = harness.run_measured([sys.executable, "-c", code])
        wall, cpu = measured["wall_s"], measured["cpu_s"]
        peak, maxrss = measured["peak_rss_bytes"], measured["peak_rss_maxrss_bytes"]
        gunzip.append(harness.timed(f"gzip -dc {src} > /dev/null", shell=True))
        if args.zlib_too:
            # The same conversion with ISA-L hidden (zlib, as where isal cannot be
            # imported): what the dependency is worth.
            shutil.rmtree(dst, ignore_errors=True)
            hidden = "import sys; sys.modules['isal'] = None; " + code  # zlib
            plain = harness.run_measured([sys.executable, "-c", hidden])
            results.update(convert_zlib_s=plain["wall_s"], convert_zlib_cpu_s=plain["cpu_s"])
            gunzip.append(harness.timed(f"gzip -dc {src} > /dev/null", shell=True))
        walls, cpus = [g[0] for g in gunzip], [g[1] for g in gunzip]
        results.update(
            gunzip_s=walls,
            gunzip_cpu_s=cpus,
            convert_s=wall,
            convert_cpu_s=cpu,
            ratio=min(walls) / wall,
            ratio_mean=np.mean(walls) / wall,
            cpu_ratio=min(cpus) / cpu,
            peak_rss_poll=peak,
            peak_rss_maxrss=maxrss,
        )

        import lazyconn

        start = time.perf_counter()
        img = lazyconn.load(str(src))  # the first call also imports zarr, fsspec...
        results["load_gz_first_s"] = time.perf_counter() - start
        start = time.perf_counter()
        img = lazyconn.load(str(src))
        results["load_gz_s"] = time.perf_counter() - start
        start = time.perf_counter()
        store = lazyconn.load(str(dst))
        results["load_store_s"] = time.perf_counter() - start
        start = time.perf_counter()
        total = store.data.sum(dtype=np.float64).compute()
        results["read_store_s"] = time.perf_counter() - start
        results["store_bytes"] = sum(f.stat().st_size for f in dst.rglob("*") if f.is_file())
        results["chunks"] = [c[0] for c in store.chunks]
        # Spot check against nibabel: a few time points of one chunk's region.
        import nibabel as nib

        proxy = nib.load(str(src)).dataobj
        ref = proxy[10:30, 20:50, 30:40, n_vols - 5 :]
        np.testing.assert_array_equal(store.data[10:30, 20:50, 30:40, -5:].compute(), ref)
        results["checked"] = True
        results["sum"] = float(total)
        del img
        if args.to_nifti:
            results["to_nifti"] = to_nifti_table(src, dst, data, results["raw_bytes"])
    finally:
        if not args.keep:
            for path in (src, dst, scratch):
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                elif path.exists():
                    path.unlink()
    gb = results["raw_bytes"] / 1e9
    print(
        f"run {tuple(results['shape'])} float32: {gb:.2f} GB raw, "
        f"{results['gz_bytes'] / 1e9:.2f} GB gzip level {args.compresslevel}"
    )
    print(harness.load_text())
    print(
        f"gzip -dc > /dev/null: {', '.join(f'{g:.1f}' for g in results['gunzip_s'])} s wall, "
        f"{', '.join(f'{g:.1f}' for g in results['gunzip_cpu_s'])} s CPU"
    )
    print(
        f"lazyconn.convert:     {results['convert_s']:.1f} s wall "
        f"({gb / results['convert_s'] * 1e3:.0f} MB/s raw), {results['convert_cpu_s']:.1f} s CPU"
        f"  -> throughput ratio to gunzip {results['ratio']:.2f}x wall (mean gunzip "
        f"{results['ratio_mean']:.2f}x), {results['cpu_ratio']:.2f}x in CPU time"
    )
    if "convert_zlib_s" in results:
        plain = results["convert_zlib_s"]
        print(
            f"lazyconn.convert, ISA-L hidden (zlib): {plain:.1f} s wall, "
            f"{results['convert_zlib_cpu_s']:.1f} s CPU -> ratio to gunzip "
            f"{min(results['gunzip_s']) / plain:.2f}x; ISA-L speed-up {plain / results['convert_s']:.2f}x"
        )
    print(
        f"peak RSS of conversion: {results['peak_rss_poll'] / 2**20:.0f} MiB (polling), "
        f"{results['peak_rss_maxrss'] / 2**20:.0f} MiB (ru_maxrss)"
    )
    print(
        f"load(.nii.gz): {results['load_gz_s'] * 1e3:.1f} ms (first call, with imports: "
        f"{results['load_gz_first_s'] * 1e3:.0f} ms); load(store): "
        f"{results['load_store_s'] * 1e3:.1f} ms; read whole store: {results['read_store_s']:.1f} s "
        f"({gb / results['read_store_s'] * 1e3:.0f} MB/s); store {results['store_bytes'] / 1e9:.2f} GB "
        f"(ratio {results['raw_bytes'] / results['store_bytes']:.2f}), chunks {tuple(results['chunks'])}"
    )
    if args.codecs:
        results["codecs"] = codec_table(SHAPE3, n_vols)
    harness.write_results(data / f"results_{n_vols}.json", results)
    return results


if __name__ == "__main__":
    main()
