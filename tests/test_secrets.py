"""Secrets never leave the process: masked options, credential URLs, refused credentials."""

import pytest
from sklearn.base import clone

import lazyconn
from lazyconn.cli import main
from lazyconn.exceptions import AccessDeniedError, ParameterError
from lazyconn.group.pipeline import GroupConnectome
from lazyconn.io import StorageOptions
from lazyconn.io._fs import redact
from lazyconn.maskers import NiftiSpheresMasker

SECRET = "abc/def+ghi-SECRET"
KEY = "AKIAEXAMPLEKEY"
TOKEN = "session-TOKEN-value"


def _options():
    return {
        "key": KEY,
        "secret": SECRET,
        "client_kwargs": {
            "endpoint_url": "http://minio-user:minio-pw@127.0.0.1:9000",
            "aws_session_token": TOKEN,
            "region_name": "eu-west-1",
        },
    }


def _assert_clean(text):
    for secret in (SECRET, KEY, TOKEN, "minio-pw", "minio-user"):
        assert secret not in text, text


def test_estimator_repr_str_get_params_mask_secrets():
    est = GroupConnectome(NiftiSpheresMasker([(0, 0, 0)]), storage_options=_options())
    for text in (repr(est), str(est), repr(est.get_params()), str(est.get_params(deep=False))):
        _assert_clean(text)
        assert "'***'" in text and "region_name" in text  # masked, not dropped
    # The values themselves are intact (fsspec needs them); clone keeps them and the mask.
    assert est.storage_options["secret"] == SECRET
    assert est.storage_options == _options()
    copy = clone(est)
    assert isinstance(copy.storage_options, StorageOptions)
    assert copy.storage_options == _options()
    _assert_clean(repr(copy))
    assert GroupConnectome(NiftiSpheresMasker([(0, 0, 0)])).storage_options is None


def test_storage_options_wrapper_type():
    opts = StorageOptions(_options())
    _assert_clean(repr(opts) + str(opts) + f"{opts}")
    import pickle

    assert pickle.loads(pickle.dumps(opts)) == _options()
    with pytest.raises(TypeError, match=r"storage_options has type list; expected None or a dict"):
        StorageOptions.wrap(["key", SECRET])


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"s3://{KEY}:{SECRET}@bucket/x.zarr", "s3://bucket/x.zarr"),
        (f"s3://{KEY}:plain@bucket/x.zarr", "s3://bucket/x.zarr"),
        ("s3://bucket/user@example.org/x.nii", "s3://bucket/user@example.org/x.nii"),
        ("http://host:8080/a@b.nii", "http://host:8080/a@b.nii"),
        (f"http://{KEY}:{SECRET}@host:8080/a.nii", "http://host:8080/a.nii"),
        ("file:///tmp/a@b.nii", "file:///tmp/a@b.nii"),
    ],
)
def test_redact_parses_the_authority(url, shown):
    assert redact(url) == shown


def test_credentials_in_url_with_slash_refused_without_echo():
    url = f"s3://{KEY}:{SECRET}@b/x.zarr"
    with pytest.raises(ParameterError, match=r"src='s3://b/x.zarr' has credentials") as info:
        lazyconn.load(url)
    _assert_clean(str(info.value))


@pytest.fixture
def auth_required(s3_bucket, s3_server):
    """moto checks credentials (its fake ones no longer pass) for the test's duration."""
    import requests

    requests.post(f"{s3_server}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()
    try:
        yield s3_bucket
    finally:
        requests.post(f"{s3_server}/moto-api/reset-auth", data=b"inf", timeout=10)


@pytest.mark.s3
def test_refused_credentials_name_the_url(make_nifti, s3_bucket, auth_required, capsys):
    bucket, options = s3_bucket
    url = f"{bucket}/run.nii.gz"
    for action, name in (
        (lambda: lazyconn.load(url, storage_options=options), "src"),
        (lambda: lazyconn.load(f"{bucket}/run.zarr", storage_options=options), "src"),
        (
            lambda: lazyconn.convert(
                make_nifti("r.nii")[0], f"{bucket}/o.zarr", dst_storage_options=options
            ),
            "dst",
        ),
    ):
        with pytest.raises(
            AccessDeniedError,
            match=rf"{name}='s3://.*' cannot be accessed: the storage refused access",
        ) as info:
            action()
        assert isinstance(info.value, PermissionError)
    # The CLI: one line naming the URL, no traceback, exit status 1.
    args = ["info", url, "--storage-option", f"key={options['key']}"]
    args += ["--storage-option", f"secret={options['secret']}"]
    args += [
        "--storage-option",
        f"client_kwargs.endpoint_url={options['client_kwargs']['endpoint_url']}",
    ]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"lazyconn info: error: src='{url}' cannot be accessed" in err
    assert "Traceback" not in err
    assert options["secret"] not in err and options["key"] not in err
