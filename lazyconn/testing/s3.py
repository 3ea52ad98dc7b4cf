"""pytest fixtures: a real S3-compatible server (moto) on 127.0.0.1, no docker.

Register with ``pytest_plugins = ["lazyconn.testing.s3"]``. ``s3_server`` (session)
starts moto's threaded server on a free port; ``s3_bucket`` (function) makes a fresh
bucket and yields ``(bucket_url, storage_options)``. The credentials are fake and
recognisable (:data:`FAKE_SECRET`) so tests can assert they never leak.
"""

from __future__ import annotations

import contextlib
import socket
import uuid

import pytest

FAKE_KEY = "LAZYCONNFAKEKEYID0001"
FAKE_SECRET = "lazyconn-FAKE-secret-9f8e7d6c5b4a"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """Endpoint URL of a moto S3 server running for the whole session."""
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no request log noise
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_storage_options(s3_server) -> dict:
    """fsspec/s3fs options for the local server (fake credentials, no listing cache)."""
    return {
        "key": FAKE_KEY,
        "secret": FAKE_SECRET,
        "client_kwargs": {"endpoint_url": s3_server, "region_name": "eu-west-1"},
        "use_listings_cache": False,
    }


@pytest.fixture
def s3_bucket(s3_storage_options):
    """(``s3://<fresh bucket>``, storage_options) for one test."""
    import s3fs

    fs = s3fs.S3FileSystem(**s3_storage_options)
    bucket = f"lazyconn-test-{uuid.uuid4().hex[:12]}"
    fs.mkdir(bucket)
    yield f"s3://{bucket}", s3_storage_options
    with contextlib.suppress(OSError):  # FileNotFoundError is an OSError
        fs.rm(bucket, recursive=True)
