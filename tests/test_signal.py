"""lazyconn.signal.clean / high_variance_confounds against nilearn 0.14.1 and scipy."""

import itertools
import warnings

import dask.array as da
import numpy as np
import pandas as pd
import pytest
from nilearn import signal as nsignal
from scipy import signal as sp_signal
from scipy.interpolate import CubicSpline

from lazyconn import signal as lsignal
from lazyconn.exceptions import (
    AllVolumesRemovedError,
    DimensionError,
    ParameterError,
    ParameterTypeError,
)
from lazyconn.testing.laziness import inaccessible_dask_array, raise_if_dask_computes
from lazyconn.testing.reference import quiet

T, V = 80, 23
UNEVEN = (5, 11, 7)  # three uneven voxel chunks


@pytest.fixture
def data(rng):
    trend = np.linspace(0, 3, T)[:, None] * rng.uniform(0.5, 2, V)
    slow = np.sin(np.arange(T) / 7.0)[:, None] * rng.uniform(0, 2, V)
    x = 100 + rng.uniform(-20, 20, V) + trend + slow + rng.normal(size=(T, V))
    conf = np.column_stack(
        [np.sin(np.arange(T) / 5.0), np.linspace(-1, 1, T) ** 2, rng.normal(size=T)]
    )
    return x, conf


def _nilearn(x, **kw):
    return quiet(nsignal.clean, np.array(x, copy=True), **kw)


def _ours(x, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        return lsignal.clean(x, **kw)


def assert_close(ours, ref, rtol):
    """Errors per column relative to the reference column's spread (std), so rescaled outputs
    (psc ~ 1-10 %, raw residuals) and z-scores share one tolerance."""
    assert ours.shape == ref.shape
    scale = np.maximum(ref.std(axis=0), 1e-12)
    err = np.abs(np.asarray(ours, dtype=np.float64) - ref) / scale
    assert np.nanmax(err) <= rtol, np.nanmax(err)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))


def check_all_paths(x, rtol64=1e-9, **kw):
    """numpy float64, dask float64 (uneven voxel chunks, split time), dask float32 vs nilearn float64."""
    ref = _nilearn(x, **kw)
    before = x.copy()
    ours = _ours(x, **kw)
    np.testing.assert_array_equal(x, before)  # the input is never modified
    assert isinstance(ours, np.ndarray) and ours.dtype == np.float64
    assert_close(ours, ref, rtol64)
    lazy = _ours(da.from_array(x, chunks=((30, T - 30), UNEVEN)), **kw)
    assert isinstance(lazy, da.Array)
    assert lazy.chunks == ((ref.shape[0],), UNEVEN)
    assert_close(lazy.compute(), ref, rtol64)
    # float32: compared with nilearn float64 on the same (float32-rounded) input values, so
    # the input's own rounding (~6e-8 x 100 for these signals, amplified after band-passing)
    # does not count. Ours computes in float64 inside a chunk and rounds once at the end;
    # the error is then ~6e-8 of the largest |value| (psc/unstandardized outputs keep a mean
    # up to ~100x their spread), hence the spread-relative tolerance.
    x32 = x.astype(np.float32)
    ref32 = _nilearn(x32.astype(np.float64), **kw)
    lazy32 = _ours(da.from_array(x32, chunks=(T, UNEVEN)), **kw).compute()
    assert lazy32.dtype == np.float32
    spread = np.abs(ref32).max() / max(ref32.std(axis=0).min(), 1e-12)
    assert_close(lazy32, ref32, max(1e-5, 2e-7 * spread))
    return ref


FILTERS = {
    "none": dict(filter=False),
    "low": dict(low_pass=0.1, t_r=2.0),
    "high": dict(high_pass=0.02, t_r=2.0),
    "band": dict(low_pass=0.12, high_pass=0.02, t_r=1.5),
    "cosine": dict(filter="cosine", high_pass=0.02, t_r=2.0),
}


@pytest.mark.parametrize("use_confounds", [False, True])
@pytest.mark.parametrize("filt", list(FILTERS))
@pytest.mark.parametrize("standardize", ["zscore_sample", "psc", None])
@pytest.mark.parametrize("detrend", [True, False])
def test_clean_parity_grid(data, detrend, standardize, filt, use_confounds):
    x, conf = data
    kw = dict(detrend=detrend, standardize=standardize, **FILTERS[filt])
    if use_confounds:
        kw["confounds"] = conf
    check_all_paths(x, **kw)


@pytest.mark.parametrize("standardize", [True, False])
def test_boolean_standardize_future_warning(data, standardize):
    x, _ = data
    with pytest.warns(FutureWarning, match="boolean values for 'standardize'"):
        ours = lsignal.clean(x, standardize=standardize)
    assert_close(ours, _nilearn(x, standardize=standardize), 1e-10)


def test_standardize_confounds_off_and_psc_without_detrend(data):
    x, conf = data
    check_all_paths(x, confounds=conf, standardize_confounds=False, low_pass=0.1, t_r=2.0)
    check_all_paths(
        x,
        confounds=conf,
        standardize_confounds=False,
        detrend=False,
        standardize="psc",
        high_pass=0.02,
        t_r=2.0,
    )


def test_confound_input_kinds(data, tmp_path):
    x, conf = data
    names = ["a", "b", "c"]
    df = pd.DataFrame(conf, columns=names)
    tsv = tmp_path / "conf.tsv"
    df.to_csv(tsv, sep="\t", index=False)
    csv = tmp_path / "conf.csv"
    df.to_csv(csv, index=False)
    ref = _nilearn(x, confounds=conf, low_pass=0.1, t_r=2.0)
    for confounds in (
        df,
        str(tsv),
        tsv,
        csv,
        [conf[:, :1], df[["b"]], conf[:, 2]],
        [conf[:, 0], str(csv)],
    ):
        kw = dict(confounds=confounds, low_pass=0.1, t_r=2.0)
        expected = (
            ref
            if not isinstance(confounds, list) or len(confounds) == 3
            else _nilearn(x, confounds=[conf[:, 0], conf], low_pass=0.1, t_r=2.0)
        )
        # the same regressors as the plain array, and nilearn on the same input agrees
        # (numpy, uneven dask and float32 paths)
        assert_close(_ours(x, **kw), expected, 1e-9)
        check_all_paths(x, **kw)


def test_rank_deficient_confounds_dropped(data):
    x, conf = data
    conf = np.column_stack([conf, conf[:, 0] * 2 + conf[:, 1], np.zeros(T)])
    check_all_paths(x, confounds=conf)


def test_numerically_dependent_confounds_use_a_relative_rank_tolerance(data, rng):
    """A confound that is another's sum up to a direction of relative size ~1e-14 (rounding
    noise for z-scored columns of norm ~9) passes nilearn's absolute 100-eps test, so nilearn
    projects that noise direction out of the signals; lazyconn drops it.
    Reference: clean with the dependent column left out."""
    x, conf = data
    noise = rng.normal(size=T)
    noise -= noise.mean()
    base = conf[:, 0] * 2 + conf[:, 1]
    # After z-scoring, the pivoted R keeps ~ delta * sqrt(T) / std(base) on this column.
    delta = 6e-14 * base.std() / np.linalg.norm(noise)
    dependent = np.column_stack([conf, base + delta * noise])
    kw = dict(detrend=True, standardize="zscore_sample", filter=False)
    reference = _nilearn(x, confounds=conf, **kw)
    ours = _ours(x, confounds=dependent, **kw)
    assert_close(ours, reference, 1e-8)
    lazy = _ours(da.from_array(x, chunks=(T, UNEVEN)), confounds=dependent, **kw).compute()
    assert_close(lazy, reference, 1e-8)
    # nilearn keeps the noise direction: its result moves far from the reference.
    theirs = _nilearn(x, confounds=dependent, **kw)
    assert np.abs(theirs - reference).max() > 1e-2


def test_butterworth_kwargs(data):
    x, conf = data
    check_all_paths(
        x,
        confounds=conf,
        low_pass=0.1,
        t_r=2.0,
        butterworth__order=3,
        butterworth__padtype="even",
        butterworth__padlen=10,
    )
    check_all_paths(x, high_pass=0.05, t_r=2.0, butterworth__padtype=None)


def test_cutoff_above_nyquist_warns_and_clamps(data):
    x, _ = data
    with pytest.warns(UserWarning, match=r"low_pass=0\.3 Hz is at or above the Nyquist"):
        ours = lsignal.clean(x, low_pass=0.3, high_pass=0.01, t_r=2.0)
    assert_close(ours, _nilearn(x, low_pass=0.3, high_pass=0.01, t_r=2.0), 1e-9)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_ensure_finite(data):
    x, conf = data
    x = x.copy()
    x[3, 2] = np.nan
    x[10, 5] = np.inf
    check_all_paths(x, ensure_finite=True, confounds=conf, low_pass=0.1, t_r=2.0)
    # without it, NaN stays confined to its column (as in nilearn)
    ours = _ours(x, ensure_finite=False, filter=False)
    ref = _nilearn(x, ensure_finite=False, filter=False)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))


def test_integer_input_promoted_like_nilearn(rng):
    x = rng.integers(0, 1000, size=(T, 6)).astype(np.int16)
    ours = lsignal.clean(x)
    assert ours.dtype == np.float32 == _nilearn(x).dtype
    assert_close(ours, _nilearn(x.astype(np.float64)), 1e-5)
    assert lsignal.clean(x.astype(np.int64)).dtype == np.float64


# --------------------------------------------------------------------------- scrubbing

# Every censored frame t has its mirror T-1-t kept: nilearn 0.14.1's bitwise-NOT bug is
# then harmless and nilearn computes what it documents.
MIRROR_KEPT = np.setdiff1d(np.arange(T), [0, 1, 11, 12, 40, 57])
# Frames 0/79 and 2/77 are mirrors of each other: nilearn leaves them raw.
MIRROR_CENSORED = np.setdiff1d(np.arange(T), [0, 2, 30, 77, 79])


@pytest.mark.parametrize(
    "detrend, standardize", [(True, "zscore_sample"), (False, "psc"), (False, None)]
)
@pytest.mark.parametrize("extrapolate", [False, True])
@pytest.mark.parametrize("use_confounds", [False, True])
def test_sample_mask_butterworth_matches_nilearn(
    data, extrapolate, use_confounds, detrend, standardize
):
    x, conf = data
    kw = dict(
        sample_mask=MIRROR_KEPT,
        low_pass=0.1,
        high_pass=0.01,
        t_r=2.0,
        extrapolate=extrapolate,
        confounds=conf if use_confounds else None,
        detrend=detrend,
        standardize=standardize,
    )
    ref = check_all_paths(x, **kw)
    assert ref.shape == (MIRROR_KEPT.size, V)


@pytest.mark.parametrize("filt", ["none", "cosine"])
def test_sample_mask_censoring_matches_nilearn(data, filt):
    x, conf = data
    boolean = np.isin(np.arange(T), MIRROR_CENSORED)
    for mask in (MIRROR_CENSORED, boolean):
        ref = check_all_paths(x, sample_mask=mask, confounds=conf, **FILTERS[filt])
    # a plain list of indices is one mask (nilearn reads it as one mask per run and fails)
    assert_close(
        _ours(x, sample_mask=list(MIRROR_CENSORED), confounds=conf, **FILTERS[filt]), ref, 1e-9
    )


def _scrub_reference(x, keep, low_pass, high_pass, t_r, extrapolate):
    """Independent reference: scipy CubicSpline through the kept frames, then nilearn's
    detrend + Butterworth (no scrubbing), then censor and z-score (ddof=1)."""
    times = np.arange(T) * t_r
    filled = CubicSpline(times[keep], x[keep], axis=0, extrapolate=extrapolate)(times)
    filled[keep] = x[keep]
    lo, hi = (0, T) if extrapolate else (keep[0], keep[-1] + 1)
    filtered = nsignal.clean(
        filled[lo:hi],
        detrend=True,
        standardize=None,
        low_pass=low_pass,
        high_pass=high_pass,
        t_r=t_r,
    )
    kept = filtered[keep - lo]
    return (kept - kept.mean(0)) / kept.std(0, ddof=1)


@pytest.mark.parametrize("extrapolate", [False, True])
def test_sample_mask_interpolation_fix(data, extrapolate):
    x, _ = data
    x = x.copy()
    x[[0, 2, 30, 77, 79]] += 50.0  # motion spikes on the censored frames
    kw = dict(
        sample_mask=MIRROR_CENSORED, low_pass=0.1, high_pass=0.01, t_r=2.0, extrapolate=extrapolate
    )
    expected = _scrub_reference(x, MIRROR_CENSORED, 0.1, 0.01, 2.0, extrapolate)
    assert_close(_ours(x, **kw), expected, 1e-9)
    assert_close(_ours(da.from_array(x, chunks=(T, UNEVEN)), **kw).compute(), expected, 1e-9)
    # nilearn 0.14.1 is wrong here (its spikes leak into the filtered signal)
    ref = _nilearn(x, **kw)
    assert ref.shape != expected.shape or np.abs(ref - expected).max() > 0.1


def test_sample_mask_errors(data):
    x, _ = data
    with pytest.raises(ParameterError, match=r"sample_mask contains indices outside \[0, 79\]"):
        lsignal.clean(x, sample_mask=np.array([0, 5, 80]))
    with pytest.raises(ParameterError, match=r"sample_mask contains indices outside"):
        lsignal.clean(x, sample_mask=np.array([-1, 5]))
    with pytest.raises(ParameterError, match="strictly increasing"):
        lsignal.clean(x, sample_mask=np.array([5, 3, 7]))
    with pytest.raises(ParameterError, match="boolean mask of length 10 but the run has 80"):
        lsignal.clean(x, sample_mask=np.ones(10, dtype=bool))
    with pytest.raises(AllVolumesRemovedError, match="sample_mask is empty"):
        lsignal.clean(x, sample_mask=np.zeros(T, dtype=bool))
    with pytest.raises(ParameterError, match=r"sample_mask has 1 mask\(s\) but there are 2 run"):
        lsignal.clean(x, runs=np.repeat([0, 1], T // 2), sample_mask=np.arange(10))
    with pytest.raises(ParameterError, match="needs at least 2"):
        lsignal.clean(x, sample_mask=[np.array([4])], low_pass=0.1)


# --------------------------------------------------------------------------- runs


def test_runs_match_nilearn(data, rng):
    x, conf = data
    runs = np.repeat([2, 0, 1], [30, 25, 25])  # labels out of order: stacked by label
    check_all_paths(x, runs=runs, confounds=conf, high_pass=0.02, t_r=2.0)
    masks = [np.setdiff1d(np.arange(25), [3]), np.arange(2, 25), np.setdiff1d(np.arange(30), [9])]
    check_all_paths(
        x, runs=runs, confounds=conf, sample_mask=masks, filter="cosine", high_pass=0.02, t_r=2.0
    )
    interleaved = rng.permutation(runs)
    check_all_paths(x, runs=interleaved, confounds=conf, filter=False)


def test_runs_forward_every_option(data):
    """nilearn's per-run recursion drops standardize_confounds/extrapolate/butterworth__*;
    lazyconn applies them to each run: the reference is nilearn called run by run."""
    x, conf = data
    runs = np.repeat([0, 1], [45, 35])
    kw = dict(
        confounds=conf,
        standardize_confounds=False,
        low_pass=0.15,
        t_r=2.0,
        butterworth__padtype="even",
        butterworth__order=3,
    )
    expected = np.vstack(
        [_nilearn(x[runs == r], **{**kw, "confounds": conf[runs == r]}) for r in (0, 1)]
    )
    assert_close(_ours(x, runs=runs, **kw), expected, 1e-9)
    lazy = _ours(da.from_array(x, chunks=(T, UNEVEN)), runs=runs, **kw)
    assert_close(lazy.compute(), expected, 1e-9)
    assert np.abs(_nilearn(x, runs=runs, **kw) - expected).max() > 1e-3  # nilearn drops them


def test_runs_length_mismatch(data):
    x, _ = data
    with pytest.raises(ParameterError, match=r"runs has shape \(79,\) but the signals have 80"):
        lsignal.clean(x, runs=np.zeros(T - 1))


# --------------------------------------------------------------------------- bad input


def test_bad_parameters(data):
    x, conf = data
    with pytest.raises(ParameterError, match=r"t_r=None but low_pass=0\.1"):
        lsignal.clean(x, low_pass=0.1, t_r=None)
    with pytest.raises(
        ParameterError, match=r"high_pass=0\.1 is greater than or equal to low_pass=0\.05"
    ):
        lsignal.clean(x, low_pass=0.05, high_pass=0.1)
    with pytest.raises(ParameterError, match="filter='cosine' needs both"):
        lsignal.clean(x, filter="cosine", t_r=2.0)
    with pytest.raises(ParameterError, match="filter='gaussian' is not valid"):
        lsignal.clean(x, filter="gaussian")
    with pytest.raises(ParameterError, match="filter=True is not valid"):
        lsignal.clean(x, filter=True)
    with pytest.raises(ParameterError, match="standardize='zscore' is not valid"):
        lsignal.clean(x, standardize="zscore")
    with pytest.raises(ParameterError, match="low_pass=0 is not valid"):
        lsignal.clean(x, low_pass=0)
    with pytest.raises(ParameterError, match=r"high_pass=-0\.01 is not valid"):
        lsignal.clean(x, high_pass=-0.01)
    with pytest.raises(ParameterError, match="t_r=0 is not valid"):
        lsignal.clean(x, t_r=0, low_pass=0.1)
    with pytest.raises(ParameterTypeError, match="detrend=None has type NoneType"):
        lsignal.clean(x, detrend=None)
    with pytest.raises(ParameterTypeError, match="unexpected keyword argument 'foo'"):
        lsignal.clean(x, foo=1)
    with pytest.raises(
        ParameterTypeError, match="butterworth__bogus=1 is not a Butterworth option"
    ):
        lsignal.clean(x, butterworth__bogus=1, low_pass=0.1)
    with pytest.raises(ParameterError, match="butterworth__padtype='wrap' is not valid"):
        lsignal.clean(x, butterworth__padtype="wrap", low_pass=0.1)
    with pytest.raises(DimensionError, match=r"signals has shape \(80,\); expected a 2-D"):
        lsignal.clean(x[:, 0])
    with pytest.raises(ParameterError, match="confounds has 79 rows but the signals have 80"):
        lsignal.clean(x, confounds=conf[:-1])
    with pytest.raises(ParameterError, match=r"confounds\[1\] has 79 rows"):
        lsignal.clean(x, confounds=[conf, conf[1:]])


def test_too_short_for_filter_padding(rng):
    x = rng.normal(size=(33, 4))
    with pytest.raises(
        ParameterError,
        match="a run has 33 volumes to filter but the Butterworth filter pads 33 samples",
    ):
        lsignal.clean(x, low_pass=0.1, high_pass=0.01)
    with pytest.raises(ValueError, match="greater than padlen"):  # nilearn: scipy's message
        nsignal.clean(x, low_pass=0.1, high_pass=0.01)
    lsignal.clean(x, low_pass=0.1)  # 33 > 18: fine


def test_warnings_mirror_nilearn(data):
    x, conf = data
    with pytest.warns(UserWarning, match="one must perform detrend and/or standardize"):
        lsignal.clean(x, confounds=conf, detrend=False, standardize_confounds=False)
    with pytest.warns(UserWarning, match="No filter type selected but cutoff"):
        lsignal.clean(x, filter=False, low_pass=0.1)
    with pytest.warns(UserWarning, match="low_pass is not implemented for filter='cosine'"):
        lsignal.clean(x, filter="cosine", high_pass=0.01, low_pass=0.1)


# --------------------------------------------------------------------------- laziness


@pytest.mark.parametrize("standardize", ["zscore_sample", "psc"])
def test_clean_builds_without_computing(data, standardize):
    _, conf = data
    arr = inaccessible_dask_array((T, V), chunks=(40, UNEVEN))
    with raise_if_dask_computes():
        out = lsignal.clean(
            arr,
            confounds=conf,
            standardize=standardize,
            sample_mask=MIRROR_KEPT,
            low_pass=0.1,
            t_r=2.0,
            runs=None,
        )
    assert out.shape == (MIRROR_KEPT.size, V)
    assert out.chunks == ((MIRROR_KEPT.size,), UNEVEN)
    assert out.dtype == np.float32


def test_clean_is_one_fused_pass(data):
    """Every output chunk depends on exactly one input chunk (no global reduction) for zscore."""
    x, conf = data
    out = lsignal.clean(da.from_array(x, chunks=(T, UNEVEN)), confounds=conf, low_pass=0.1)
    graph = dict(out.__dask_graph__())
    # 3 input chunks + 3 cleaned chunks + the shared plan (confound basis Q, filter...)
    assert len(graph) == 2 * len(UNEVEN) + 1
    # deterministic names: the same call gives the same graph key
    again = lsignal.clean(da.from_array(x, chunks=(T, UNEVEN)), confounds=conf, low_pass=0.1)
    assert out.name == again.name


# --------------------------------------------------------------------------- CompCor


def _align_signs(ours, ref):
    signs = np.sign(np.sum(ours * ref, axis=0))
    return ours * signs


@pytest.mark.parametrize("detrend", [True, False])
def test_high_variance_confounds(rng, detrend):
    x = rng.normal(size=(60, 400)) * rng.uniform(0.5, 3, 400)
    x[:, :7] += np.outer(np.sin(np.arange(60) / 3.0), rng.uniform(3, 5, 7))
    ref = nsignal.high_variance_confounds(x, n_confounds=4, percentile=5.0, detrend=detrend)
    ours = lsignal.high_variance_confounds(x, n_confounds=4, percentile=5.0, detrend=detrend)
    np.testing.assert_allclose(_align_signs(ours, ref), ref, atol=1e-12)
    with raise_if_dask_computes():
        lazy = lsignal.high_variance_confounds(
            da.from_array(x, chunks=(60, (150, 97, 153))),
            n_confounds=4,
            percentile=5.0,
            detrend=detrend,
        )
    assert lazy.shape == (60, 4)
    np.testing.assert_allclose(_align_signs(lazy.compute(), ref), ref, atol=1e-10)


def test_high_variance_confounds_laziness_and_errors():
    arr = inaccessible_dask_array((50, 30), chunks=(50, (10, 20)))
    with raise_if_dask_computes():
        out = lsignal.high_variance_confounds(arr)
    assert out.shape == (50, 5)
    with pytest.raises(ParameterError, match="percentile=150 is not valid"):
        lsignal.high_variance_confounds(np.zeros((10, 4)), percentile=150)
    with pytest.raises(ParameterError, match="n_confounds=0 is not valid"):
        lsignal.high_variance_confounds(np.zeros((10, 4)), n_confounds=0)


def test_butterworth_function(rng):
    x = rng.normal(size=(70, 9))
    ref = nsignal.butterworth(x.copy(), sampling_rate=0.5, low_pass=0.1, high_pass=0.02)
    np.testing.assert_allclose(
        lsignal.butterworth(x, 0.5, low_pass=0.1, high_pass=0.02), ref, atol=1e-12
    )
    lazy = lsignal.butterworth(
        da.from_array(x, chunks=(70, (4, 5))), 0.5, low_pass=0.1, high_pass=0.02
    )
    np.testing.assert_allclose(lazy.compute(), ref, atol=1e-12)
    direct = sp_signal.sosfiltfilt(
        sp_signal.butter(5, [0.02, 0.1], "band", output="sos", fs=0.5), x, axis=0
    )
    np.testing.assert_allclose(lazy.compute(), direct, atol=1e-12)


def test_sample_mask_with_collapsed_band(data):
    """Both cut-offs clamped to the same value: nilearn warns, does not filter, but still
    interpolates/detrends the full series before censoring. Same here."""
    x, conf = data
    with pytest.warns(UserWarning) as record:
        ours = lsignal.clean(
            x, sample_mask=MIRROR_KEPT, confounds=conf, high_pass=0.3, low_pass=0.4, t_r=2.0
        )
    messages = " ".join(str(r.message) for r in record)
    assert "high_pass=0.3 Hz is at or above" in messages and "returned unfiltered" in messages
    ref = _nilearn(
        x, sample_mask=MIRROR_KEPT, confounds=conf, high_pass=0.3, low_pass=0.4, t_r=2.0
    )
    assert_close(ours, ref, 1e-9)


def test_warnings_point_at_the_caller(data):
    x, _ = data
    with pytest.warns(UserWarning, match="Nyquist") as record:
        lsignal.clean(x, low_pass=0.3, t_r=2.0)
    assert record[0].filename == __file__


def test_psc_zero_mean_column(data):
    x, _ = data
    x = x.copy()
    x[:, 4] = 0.0
    for kw in (dict(detrend=False, filter=False), dict(low_pass=0.1, t_r=2.0)):
        with pytest.warns(UserWarning, match="psc standardization strategy is meaningless"):
            ours = lsignal.clean(x, standardize="psc", **kw)
        ref = _nilearn(x, standardize="psc", **kw)
        assert_close(ours, ref, 1e-9)
        lazy = lsignal.clean(da.from_array(x, chunks=(T, UNEVEN)), standardize="psc", **kw)
        with pytest.warns(UserWarning, match="psc standardization"):
            assert_close(lazy.compute(scheduler="sync"), ref, 1e-9)


# --------------------------------------------------------------------------- properties

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@st.composite
def _chunks_1d(draw, n):
    cuts = sorted(draw(st.sets(st.integers(1, n - 1), max_size=4))) if n > 1 else []
    edges = [0, *cuts, n]
    return tuple(b - a for a, b in itertools.pairwise(edges))


@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_lazy_equals_eager_any_chunking(data):
    n_t = data.draw(st.integers(40, 70), label="T")
    n_v = data.draw(st.integers(1, 12), label="V")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_t, n_v)) + rng.uniform(-5, 5, n_v)
    kw = dict(
        detrend=data.draw(st.booleans(), label="detrend"),
        standardize=data.draw(st.sampled_from(["zscore_sample", "psc", None]), label="std"),
        confounds=rng.normal(size=(n_t, 2)) if data.draw(st.booleans(), label="conf") else None,
        **data.draw(
            st.sampled_from([FILTERS["none"], dict(low_pass=0.2, t_r=1.0), FILTERS["cosine"]]),
            label="filter",
        ),
    )
    eager = _ours(x, **kw)
    chunks = (
        data.draw(_chunks_1d(n_t), label="tchunks"),
        data.draw(_chunks_1d(n_v), label="vchunks"),
    )
    lazy = _ours(da.from_array(x, chunks=chunks), **kw).compute()
    np.testing.assert_allclose(lazy, eager, rtol=1e-10, atol=1e-10)


def test_lazy_confounds(data):
    """Dask confounds (e.g. lazy high-variance confounds) stay lazy and give the same numbers."""
    x, conf = data
    ref = _nilearn(
        x, confounds=[conf[:, :2], conf[:, 2]], low_pass=0.1, t_r=2.0, standardize="psc"
    )
    lazy_conf = [da.from_array(conf[:, :2], chunks=(40, 1)), da.from_array(conf[:, 2])]
    arr = inaccessible_dask_array((T, V), chunks=(T, UNEVEN))
    with raise_if_dask_computes():
        lsignal.clean(arr, confounds=lazy_conf, low_pass=0.1, t_r=2.0, standardize="psc")
        out = lsignal.clean(
            da.from_array(x, chunks=(T, UNEVEN)),
            confounds=lazy_conf,
            low_pass=0.1,
            t_r=2.0,
            standardize="psc",
        )
    assert_close(out.compute(), ref, 1e-9)
    assert_close(
        lsignal.clean(x, confounds=lazy_conf, low_pass=0.1, t_r=2.0, standardize="psc"), ref, 1e-9
    )
    with pytest.raises(ParameterError, match=r"confounds\[1\] has 79 rows"):
        lsignal.clean(arr, confounds=[lazy_conf[0], da.zeros(T - 1)])


def test_high_variance_confounds_float32(rng):
    """float32 input: compared with nilearn on the same values in float64 (nilearn itself
    works in float32 there, so its own float32 result is the less accurate one)."""
    x = (rng.normal(size=(60, 300)) * rng.uniform(0.5, 3, 300)).astype(np.float32)
    x[:, :6] += np.outer(np.cos(np.arange(60) / 4.0), rng.uniform(4, 6, 6)).astype(np.float32)
    ref = nsignal.high_variance_confounds(x.astype(np.float64), n_confounds=3, percentile=3.0)
    lazy = lsignal.high_variance_confounds(
        da.from_array(x, chunks=(60, (100, 57, 143))), n_confounds=3, percentile=3.0
    ).compute()
    np.testing.assert_allclose(_align_signs(lazy, ref), ref, atol=1e-6)


def test_plan_token_covers_every_plan_field():
    import dataclasses

    from dask.base import tokenize

    from lazyconn.ops.temporal import RunPlan
    from lazyconn.signal import _plan_token

    base = RunPlan(
        rows=np.arange(10),
        keep=None,
        interpolate=False,
        extrapolate=True,
        t_r=2.0,
        detrend=True,
        sos=None,
        padtype="odd",
        padlen=None,
        q=None,
        standardize="zscore_sample",
        n_out=10,
    )
    changed = {
        "rows": np.arange(1, 11),
        "keep": np.arange(5),
        "interpolate": True,
        "extrapolate": False,
        "t_r": 1.0,
        "detrend": False,
        "sos": np.ones((1, 6)),
        "padtype": "even",
        "padlen": 3,
        "q": np.ones((10, 1)),
        "standardize": "psc",
        "n_out": 9,
    }
    assert set(changed) == {f.name for f in dataclasses.fields(RunPlan)}  # a test per field
    reference = tokenize(_plan_token([base]))
    for name, value in changed.items():
        other = dataclasses.replace(base, **{name: value})
        assert tokenize(_plan_token([other])) != reference, name

    # a field added later (here by a subclass) is part of the token without editing it
    @dataclasses.dataclass(frozen=True, eq=False)
    class LaterPlan(RunPlan):
        new_option: int = 0

    one = LaterPlan(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)})
    two = dataclasses.replace(one, new_option=1)
    assert tokenize(_plan_token([one])) != tokenize(_plan_token([two]))


@pytest.mark.parametrize("filt", ["none", "band"])
@pytest.mark.parametrize("standardize", ["zscore_sample", None])
def test_clean_of_a_fortran_run_in_reused_buffers(data, monkeypatch, filt, standardize):
    """A one-run Fortran-ordered float32 block (the layout of the streamed columns) is
    cleaned piece by piece in two float64 buffers made once, in place step after step:
    the numbers of the whole block, nilearn's, and the input is left as it was."""
    from lazyconn.ops import temporal

    x, conf = data
    kw = dict(detrend=True, standardize=standardize, confounds=conf, **FILTERS[filt])
    x32 = np.asfortranarray(x, dtype=np.float32)
    before = x32.copy()
    cleaner = lsignal.column_cleaner(T, np.float32, **kw)
    whole = cleaner(x32)
    monkeypatch.setattr(temporal, "CLEAN_PIECE_BYTES", 8 * T * 4)  # pieces of 4, then 3
    pieces = cleaner(x32)
    np.testing.assert_array_equal(x32, before)
    assert pieces.dtype == np.float32 and pieces.flags.f_contiguous
    assert_close(pieces, whole, 1e-6)
    # written into the signals themselves (a streamed group): the same bits
    for piece_bytes, expected in ((8 * T * 4, pieces), (2 << 20, whole)):
        monkeypatch.setattr(temporal, "CLEAN_PIECE_BYTES", piece_bytes)
        inplace = before.copy(order="F")
        assert cleaner(inplace, out=inplace) is inplace
        np.testing.assert_array_equal(inplace, expected)
    ref = _nilearn(x32.astype(np.float64), **kw)
    assert_close(pieces, ref, max(1e-5, 2e-7 * np.abs(ref).max() / ref.std(axis=0).min()))


@pytest.mark.parametrize("order", ["F", "C"])
def test_zscore_in_place_with_a_scratch_buffer_is_numpys_bit_for_bit(rng, order):
    """The standard deviation computed in a scratch buffer is numpy's ``std(ddof=1)`` step
    by step: the same bits, in either memory layout."""
    from lazyconn.ops import temporal

    x = np.asarray(rng.normal(50, 3, size=(97, 31)), order=order)
    centred = x - x.mean(axis=0)
    expected = centred / centred.std(axis=0, ddof=1)
    work = x.copy(order=order)
    got = temporal.zscore_sample(work, inplace=True, scratch=np.empty_like(x, order=order))
    assert got is work
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("standardize", ["zscore_sample", "psc", None])
def test_clean_in_pieces_of_columns_equals_whole_blocks(data, monkeypatch, standardize):
    """clean_block cleans a block in pieces of columns (bounded float64 temporaries): the
    numbers of one piece (to the last bits of the BLAS products and filters, whose rounding
    depends on the width, as with any voxel chunking), and nilearn's."""
    from lazyconn.ops import temporal

    x, conf = data
    kw = dict(detrend=True, standardize=standardize, confounds=conf, **FILTERS["band"])
    lazy = da.from_array(x, chunks=(T, UNEVEN))
    whole = _ours(lazy, **kw).compute()
    monkeypatch.setattr(temporal, "CLEAN_PIECE_BYTES", 8 * T * 2)  # 2 columns per piece
    pieces = _ours(lazy, **kw).compute()
    assert_close(pieces, whole, 1e-12)
    assert pieces.flags.f_contiguous == whole.flags.f_contiguous
    check_all_paths(x, **kw)
