"""Choosing where a group run executes: dask's local scheduler, a LocalCluster, or a scheduler.

``dask.distributed`` is imported inside these functions only, so ``import lazyconn`` never
loads it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from urllib.parse import urlsplit

from lazyconn.exceptions import ClusterConnectionError, ParameterTypeError

#: Seconds to wait for a scheduler to answer before failing.
CONNECT_TIMEOUT = 5.0


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


def default_n_workers() -> int:
    """Workers of client='local': the usable cores (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def client_context(client, *, n_workers=None, timeout: float = CONNECT_TIMEOUT):
    """Yield a ``distributed.Client`` (or None for dask's local scheduler); close what we opened.

    Parameters
    ----------
    client : None, "local", str address, or distributed.Client
        None: dask's current scheduler (threads by default). "local": a LocalCluster of
        ``n_workers`` single-threaded worker processes, started and closed here. An address
        such as ``"tcp://10.0.0.5:8786"``: connect (fail within ``timeout`` s if nothing
        answers). A Client: used as is and left open.
    """
    if client is None:
        yield None
        return
    if isinstance(client, str):
        if client == "local":
            from distributed import Client, LocalCluster

            n = n_workers or default_n_workers()
            with (
                LocalCluster(
                    n_workers=n,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=":0",
                    silence_logs=logging.ERROR,
                ) as cluster,
                Client(cluster, set_as_default=False) as c,
            ):
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
