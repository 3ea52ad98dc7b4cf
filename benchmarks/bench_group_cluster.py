"""Benchmark: the group pipeline on a cluster started from the command line, from local Zarr
stores and from an S3 server (issue #13).

``bench_group.py``'s workflow (Power-264 spheres, smoothing, cleaning with 15 confounds,
partial correlation, group mean) run by ``GroupConnectome`` against ``dask scheduler`` + two
``dask worker`` processes (single-threaded, each under its nanny), started with dask's own
command line by ``lazyconn.testing.cluster.CliCluster`` (the tests' cluster), on:

- ``local``: the Zarr stores on the local disk, results store on the local disk;
- ``s3``: the same stores uploaded to a bucket of a local S3 server (moto in server mode, in a
  process of its own, with the fake credentials of ``lazyconn.testing.s3``), read by the
  workers with ``storage_options``; the results store in the bucket too.

A fresh cluster for each (source, study size); each worker warmed up on one subject before the
clock starts. Measured:

- wall time of ``fit`` (fresh results store) and of a re-run with every subject stored;
- peak RSS of each worker process (not its nanny), sampled every 20 ms with psutil from this
  process, and its RSS after the warm-up (the baseline);
- bytes read per subject against the store's size. ``s3``: the bytes of every GET response the
  server sent for the study's stores, counted by a WSGI wrapper around moto's app (exact: what
  crossed the network, whoever asked; the client's identity/metadata reads included).
  ``local``: the growth of the workers' ``rchar`` (``/proc/<pid>/io``: bytes returned by
  read syscalls, page cache hits included, so it counts reads even when the disk is not
  touched). Store size: the sum of the store's file sizes (chunks and metadata);
- nilearn 0.14.1's subject loop on the ``.nii.gz`` runs in this process (``bench_group``'s
  reference), for the sizes given to ``--nilearn``, and the matrices' agreement.

Usage::

    python benchmarks/bench_group_cluster.py --small          # 4 and 12 subjects, 8 mm, 60 vols
    python benchmarks/bench_group_cluster.py                  # 20 and 100 subjects, 4 mm, 100 vols
    python benchmarks/bench_group_cluster.py --nilearn 20     # + nilearn's loop at 20 subjects

Results are printed and written to benchmarks/_data/bench_group_cluster[_small].json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_group  # noqa: E402 - benchmarks/ is not a package
import harness  # noqa: E402

DATA = HERE / "_data"
COUNTS_PATH = "/_bench/counts"


# ----------------------------------------------------------------- the S3 server (own process)
def _store_of(path: str, query: str = "") -> str:
    """'/bucket/stores/sub-01.zarr/c/0/0' -> 'sub-01.zarr'; the results store's objects and
    listings ('/bucket/results/...', '/bucket?list-type=2&prefix=results%2F') -> 'results';
    other paths -> 'other'."""
    parts = path.strip("/").split("/")
    for i, part in enumerate(parts[:-1]):
        if part == "stores" and parts[i + 1].endswith(".zarr"):
            return parts[i + 1]
    if parts[1:2] == ["results"] or (len(parts) == 1 and "prefix=results" in query):
        return "results"
    return "other"


def serve_s3(port: int) -> None:
    """moto's S3 app (as ThreadedMotoServer serves it), wrapped to count each request's bytes:
    ``GET /_bench/counts`` returns ``{store: {method: [requests, bytes out, bytes in]}}``."""
    import logging

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app = DomainDispatcherApplication(create_backend_app)
    counts: dict = {}
    lock = threading.Lock()

    def counted(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == COUNTS_PATH:
            with lock:
                body = json.dumps(counts).encode()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        return _counting(environ, start_response, path)

    def _counting(environ, start_response, path):
        method = environ["REQUEST_METHOD"]
        bytes_in = int(environ.get("CONTENT_LENGTH") or 0)
        out = 0
        for piece in app(environ, start_response):
            out += len(piece)
            yield piece
        with lock:
            where = _store_of(path, environ.get("QUERY_STRING", ""))
            entry = counts.setdefault(where, {}).setdefault(method, [0, 0, 0])
            entry[0] += 1
            entry[1] += out
            entry[2] += bytes_in

    server = make_server(
        "127.0.0.1", port, counted, threaded=True, request_handler=MotoRequestHandler
    )
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve_forever()


class S3Server:
    """``serve_s3`` in a subprocess; ``options`` are the tests' fsspec options for it."""

    def __enter__(self):
        from lazyconn.testing.s3 import FAKE_KEY, FAKE_SECRET, _free_port

        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--s3-server", str(self.port)], start_new_session=True
        )
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError("the S3 server did not start")
            time.sleep(0.1)
        self.options = {
            "key": FAKE_KEY,
            "secret": FAKE_SECRET,
            "client_kwargs": {"endpoint_url": self.endpoint, "region_name": "eu-west-1"},
            "use_listings_cache": False,
        }
        return self

    def counts(self) -> dict:
        with urllib.request.urlopen(self.endpoint + COUNTS_PATH, timeout=30) as resp:
            return json.loads(resp.read())

    def cpu_s(self) -> float:
        import psutil

        t = psutil.Process(self.proc.pid).cpu_times()
        return t.user + t.system

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def get_bytes(before: dict, after: dict, stores) -> list[int]:
    """Bytes of GET responses per store between two ``counts()`` snapshots."""
    names = [Path(s).name for s in stores]
    return [
        after.get(n, {}).get("GET", [0, 0, 0])[1] - before.get(n, {}).get("GET", [0, 0, 0])[1]
        for n in names
    ]


# ----------------------------------------------------------------- one measured run
def store_size(path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def rchar(pids) -> dict:
    import psutil

    return {pid: psutil.Process(pid).io_counters().read_chars for pid in pids}


def _warm_up(store, masker_kw, storage_options):
    """In a worker: the masker on one store (the imports and caches a fit needs)."""
    from lazyconn.image import load
    from lazyconn.maskers import NiftiSpheresMasker

    img = load(store, storage_options=storage_options)
    NiftiSpheresMasker(**masker_kw).fit(img).transform(img)


def run_cluster(source, stores, confounds, masker_kw, cache, storage_options, server=None):
    """One fit on a fresh CLI cluster (2 workers); returns (group, figures)."""
    from distributed import Client

    from lazyconn.connectome import ConnectivityMeasure
    from lazyconn.group import GroupConnectome
    from lazyconn.maskers import NiftiSpheresMasker
    from lazyconn.testing.cluster import CliCluster

    def fit(client, runs, confs, cache_dir):
        return GroupConnectome(
            NiftiSpheresMasker(**masker_kw),
            ConnectivityMeasure(kind="partial correlation"),
            cache_dir=cache_dir,
            client=client,
            progress=False,
            storage_options=storage_options,
        ).fit(runs, confounds=confs)

    with tempfile.TemporaryDirectory(prefix="bench-cli-cluster-") as tmp:
        t0 = time.perf_counter()
        with (
            CliCluster(tmp, n_workers=2) as cluster,
            Client(cluster.address, set_as_default=False) as client,
        ):
            startup = time.perf_counter() - t0
            pids = sorted(cluster.worker_pids(client).values())
            # Warm-up (imports, first-call costs): one subject in every worker, then a fit.
            client.run(_warm_up, stores[0], masker_kw, storage_options)
            fit(client, stores[:2], confounds[:2], None)
            import psutil

            baseline = [psutil.Process(p).memory_info().rss for p in pids]
            read0 = rchar(pids)
            counts0 = server.counts() if server else None
            cpu0 = server.cpu_s() if server else None
            with harness.PeakRSS(pids) as rss:
                t0 = time.perf_counter()
                group = fit(client, stores, confounds, cache)
                wall = time.perf_counter() - t0
            read1 = rchar(pids)
            counts1 = server.counts() if server else None
            cpu1 = server.cpu_s() if server else None
            t0 = time.perf_counter()
            again = fit(client, stores, confounds, cache)
            rerun = time.perf_counter() - t0
            counts2 = server.counts() if server else None
            lost = set(pids) - set(cluster.worker_pids(client).values())
    assert again.n_cached_ == len(stores) and group.n_cached_ == 0 and not group.failed_
    assert not lost, "a worker was restarted during the run (its RSS figures are incomplete)"
    sizes = [store_size(s) for s in stores] if source == "local" else None
    out = {
        "source": source,
        "n_subjects": len(stores),
        "startup_s": startup,
        "wall_s": wall,
        "per_subject_s": wall / len(stores),
        "rerun_cached_s": rerun,
        "worker_rss_after_warmup_mb": [round(v / 2**20, 1) for v in baseline],
        "peak_rss_per_worker_mb": [round(rss.peak[p] / 2**20, 1) for p in pids],
        "worker_rchar_mb": [round((read1[p] - read0[p]) / 2**20, 1) for p in pids],
    }
    if server:
        got = get_bytes(counts0, counts1, stores)
        out["s3_get_bytes_per_subject_mean"] = float(np.mean(got))
        out["s3_get_bytes_per_subject_min_max"] = [min(got), max(got)]
        calls = [
            counts1.get(Path(s).name, {}).get("GET", [0])[0]
            - counts0.get(Path(s).name, {}).get("GET", [0])[0]
            for s in stores
        ]
        out["s3_gets_per_subject_mean"] = float(np.mean(calls))
        out["s3_other_requests_after"] = counts1.get("other", {})
        # the results store's requests {method: count} in the run and in the re-run
        for name, (a, b) in {"run": (counts0, counts1), "rerun": (counts1, counts2)}.items():
            before, after = a.get("results", {}), b.get("results", {})
            out[f"s3_results_requests_{name}"] = {
                m: after[m][0] - before.get(m, [0])[0]
                for m in after
                if after[m][0] != before.get(m, [0])[0]
            }
        out["s3_server_cpu_s"] = cpu1 - cpu0
    else:
        out["rchar_bytes_per_subject"] = sum(read1[p] - read0[p] for p in pids) / len(stores)
        out["store_bytes_mean"] = float(np.mean(sizes))
    return group, out


# ----------------------------------------------------------------- a study size
def bench(n_subjects, n_timepoints, resolution, sources, nilearn):
    study, stores, prep = bench_group.make_study(n_subjects, n_timepoints, resolution)
    confounds = bench_group.confounds_of(study)
    masker_kw = bench_group.power_masker(study.t_r)
    sizes = [store_size(s) for s in stores]
    out = {
        "n_subjects": n_subjects,
        "n_timepoints": n_timepoints,
        "resolution_mm": resolution,
        "store_bytes_mean": float(np.mean(sizes)),
        **prep,
        "runs": [],
    }
    groups = {}
    if "local" in sources:
        cache = DATA / f"group-cluster-cache-{n_subjects}"
        shutil.rmtree(cache, ignore_errors=True)
        groups["local"], r = run_cluster("local", stores, confounds, masker_kw, str(cache), None)
        shutil.rmtree(cache, ignore_errors=True)
        r["bytes_read_vs_store"] = r["rchar_bytes_per_subject"] / out["store_bytes_mean"]
        out["runs"].append(r)
        print(f"  local: {r}", flush=True)
    if "s3" in sources:
        import s3fs

        with S3Server() as server:
            fs = s3fs.S3FileSystem(**server.options)
            bucket = f"bench-{uuid.uuid4().hex[:8]}"
            fs.mkdir(bucket)
            t0 = time.perf_counter()
            remote = []
            for s in stores:
                fs.put(s, f"{bucket}/stores/{Path(s).name}", recursive=True)
                remote.append(f"s3://{bucket}/stores/{Path(s).name}")
            upload = time.perf_counter() - t0
            groups["s3"], r = run_cluster(
                "s3",
                remote,
                confounds,
                masker_kw,
                f"s3://{bucket}/results",
                server.options,
                server,
            )
            r["results_objects_in_bucket"] = len(fs.find(f"{bucket}/results"))
        r["upload_s"] = upload
        r["bytes_read_vs_store"] = r["s3_get_bytes_per_subject_mean"] / out["store_bytes_mean"]
        out["runs"].append(r)
        print(f"  s3: {r}", flush=True)
    if len(groups) == 2:
        out["max_abs_diff_local_vs_s3"] = float(
            np.abs(groups["local"].subject_matrices_ - groups["s3"].subject_matrices_).max()
        )
    if n_subjects in nilearn:
        matrices, nilearn_s = bench_group.run_nilearn(study, confounds, masker_kw)
        out["nilearn_loop_s"] = nilearn_s
        some = next(iter(groups.values()))
        out["max_abs_diff_vs_nilearn"] = float(np.abs(some.subject_matrices_ - matrices).max())
        for r in out["runs"]:
            r["speedup_vs_nilearn"] = nilearn_s / r["wall_s"]
        print(f"  nilearn loop: {nilearn_s:.1f} s", flush=True)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    harness.study_size_arguments(parser)
    parser.add_argument("--sources", nargs="+", default=["local", "s3"], choices=["local", "s3"])
    parser.add_argument(
        "--nilearn", type=int, nargs="*", default=[], help="study sizes to run nilearn's loop on"
    )
    parser.add_argument("--s3-server", type=int, help=argparse.SUPPRESS)  # internal
    args = parser.parse_args(argv)
    if args.s3_server:
        serve_s3(args.s3_server)
        return
    sizes, n_t, res = harness.study_sizes(args)
    DATA.mkdir(exist_ok=True)
    results = []
    for n in sizes:
        print(f"{n} subjects, {n_t} volumes, {res:g} mm; {os.getloadavg()}", flush=True)
        results.append(bench(n, n_t, res, args.sources, args.nilearn))
    summary = {}
    for source in args.sources:
        runs = [next(r for r in res_["runs"] if r["source"] == source) for res_ in results]
        peaks = [max(r["peak_rss_per_worker_mb"]) for r in runs]
        summary[source] = {
            "wall_s": {r["n_subjects"]: round(r["wall_s"], 2) for r in runs},
            "peak_worker_rss_mb": dict(zip(sizes, peaks, strict=True)),
            "peak_growth_first_to_last": round(peaks[-1] / peaks[0] - 1, 3),
            "bytes_read_vs_store": [round(r["bytes_read_vs_store"], 3) for r in runs],
        }
    print(json.dumps(summary, indent=2))
    path = DATA / f"bench_group_cluster{'_small' if args.small else ''}.json"
    harness.finish(path, {"results": results, "summary": summary})


if __name__ == "__main__":
    main()
