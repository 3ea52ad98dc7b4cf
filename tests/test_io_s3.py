"""Object stores: a real S3-compatible server (moto) on 127.0.0.1; credentials never leak."""

import pickle

import numpy as np
import pytest

import lazyconn
from lazyconn.exceptions import IncompleteStoreError, InputNotFoundError, OutputExistsError
from lazyconn.testing.s3 import FAKE_KEY, FAKE_SECRET

pytestmark = pytest.mark.s3
UNEVEN = (4, 5, 6, 20)


def _put(bucket, options, local, key):
    import s3fs

    fs = s3fs.S3FileSystem(**options)
    fs.put(local, f"{bucket[5:]}/{key}")
    return f"{bucket}/{key}"


@pytest.mark.parametrize("name", ["run.nii", "run.nii.gz"])
def test_load_and_convert_from_s3_to_s3(make_nifti, s3_bucket, name):
    bucket, options = s3_bucket
    path, ref = make_nifti(name, dtype=np.int16, slope=0.5, inter=1.0)
    url = _put(bucket, options, path, name)
    img = lazyconn.load(url, storage_options=options, chunks=UNEVEN)
    np.testing.assert_array_equal(img.data.compute(), ref)
    store = f"{bucket}/run.zarr"
    lazyconn.convert(url, store, storage_options=options, chunks=UNEVEN, progress=False)
    back = lazyconn.load(store, storage_options=options)
    assert back.chunks == ((4, 3), (5, 3), (6, 3), (20,))
    np.testing.assert_array_equal(back.data.compute(), ref)
    # The graph pickles with what workers need to reach the server.
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(back.data)).compute(), ref)
    back.to_zarr(f"{bucket}/copy.zarr", storage_options=options)
    np.testing.assert_array_equal(
        lazyconn.load(f"{bucket}/copy.zarr", storage_options=options).data.compute(), ref
    )


def test_store_read_from_s3_is_one_get_per_object(make_nifti, s3_bucket, tmp_path, monkeypatch):
    """Reading a store from a bucket: one GET per object read, no HEAD before each chunk
    (s3fs's whole-object read asks for the size first) and no probing for Zarr v2 files;
    opening it looks at its zarr.json once (6 requests; a group re-run's input checks and
    results-store key made 9 per subject)."""
    import collections

    import aiobotocore.client

    bucket, options = s3_bucket
    path, ref = make_nifti("run.nii")
    local = tmp_path / "run.zarr"
    lazyconn.convert(path, local, chunks=UNEVEN, progress=False)
    import s3fs

    s3fs.S3FileSystem(**options).put(str(local), f"{bucket[5:]}/run.zarr", recursive=True)
    url = f"{bucket}/run.zarr"
    calls = collections.Counter()
    real = aiobotocore.client.AioBaseClient._make_api_call

    async def counting(self, operation, params):
        calls[operation, params.get("Key", "").removeprefix("run.zarr/")] += 1
        return await real(self, operation, params)

    monkeypatch.setattr(aiobotocore.client.AioBaseClient, "_make_api_call", counting)
    img = lazyconn.load(url, storage_options=options)
    # Opening: ONE look at zarr.json for load's checks (exists, is a store, opens: they
    # were 3 HEADs of it), then the metadata and header zarr reads (one GET each).
    assert calls == {
        ("HeadObject", "zarr.json"): 1,
        ("GetObject", "zarr.json"): 1,
        ("GetObject", "nifti/zarr.json"): 1,
        ("GetObject", "nifti/c/0"): 1,
        ("GetObject", "0/zarr.json"): 1,
        ("GetObject", "mean/zarr.json"): 1,
    }, calls
    # The results store's key of a group run asks the same once (shared_lookups).
    from lazyconn.group._cache import input_identity
    from lazyconn.io._fs import shared_lookups

    calls.clear()
    with shared_lookups():
        input_identity(url, options)
        lazyconn.load(url, storage_options=options)
    assert calls["HeadObject", "zarr.json"] == 1 and sum(calls.values()) == 6, calls
    calls.clear()
    np.testing.assert_array_equal(img.data.compute(), ref)
    chunks = [k for op, k in calls if op == "GetObject" and k.startswith("0/c/")]
    assert len(chunks) == 8 and all(calls["GetObject", k] == 1 for k in chunks)
    assert not [k for op, k in calls if op == "HeadObject" and "/c/" in k], calls
    assert not [
        k for _, k in calls if k.rsplit("/", 1)[-1] in (".zgroup", ".zattrs", ".zmetadata")
    ]
    assert not [op for op, _ in calls if op == "ListObjectsV2"], calls  # zarr.json: it exists


def test_s3_errors(make_nifti, s3_bucket):
    bucket, options = s3_bucket
    with pytest.raises(InputNotFoundError, match=r"src='s3://.*/missing.nii.gz' does not exist"):
        lazyconn.load(f"{bucket}/missing.nii.gz", storage_options=options)
    path, _ = make_nifti("run.nii")
    store = f"{bucket}/run.zarr"
    lazyconn.load(path).to_zarr(store, storage_options=options)
    with pytest.raises(OutputExistsError, match=r"dst='s3://.*/run.zarr' already exists"):
        lazyconn.convert(path, store, dst_storage_options=options)
    import zarr

    from lazyconn.io.store import _zarr_store

    group = zarr.open_group(_zarr_store(store, options, read_only=False), mode="r+")
    meta = dict(group.attrs["lazyconn"])
    meta["complete"] = False
    group.attrs["lazyconn"] = meta
    with pytest.raises(IncompleteStoreError, match=r"s3://.*/run.zarr' is an incomplete"):
        lazyconn.load(store, storage_options=options)


def test_credentials_never_leak(make_nifti, s3_bucket, capsys):
    """The fake secret is absent from reprs, error messages and every file of the store."""
    import s3fs

    bucket, options = s3_bucket
    path, _ = make_nifti("run.nii.gz")
    url = _put(bucket, options, path, "run.nii.gz")
    # A URL with user:password@ in it is shown without them too.
    creds_url = f"s3://{FAKE_KEY}:{FAKE_SECRET}@{url[5:]}"
    texts = []
    img = lazyconn.load(url, storage_options=options)
    texts += [repr(img), str(img), repr(img.source)]
    store = f"{bucket}/run.zarr"
    lazyconn.convert(url, store, storage_options=options)
    texts.append(repr(lazyconn.load(store, storage_options=options)))
    for bad in (
        lambda: lazyconn.load(f"{bucket}/missing.nii", storage_options=options),
        lambda: lazyconn.convert(url, store, storage_options=options),
        lambda: lazyconn.load(
            creds_url.replace("run.nii.gz", "nope.nii"), storage_options=options
        ),
        lambda: lazyconn.load("nope://" + FAKE_KEY + ":" + FAKE_SECRET + "@host/x.nii"),
        lambda: lazyconn.convert(creds_url, f"{bucket}/other.zarr", storage_options=options),
    ):
        with pytest.raises(Exception) as info:
            bad()
        texts += [str(info.value), repr(info.value)]
        assert isinstance(info.value, lazyconn.exceptions.LazyconnError)
    captured = capsys.readouterr()
    texts += [captured.out, captured.err]
    fs = s3fs.S3FileSystem(**options)
    files = fs.find(store[5:])
    assert any(f.endswith("zarr.json") for f in files)
    for f in files:
        texts.append(fs.cat(f).decode("latin-1"))
    for text in texts:
        assert FAKE_SECRET not in text
        assert FAKE_KEY not in text


def test_convert_to_a_missing_or_denied_bucket_fails_before_any_work(make_nifti, s3_bucket):
    """One clear error naming the URL (no credentials), before any store is created."""
    import s3fs

    from lazyconn.exceptions import AccessDeniedError, OutputNotWritableError

    bucket, options = s3_bucket
    srcs = [make_nifti(f"run-{i}.nii.gz")[0] for i in range(3)]
    missing = "s3://lazyconn-no-such-bucket-7f3a"
    dsts = [f"{missing}/stores/run-{i}.zarr" for i in range(3)]
    with pytest.raises(
        OutputNotWritableError,
        match=r"dst='s3://lazyconn-no-such-bucket-7f3a/stores/run-0\.zarr' cannot be written: "
        r"its bucket 'lazyconn-no-such-bucket-7f3a' does not exist",
    ) as info:
        lazyconn.convert(srcs, dsts, dst_storage_options=options, progress=False)
    assert FAKE_SECRET not in str(info.value) and FAKE_KEY not in str(info.value)

    # A bucket that refuses writes (s3fs raises PermissionError for AccessDenied).
    async def denied(self, *args, **kwargs):
        raise PermissionError("Access Denied")

    dsts = [f"{bucket}/stores/run-{i}.zarr" for i in range(3)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(s3fs.S3FileSystem, "_pipe_file", denied)  # fsspec's sync calls wrap it
        s3fs.S3FileSystem.clear_instance_cache()  # cached instances hold the real method
        with pytest.raises(
            AccessDeniedError,
            match=rf"dst='{bucket}/stores/run-0\.zarr' cannot be accessed: the storage refused "
            r"access \(Access Denied\)",
        ):
            lazyconn.convert(srcs, dsts, dst_storage_options=options, progress=False)
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem(**options)
    assert fs.find(bucket[5:]) == []  # nothing written, not even the probe
