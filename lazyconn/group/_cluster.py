"""Choosing where a group run executes: dask's local scheduler, a LocalCluster, or a scheduler.

``dask.distributed`` is imported inside these functions only, so ``import lazyconn`` never
loads it.
"""

from __future__ import annotations

import ast
import contextlib
import logging
import os
import socket
import sys
from urllib.parse import urlsplit

import dask

from lazyconn.exceptions import ClusterConnectionError, ParameterTypeError, UnguardedMainError

#: Seconds to wait for a scheduler to answer before failing.
CONNECT_TIMEOUT = 5.0

#: Environment of the worker processes of ``client="local"``, set before they start.
#: distributed sets ``MALLOC_TRIM_THRESHOLD_`` there, which also fixes glibc's mmap threshold
#: at 128 KiB: every array larger than that (each decompressed chunk, each float64 slab) is
#: then a fresh mmap whose pages fault in again, which made a subject's extraction 2-3x
#: slower in a worker than in the client process. Arrays up to 32 MiB (glibc's maximum) come
#: from the heap again; the trim threshold is kept, so freed memory still goes back.
WORKER_MALLOC = {"distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_": 32 * 2**20}


def _probe(address: str, timeout: float) -> None:
    """Fail in milliseconds when nothing listens at a tcp address (distributed would retry)."""
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.scheme != "tcp" or parts.hostname is None or parts.port is None:
        return  # tls://, inproc://, ucx:// ... are left to distributed's own timeout
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=timeout):
            pass
    except OSError as exc:
        raise ClusterConnectionError(
            f"client={address!r}: no dask scheduler answers at {address!r} ({exc}). "
            "Start one (`dask scheduler`), check the address, or use client='local'."
        ) from exc


def _connect(address: str, timeout: float):
    from distributed import Client

    _probe(address, timeout)
    try:
        return Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ClusterConnectionError(
            f"client={address!r}: no dask scheduler answered at {address!r} within "
            f"{timeout:g} s ({exc}). Check the address, or use client='local'."
        ) from exc


_GUARD_ADVICE = (
    "Put the script's work under `if __name__ == \"__main__\":` (a LocalCluster's workers "
    "are new processes that import the script again), or use client=None (dask's threads)."
)


def _is_main_guard(node) -> bool:
    """``if __name__ == "__main__":`` (either side of the ``==``)."""
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    sides = [node.test.left, *node.test.comparators]
    names = [s.id for s in sides if isinstance(s, ast.Name)]
    values = [s.value for s in sides if isinstance(s, ast.Constant)]
    return names == ["__name__"] and values == ["__main__"]


def _script_line():
    """(script path, line of its top level running now), or None when not in a script that
    spawned processes would re-import (REPL, notebook, ``python -c``, a package's
    ``__main__``, exactly the cases multiprocessing's spawn leaves alone)."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    spec = getattr(main, "__spec__", None)
    if not path or not os.path.isfile(path):
        return None
    if spec is not None and (spec.name == "__main__" or spec.name.endswith(".__main__")):
        return None
    if spec is None and os.path.splitext(os.path.basename(path))[0] == "ipython":
        return None
    frame = sys._getframe()
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals.get("__name__") == "__main__":
            return path, frame.f_lineno
        frame = frame.f_back
    return None


def check_main_guard() -> None:
    """Fail in milliseconds, with one short message, where a LocalCluster cannot work.

    Worker processes are started with multiprocessing's spawn: each imports the main script
    again. Code at the script's top level that starts a cluster then runs again in every
    worker (three copies of a ``freeze_support()`` error, or workers waiting for ever on
    clusters of their own). Detected in the parent, from the script's syntax, before any
    process starts; and in a spawned child, should it get there.
    """
    import multiprocessing

    main = sys.modules.get("__main__")
    if multiprocessing.parent_process() is not None and getattr(main, "__name__", None) == (
        "__mp_main__"
    ):
        raise UnguardedMainError(
            f"client='local' was asked for while a worker process imports the script "
            f"{getattr(main, '__file__', '?')!r}: its top level starts a cluster. " + _GUARD_ADVICE
        )
    found = _script_line()
    if found is None:
        return
    path, line = found
    try:
        with open(path, encoding="utf-8") as handle:
            tree = ast.parse(handle.read())
    except (OSError, SyntaxError, ValueError):
        return  # not a readable Python source: nothing to say
    for node in tree.body:
        if node.lineno <= line <= (node.end_lineno or node.lineno):
            if _is_main_guard(node):
                return
            raise UnguardedMainError(
                f"client='local' is started from line {line} of {path!r}, which is not under "
                '`if __name__ == "__main__":`. ' + _GUARD_ADVICE
            )


def default_n_workers() -> int:
    """Workers of client='local': the usable cores (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def default_distributed_client():
    """The distributed Client that ``dask.compute`` would run on now, or None (a local
    scheduler). A user's ``Client()`` becomes dask's default: the group engine must then
    drive it through its futures, because dask's local callbacks, which report each subject
    of a local run, never fire on a distributed scheduler."""
    import sys

    if "distributed" not in sys.modules:  # no Client exists without it
        return None
    from dask.base import get_scheduler
    from distributed import Client

    owner = getattr(get_scheduler(), "__self__", None)
    return owner if isinstance(owner, Client) else None


@contextlib.contextmanager
def client_context(client, *, n_workers=None, timeout: float = CONNECT_TIMEOUT):
    """Yield a ``distributed.Client`` (or None for dask's local scheduler); close what we opened.

    Parameters
    ----------
    client : None, "local", str address, or distributed.Client
        None: dask's current scheduler (threads by default; a distributed Client that is
        dask's default is yielded and used as is, left open). "local": a LocalCluster of
        ``n_workers`` single-threaded worker processes, started and closed here. An address
        such as ``"tcp://10.0.0.5:8786"``: connect (fail within ``timeout`` s if nothing
        answers). A Client: used as is and left open.
    """
    if client is None:
        yield default_distributed_client()
        return
    if isinstance(client, str):
        if client == "local":
            from distributed import Client, LocalCluster

            check_main_guard()

            n = n_workers or default_n_workers()
            try:
                with dask.config.set(WORKER_MALLOC):
                    cluster = LocalCluster(
                        n_workers=n,
                        threads_per_worker=1,
                        processes=True,
                        dashboard_address=":0",
                        silence_logs=logging.ERROR,
                    )
            except (TimeoutError, OSError) as exc:  # e.g. workers too slow to start
                raise ClusterConnectionError(
                    f"client='local': the LocalCluster of {n} worker processes did not start "
                    f"({type(exc).__name__}: {exc}). On a busy machine try again or lower "
                    "n_workers, or use client=None (dask's threads, no processes)."
                ) from exc
            with cluster, Client(cluster, set_as_default=False) as c:
                yield c
            return
        c = _connect(client, timeout)
        try:
            yield c
        finally:
            c.close()
        return
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover - distributed is a dependency
        Client = ()
    if isinstance(client, Client):
        yield client
        return
    raise ParameterTypeError(
        f"client={client!r} has type {type(client).__name__}; expected None (dask's local "
        "scheduler), 'local' (start a LocalCluster), a scheduler address such as "
        "'tcp://host:8786', or a distributed.Client."
    )
