"""A real dask cluster for tests: ``dask scheduler`` and ``dask worker`` processes.

Started with dask's own command line on 127.0.0.1, as a user starts a cluster (random free
ports, a scheduler file, one single-threaded worker process per ``dask worker``, each under
its nanny), and always torn down: every process started here is terminated by its own
process group, and killed if it does not exit within seconds.

Register with ``pytest_plugins = ["lazyconn.testing.cluster"]``; the ``cli_cluster``
fixture (module scope) yields a running :class:`CliCluster`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

#: Seconds to wait for the scheduler file and for the workers to register.
START_TIMEOUT = 120.0
#: Seconds a terminated process may take to exit before it is killed.
STOP_TIMEOUT = 10.0


def dask_command() -> list[str]:
    """dask's command line: the ``dask`` script beside this Python, else ``python -m dask``."""
    script = Path(sys.executable).with_name("dask")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "dask"]


class CliCluster:
    """A scheduler and ``n_workers`` workers as separate processes started from the CLI.

    Parameters
    ----------
    directory : path
        Where the scheduler file, the logs and the workers' local directories go.
    n_workers : int, default=2
        ``dask worker`` processes (each ``--nthreads 1`` under a nanny).
    """

    def __init__(self, directory, n_workers: int = 2):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.n_workers = n_workers
        self.scheduler_file = self.directory / "scheduler.json"
        self.scheduler = None
        self.workers: list[subprocess.Popen] = []
        self.address = None
        self.dashboard_port = None

    def _spawn(self, args: list[str], log: str) -> subprocess.Popen:
        with open(self.directory / log, "ab") as out:
            # A session of its own: the nanny and its worker are stopped together.
            return subprocess.Popen(
                [*dask_command(), *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def start_scheduler(self) -> str:
        """Start ``dask scheduler`` on random ports; return its address once it is listening."""
        self.scheduler_file.unlink(missing_ok=True)
        self.scheduler = self._spawn(
            [
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--dashboard-address",
                "127.0.0.1:0",
                "--scheduler-file",
                str(self.scheduler_file),
            ],
            "scheduler.log",
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                info = json.loads(self.scheduler_file.read_text())
                break
            except (FileNotFoundError, json.JSONDecodeError):
                pass
            if self.scheduler.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dask scheduler did not start:\n{self.logs()}")
            time.sleep(0.1)
        self.address = info["address"]
        self.dashboard_port = info.get("services", {}).get("dashboard")
        return self.address

    def start_workers(self) -> None:
        """Start the ``dask worker`` processes and wait until they are registered."""
        from distributed import Client

        for i in range(self.n_workers):
            self.workers.append(
                self._spawn(
                    [
                        "worker",
                        self.address,
                        "--nthreads",
                        "1",
                        "--host",
                        "127.0.0.1",
                        "--no-dashboard",
                        "--name",
                        f"worker-{i}",
                        "--local-directory",
                        str(self.directory / f"worker-{i}"),
                        # Without a scheduler, give up instead of waiting forever.
                        "--death-timeout",
                        "15",
                    ],
                    f"worker-{i}.log",
                )
            )
        with Client(self.address, timeout=START_TIMEOUT, set_as_default=False) as client:
            try:
                client.wait_for_workers(self.n_workers, timeout=START_TIMEOUT)
            except TimeoutError:
                raise RuntimeError(f"dask workers did not register:\n{self.logs()}") from None

    def start(self) -> CliCluster:
        try:
            self.start_scheduler()
            self.start_workers()
        except BaseException:
            self.stop()
            raise
        return self

    def worker_pids(self, client) -> dict:
        """Worker address -> pid of the worker process (not its nanny)."""
        return client.run(os.getpid)

    def kill_scheduler(self) -> None:
        """SIGKILL the scheduler process (a crash, not a shutdown)."""
        os.killpg(self.scheduler.pid, signal.SIGKILL)

    def stop(self) -> None:
        """Terminate every process started here; kill what does not exit within seconds."""
        procs = [p for p in [*self.workers, self.scheduler] if p is not None]
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
            # The group too: a nanny's worker may outlive a nanny that was killed.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(STOP_TIMEOUT)
        self.workers, self.scheduler = [], None

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.directory.glob("*.log"))
        )

    def __enter__(self) -> CliCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@pytest.fixture(scope="module")
def cli_cluster(tmp_path_factory):
    """A running :class:`CliCluster` (scheduler + 2 workers) shared by one test module."""
    pytest.importorskip("distributed")
    with CliCluster(tmp_path_factory.mktemp("dask-cli-cluster")) as cluster:
        yield cluster
