"""CanICA / DictLearning against nilearn 0.14.1, the planted truth, and scipy.

lazyconn replays nilearn's per-subject randomized SVD (same random test matrices, through
the Gram matrix), so the per-subject reductions equal nilearn's ``_fast_svd`` to float32
rounding and the components equal stock nilearn's (spatial |r| after Hungarian matching).
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings

import nibabel as nib
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from lazyconn import decomposition as ld
from lazyconn.datasets import make_synthetic_fmri
from lazyconn.exceptions import DimensionError, GridMismatchError, ParameterError
from lazyconn.image import load


def match(a, b):
    """|spatial r| of each row of ``a`` with its Hungarian-matched row of ``b`` (0 for a zero
    row, unless both matched rows are zero: 1)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.abs(np.corrcoef(a, b)[: len(a), len(a) :])
    zero_a, zero_b = ~a.any(1), ~b.any(1)
    r[np.ix_(zero_a, zero_b)] = 1.0
    r = np.nan_to_num(r)
    i, j = linear_sum_assignment(-r)
    return r[i, j]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """4 subjects x 100 volumes at 8 mm with 4 planted networks (nilearn recovers them with
    the confounds)."""
    return make_synthetic_fmri(
        4,
        n_timepoints=100,
        resolution=8,
        n_networks=4,
        data_dir=tmp_path_factory.mktemp("decomposition_study"),
    )


def _nilearn(name, **kw):
    import nilearn.decomposition as nd

    return getattr(nd, name)(**kw)


PARAMS = {
    "CanICA": {"n_components": 4, "random_state": 0, "n_init": 3},
    "DictLearning": {
        "n_components": 4,
        "random_state": 0,
        "smoothing_fwhm": 6.0,
        "standardize": "zscore_sample",
    },
}


@pytest.fixture(scope="module")
def fitted(study):
    """lazyconn's fits of the study, once per estimator."""
    out = {}
    for name, kw in PARAMS.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # sklearn convergence
            out[name] = getattr(ld, name)(**kw).fit(study.func, confounds=study.reduced_confounds)
    return out


def _stock(name, study, **kw):
    nil = _nilearn(name, **{**PARAMS[name], **kw})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return nil.fit(study.func, confounds=study.reduced_confounds)


@pytest.fixture(scope="module")
def stock(study):
    """Stock nilearn's fits of the study, once per estimator."""
    return {name: _stock(name, study) for name in PARAMS}


def _step_lines(name, fit):
    """The ``[name.fit] ...`` lines ``fit`` writes on stdout or stderr."""
    out, err = io.StringIO(), io.StringIO()
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        fit()
    lines = (out.getvalue() + err.getvalue()).splitlines()
    return [line for line in lines if line.startswith(f"[{name}.")]


def _overriding_notices(fit):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit()
    return [str(w.message) for w in caught if "Overriding" in str(w.message)]


@pytest.mark.parametrize(
    "masker_kw, estimator_kw, n_notices",
    [
        ({}, {}, 1),  # CanICA's defaults differ from the masker's: four parameters listed
        (
            {"smoothing_fwhm": 6, "detrend": True, "standardize": True, "mask_strategy": "epi"},
            {},
            0,
        ),
        ({"smoothing_fwhm": 4.0}, {"smoothing_fwhm": 8.0, "verbose": 0, "t_r": 2.0}, 1),
    ],
)
def test_a_given_masker_overriding_estimator_parameters_warns_as_nilearn(
    masker_kw, estimator_kw, n_notices, study
):
    from nilearn.maskers import MultiNiftiMasker as NilearnMultiNiftiMasker

    from lazyconn.maskers import MultiNiftiMasker

    runs = study.func[:2]
    kw = {"n_components": 2, "random_state": 0, "n_init": 1, **estimator_kw}
    theirs = _overriding_notices(
        lambda: _nilearn("CanICA", mask=NilearnMultiNiftiMasker(**masker_kw), **kw).fit(runs)
    )
    ours = _overriding_notices(
        lambda: ld.CanICA(mask=MultiNiftiMasker(**masker_kw), **kw).fit(runs)
    )
    assert len(theirs) == n_notices
    assert ours == theirs


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PARAMS))
def test_verbose_step_lines_are_nilearns(name, study):
    """verbose=1: nilearn's step messages, in nilearn's order (lazyconn writes them on
    stderr, with its own progress lines beside them)."""
    kw = {**PARAMS[name], "verbose": 1}
    runs, confounds = study.func, study.reduced_confounds
    theirs = _step_lines(name, lambda: _nilearn(name, **kw).fit(runs, confounds=confounds))
    ours = _step_lines(name, lambda: getattr(ld, name)(**kw).fit(runs, confounds=confounds))
    assert theirs and ours == theirs
    quiet = {**PARAMS[name], "verbose": 0}
    assert _step_lines(name, lambda: getattr(ld, name)(**quiet).fit(runs)) == []


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_equals_stock_nilearn(name, fitted, stock):
    nil, ours = stock[name], fitted[name]
    np.testing.assert_array_equal(ours.mask_img_.get_fdata(), nil.mask_img_.get_fdata())
    assert ours.components_.shape == nil.components_.shape
    assert ours.components_.dtype == nil.components_.dtype
    # The issue asks >= 0.95; measured: > 0.9999 (float32 rounding apart, the same numbers).
    assert match(ours.components_, nil.components_).min() > 0.999
    if name == "CanICA":
        np.testing.assert_allclose(ours.variance_, nil.variance_, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_recovers_the_planted_networks_at_least_as_well_as_stock_nilearn(
    name, study, fitted, stock
):
    from nilearn.maskers import NiftiMasker

    nil, ours = stock[name], fitted[name]
    truth = NiftiMasker(nil.mask_img_, standardize=None).fit().transform(study.maps)
    assert match(truth, ours.components_).mean() >= match(truth, nil.components_).mean() - 0.01


def test_canica_matches_stock_nilearn_where_its_subject_svd_is_exact(study):
    # With <= 500 voxels nilearn's _fast_svd is a full SVD: stock nilearn is then exact.
    img = nib.load(study.mask)
    data = np.zeros(img.shape, np.int8)
    data[:, :, 12:13] = np.asarray(img.dataobj)[:, :, 12:13]
    assert 0 < data.sum() <= 500
    small = nib.Nifti1Image(data, img.affine)
    nil = _stock("CanICA", study, mask=small)
    ours = ld.CanICA(**PARAMS["CanICA"], mask=small).fit(
        study.func, confounds=study.reduced_confounds
    )
    assert match(ours.components_, nil.components_).min() >= 0.99


@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_fastica_cube_on_threads_is_sklearns_bit_for_bit(rng, n_threads, monkeypatch):
    """CanICA's FastICA computes scikit-learn's 'cube' by bands of rows on threads: the same
    nonlinearity, the same unmixing, bit for bit (rows in uneven bands, fewer rows than
    threads)."""
    from sklearn.decomposition import fastica
    from sklearn.decomposition._fastica import _cube

    from lazyconn.decomposition.canica import _Cube
    from lazyconn.group import _cluster

    monkeypatch.setattr(_cluster, "default_n_workers", lambda: n_threads)
    sources = rng.laplace(size=(2000, 5)) * np.geomspace(1, 1e3, 5)
    mixed = sources @ rng.standard_normal((5, 5))
    with _Cube() as cube:
        for x in (mixed.T, mixed[:, :2].T, mixed[:3].T.copy()):
            want, got = _cube(x, {}), cube(x)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])
        theirs = fastica(mixed, whiten="arbitrary-variance", fun="cube", random_state=3)
        ours = fastica(mixed, whiten="arbitrary-variance", fun=cube, random_state=3)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(a, b)


# (n_voxels, n_times, n_components): nilearn's _fast_svd branches
SVD_CASES = {
    "randomized, 7 power iterations": (900, 120, 5),
    "randomized, 4 power iterations": (900, 120, 20),
    "full: n_components >= 0.8 T": (900, 120, 100),
    "full: <= 500 voxels and volumes": (300, 100, 5),
    "randomized, transposed (V < T)": (120, 560, 5),
    "rank-deficient run": (900, 120, 5),
}


@pytest.mark.parametrize("case", sorted(SVD_CASES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_subject_reduction_equals_nilearns_fast_svd(case, dtype, rng):
    import dask.array as da
    from nilearn.decomposition._base import _fast_svd

    from lazyconn.decomposition._base import reduce_run, subject_random_states

    n_voxels, n_times, k = SVD_CASES[case]
    # Flat spectrum (white noise) plus two strong directions: where a randomized SVD is
    # far from the exact one, so only the same test matrix gives the same rows.
    x = rng.standard_normal((n_times, n_voxels))
    x += 30 * np.outer(rng.standard_normal(n_times), rng.standard_normal(n_voxels))
    if case == "rank-deficient run":  # rank 3 < k + oversamples
        x = rng.standard_normal((n_times, 3)) @ rng.standard_normal((3, n_voxels))
    x = x.astype(dtype)
    u, s, _ = _fast_svd(x.T, k, random_state=0)
    want = u.T * s[:, None]
    (state,) = subject_random_states(0, n_voxels, [n_times], k)
    got = reduce_run(da.from_array(x, chunks=(-1, 250)), k, keep_bytes=0, rng_state=state)
    assert got.dtype == want.dtype
    # Per row (the rows' scales differ by orders of magnitude); rows at rounding level
    # (beyond a rank-deficient run's rank) against the first.
    scale = np.maximum(np.abs(want).max(1), 1e-4 * np.abs(want).max())[:, None]
    tol = 1e-3 if dtype == np.float32 else 1e-8
    assert (np.abs(got - want) / scale).max() < tol
    if case.startswith("randomized"):
        exact = reduce_run(da.from_array(x, chunks=(-1, 250)), k, keep_bytes=0)
        assert (np.abs(exact - want) / scale).max() > 0.1  # the test can tell them apart


def test_a_randomstate_advances_across_subjects_as_in_nilearn(study):
    from nilearn.decomposition._base import _mask_and_reduce
    from nilearn.maskers import MultiNiftiMasker as NMulti

    imgs, conf = study.func[:3], study.reduced_confounds[:3]
    ours_rng, nil_rng = np.random.RandomState(3), np.random.RandomState(3)
    est = ld.CanICA(
        n_components=3, random_state=ours_rng, smoothing_fwhm=None, standardize="zscore_sample"
    )
    est.masker_ = est._embedded_masker()[0].fit(imgs)
    runs = [load(f) for f in imgs]
    got = est._mask_and_reduce(imgs, runs, conf)
    masker = NMulti(est.masker_.mask_img_, standardize="zscore_sample", detrend=True).fit()
    want = _mask_and_reduce(masker, imgs, conf, n_components=3, random_state=nil_rng)
    np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max())
    assert ours_rng.randint(2**31) == nil_rng.randint(2**31)  # left in the same state


def test_components_img_is_a_4d_nifti_nilearn_plots(fitted):
    from nilearn.plotting import find_probabilistic_atlas_cut_coords

    img = fitted["CanICA"].components_img_
    assert isinstance(img, nib.Nifti1Image)
    assert img.shape[3] == 4
    coords = find_probabilistic_atlas_cut_coords(img)
    assert np.asarray(coords).shape == (4, 3)
    assert fitted["CanICA"].n_elements_ == 4


def test_transform_inverse_transform_score_as_nilearn(study, fitted):
    from nilearn.decomposition._base import _explained_variance, _mask_and_reduce
    from nilearn.maskers import MultiNiftiMasker as NMulti
    from nilearn.maskers import NiftiMapsMasker as NMaps

    est = fitted["CanICA"]
    imgs, conf = study.func[:2], study.reduced_confounds[:2]
    ref_maps = NMaps(
        est.components_img_, est.mask_img_, resampling_target="maps", standardize=None
    ).fit()
    got = est.transform(imgs, confounds=conf)
    assert isinstance(got, list) and len(got) == 2
    for g, img, c in zip(got, imgs, conf, strict=True):
        np.testing.assert_allclose(g, ref_maps.transform(img, confounds=c), rtol=1e-4, atol=1e-4)
    back = est.inverse_transform(got)
    want = ref_maps.inverse_transform(got[0])
    np.testing.assert_allclose(back[0].get_fdata(), want.get_fdata(), rtol=1e-4, atol=1e-4)
    masker = NMulti(
        est.mask_img_, smoothing_fwhm=6, standardize="zscore_sample", detrend=True
    ).fit()
    data = _mask_and_reduce(masker, imgs, conf, reduction_ratio=1.0, random_state=0)
    for per_component in (False, True):
        ref = _explained_variance(data, est.components_, per_component=per_component)
        got = est.score(imgs, confounds=conf, per_component=per_component)
        np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-5)


def test_uneven_chunks_give_the_same_components(study):
    kw = {"n_components": 3, "random_state": 0, "n_init": 1}
    runs = [load(f) for f in study.func[:2]]
    shape = runs[0].shape
    even = [r.with_data(r.data.rechunk((13, 15, 25, shape[3]))) for r in runs]
    uneven = [r.with_data(r.data.rechunk(((5, 21), (7, 23), (4, 9, 12), shape[3]))) for r in runs]
    a = ld.CanICA(**kw).fit(even, confounds=study.reduced_confounds[:2])
    b = ld.CanICA(**kw).fit(uneven, confounds=study.reduced_confounds[:2])
    # the smoothing's float32 BLAS products round differently with the block's geometry (a
    # few ulps; ops.spatial.gaussian_block), and ICA magnifies that to ~1e-4: the parity bar
    assert match(a.components_, b.components_).min() > 0.999


def test_two_pass_reduction_equals_one_pass(study, monkeypatch):
    import lazyconn.decomposition._base as base

    kw = {"n_components": 3, "random_state": 0, "n_init": 1}
    one = ld.CanICA(**kw).fit(study.func[:2])
    monkeypatch.setattr(base, "DECOMPOSITION_SUBJECT_BYTES", 0)
    two = ld.CanICA(**kw).fit(study.func[:2])
    assert match(one.components_, two.components_).min() > 0.9999


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PARAMS))
def test_over_budget_study_is_decomposed_out_of_core(name, study, fitted, tmp_path, monkeypatch):
    """Above the budget the group step reads the scratch stack in column blocks (here ~500
    voxels each) and never reads it whole; its maps are the in-memory path's (the same
    algorithms and draws, sums taken in another order)."""
    from lazyconn.decomposition import _stack

    def whole(self):
        raise AssertionError("the stack was read whole")

    if name == "CanICA" or ld.dict_learning._streams_online():
        monkeypatch.setattr(_stack.ScratchStack, "read", whole)
    monkeypatch.setattr(_stack, "STACK_BLOCK_BYTES", 500 * 16 * 4)
    cache = tmp_path / "cache"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # sklearn convergence
        ooc = getattr(ld, name)(**PARAMS[name], memory=str(cache), memory_budget=1000).fit(
            study.func, confounds=study.reduced_confounds
        )
    assert match(ooc.components_, fitted[name].components_).min() > 0.9999
    assert list(cache.iterdir()) == []  # the scratch files are removed

    def fail(*args, **kwargs):  # a failure in the group step, the stack open
        raise RuntimeError("boom")

    monkeypatch.setattr(ld.canica.CanICA, "_unmix_components", fail)
    with pytest.raises(RuntimeError, match="boom"):
        getattr(ld, name)(**PARAMS[name], memory=str(cache), memory_budget=1000).fit(
            study.func[:2]
        )
    assert list(cache.iterdir()) == []  # on failure too


def test_the_stack_waits_on_disk_while_the_subjects_run(study, tmp_path, monkeypatch):
    """Within the budget too, each reduction is written to the scratch stack file while
    the subjects run (a Fortran-ordered stack in memory is resident from the first subject
    on), then read back whole, Fortran-ordered, for the group step; nothing is left
    behind, after a failed run either. Each run is opened once (the subjects reuse it)."""
    scratch = tmp_path / "scratch"
    seen = {}
    real_run, real_fit = ld._base._BaseDecomposition._run, ld.CanICA._raw_fit

    def run(self, step, subjects, sink, store=None):
        real_run(self, step, subjects, sink, store)
        (folder,) = scratch.iterdir()
        assert (folder / "stack").is_file()
        seen["staged"] = self._stack_.read()

    def raw_fit(self, data):
        seen["stack"] = np.array(data)
        seen["fortran"] = data.flags.f_contiguous
        return real_fit(self, data)

    import lazyconn.image._load as image_load

    real_load, opened = image_load._load, []

    def load(src, *args):
        if isinstance(src, (str, os.PathLike)):
            opened.append(src)
        return real_load(src, *args)

    monkeypatch.setattr(ld._base._BaseDecomposition, "_run", run)
    monkeypatch.setattr(ld.CanICA, "_raw_fit", raw_fit)
    monkeypatch.setattr(image_load, "_load", load)
    kw = dict(n_components=3, n_init=1, random_state=0, memory=str(scratch))
    ld.CanICA(**kw).fit(study.func)
    # each run is opened once, by the fit's checks: the subject tasks reuse it
    assert sorted(map(str, opened)) == sorted(map(str, study.func))
    assert seen["stack"].shape == (3 * len(study.func), seen["stack"].shape[1])
    np.testing.assert_array_equal(seen["staged"], seen["stack"])
    assert seen["fortran"] and list(scratch.iterdir()) == []

    def fail(self, subject):
        raise RuntimeError("boom")

    monkeypatch.setattr(ld._base._ReductionStep, "__call__", fail)
    with pytest.raises(Exception, match="boom"):
        ld.CanICA(**kw).fit(study.func)
    assert list(scratch.iterdir()) == []


@pytest.mark.slow
def test_cache_dir_reads_the_reductions_back(study, tmp_path, monkeypatch):
    import lazyconn.decomposition._base as base

    kw = {"n_components": 3, "random_state": 0, "n_init": 1, "cache_dir": tmp_path}
    imgs, conf = study.func[:2], study.reduced_confounds[:2]
    first = ld.CanICA(**kw).fit(imgs, confounds=conf)
    assert first.n_cached_ == 0

    def recomputed(self, subject):
        raise AssertionError(f"subject {subject.name} recomputed")

    with monkeypatch.context() as m:
        m.setattr(base._ReductionStep, "__call__", recomputed)
        again = ld.CanICA(**kw).fit(imgs, confounds=conf)
    assert again.n_cached_ == 2
    np.testing.assert_array_equal(again.components_, first.components_)
    # Anything that changes a reduction is part of the key.
    assert ld.CanICA(**{**kw, "n_components": 2}).fit(imgs, confounds=conf).n_cached_ == 0
    assert ld.CanICA(**kw, smoothing_fwhm=8).fit(imgs, confounds=conf).n_cached_ == 0
    assert ld.CanICA(**kw).fit(imgs).n_cached_ == 0  # no confounds
    assert ld.CanICA(**kw).fit(imgs[::-1], confounds=conf[::-1]).n_cached_ == 2


def test_single_image_input_and_params_roundtrip(study):
    est = ld.CanICA(n_components=2, random_state=0, n_init=1)
    assert ld.CanICA(**est.get_params()).get_params() == est.get_params()
    est.fit(study.func[0])
    assert est.components_.shape[0] == 2
    with pytest.raises(NotImplementedError):
        est.set_output(transform="pandas")


MALLOC_PROBE = """
import sys
import numpy as np
if sys.argv[1] == "set":
    from lazyconn.decomposition._base import bound_malloc_retention
    bound_malloc_retention()  # lazyconn.config's default
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
a = np.ones(2**24 // 8)
del a  # a 16 MiB free raises glibc's dynamic thresholds (mmap 16 MiB, trim 32 MiB)
before = rss()
blocks = [np.ones(2**21 // 8) for _ in range(12)]  # 12 x 2 MiB from the heap either way
del blocks  # all freed into the heap's top
heap = rss() - before
big = np.ones(40 * 2**20 // 8)  # above the threshold: an mmap, unmapped when freed
del big
print(heap, rss() - before)
"""


@pytest.mark.slow  # a fresh interpreter importing lazyconn
@pytest.mark.skipif(
    not __import__("sys").platform.startswith("linux"), reason="glibc malloc, /proc"
)
def test_freed_buffers_return_to_the_system():
    """With the setting, a heap top freed by a run goes back to the system (glibc's trim
    threshold stays at 128 KiB; its dynamic one, raised by a 16 MiB free, keeps 24 MiB of
    freed blocks), and buffers above the mmap threshold are returned when freed."""
    import subprocess
    import sys

    # glibc's own defaults: a LocalCluster started earlier in this process leaves
    # MALLOC_TRIM_THRESHOLD_ in os.environ (distributed's nanny sets it for its workers).
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}

    def retained(setting):
        out = subprocess.run(
            [sys.executable, "-c", MALLOC_PROBE, setting],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
            env=env,
        )
        return [float(v) for v in out.stdout.split()]

    assert retained("none")[0] > 18  # glibc's default keeps the freed 24 MiB
    heap, after_big = retained("set")
    assert heap < 6 and after_big < 6


RELEASE_PROBE = """
import sys
import numpy as np
from lazyconn.decomposition._base import bound_malloc_retention, release_freed_memory
spawned = []  # a fork of the whole process to find the C library (ldconfig -p)?
sys.addaudithook(lambda event, _: spawned.append(event) if "spawn" in event or event in (
    "subprocess.Popen", "os.fork") else None)
bound_malloc_retention()
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
before = rss()
blocks = [np.ones(2**18 // 8) for _ in range(300)]  # 300 x 256 KiB from the heap
keep = [np.ones(2**18 // 8) for _ in range(3)]  # the heap's top stays in use
del blocks
retained = rss() - before
release_freed_memory()
print(retained, rss() - before, len(spawned))
"""


@pytest.mark.slow  # a fresh interpreter importing lazyconn
@pytest.mark.skipif(
    not __import__("sys").platform.startswith("linux"), reason="glibc malloc, /proc"
)
def test_a_fit_hands_what_it_freed_back_to_the_system():
    """What ``fit`` calls last: 75 MiB of small buffers freed under the heap's top leave
    the process's RSS unless the heap is trimmed."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", RELEASE_PROBE],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    retained, after_release, spawned = (float(v) for v in out.stdout.split())
    assert retained > 60
    assert after_release < 10
    assert spawned == 0  # the C library's functions are found without a child process


def test_the_group_step_starts_from_a_trimmed_heap(study, monkeypatch):
    """The heap pages the subjects freed go back before the stack is read back from its
    scratch store and the group step runs (the group step's peak was the fit's: the seeds'
    ~365 -> ~285 MiB; at 100 subjects the stack read back onto the untrimmed heap was),
    again once the stack is dropped, before the maps are built (the seeds' group stage
    peaked there, with the stack still held), and at the end of the fit. The group step
    runs on one BLAS thread, with the objects alive before it frozen out of the garbage
    collector's passes (unfrozen after; a freeze made by someone else is left alone)."""
    import gc
    import weakref

    from lazyconn.decomposition import _base
    from lazyconn.maskers import MultiNiftiMasker

    events, stacks, blas, frozen = [], [], set(), []
    run, release, group = (
        _base._BaseDecomposition._run,
        _base._BaseDecomposition._release,
        ld.CanICA._raw_fit,
    )

    def subjects(self, *args, **kwargs):
        out = run(self, *args, **kwargs)
        events.append("subjects")
        return out

    def stack_read_back(self, data):
        events.append("stack released")
        return release(self, data)

    def group_step(self, data):
        from threadpoolctl import threadpool_info

        events.append("group")
        frozen.append(gc.get_freeze_count())
        stacks.append(weakref.ref(data))
        blas.update(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
        return group(self, data)

    def trim():
        events.append("trim" if not stacks or stacks[0]() is None else "trim (stack held)")

    def maps(self, components):
        events.append("maps")
        return inverse_transform(self, components)

    inverse_transform = MultiNiftiMasker.inverse_transform
    monkeypatch.setattr(_base, "release_freed_memory", trim)
    monkeypatch.setattr(_base._BaseDecomposition, "_run", subjects)
    monkeypatch.setattr(_base._BaseDecomposition, "_release", stack_read_back)
    monkeypatch.setattr(ld.CanICA, "_raw_fit", group_step)
    monkeypatch.setattr(MultiNiftiMasker, "inverse_transform", maps)
    ld.CanICA(n_components=2, random_state=0, n_init=1).fit(study.func[:2])
    # the trim comes before the stack is read back from its scratch store (then released),
    # and the stack is gone (its pages trimmed) before the maps are built
    assert events == [
        "subjects",
        "trim",
        "stack released",
        "group",
        "stack released",
        "trim",
        "maps",
        "trim",
    ]
    assert blas == {1}  # the group step on one BLAS thread, whatever the cores
    assert frozen[0] > 1000 and gc.get_freeze_count() == 0
    # Someone else's freeze is kept as it is, inside and after: neither frozen again nor
    # unfrozen (calls counted: the frozen count itself drops whenever a frozen object dies).
    gc.freeze()
    calls = []
    real_freeze, real_unfreeze = gc.freeze, gc.unfreeze
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze") or real_freeze())
    monkeypatch.setattr(gc, "unfreeze", lambda: calls.append("unfreeze") or real_unfreeze())
    try:
        with _base.objects_frozen():
            assert gc.get_freeze_count() > 0
        assert gc.get_freeze_count() > 0 and calls == []
    finally:
        real_unfreeze()


# ---------------------------------------------------------------------- bad input
def test_empty_list():
    with pytest.raises(ParameterError, match=r"imgs=\[\] is empty.*one or more 4-D"):
        ld.DictLearning().fit([])


def test_3d_image(study):
    vol = nib.Nifti1Image(np.ones((5, 6, 7), np.float32), np.eye(4))
    with pytest.raises(DimensionError, match=r"imgs\[1\].*\(5, 6, 7\) \(3-D\); expected 4-D"):
        ld.CanICA().fit([study.func[0], vol])


def test_runs_on_different_grids_without_target_affine(rng):
    from lazyconn.testing.imaging import synthetic_epi

    a = synthetic_epi((7, 8, 9, 20), rng)
    b = synthetic_epi((13, 11, 12, 20), rng)
    with pytest.raises(GridMismatchError, match="target_affine"):
        ld.CanICA(n_components=2).fit([a, b])


def test_n_components_larger_than_the_time_points(study):
    with (
        pytest.raises(ParameterError, match=r"n_components=500 is larger than the 400 time"),
        pytest.warns(UserWarning, match=r"4 run\(s\) have fewer time points than n_comp"),
    ):
        ld.CanICA(n_components=500).fit(study.func)


def test_confounds_count_mismatch(study):
    with pytest.raises(ParameterError, match=r"Number of confounds \(1\) must match.*\(2\)"):
        ld.DictLearning().fit(study.func[:2], confounds=study.reduced_confounds[:1])


@pytest.mark.parametrize("threshold", [2, "half", [1.0]])
def test_threshold_of_the_wrong_type(threshold, study):
    with pytest.raises(ValueError, match=r"Threshold must be None, 'auto' or float"):
        ld.CanICA(threshold=threshold).fit(study.func[:1])


def test_threshold_above_n_components(study):
    with pytest.raises(ParameterError, match="Threshold must not be higher than number of maps"):
        ld.CanICA(n_components=2, threshold=3.0).fit(study.func[:1])


def test_mask_selecting_no_voxel(study):
    img = load(study.func[0])
    empty = nib.Nifti1Image(np.zeros(img.shape[:3], np.int8), img.affine)
    with pytest.raises(ParameterError, match="mask_img is invalid as it is empty"):
        ld.CanICA(mask=empty).fit(study.func[:1])


def test_all_zero_run_warns_naming_it(study):
    from lazyconn.decomposition._base import EmptyRunWarning

    img = load(study.func[0])
    zero = nib.Nifti1Image(np.zeros(img.shape, np.float32), img.affine)
    mask = nib.load(study.mask)
    est = ld.CanICA(n_components=2, mask=mask, random_state=0, n_init=1)
    with pytest.warns(EmptyRunWarning, match=r"imgs\[1\] is constant"):
        est.fit([study.func[0], zero])
    assert np.isfinite(est.components_).all()


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"n_components": 0}, r"n_components=0 is not valid; expected an integer >= 1"),
        ({"n_components": 2.5}, r"n_components=2.5 is not valid"),
        ({"memory_budget": -1}, r"memory_budget=-1 is not valid"),
        ({"batch_size": 0}, r"batch_size=0 is not valid"),
        ({"alpha": -1}, r"alpha=-1 is not valid; expected a number > 0"),
        ({"method": "lasso"}, r"method='lasso' is not valid; expected 'cd' or 'lars'"),
        ({"reduction_ratio": 2.0}, r"reduction_ratio=2.0 is not valid"),
        ({"mask": 3}, r"mask has type int; expected None, a 3-D image"),
        ({"cache_dir": 3}, r"cache_dir.*int.*expected None or a path"),
    ],
)
def test_bad_parameters(kw, message, study):
    with pytest.raises((ParameterError, TypeError), match=message):
        ld.DictLearning(**kw).fit(study.func[:1])


def test_not_fitted_and_bad_loadings(fitted):
    from lazyconn.exceptions import NotFittedError

    with pytest.raises(NotFittedError, match="not fitted yet"):
        ld.CanICA().transform([])
    with pytest.raises(TypeError, match="'loadings' must be a list of numpy arrays; got ndarray"):
        fitted["CanICA"].inverse_transform(np.zeros((3, 4)))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("method", ["cd", "lars"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_online_learning_is_sklearns_and_the_cd_coding_exact(rng, dtype, method):
    """The dictionary is scikit-learn's ``dict_learning_online``'s bit for bit; with
    method='lars' so is the code; with 'cd' the code is the exact lasso solution on that
    dictionary, which scikit-learn's coordinate descent approaches."""
    from sklearn.decomposition import dict_learning_online

    from lazyconn.decomposition.dict_learning import _dict_learning_online, _lasso_code

    x = rng.standard_normal((400, 12)).astype(dtype)
    x[:, :3] += 4 * rng.standard_normal((400, 1)).astype(dtype)  # some structure
    init = rng.standard_normal((3, 12))
    kw = dict(alpha=1.0, batch_size=20, method=method, dict_init=init, random_state=0)
    ref, dictionary = dict_learning_online(
        x, 3, **kw, max_iter=20, verbose=0, return_code=True, shuffle=True, n_jobs=1
    )
    got = _dict_learning_online(x, 3, **kw, max_iter=20, verbose=0)
    assert got.dtype == ref.dtype == dtype
    assert np.count_nonzero(ref) and np.count_nonzero(ref == 0)  # a sparse code
    if method == "lars":
        np.testing.assert_array_equal(got, ref)
    else:
        np.testing.assert_array_equal(got, _lasso_code(x, dictionary, 1.0, 1000))
        assert_lasso_optimal(got, x, dictionary, 1.0)
        np.testing.assert_allclose(got, ref, atol=1e-3 * np.abs(ref).max())


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize(
    "dtype, path, random_state",
    [
        *[(dtype, "fast", state) for dtype in (np.float32, np.float64) for state in (0, None)],
        (np.float32, "fast, 3 threads", 0),
        (np.float32, "unchecked version", 0),
        (np.float64, "changed signature", None),
    ],
)
def test_minibatch_steps_are_sklearns_bit_for_bit(rng, dtype, path, random_state, monkeypatch):
    """The mini-batch steps code their batch with the solver scikit-learn's ``Lasso`` calls,
    its samples split between threads: the same dictionary, bit for bit, and the same draws
    from numpy's global generator (which the solver draws from); the fallbacks are
    scikit-learn's own step."""
    from sklearn.decomposition import MiniBatchDictionaryLearning

    import lazyconn.decomposition.dict_learning as dl
    from lazyconn.group import _cluster

    ours = dl._minibatch_class()
    if path == "fast, 3 threads":
        monkeypatch.setattr(_cluster, "default_n_workers", lambda: 3)
    if path.startswith("fast"):
        assert dl._cd_fast_solver() is not None and ours is not MiniBatchDictionaryLearning
    if path == "unchecked version":
        monkeypatch.setattr(dl, "CD_FAST_VERSIONS", set())
        assert dl._cd_fast_solver() is None
    if path == "changed signature":

        def solver(*args):
            raise TypeError("enet_coordinate_descent_gram() takes 11 positional arguments")

        monkeypatch.setattr(dl, "_cd_fast_solver", lambda: solver)

    x = rng.standard_normal((210, 12)).astype(dtype)  # 210 samples: a last batch of 10
    x[:, :3] += 4 * rng.standard_normal((210, 1)).astype(dtype)  # some structure
    kw = dict(n_components=3, alpha=1.0, batch_size=20, max_iter=2, tol=0, max_no_improvement=None)
    fits = []
    for cls in (MiniBatchDictionaryLearning, ours):
        np.random.seed(5)
        init = np.random.standard_normal((3, 12)).astype(dtype)
        est = cls(**kw, dict_init=init, random_state=random_state).fit(x)
        fits.append((est.components_, est.n_steps_, np.random.randint(2**31)))
    assert fits[0][1] == 22
    np.testing.assert_array_equal(fits[1][0], fits[0][0])
    assert fits[1][1:] == fits[0][1:]


def assert_lasso_optimal(code, x, dictionary, alpha, rtol=1e-6):
    """The lasso's optimality conditions, in float64: on the support the correlation of the
    residual with each atom is alpha times the sign; off it, at most alpha."""
    code, x, d = (np.asarray(a, np.float64) for a in (code, x, dictionary))
    corr = (x - code @ d) @ d.T
    on = code != 0
    scale = alpha + np.abs(x @ d.T).max()
    assert (np.abs(corr - alpha * np.sign(code))[on] <= rtol * scale).all()
    assert (np.abs(corr)[~on] <= alpha + rtol * scale).all()


def _lasso_problem(rng, n_voxels, n_atoms, n_features, condition):
    """Voxels made of a few atoms each plus noise, on a dictionary whose Gram matrix has the
    given condition number (the seeds' study's is ~1e4)."""
    u, _ = np.linalg.qr(rng.standard_normal((n_features, n_atoms)))
    v, _ = np.linalg.qr(rng.standard_normal((n_atoms, n_atoms)))
    dictionary = (v * np.geomspace(1, condition**-0.5, n_atoms)) @ u.T
    truth = rng.standard_normal((n_voxels, n_atoms)) * (rng.random((n_voxels, n_atoms)) < 0.4)
    x = 30 * truth @ dictionary + rng.standard_normal((n_voxels, n_features))
    return x, dictionary


@pytest.mark.parametrize("condition", [1.0, 1e2, 1e4])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lasso_code_is_the_exact_solution(rng, dtype, condition, monkeypatch):
    """Against the optimality conditions, a closed form (orthonormal atoms: the soft
    threshold of the products) and scikit-learn's float64 ``sparse_encode``; blocks of
    voxels change nothing."""
    from sklearn.decomposition import sparse_encode

    import lazyconn.decomposition.dict_learning as dl

    x, dictionary = _lasso_problem(rng, 1000, 6, 40, condition)
    x, dictionary = x.astype(dtype), dictionary.astype(dtype)
    alpha = 2.0
    got = dl._lasso_code(x, dictionary, alpha, 1000)
    assert got.dtype == dtype
    assert 0.2 < np.mean(got == 0) < 0.8  # a sparse code, not a trivial one
    assert_lasso_optimal(got, x, dictionary, alpha, rtol=1e-6 if dtype == np.float32 else 1e-12)
    if condition == 1.0:
        products = np.asarray(x, np.float64) @ np.asarray(dictionary, np.float64).T
        soft = np.sign(products) * np.maximum(np.abs(products) - alpha, 0)
        np.testing.assert_allclose(got, soft, rtol=1e-6, atol=1e-6 * np.abs(soft).max())
    ref = sparse_encode(
        np.asarray(x, np.float64),
        np.asarray(dictionary, np.float64),
        algorithm="lasso_cd",
        alpha=alpha,
        max_iter=100_000,
    )
    np.testing.assert_allclose(got, ref, atol=1e-5 * np.abs(ref).max())
    monkeypatch.setattr(dl, "LASSO_BLOCK", 700)  # uneven blocks
    np.testing.assert_allclose(
        dl._lasso_code(x, dictionary, alpha, 1000), got, rtol=1e-12, atol=1e-12
    )


def test_lasso_code_edge_cases(rng):
    """A zero atom keeps a zero coefficient (as scikit-learn); a repeated atom (a singular
    Gram matrix) still gives an optimal code; max_iter too small warns once, with the
    count; non-finite input is scikit-learn's ValueError."""
    from sklearn.exceptions import ConvergenceWarning

    from lazyconn.decomposition.dict_learning import _lasso_code

    x, dictionary = _lasso_problem(rng, 500, 4, 20, 1e3)
    zero = np.vstack([dictionary, np.zeros(20)])
    got = _lasso_code(x, zero, 2.0, 1000)
    assert not got[:, -1].any()
    np.testing.assert_allclose(got[:, :-1], _lasso_code(x, dictionary, 2.0, 1000), atol=1e-9)
    repeated = np.vstack([dictionary, dictionary[:1]])
    assert_lasso_optimal(_lasso_code(x, repeated, 2.0, 1000), x, repeated, 2.0, rtol=1e-6)
    with pytest.warns(ConvergenceWarning, match=r"lasso coding of \d+ of 500 voxels did not"):
        _lasso_code(x, dictionary, 2.0, 2)
    x[3, 4] = np.nan
    with pytest.raises(ValueError, match="resulted in non-finite parameter values"):
        _lasso_code(x, dictionary, 2.0, 1000)


@pytest.mark.slow
def test_reductions_on_a_distributed_cluster_equal_the_local_ones(study, group_client):
    kw = {"n_components": 3, "random_state": 0, "n_init": 1}
    local = ld.CanICA(**kw).fit(study.func[:2], confounds=study.reduced_confounds[:2])
    remote = ld.CanICA(**kw, client=group_client).fit(
        study.func[:2], confounds=study.reduced_confounds[:2]
    )
    np.testing.assert_allclose(remote.components_, local.components_, atol=1e-6)
