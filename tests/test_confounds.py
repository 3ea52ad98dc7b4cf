"""lazyconn.io.confounds: files, URLs, DataFrames, fMRIPrep n/a handling."""

import warnings

import fsspec
import numpy as np
import pandas as pd
import pytest
from nilearn import signal as nsignal
from nilearn.interfaces.fmriprep.load_confounds_utils import prepare_output

from lazyconn import signal as lsignal
from lazyconn.exceptions import (
    DimensionError,
    InputFileError,
    InputNotFoundError,
    ParameterError,
    ParameterTypeError,
)
from lazyconn.io.confounds import read_confounds_file, sanitize_confounds

T = 50


@pytest.fixture
def fmriprep_table(rng):
    """An fMRIPrep-like table: derivative columns and framewise_displacement start with n/a."""
    trans = np.cumsum(rng.normal(size=(T, 2)) * 0.05, axis=0)
    df = pd.DataFrame(
        {
            "global_signal": 100 + rng.normal(size=T),
            "trans_x": trans[:, 0],
            "trans_y": trans[:, 1],
            "trans_x_derivative1": np.r_[np.nan, np.diff(trans[:, 0])],
            "trans_y_derivative1": np.r_[np.nan, np.diff(trans[:, 1])],
            "framewise_displacement": np.r_[np.nan, np.abs(np.diff(trans, axis=0)).sum(1)],
        }
    )
    return df


def _write_tsv(df, path):
    df.to_csv(path, sep="\t", index=False, na_rep="n/a")
    return path


def test_fmriprep_first_row_filled_like_load_confounds(fmriprep_table, tmp_path, rng):
    path = _write_tsv(fmriprep_table, tmp_path / "desc-confounds_timeseries.tsv")
    # reference: nilearn.interfaces.fmriprep's own fill (row 0 <- row 1), no demeaning
    _, expected = prepare_output(pd.read_csv(path, sep="\t", na_values="n/a"), demean=False)
    expected = expected[fmriprep_table.columns]  # prepare_output reorders columns
    for src in (path, str(path), fmriprep_table, [fmriprep_table.iloc[:, :3], path]):
        values = sanitize_confounds(src, T)
        ref = expected.to_numpy()
        if isinstance(src, list):
            ref = np.hstack([fmriprep_table.iloc[:, :3].to_numpy(), ref])
        np.testing.assert_array_equal(values, ref)

    x = rng.normal(size=(T, 9)) + 5
    ours = lsignal.clean(x, confounds=path, low_pass=0.1, t_r=2.0)
    ref = nsignal.clean(x, confounds=expected.to_numpy(), low_pass=0.1, t_r=2.0)
    np.testing.assert_allclose(ours, ref, atol=1e-10)
    # the deviation: nilearn's clean fails on the raw fMRIPrep file
    with pytest.raises(ValueError, match="infs or NaNs"):
        nsignal.clean(x, confounds=str(path), low_pass=0.1, t_r=2.0)


def test_other_nan_is_an_error_naming_column_and_row(fmriprep_table, tmp_path):
    df = fmriprep_table.copy()
    df.loc[7, "trans_y"] = np.nan
    path = _write_tsv(df, tmp_path / "conf.tsv")
    msg = r"confounds column 'trans_y' has a non-finite value \(nan\) at row 7"
    with pytest.raises(ParameterError, match=msg):
        sanitize_confounds(path, T)
    with pytest.raises(ParameterError, match=msg):
        lsignal.clean(np.zeros((T, 3)), confounds=df)
    with pytest.raises(
        ParameterError,
        match=r"confounds\[1\] column 'column 0' has a non-finite "
        r"value \(inf\) at row 3",
    ):
        arr = np.ones((T, 1))
        arr[3] = np.inf
        sanitize_confounds([np.ones(T), arr], T)
    with pytest.raises(ParameterError, match="column 'a' has a non-finite value"):
        sanitize_confounds(pd.DataFrame({"a": np.full(T, np.nan)}), T)


@pytest.mark.parametrize("sep", ["\t", ",", ";", " "])
@pytest.mark.parametrize("header", [True, False])
def test_delimiters_and_headers_match_nilearn(tmp_path, rng, sep, header):
    values = rng.normal(size=(T, 3))
    path = tmp_path / "conf.txt"
    pd.DataFrame(values, columns=["a", "b", "c"]).to_csv(path, sep=sep, index=False, header=header)
    got, names = read_confounds_file(path)
    np.testing.assert_allclose(got, values, rtol=1e-15)
    assert names == (["a", "b", "c"] if header else ["column 0", "column 1", "column 2"])
    x = rng.normal(size=(T, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = nsignal.clean(x, confounds=str(path))
    np.testing.assert_allclose(lsignal.clean(x, confounds=path), ref, atol=1e-10)


def test_headerless_file_with_na_first_value(tmp_path, rng):
    """nilearn takes a NaN first value for a header and drops a data row; lazyconn does not."""
    values = rng.normal(size=(T, 2))
    values[0, 0] = np.nan
    path = tmp_path / "conf.tsv"
    pd.DataFrame(values).to_csv(path, sep="\t", index=False, header=False, na_rep="n/a")
    got = sanitize_confounds(path, T)
    expected = values.copy()
    expected[0, 0] = values[1, 0]
    np.testing.assert_array_equal(got, expected)
    with pytest.raises(ValueError, match="incorrect length"):
        nsignal.clean(rng.normal(size=(T, 2)), confounds=str(path))


def test_urls_and_storage_options(tmp_path, rng):
    values = rng.normal(size=(T, 2))
    text = pd.DataFrame(values, columns=["p", "q"]).to_csv(sep="\t", index=False)
    with fsspec.open("memory://lazyconn-test/conf.tsv", "wt") as f:
        f.write(text)
    try:
        got, names = read_confounds_file("memory://lazyconn-test/conf.tsv")
        np.testing.assert_allclose(got, values, rtol=1e-15)
        assert names == ["p", "q"]
        local = tmp_path / "conf.tsv"
        local.write_text(text)
        np.testing.assert_allclose(sanitize_confounds(local.as_uri(), T), values, rtol=1e-15)
        # storage_options reach fsspec: the chained cache writes where they say
        cache = tmp_path / "cache"
        x = rng.normal(size=(T, 3))
        ours = lsignal.clean(
            x,
            confounds="simplecache::memory://lazyconn-test/conf.tsv",
            storage_options={"simplecache": {"cache_storage": str(cache)}},
        )
        assert any(cache.iterdir())
        np.testing.assert_allclose(ours, nsignal.clean(x, confounds=values), atol=1e-10)
    finally:
        fsspec.filesystem("memory").rm("lazyconn-test", recursive=True)


def test_bad_confound_inputs(tmp_path):
    with pytest.raises(InputNotFoundError, match=r"confounds file .*missing\.tsv' does not exist"):
        sanitize_confounds(tmp_path / "missing.tsv", T)
    binary = tmp_path / "conf.npy"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(InputFileError, match=r"conf\.npy"):
        sanitize_confounds(binary, T)
    with pytest.raises(InputFileError, match="is empty"):
        (tmp_path / "empty.tsv").write_text("")
        sanitize_confounds(tmp_path / "empty.tsv", T)
    with pytest.raises(ParameterTypeError, match=r"non-numeric column\(s\) \['name'\]"):
        sanitize_confounds(pd.DataFrame({"a": np.ones(T), "name": ["x"] * T}), T)
    with pytest.raises(DimensionError, match=r"shape \(50, 2, 2\); expected 1-D"):
        sanitize_confounds(np.zeros((T, 2, 2)), T)
    with pytest.raises(ParameterTypeError, match="confounds=3 has type int"):
        sanitize_confounds(3, T)
    with pytest.raises(ParameterTypeError, match=r"confounds\[0\] is a nested list"):
        sanitize_confounds([[np.ones(T)]], T)
    with pytest.raises(ParameterError, match=r"confounds=\[\] is empty"):
        sanitize_confounds([], T)
    with pytest.raises(ParameterError, match="confounds has 49 rows but the signals have 50"):
        sanitize_confounds(np.ones(T - 1), T)
    assert sanitize_confounds(None, T) is None


@pytest.mark.s3
def test_s3_url_with_storage_options(s3_bucket, fmriprep_table, rng):
    bucket, options = s3_bucket
    url = f"{bucket}/sub-01_desc-confounds_timeseries.tsv"
    with fsspec.open(url, "wt", **options) as f:
        fmriprep_table.to_csv(f, sep="\t", index=False, na_rep="n/a")
    _, expected = prepare_output(fmriprep_table.copy(), demean=False)
    expected = expected[fmriprep_table.columns].to_numpy()
    np.testing.assert_allclose(
        sanitize_confounds(url, T, storage_options=options), expected, rtol=1e-15
    )
    x = rng.normal(size=(T, 5))
    ours = lsignal.clean(x, confounds=url, storage_options=options, high_pass=0.01, t_r=2.0)
    np.testing.assert_allclose(
        ours, nsignal.clean(x, confounds=expected, high_pass=0.01, t_r=2.0), atol=1e-10
    )
    with pytest.raises(InputNotFoundError, match=r"missing\.tsv' does not exist"):
        sanitize_confounds(f"{bucket}/missing.tsv", T, storage_options=options)
