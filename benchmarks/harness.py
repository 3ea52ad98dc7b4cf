"""What every benchmark script shares: children in subprocesses, peak RSS, load, JSON results.

A benchmark measures each step in its own Python process, so imports, caches and memory of one
step never count for another:

- the parent calls :func:`run_child` (``python <script> --child NAME --workdir DIR``) and reads
  the child's one-line JSON report (the last line of its output);
- the child calls :func:`child_report`, which runs the step, times it (work only, imports
  excluded) and reports its peak RSS (:func:`peak_rss`);
- steps that are not Python functions (a shell command, a dask cluster) are measured from
  outside with :class:`PeakRSS` (psutil sampling of a process tree) or :func:`run_measured`.

Results are written with :func:`write_results`, which records the machine (CPUs, load average
at the start and at the end): on a shared machine ratios measured in the same run are what
counts, and the load says how much to trust the absolute times.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

#: Load average when this module was imported (the benchmark's start).
LOADAVG_START = os.getloadavg()


def machine() -> dict:
    """CPU count and load averages (1, 5, 15 min) at the start and now."""
    return {
        "cpu_count": os.cpu_count(),
        "loadavg_start": list(LOADAVG_START),
        "loadavg_end": list(os.getloadavg()),
    }


def load_text() -> str:
    """One line for the printed summary: the load, to read the times with."""
    m = machine()
    return (
        f"load average (1, 5, 15 min) at start {tuple(m['loadavg_start'])}, "
        f"end {tuple(m['loadavg_end'])} on {m['cpu_count']} CPUs"
    )


def peak_rss() -> int:
    """Peak resident memory (bytes) of this process.

    ``VmHWM`` from /proc where there is one (reset by ``exec``); ``ru_maxrss`` otherwise
    (it survives ``exec`` on Linux, so a child started by a big parent would report the
    parent's peak).
    """
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def common_arguments(parser: argparse.ArgumentParser, workdir, children) -> None:
    """The options every benchmark has: its data folder, keeping it, and the hidden
    ``--child`` by which the benchmark runs one measured step in a fresh process."""
    parser.add_argument("--workdir", default=str(workdir))
    parser.add_argument("--keep", action="store_true", help="keep the data files")
    parser.add_argument("--child", choices=sorted(children), help=argparse.SUPPRESS)


def study_size_arguments(parser: argparse.ArgumentParser) -> None:
    """The group benchmarks' study sizes: ``--small`` and ``--subjects``."""
    parser.add_argument("--small", action="store_true", help="4 and 12 subjects at 8 mm")
    parser.add_argument("--subjects", type=int, nargs="+", help="study sizes")


def study_sizes(args) -> tuple[list[int], int, float]:
    """(subject counts, volumes, resolution in mm) from :func:`study_size_arguments`."""
    if args.small:
        return args.subjects or [4, 12], 60, 8.0
    return args.subjects or [20, 100], 100, 4.0


def child_report(step, *args) -> int:
    """In a child: run ``step(*args)``, print ``{"wall_s", "peak_rss_bytes"}`` as JSON.

    ``step`` may return its own wall time (seconds, e.g. excluding its setup), or a pair
    (wall, CPU seconds of the same work: reported as ``cpu_s``); else the time of the call
    is used.
    """
    start = time.perf_counter()
    wall, cpu = step(*args), None
    if isinstance(wall, tuple):
        wall, cpu = wall
    if wall is None:
        wall = time.perf_counter() - start
    report = {"wall_s": float(wall), "peak_rss_bytes": peak_rss()}
    if cpu is not None:
        report["cpu_s"] = float(cpu)
    print(json.dumps(report))
    return 0


def run_child(script, name: str, workdir, *extra: str) -> dict:
    """In the parent: run ``script --child name --workdir workdir``; return its report.

    The report gets ``process_wall_s`` (the whole subprocess, imports included). A failing
    child raises RuntimeError with its output.
    """
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(script), "--child", name, "--workdir", str(workdir), *extra],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{proc.stdout}\n{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = time.perf_counter() - start
    return result


class PeakRSS:
    """Peak resident memory of processes, sampled in a background thread.

    ``with PeakRSS([pid, ...]) as p: ...`` then ``p.peak[pid]`` (bytes). With ``tree=True``
    a process's sample includes all its descendants (a command that forks).
    """

    def __init__(self, pids, interval: float = 0.02, tree: bool = False):
        import psutil

        self._psutil = psutil
        self.procs = {}
        for pid in pids:
            with contextlib.suppress(psutil.NoSuchProcess):  # it may have finished already
                self.procs[pid] = psutil.Process(pid)
        self.peak = dict.fromkeys(pids, 0)
        self.interval = interval
        self.tree = tree
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self, proc) -> int:
        rss = proc.memory_info().rss
        if self.tree:
            for child in proc.children(recursive=True):
                with contextlib.suppress(self._psutil.Error):
                    rss += child.memory_info().rss
        return rss

    def _run(self):
        while not self._stop.is_set():
            for pid, proc in self.procs.items():
                with contextlib.suppress(self._psutil.Error):
                    self.peak[pid] = max(self.peak[pid], self._rss(proc))
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def children_cpu() -> float:
    """CPU seconds (user + system) used so far by the finished children of this process."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd, shell: bool = False) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of a command (e.g. ``gzip -dc``, the reference speed)."""
    cpu = children_cpu()
    start = time.perf_counter()
    subprocess.run(cmd, shell=shell, check=True)
    return time.perf_counter() - start, children_cpu() - cpu


def gunzip_two_cores(files) -> dict:
    """The decompression floor of a study's ``.nii.gz`` runs: ``gzip -dc`` over ``files``
    split on 2 cores (two processes, each over half of them); wall and CPU seconds."""
    halves = [files[0::2], files[1::2]]
    cpu = children_cpu()
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(["gzip", "-dc", *half], stdout=subprocess.DEVNULL) for half in halves
    ]
    for p in procs:
        if p.wait():
            raise RuntimeError(f"gzip -dc failed with status {p.returncode}")
    return {"wall_s": time.perf_counter() - t0, "cpu_s": children_cpu() - cpu}


def run_measured(cmd: list[str]) -> dict:
    """Run a command; return its wall and CPU seconds and peak RSS (tree sampling, ru_maxrss).

    ``peak_rss_bytes`` samples the process and its descendants every 20 ms;
    ``peak_rss_maxrss_bytes`` is the kernel's figure for the largest child process.
    """
    cpu = children_cpu()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    proc = subprocess.Popen(cmd)
    try:
        with PeakRSS([proc.pid], tree=True) as sampler:
            proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    wall = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"{cmd[:3]}... failed with status {proc.returncode}")
    maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "wall_s": wall,
        "cpu_s": children_cpu() - cpu,
        "peak_rss_bytes": sampler.peak[proc.pid],
        "peak_rss_maxrss_bytes": max(maxrss, before) * 1024,
    }


def write_results(path, results: dict) -> Path:
    """Write ``results`` (plus :func:`machine`) as JSON to ``path``; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**results, "machine": machine()}, indent=2, default=float))
    return path


def fresh_dir(path) -> Path:
    """``path`` as a new empty directory (what a previous run left there is removed)."""
    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def finish(path, results: dict, workdir=None, keep: bool = False) -> Path:
    """Write the results (:func:`write_results`), print the load and the path, and remove
    ``workdir`` unless ``keep``."""
    path = write_results(path, results)
    print(load_text())
    print(f"results: {path}")
    if workdir is not None and not keep:
        shutil.rmtree(workdir)
    return path
