"""Shared machinery of the decomposition estimators: masking, per-subject reductions, scoring.

The per-subject reduction (read -> smooth -> mask -> clean -> top singular vectors) is one
task per subject on the group engine (:mod:`lazyconn.group._engine`): each subject's chunk
graph runs inside its task, on dask's current scheduler, a ``LocalCluster`` or a remote
cluster, and only the small (k, V) reduction comes back.
"""

from __future__ import annotations

import contextlib
import numbers
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import nibabel as nib
import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, clone

from lazyconn._progress import log_step
from lazyconn._utils import LOCAL_SCHEDULER, check_fitted, check_type, is_path_like, warn
from lazyconn.config import DECOMPOSITION_MEMORY_BUDGET, DECOMPOSITION_SUBJECT_BYTES
from lazyconn.exceptions import (
    DimensionError,
    LazyconnWarning,
    ParameterError,
    ParameterTypeError,
)
from lazyconn.group._cache import ResultStore, input_identity, params_token
from lazyconn.group._engine import ONE_BLAS_THREAD, Subject, run_group
from lazyconn.group._report import StageTimer
from lazyconn.image import LazyImage, load
from lazyconn.maskers import MultiNiftiMasker, NiftiMapsMasker, NiftiMasker
from lazyconn.ops.reduction import (
    GramAccumulator,
    flip_rows,
    gram,
    piece_buffer,
    project,
    project_columns,
    randomized_coefficients,
    top_eigenvectors,
)
from lazyconn.ops.voxels import VoxelStream


class EmptyRunWarning(LazyconnWarning):
    """A subject's run is constant (all zeros after cleaning) inside the mask."""


_MALLOC_THRESHOLD_SET: list[int] = []


def bound_malloc_retention() -> None:
    """Apply ``lazyconn.config.MALLOC_MMAP_THRESHOLD`` to this process's malloc (glibc
    only, once per process; a no-op elsewhere or when it is None)."""
    from lazyconn import config  # read at call time: the setting can be changed

    value = config.MALLOC_MMAP_THRESHOLD
    if value is None or value in _MALLOC_THRESHOLD_SET:
        return
    mallopt = _glibc_function("mallopt")
    if mallopt is None:
        return
    m_mmap_threshold = -3  # glibc's malloc.h
    if mallopt(m_mmap_threshold, int(value)) == 1:
        _MALLOC_THRESHOLD_SET.append(value)


def _glibc_function(name: str):
    """The C library's function ``name``, or None where there is none (not glibc: macOS,
    musl without ``mallopt``...).

    Looked up among the process's own symbols (``dlopen(NULL)``), where the C library
    is: ``ctypes.util.find_library("c")`` ran ``/sbin/ldconfig -p`` on every call, a fork
    of the whole process (~300 MiB at a seed-001 pipeline's trims, counted twice by a
    process-tree RSS sampler that caught the child before its exec).
    """
    import ctypes

    try:
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> None:
    """(glibc) Hand the heap's free pages back to the system (``malloc_trim(0)``, every
    arena): what a stage freed no longer counts in the RSS of the stages that follow it.
    Called after a fit's reductions (the seeds' group step then peaks at ~285 MiB, not
    ~365) and at its end (a seed-001 pipeline's connectome stage started ~60 MiB lower, its
    peak 404 -> 381 MiB). A few ms; a no-op where there is no ``malloc_trim``.

    No ``gc.collect()`` first: a fit's buffers are freed by reference counting, and a full
    collection (~170 000 objects tracked after the imports) took 0.15-0.4 s of the fit and
    returned no memory (same RSS after the trim with or without it).
    """
    malloc_trim = _glibc_function("malloc_trim")
    if malloc_trim is not None:
        malloc_trim(0)


@contextlib.contextmanager
def objects_frozen():
    """``gc.freeze()`` for the duration: the objects alive at entry (mostly the imported
    modules' ~150 000) are left out of the cyclic garbage collector's passes until exit
    (``gc.unfreeze()``, which hands them back to its oldest generation); objects made
    inside are collected as usual. A full collection over all of them took ~0.1 s of the
    seeds' group step (the one that ran there, triggered by its imports). Nothing is
    done when something else froze objects already (its freeze is left as it is).
    """
    import gc

    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


# ---------------------------------------------------------------------- per-subject step
#: Oversamples of scikit-learn's ``randomized_svd`` (its default, as nilearn calls it).
N_OVERSAMPLES = 10


class CoreThreads:
    """Threads on the usable cores, made once for a group-step computation that calls
    GIL-releasing numpy or Cython code many times (FastICA's cubes, the mini-batch lasso
    steps). A context manager; :meth:`map` runs a function on one part of the items per
    thread, or on all of them at once with one core or one part."""

    def __enter__(self):
        from concurrent.futures import ThreadPoolExecutor

        from lazyconn.group._cluster import default_n_workers

        self.n_threads = default_n_workers()
        self._pool = ThreadPoolExecutor(self.n_threads) if self.n_threads > 1 else None
        return self

    def __exit__(self, *exc):
        if self._pool is not None:
            self._pool.shutdown()

    def map(self, function, items) -> None:
        parts = [part for part in np.array_split(items, self.n_threads) if len(part)]
        if self._pool is None or len(parts) < 2:
            function(items)
        else:
            list(self._pool.map(function, parts))


def subject_svd_plan(n_voxels: int, n_times: int, n_components: int) -> tuple[str, int]:
    """nilearn's ``_fast_svd`` choice for a run ``Xᵀ`` (V, T) reduced to ``n_components``:
    ``("full", 0)`` (an exact SVD: at most 500 voxels and volumes, or ``n_components`` >=
    0.8 min(V, T)), else ``("randomized", n_iter)`` (scikit-learn's ``n_iter="auto"``: 7
    when ``n_components`` < 0.1 min(V, T), else 4), or ``("randomized_in_memory", n_iter)``
    when scikit-learn transposes (V < T: the run is then smaller than its Gram matrix)."""
    small = min(n_voxels, n_times)
    if max(n_voxels, n_times) <= 500 or not 1 <= n_components < 0.8 * small:
        return "full", 0
    n_iter = 7 if n_components < 0.1 * small else 4
    return ("randomized_in_memory" if n_voxels < n_times else "randomized"), n_iter


def subject_random_states(random_state, n_voxels: int, n_times: list, n_components: int):
    """The state of the random generator each subject's randomized SVD starts from (None
    for an exact SVD), drawn in subject order as nilearn (``n_jobs=1``) draws them:
    ``check_random_state(random_state)`` per subject, so an int gives every subject the same
    test matrix, and a ``RandomState`` (or None: numpy's global one) advances from subject
    to subject, and is left where nilearn leaves it for the group step."""
    from sklearn.utils import check_random_state

    states = []
    for t in n_times:
        n = min(n_components, t)
        solver, _ = subject_svd_plan(n_voxels, t, n)
        rng = check_random_state(random_state)
        if solver == "full":
            states.append(None)
            continue
        states.append(rng.get_state())
        rows = n_voxels if solver == "randomized_in_memory" else t
        rng.normal(size=(rows, n + N_OVERSAMPLES))  # advance as the range finder does
    return states


def reduce_run(x, n_components: int, keep_bytes: int, rng_state=None) -> np.ndarray:
    """Top-``n_components`` reduction (k, V) of a cleaned run ``x`` (T, V) as nilearn's
    ``_fast_svd(xᵀ, k, random_state)`` computes it: ``S·Vᵀ`` of an exact SVD, or of
    scikit-learn's randomized SVD whose generator starts at ``rng_state``
    (:func:`subject_random_states`; None: exact).

    ``x`` is a lazy dask array or a :class:`lazyconn.ops.voxels.VoxelStream` (the run's
    cleaned columns, block by block). Both go through the (T, T) Gram matrix
    (:mod:`lazyconn.ops.reduction`). A stream is never held, whatever its length: it
    holds only its open voxel groups (:class:`~lazyconn.ops.voxels.VoxelStream`) and is
    read once, its cleaned columns written to a temporary file for the projection
    (:class:`_Spill`; read twice only if the disk has no room). Keeping a seed run's
    cleaned (T, V) matrix in memory instead took ~19 MiB more per subject in flight (the
    file's pages are the system's cache, not the process's memory) and saved no measurable
    time. A graph whose (T, V) matrix takes at most ``keep_bytes`` is computed once and
    kept for both products; a longer one is read twice (Gram matrix, then projection),
    holding the chunks its order keeps alive. Returns ``x``'s dtype.
    """
    t, v = x.shape
    k = int(min(n_components, t))
    solver, n_iter = subject_svd_plan(v, t, k)
    if rng_state is None:
        solver = "full"
    if solver != "full":
        rng = np.random.RandomState()
        rng.set_state(rng_state)
    streamed = isinstance(x, VoxelStream)
    if solver == "randomized_in_memory":
        from sklearn.utils.extmath import randomized_svd

        whole = _stream_into(x, gram=False)[0] if streamed else np.asarray(x.compute())
        u, s, _ = randomized_svd(whole.T, k, n_iter=n_iter, flip_sign=True, random_state=rng)
        return (u.T * s[:, None]).astype(x.dtype, copy=False)
    with contextlib.ExitStack() as scope:
        spill = None
        if streamed:
            spill = scope.enter_context(_Spill(x.shape[0], x.dtype))
            g = _stream_into(x, keep=False, spill=spill)[1]
        else:
            if x.nbytes <= keep_bytes:
                (x,) = dask.persist(x)
            g = gram(x).compute()
        if solver == "full":
            c = top_eigenvectors(g, k)[0].T
        else:
            # The test matrix as scikit-learn draws it (float64, cast to the data's float32).
            omega = rng.normal(size=(t, k + N_OVERSAMPLES))
            if x.dtype == np.float32:
                omega = omega.astype(np.float32)
            c = randomized_coefficients(g, omega, k, n_iter)
        if not streamed:
            b = np.asarray(project(c, x).compute())
        else:
            b = np.empty((c.shape[0], v))
            buffer = piece_buffer(t)
            # the cleaned columns read back, or (no room on the disk) a second pass
            for cols, values in spill.read() if spill.ready() else x:
                b[:, cols] = project_columns(c, values, buffer)
    return flip_rows(b).astype(x.dtype, copy=False)


def _stream_into(stream, keep=True, gram=True, spill=None):
    """One pass over a stream: ``(kept, gram)``, the (T, V) matrix (Fortran order; None
    unless ``keep``) and its (T, T) Gram matrix (None unless ``gram``), accumulated block
    by block; each piece is also written to ``spill`` (a :class:`_Spill`) if given."""
    t, v = stream.shape
    kept = np.empty((t, v), dtype=stream.dtype, order="F") if keep else None
    g = GramAccumulator(t) if gram else None
    for cols, values in stream:
        if gram:
            g.add(values)
        if keep:
            kept[:, cols] = values
        if spill is not None:
            spill.write(cols, values)
    return kept, (g.result() if gram else None)


class _Spill:
    """A streamed run's cleaned columns, piece by piece, in an anonymous temporary file (in
    :func:`tempfile.gettempdir`, as ``convert``'s staging; gone when closed, or when the
    process ends), read back for the projection: the run is read, smoothed and cleaned
    once instead of twice (one HCP-size run: ~35 s of CPU less), for its (T, V) bytes of
    local disk while its task runs. If the disk has no room, the file is dropped and the
    projection reads the run again (:meth:`ready` is False)."""

    def __init__(self, n_rows: int, dtype):
        self.n_rows, self.dtype = int(n_rows), np.dtype(dtype)
        self.columns: list[np.ndarray] = []
        # closed by __exit__ (reduce_run holds it in a with block)
        self.file = tempfile.TemporaryFile(prefix="lazyconn-run-")  # noqa: SIM115
        self.complete = True

    def write(self, cols: np.ndarray, values: np.ndarray) -> None:
        if not self.complete:
            return
        rows = np.asfortranarray(values, dtype=self.dtype).T  # (n, T), C order: its columns
        try:
            self.file.write(memoryview(rows).cast("B"))
        except OSError:  # no room: the projection takes a second pass instead
            self._give_up()
            return
        self.columns.append(cols)

    def ready(self) -> bool:
        """Whether every piece is in the file (flushed); False when the disk had no room."""
        if self.complete:
            try:
                self.file.flush()
            except OSError:
                self._give_up()
        return self.complete

    def _give_up(self) -> None:
        self.close()
        self.complete = False

    def read(self):
        """The pieces as written, ``(cols, values)`` with ``values`` (T, n), read into one
        buffer (the largest piece's): each piece is valid until the next is read."""
        self.file.seek(0)
        if not self.columns:
            return
        buffer = np.empty(max(c.size for c in self.columns) * self.n_rows, dtype=self.dtype)
        for cols in self.columns:
            rows = buffer[: cols.size * self.n_rows].reshape(cols.size, self.n_rows)
            if self.file.readinto(memoryview(rows).cast("B")) != rows.nbytes:
                raise OSError("the temporary file of a run's cleaned columns was cut short")
            yield cols, rows.T

    def close(self) -> None:
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


#: Parameters nilearn's ``check_embedded_masker`` forwards from the estimator without comparing.
_NOT_COMPARED_WITH_MASKER = frozenset({"memory", "memory_level", "verbose", "copy", "n_jobs"})


@dataclass(frozen=True)
class ReductionSubject(Subject):
    """A subject and the state its randomized SVD's generator starts from."""

    rng_state: Any = None


class _ReductionStep:
    """Picklable per-subject step: masker.transform (lazy) -> ``reduce_run``.

    ``n_components=None`` keeps every component (``score``); ``components`` given: also
    return the score's partial sums instead of the reduction.
    """

    def __init__(self, masker, n_components, keep_bytes, components=None):
        self.masker = masker
        self.n_components = n_components
        self.keep_bytes = keep_bytes
        self.components = components

    def __call__(self, subject: Subject) -> np.ndarray:
        bound_malloc_retention()  # in worker processes too
        # A stream of the run's cleaned blocks where the run allows it (its time axis one
        # chunk), else the masker's graph (a .nii.gz read in time slabs).
        x = self.masker._stream_run(subject.img, confounds=subject.confounds)
        if x is None:
            x = self.masker.transform(subject.img, confounds=subject.confounds, compute=False)
        k = x.shape[0] if self.n_components is None else self.n_components
        b = reduce_run(x, k, self.keep_bytes, getattr(subject, "rng_state", None))
        if self.components is None:
            return b
        return _score_partials(b.astype(np.float64), self.components)


# ---------------------------------------------------------------------- input checks
def _name(img, i: int) -> str:
    if is_path_like(img):
        return f"imgs[{i}] ({os.fspath(img)!r})"
    src = img.source if isinstance(img, LazyImage) else None
    if src is None and isinstance(img, nib.spatialimages.SpatialImage):
        src = img.get_filename()
    return f"imgs[{i}] ({src!r})" if src else f"imgs[{i}]"


def _as_run_list(imgs) -> list:
    if isinstance(imgs, (str, os.PathLike, LazyImage, nib.spatialimages.SpatialImage)):
        return [imgs]
    if not isinstance(imgs, (list, tuple)):
        if hasattr(imgs, "__iter__") and not isinstance(imgs, np.ndarray):
            return list(imgs)
        raise ParameterTypeError(
            f"imgs has type {type(imgs).__name__}; expected a 4-D image (path, Zarr store, "
            "URL, nibabel image or LazyImage) or a list of them, one run per subject."
        )
    return list(imgs)


def _check_runs(imgs) -> list[LazyImage]:
    """Open every run (headers only) and check it is 4-D."""
    if len(imgs) == 0:
        raise ParameterError(
            "imgs=[] is empty: need one or more 4-D images (one run per subject), an empty "
            "list was given (a glob that matched no file?)."
        )
    runs = []
    for i, img in enumerate(imgs):
        run = load(img)
        if run.ndim != 4:
            raise DimensionError(
                f"{_name(img, i)} has shape {run.shape} ({run.ndim}-D); expected 4-D runs "
                "(x, y, z, time), one per subject. Several volumes of one run: stack them "
                "first (e.g. lazyconn.image.concat_imgs)."
            )
        runs.append(run)
    return runs


def _check_confounds(confounds, n: int) -> list:
    if confounds is None:
        return [None] * n
    if not isinstance(confounds, (list, tuple)):
        raise ParameterTypeError(
            f"confounds has type {type(confounds).__name__}; expected None or a list with one "
            f"entry per image ({n})."
        )
    if len(confounds) != n:
        raise ParameterError(
            f"Number of confounds ({len(confounds)}) must match number of images ({n}); "
            "expected one confounds entry (or None) per run."
        )
    return list(confounds)


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_positive_int(name: str, value) -> None:
    if not _is_int(value) or value < 1:
        raise ParameterError(f"{name}={value!r} is not valid; expected an integer >= 1.")


# ---------------------------------------------------------------------- score helpers
def _score_partials(b: np.ndarray, components: np.ndarray) -> np.ndarray:
    """The sums over one subject's rotated run ``b`` (T, V) that the score needs.

    ``[count, Σb, Σb², rss, Σ_r p_r (K), Σ_r p_r² (K)]`` with ``p = b Cᵀ`` the projections
    on the unit-norm components C (K, V) and ``rss`` the residual sum of squares of
    nilearn's per-row ``LinearRegression(fit_intercept=True)`` on C (nilearn then subtracts
    ``coef_ · C``, not the intercept). Sums over subjects give the study's values.
    """
    from sklearn.linear_model import LinearRegression

    p = b @ components.T
    lr = LinearRegression(fit_intercept=True).fit(components.T, b.T)
    rss = float(((b - lr.coef_ @ components) ** 2).sum())
    return np.concatenate([[b.size, b.sum(), (b**2).sum(), rss], p.sum(0), (p**2).sum(0)])


# ---------------------------------------------------------------------- estimator base
class _BaseDecomposition(TransformerMixin, BaseEstimator):
    """Common ``fit`` / ``transform`` / ``inverse_transform`` / ``score`` of CanICA and
    DictLearning (nilearn's ``_BaseDecomposition``)."""

    # ------------------------------------------------------------------ parameters
    def _check_base_params(self):
        _check_positive_int("n_components", self.n_components)
        image_like = is_path_like(self.mask) or isinstance(
            self.mask, (LazyImage, nib.spatialimages.SpatialImage, NiftiMasker)
        )
        if self.mask is not None and not image_like:
            raise ParameterTypeError(
                f"mask has type {type(self.mask).__name__}; expected None, a 3-D image "
                "(path, nibabel image, LazyImage) or a lazyconn NiftiMasker / "
                "MultiNiftiMasker."
            )
        budget = self.memory_budget
        if budget is not None and (not _is_int(budget) or budget < 0):
            raise ParameterError(
                f"memory_budget={budget!r} is not valid; expected None or a number of bytes >= 0."
            )
        check_type("verbose", self.verbose, (numbers.Integral, bool), "an integer")
        if self.cache_dir is not None:
            check_type("cache_dir", self.cache_dir, (str, os.PathLike), "None or a path / URL")

    def _embedded_masker(self):
        """A MultiNiftiMasker from the estimator's parameters (nilearn's
        ``check_embedded_masker``); a given masker is copied with its own parameters."""
        if isinstance(self.mask, NiftiMasker):
            self._warn_overriding(self.mask)
            fitted = self.mask.__sklearn_is_fitted__()
            masker = self.mask if fitted else clone(self.mask)
            return masker, fitted
        dtype = self.dtype
        is_auto = isinstance(dtype, str) and dtype == "auto"
        if dtype is not None and not is_auto and np.dtype(dtype).kind != "f":
            dtype = None  # nilearn: integer dtypes only apply to transform's output
        masker = MultiNiftiMasker(
            mask_img=self.mask,
            smoothing_fwhm=self.smoothing_fwhm,
            standardize=self.standardize,
            standardize_confounds=self.standardize_confounds,
            detrend=self.detrend,
            low_pass=self.low_pass,
            high_pass=self.high_pass,
            t_r=self.t_r,
            target_affine=self.target_affine,
            target_shape=self.target_shape,
            mask_strategy=self.mask_strategy,
            mask_args=self.mask_args,
            dtype=dtype,
            memory=self.memory,
            memory_level=max(0, self.memory_level - 1),
            n_jobs=self.n_jobs,
            verbose=max(0, int(self.verbose) - 1),  # nilearn's check_embedded_masker
        )
        return masker, False

    def _warn_overriding(self, masker) -> None:
        """nilearn's notice when a given masker's parameters replace the estimator's own
        (``check_embedded_masker``: the same parameters compared, the same message)."""
        ours, theirs = self.get_params(deep=False), masker.get_params(deep=False)
        conflicts = []
        for name in sorted(set(ours) & set(theirs) - _NOT_COMPARED_WITH_MASKER):
            try:
                differ = bool(np.any(theirs[name] != ours[name]))
            except ValueError:  # arrays of different shapes
                differ = True
            if differ:
                conflicts.append(
                    f"Parameter {name} :\n    Masker parameter {theirs[name]}"
                    f" - overriding estimator parameter {ours[name]}\n"
                )
        if conflicts:
            warn(
                "Overriding provided-default estimator parameters with provided masker "
                "parameters :\n" + "".join(conflicts)
            )

    def _budget(self) -> int:
        return DECOMPOSITION_MEMORY_BUDGET if self.memory_budget is None else self.memory_budget

    # ------------------------------------------------------------------ fit
    def fit(self, imgs, y=None, confounds=None):
        """Compute the mask and the components across subjects.

        Parameters
        ----------
        imgs : 4-D image or list of 4-D images
            One run per subject: paths (``.nii``, ``.nii.gz``, Zarr stores, URLs), nibabel
            images or LazyImages (anything :func:`lazyconn.load` opens).
        y : None
            Ignored (scikit-learn API).
        confounds : list, optional
            One entry per run (array, DataFrame, CSV/TSV path, or None), passed to
            :func:`lazyconn.signal.clean`.

        Returns
        -------
        self
        """
        del y
        with LOCAL_SCHEDULER:
            return self._fit(imgs, confounds)

    def _fit(self, imgs, confounds):
        self._check_base_params()
        self._check_params()
        imgs = _as_run_list(imgs)
        runs = _check_runs(imgs)
        confounds = _check_confounds(confounds, len(imgs))
        bound_malloc_retention()
        timer = StageTimer()
        masker, fitted = self._embedded_masker()
        with timer("mask"):
            if not fitted:
                if masker.mask_img is None:
                    masker.fit(runs)
                else:
                    masker.fit()
        self.masker_ = masker
        self.mask_img_ = masker.mask_img_
        self._log("Loading data")
        with timer("reductions"):
            # (trims the heap the subjects freed before the stack is read back and the
            # group step runs: seeds, 20 x 168, the group stage's peak ~365 -> ~285 MiB)
            data = self._mask_and_reduce(imgs, runs, confounds)
        with timer("group"), objects_frozen():
            try:
                # On one BLAS thread, as the subjects: the maps then do not depend on the
                # number of cores (a BLAS thread count changes the last bits of the group
                # SVD, and DictLearning's online learning amplifies them), its products are
                # too small to share (seeds: 1.1 s of CPU instead of 1.5-1.9), and OpenBLAS's
                # other thread does not fill its packing buffer (~9 MiB in each thread, kept
                # for the life of the process: the seeds' group stage peaked ~19 MiB higher).
                with ONE_BLAS_THREAD:
                    self._raw_fit(data)
            finally:
                self._release(data)
            # The maps are built without the stack (the seeds' 20 x 168: 18 MiB), on the
            # heap its pages and the group step's went back to.
            del data
            release_freed_memory()
            self.components_img_ = self.masker_.inverse_transform(self.components_)
        self._fit_maps_masker()
        release_freed_memory()  # the stages after a fit start from what it keeps
        # The fit's stages, then the per-subject pass's own (run_group's).
        self.timings_ = {**timer.seconds, **self.timings_}
        return self

    def _log(self, message: str) -> None:
        """nilearn's ``[Class.fit] message`` step line at ``verbose >= 1`` (on stderr)."""
        if self.verbose:
            log_step(f"{type(self).__name__}.fit", message)

    def _subjects(self, imgs, runs, confounds, rng_states=None, params=None) -> list[Subject]:
        """One subject per run, named by its index; with ``params`` (the cache's token of
        the fitted masker and the reduction) keyed by its inputs' identity, the parameters
        and its random state.

        When the subjects run in this process (dask's local schedulers, no distributed
        client), each subject's image is its run as ``_check_runs`` opened it: a task
        then does not open the store again (~10 ms of GIL-holding Python per seed subject,
        which two threads wait for in turn). Elsewhere the workers open ``imgs`` themselves.
        """
        from dask.base import tokenize

        from lazyconn.group._cluster import default_distributed_client

        here = self.client is None and default_distributed_client() is None
        states = [None] * len(imgs) if rng_states is None else rng_states
        subjects = []
        for i, (img, conf, state) in enumerate(zip(imgs, confounds, states, strict=True)):
            key = f"{i}"
            if params is not None:
                key = tokenize(input_identity(img), input_identity(conf), params, state)
            opened = runs[i] if here else img
            subjects.append(ReductionSubject(f"{i}", opened, conf, key=key, rng_state=state))
        return subjects

    def _mask_and_reduce(self, imgs, runs, confounds):
        """Every subject's reduction, stacked in subject order -> (Σ k_s, V) data.

        While the subjects run, each reduction is written to a scratch file
        (:class:`~lazyconn.decomposition._stack.ScratchStack`, in column blocks), so that
        the stack is not resident next to the subjects in flight: held in memory,
        Fortran-ordered as nilearn's, every subject's rows touch every page of it from the
        first subject on (at 100 seed subjects, 93 MB on top of the reductions stage's
        peak). Then, when it fits ``memory_budget``, the stack is read back into memory
        (Fortran order, block by block) for the group step; else the scratch stack itself
        is returned, and the group step reads it in column blocks.
        """
        n_voxels = self.masker_.n_elements_
        k = self.n_components
        short = [_name(imgs[i], i) for i, r in enumerate(runs) if r.shape[3] < k]
        if short:
            warn(
                f"{len(short)} run(s) have fewer time points than n_components={k}: "
                f"{', '.join(short)}; their reductions keep all their time points (as nilearn).",
                LazyconnWarning,
            )
        rows = [min(k, r.shape[3]) for r in runs]
        n_rows = int(np.sum(rows))
        if n_rows < k:
            raise ParameterError(
                f"n_components={k} is larger than the {n_rows} time points of all runs "
                "together; expected n_components <= the total number of volumes."
            )
        dtype = self._data_dtype(runs)
        offsets = np.concatenate([[0], np.cumsum(rows)])
        states = subject_random_states(self.random_state, n_voxels, [r.shape[3] for r in runs], k)
        store = params = None
        if self.cache_dir is not None:
            store = ResultStore(self.cache_dir)
            params = params_token(self.masker_, extra={"reduction": k, "dtype": dtype.str})
        subjects = self._subjects(imgs, runs, confounds, states, params)
        in_memory = n_rows * n_voxels * dtype.itemsize <= self._budget()
        data = self._stack_ = self._scratch_stack((n_rows, n_voxels), dtype)
        empty = []

        def sink(subject, block):
            i = int(subject.name)
            if not np.any(block):
                empty.append(i)
            data.write_rows(offsets[i], block)

        step = _ReductionStep(self.masker_, k, DECOMPOSITION_SUBJECT_BYTES)
        try:
            self._run(step, subjects, sink, store)
        except BaseException:
            self._release(None)
            raise
        for i in sorted(empty):
            warn(
                f"{_name(imgs[i], i)} is constant (all zeros after cleaning) inside the "
                "mask: it adds nothing to the components.",
                EmptyRunWarning,
            )
        # The stack and the group step start from what the subjects left, not from the heap
        # pages they freed: trimmed after the stack was read back, the two added up (100
        # seed subjects: the fit's peak ~390 MiB, against the reductions' ~375).
        release_freed_memory()
        if not in_memory:
            return data
        stack = data.read()
        self._release(None)
        return stack

    def _run(self, step, subjects, sink, store=None):
        out = run_group(
            step,
            subjects,
            chunk_fn=None,
            combine_fn=None,
            store=store,
            client=self.client,
            n_workers=self.n_workers,
            progress=bool(self.verbose),
            sink=sink,
        )
        self.timings_ = dict(out["timings"])
        self.n_cached_ = out["n_cached"]

    def _data_dtype(self, runs):
        """nilearn: float64 stacks if the reductions are float64, else float32."""
        first = runs[0].dtype
        out = self.masker_._output_dtype(first)
        dt = np.dtype(first if out is None else out)
        return np.dtype(np.float64) if dt == np.float64 else np.dtype(np.float32)

    def _scratch_stack(self, shape, dtype):
        """A :class:`~lazyconn.decomposition._stack.ScratchStack` in a new temporary
        folder (under ``memory`` when it is a path), removed by :meth:`_release`. Not
        compressed: each subject's rows are written by the thread that hands the next
        subject to a worker (zstd took ~25 ms of it per subject, for a few % on noise-like
        float rows), and the group step reads the blocks back several times."""
        from lazyconn.decomposition._stack import ScratchStack

        base = self.memory if isinstance(self.memory, (str, os.PathLike)) else None
        if base is not None:
            Path(base).mkdir(parents=True, exist_ok=True)
        self._stack_folder_ = tempfile.mkdtemp(prefix="lazyconn-decomposition-", dir=base)
        return ScratchStack(os.path.join(self._stack_folder_, "stack"), shape, dtype)

    def _release(self, data):
        """Delete the scratch folder (the stack and any file the group step left)."""
        stack = getattr(self, "_stack_", None)
        if stack is not None:
            stack.close()
            self._stack_ = None
        folder = getattr(self, "_stack_folder_", None)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
            self._stack_folder_ = None

    def _fit_maps_masker(self):
        self.maps_masker_ = NiftiMapsMasker(
            self.components_img_,
            self.masker_.mask_img_,
            resampling_target="maps",
            standardize=None,
            dtype=self.dtype,
        )
        try:
            self.maps_masker_.fit()
        except ValueError as exc:
            if "contains no map" in str(exc):
                raise ParameterError(
                    "No component found in data: every component is zero (an all-zero "
                    "study, or a threshold that removed everything)."
                ) from exc
            raise

    # ------------------------------------------------------------------ fitted API
    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "components_")

    def _check_fitted(self) -> None:
        check_fitted(self)

    @property
    def n_elements_(self) -> int:
        """Number of components (nilearn's ``n_elements_``)."""
        return self.maps_masker_.n_elements_

    def transform(self, imgs, confounds=None):
        """Project the data into the components (least squares on the maps).

        Parameters
        ----------
        imgs : 4-D image or list of 4-D images
            Data to project (one run per element).
        confounds : list, optional
            One entry per run, passed to :func:`lazyconn.signal.clean`.

        Returns
        -------
        list of numpy.ndarray
            One (n_samples, n_components) array per run. As in nilearn, no smoothing,
            detrending or standardisation is applied at this stage.
        """
        self._check_fitted()
        imgs = _as_run_list(imgs)
        confounds = _check_confounds(confounds, len(imgs))
        return [
            self.maps_masker_.transform(img, confounds=c)
            for img, c in zip(imgs, confounds, strict=True)
        ]

    def inverse_transform(self, loadings):
        """Images ``loadings @ components_`` in voxel space.

        Parameters
        ----------
        loadings : list of numpy.ndarray
            One (n_samples, n_components) array per run.

        Returns
        -------
        list of nibabel.Nifti1Image
        """
        self._check_fitted()
        if not isinstance(loadings, list):
            raise ParameterTypeError(
                f"'loadings' must be a list of numpy arrays; got {type(loadings).__name__}."
            )
        return [self.maps_masker_.inverse_transform(x) for x in loadings]

    def score(self, imgs, y=None, confounds=None, per_component=False):
        """Explained variance of ``imgs`` by the components (nilearn's ``score``).

        Parameters
        ----------
        imgs : 4-D image or list of 4-D images
            Data to score.
        y : None
            Ignored.
        confounds : list, optional
            One entry per run.
        per_component : bool, default=False
            One ratio per component (True) or one for the set of components.

        Returns
        -------
        float or numpy.ndarray (n_components,)

        Notes
        -----
        As nilearn, the ratio is computed on every run rotated onto its temporal singular
        vectors (full rank). lazyconn accumulates the sums it needs per subject on the
        group engine, so the stacked data are never held; each subject's rotated run
        (T, V) is held once inside its task.
        """
        del y
        self._check_fitted()
        imgs = _as_run_list(imgs)
        runs = _check_runs(imgs)
        confounds = _check_confounds(confounds, len(imgs))
        comps = np.asarray(self.components_, dtype=np.float64)
        norms = np.sqrt((comps**2).sum(axis=1))
        norms[norms == 0] = 1
        comps = comps / norms[:, None]
        total = []

        def sink(subject, partial):
            total.append(partial)

        step = _ReductionStep(self.masker_, None, DECOMPOSITION_SUBJECT_BYTES, components=comps)
        self._run(step, self._subjects(imgs, runs, confounds), sink)
        del runs
        partials = np.sum(total, axis=0)
        k = comps.shape[0]
        count, tot, sumsq, rss = partials[:4]
        psum, psq = partials[4 : 4 + k], partials[4 + k : 4 + 2 * k]
        if not per_component:
            return max(0.0, 1.0 - rss / sumsq) if sumsq else 0.0
        full_var = sumsq / count - (tot / count) ** 2
        csum = comps.sum(axis=1)
        res_sum = tot - psum * csum
        res_sq = sumsq - psq
        res_var = res_sq / count - (res_sum / count) ** 2
        return np.maximum(0.0, 1.0 - res_var / full_var)

    def set_output(self, *, transform=None):
        """Not implemented (as in nilearn)."""
        raise NotImplementedError()
