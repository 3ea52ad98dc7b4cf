"""GroupConnectome: per-subject connectomes and their group aggregate, as one dask graph."""

from __future__ import annotations

import operator
import os
import re
import threading
import time
from pathlib import Path

import numpy as np
from dask.base import tokenize
from sklearn.base import BaseEstimator, clone

from lazyconn._docs import fill_doc
from lazyconn._utils import check_fitted, check_in, check_int, check_type
from lazyconn.connectome import ConnectivityMeasure, combine, partial_sum, sym_matrix_to_vec
from lazyconn.exceptions import (
    ParameterError,
    ParameterTypeError,
    SubjectError,
)
from lazyconn.group import _export
from lazyconn.group._cache import ResultStore, input_identity, params_token
from lazyconn.group._engine import Noted, Subject, run_group
from lazyconn.group._inputs import bad_inputs_error, check_inputs, warn_t_r
from lazyconn.image import LazyImage, load
from lazyconn.io._fs import StorageOptions, redact, shared_lookups

#: Maskers reused by every subject a (worker) process handles, by parameters token: their
#: per-grid caches (e.g. the spheres' smoothed weights) are then built once per process, not
#: once per subject (each task unpickles its own copy of the step). A few entries at most.
_PROCESS_MASKERS: dict[str, object] = {}
_MAX_PROCESS_MASKERS = 4
_PROCESS_MASKERS_LOCK = threading.Lock()


class _ConnectomeStep:
    """Picklable per-subject step: read -> (smooth) -> extract -> clean -> covariance -> matrix.

    Runs on a worker; its chunk graph executes there with the synchronous scheduler.
    """

    def __init__(self, masker, connectivity, storage_options=None, token=None):
        self.masker = masker
        self.connectivity = connectivity
        self.storage_options = StorageOptions.wrap(storage_options)
        self.token = token

    def _masker(self):
        if self.token is None:
            return self.masker
        with _PROCESS_MASKERS_LOCK:  # worker threads share the process
            masker = _PROCESS_MASKERS.get(self.token)
            if masker is None:
                while len(_PROCESS_MASKERS) >= _MAX_PROCESS_MASKERS:
                    _PROCESS_MASKERS.pop(next(iter(_PROCESS_MASKERS)))
                masker = _PROCESS_MASKERS[self.token] = self.masker
        return masker

    def __call__(self, subject: Subject) -> Noted:
        import dask

        img = subject.img
        if isinstance(img, (str, os.PathLike)):
            img = load(img, storage_options=self.storage_options)
        lazy = self._masker().transform(
            img, confounds=subject.confounds, sample_mask=subject.sample_mask, compute=False
        )
        bad = _nonfinite_values(lazy, img.data) if isinstance(img, LazyImage) else 0
        signals, bad = dask.compute(lazy, bad)  # one pass: the count reads no chunk twice
        signals = np.asarray(signals)
        _check_signals(signals)
        notes = ()
        if bad:
            notes = (
                f"{bad} non-finite values (NaN or inf) in the chunks read; they are read as "
                "zeros (nilearn's region maskers warn 'Non-finite values detected. These "
                "values will be replaced with zeros.')",
            )
        covariance = self.connectivity.subject_covariance(signals)
        if self.connectivity.kind == "tangent":
            # the tangent vectors need the group's geometric mean first
            return Noted(covariance, notes)
        return Noted(self.connectivity.subject_connectivity(covariance), notes)


def _nonfinite_values(result, data):
    """Lazy count of the non-finite values in the chunks of ``data`` that ``result`` reads.

    Computed together with ``result``, each chunk is read once; chunks ``result`` does not
    need (outside every region) are not read for the count either. The count is a 0-d dask
    array, so both graphs are optimized as one: a separate (Delayed) graph let the array's
    linear fusion inline each read into the masker's task and read the chunk again.
    """
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    from lazyconn.ops.weights import FRAMES_TASKS, count_nonfinite

    graph = result.__dask_graph__().cull(_keys(result))  # culled layers get a name suffix
    keys = [
        k
        for layer_name, layer in graph.layers.items()
        if layer_name.startswith(data.name)
        for k in layer
        if isinstance(k, tuple) and k[0] == data.name
    ]
    # blocks read in pieces of frames: their tasks count as they read, (partial, count)
    counted = [
        k
        for layer in graph.layers.values()
        for k in layer
        if isinstance(k, tuple) and isinstance(k[0], str) and k[0].startswith(FRAMES_TASKS)
    ]
    name = "lazyconn-nonfinite-" + tokenize(data.name, keys, counted)
    dsk = {(name, i): (count_nonfinite, k) for i, k in enumerate(keys)}
    dsk.update({(name, len(keys) + i): (operator.getitem, k, 1) for i, k in enumerate(counted)})
    dsk[(name,)] = (sum, list(dsk))
    graph = HighLevelGraph.from_collections(
        name, dsk, dependencies=[data, result] if counted else [data]
    )
    return da.Array(graph, name, chunks=(), dtype=np.int64)


def _keys(collection) -> set:
    from dask.core import flatten

    return set(flatten(collection.__dask_keys__()))


def _check_signals(signals: np.ndarray) -> None:
    """Refuse a run whose region signals are all zero or non-finite (an all-NaN run).

    NaN voxels are read as zeros (as nilearn does), so an all-NaN run gives zero signals
    and, later, a singular covariance that does not say why. Regions that are zero while
    others are not (a sphere outside the data) are left alone: Ledoit-Wolf shrinkage keeps
    the covariance invertible, as in nilearn. :func:`run_subject` names the subject.
    """
    if signals.ndim != 2 or signals.size == 0:
        return
    if not np.any(np.isfinite(signals) & (signals != 0)):
        raise ValueError(
            f"every one of the {signals.shape[1]} regions has constant zero (or non-finite) "
            "signals: an all-NaN (or all-zero) run?; expected a run with data in the regions."
        )


def _is_single_run(obj) -> bool:
    import nibabel as nib

    return isinstance(
        obj, (str, os.PathLike, LazyImage, nib.spatialimages.SpatialImage, np.ndarray)
    )


_SUFFIX = re.compile(r"(\.nii(\.gz)?|\.zarr|\.npy)/?$")
#: BIDS entities that tell runs of one study apart, in the order BIDS writes them.
_BIDS_KEYS = ("sub", "ses", "task", "acq", "run")
_BIDS_ENTITY = re.compile(r"(?:^|_)([a-zA-Z]+)-([a-zA-Z0-9]+)(?=_|$)")


def _bids_entities(stem: str) -> dict | None:
    """``sub-01_ses-2_task-rest_..._bold`` -> ``{"sub": "01", "ses": "2", "task": "rest"}``."""
    entities = dict(_BIDS_ENTITY.findall(stem))
    if "sub" not in entities:
        return None
    return {k: entities[k] for k in _BIDS_KEYS if k in entities}


def _default_names(imgs) -> list[str]:
    """Subject names: the BIDS entities that tell the runs apart (``sub-01``,
    ``sub-01_ses-2``...), else the file names without extension, else ``subject-<i>``."""
    stems = []
    for i, img in enumerate(imgs):
        src = os.fspath(img) if isinstance(img, (str, os.PathLike)) else None
        if src is None and isinstance(img, LazyImage) and img.source:
            src = img.source
        stems.append(_SUFFIX.sub("", Path(src.rstrip("/")).name) if src else f"subject-{i}")
    entities = [_bids_entities(stem) for stem in stems]
    if all(entities):
        # sub always; the other entities only where they differ between runs
        keys = [k for k in _BIDS_KEYS if k == "sub" or len({e.get(k) for e in entities}) > 1]
        names = ["_".join(f"{k}-{e[k]}" for k in keys if k in e) for e in entities]
        if len(set(names)) == len(names):
            return names
    names = stems
    if len(set(names)) != len(names):  # same file names in different folders
        names = [f"{n}-{i}" for i, n in enumerate(names)]
    return names


def _short(value) -> str:
    """repr for messages; arrays and images by type and shape."""
    if hasattr(value, "shape") and not isinstance(value, (str, os.PathLike)):
        return f"<{type(value).__name__} of shape {tuple(value.shape)}>"
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _per_subject(name: str, value, n: int) -> list:
    if value is None:
        return [None] * n
    if not isinstance(value, (list, tuple)):
        raise ParameterTypeError(
            f"{name}={_short(value)} has type {type(value).__name__}; expected None or a list with "
            f"one entry per subject ({n})."
        )
    if len(value) != n:
        raise ParameterError(
            f"{name} has {len(value)} entries but imgs has {n} subjects; expected one "
            f"{name} entry per subject (None for none)."
        )
    return list(value)


class GroupConnectome(BaseEstimator):
    """Connectomes of many subjects and their group aggregate, computed as one dask graph.

    For each subject (one run each) the masker extracts region signals (read -> smooth ->
    extract -> clean, as ``masker.transform``) and the connectivity measure turns them into a
    matrix; across subjects the matrices are reduced in a tree to the group mean (for
    ``kind="tangent"``: the geometric mean of the covariances, then every subject's tangent
    matrix). Equivalent to nilearn's loop::

        ts = [masker.fit_transform(img, confounds=c) for img, c in zip(imgs, confounds)]
        conn = ConnectivityMeasure(kind=...).fit(ts)
        conn.transform(ts), conn.mean_

    but parallel across subjects on any dask scheduler, with every subject's result kept in a
    results store so a re-run, or a run after a crash, computes only what is missing.

    Bad data: non-finite (NaN or inf) voxel values are read as zeros, as nilearn's maskers
    do; where nilearn's region maskers warn without naming the run ("Non-finite values
    detected"), ``fit`` gives one :class:`~lazyconn.exceptions.DataWarning` per subject
    naming it, its file and the count (of the values in the chunks the masker reads,
    counted in the same pass), also when the subject is read back from the results store.
    A run with no signal in any region (all NaN) fails, naming the subject.

    Parameters
    ----------
    masker : lazyconn masker
        Any lazyconn masker (``NiftiSpheresMasker``, ``NiftiLabelsMasker``...). Cloned and
        fitted without images if not fitted yet (give ``NiftiMasker`` a ``mask_img``, or
        pass it fitted).
    connectivity : lazyconn.connectome.ConnectivityMeasure, optional
        Default: ``ConnectivityMeasure()`` (nilearn's default, ``kind="covariance"``).
        ``vectorize`` and ``discard_diagonal`` shape ``subject_matrices_`` as in
        ``ConnectivityMeasure.transform``; they are not part of the results-store key (the
        store keeps square matrices), so changing them reuses every stored subject.
    cache_dir : str or Path, optional
        Directory or fsspec URL (``s3://bucket/cache``, with ``storage_options``) of the
        results store (a Zarr v3 group); several processes may share it. Each subject's result is keyed by
        its input's identity (path + size + mtime, a zarr store's metadata, a URL's
        ETag/mtime, or a hash of in-memory data) and by the masker's and measure's
        parameters and lazyconn's version; a changed parameter never reuses a stale result.
        Results are written as they arrive (array first, then a completion mark). None: no
        store. With a remote scheduler the store is written by this (client) process.
        Entries are verified before use (completion mark, every chunk present, CRC-32 of the
        values); one that fails is reported (``IntegrityWarning``) and computed again.
    client : None, "local", str or distributed.Client, default=None
        Where to compute. None: dask's current scheduler (threads by default, or your
        ``distributed.Client`` when it is dask's default); "local": a
        ``LocalCluster`` of ``n_workers`` single-threaded processes, started and closed by
        ``fit``; an address (``"tcp://host:8786"``): connect, failing within seconds with
        :class:`~lazyconn.exceptions.ClusterConnectionError` if nothing answers; a
        ``distributed.Client``: used as is. A worker lost mid-run changes nothing (its
        subjects run again elsewhere); a scheduler lost mid-run raises
        ``ClusterConnectionError`` within seconds, the subjects finished before it are in
        the results store, and a re-run computes only the rest.
    n_workers : int, optional
        Workers of ``client="local"`` (default: the usable cores).
    on_error : {"raise", "skip"}, default="raise"
        A subject whose processing fails raises
        :class:`~lazyconn.exceptions.SubjectError` naming it ("raise", subjects finished
        before are kept in the store), or is listed in ``failed_`` while the others finish
        ("skip"). Inputs are checked first, on the client, before any cluster starts: a
        missing run or confounds file, or a confounds table whose rows differ from the run's
        volumes (from its header), raises one error naming every bad subject
        (:class:`~lazyconn.exceptions.InputNotFoundError` when a file is missing, else
        :class:`~lazyconn.exceptions.ParameterError`); with "skip" those subjects are
        listed in ``failed_`` instead. A masker ``t_r`` that differs from the runs' headers
        gives a :class:`~lazyconn.exceptions.TRWarning` naming both values (the given
        ``t_r`` is used, as in nilearn).
    progress : bool, default=True
        Show a progress bar of subjects on stderr.
    storage_options : dict, optional
        fsspec options for URL inputs (``s3://...``) and a URL ``cache_dir``. Kept as a
        :class:`lazyconn.io.StorageOptions` (a dict) whose printed form masks credentials,
        so ``repr(estimator)`` and ``get_params()`` never show a secret (nilearn has no
        such parameter).

    Attributes
    ----------
    masker_ : the fitted masker used
    connectivity_ : ConnectivityMeasure
        Fitted on the group (``mean_``, ``whitening_``), as ``ConnectivityMeasure.fit``.
    subject_matrices_ : numpy.ndarray (n_subjects, n_regions, n_regions)
        One matrix of ``kind`` per successful subject, in input order; with the measure's
        ``vectorize``, (n_subjects, n_coefficients) vectors as ``sym_matrix_to_vec`` (without
        the diagonal if ``discard_diagonal``). Labelled copies: :meth:`to_xarray`,
        :meth:`export`.
    group_matrix_ : numpy.ndarray (n_regions, n_regions)
        ``connectivity_.mean_`` (square, as nilearn's ``mean_``).
    subjects_ : list of str
        Names of the successful subjects (``subjects`` given to ``fit``, or derived from the
        file names), matching ``subject_matrices_``.
    regions_ : list of str
        Region names (the masker's ``get_feature_names_out()``: label names, or
        ``<masker class><i>``), the rows and columns of the matrices.
    failed_ : dict
        Subject name -> error message, for ``on_error="skip"``.
    n_cached_ : int
        Subjects read back from the results store instead of computed.
    dashboard_link_ : str or None
        URL of the dask dashboard of the cluster that computed the subjects (also printed
        above the progress bar and logged to the ``lazyconn.group`` logger when the run
        starts); None on dask's local scheduler or when nothing was computed.
    timings_ : dict
        Seconds per stage (``cache_lookup``; if anything is computed ``connect`` (starting
        the LocalCluster or connecting), ``compute``, ``disconnect``; ``aggregate``,
        ``group``, ``total``) and per computed subject (``subjects``: name -> seconds).

    Notes
    -----
    Not in nilearn. Parallelism is across subjects: each subject's chunk graph runs in one
    task, so memory per worker is one subject's working set whatever the number of subjects,
    and a task lost with a worker is re-run elsewhere (the results do not change).
    """

    def __init__(
        self,
        masker,
        connectivity=None,
        *,
        cache_dir=None,
        client=None,
        n_workers=None,
        on_error="raise",
        progress=True,
        storage_options=None,
    ):
        self.masker = masker
        self.connectivity = connectivity
        self.cache_dir = cache_dir
        self.client = client
        self.n_workers = n_workers
        self.on_error = on_error
        self.progress = progress
        # Wrapped so repr/str/get_params show credentials masked; clone keeps the wrapper.
        self.storage_options = StorageOptions.wrap(storage_options)

    # ------------------------------------------------------------------ checks
    def _check_params(self):
        for method in ("fit", "transform"):
            if not callable(getattr(self.masker, method, None)):
                raise ParameterTypeError(
                    f"masker={self.masker!r} has type {type(self.masker).__name__}; expected a "
                    "lazyconn masker (e.g. lazyconn.maskers.NiftiSpheresMasker)."
                )
        connectivity = ConnectivityMeasure() if self.connectivity is None else self.connectivity
        check_type(
            "connectivity",
            connectivity,
            ConnectivityMeasure,
            "a lazyconn.connectome.ConnectivityMeasure",
        )
        connectivity._check_params()
        check_in("on_error", self.on_error, ("raise", "skip"))
        check_int(
            "n_workers",
            self.n_workers,
            low=1,
            allow_none=True,
            expected="None or an integer >= 1",
        )
        return connectivity

    def _fitted_masker(self):
        if hasattr(self.masker, "__sklearn_is_fitted__") and self.masker.__sklearn_is_fitted__():
            return self.masker
        return clone(self.masker).fit()

    def _subjects(self, imgs, confounds, sample_mask, subjects, masker, connectivity):
        """Validated inputs as Subject records with their results-store keys (reads no voxels)."""
        if _is_single_run(imgs) or not isinstance(imgs, (list, tuple)):
            raise ParameterTypeError(
                f"imgs={_short(imgs)} is a single {type(imgs).__name__}; expected a list of runs, "
                "one per subject (e.g. [img] for one subject)."
            )
        n = len(imgs)
        if n == 0:
            raise ParameterError("imgs=[] is empty; expected a list of runs, one per subject.")
        confounds = _per_subject("confounds", confounds, n)
        sample_mask = _per_subject("sample_mask", sample_mask, n)
        names = _default_names(imgs) if subjects is None else _per_subject("subjects", subjects, n)
        names = [str(s) for s in names]
        if len(set(names)) != n:
            dup = sorted({s for s in names if names.count(s) > 1})
            raise ParameterError(f"subjects has duplicate names {dup}; expected unique names.")
        stored = "covariance" if connectivity.kind == "tangent" else "connectivity"
        # The store keeps square matrices: how they are flattened is not part of the key.
        square = clone(connectivity).set_params(vectorize=False, discard_diagonal=False)
        params = params_token(masker, square, extra={"stored": stored})
        records = []
        for name, img, conf, mask in zip(names, imgs, confounds, sample_mask, strict=True):
            identity = input_identity(img, self.storage_options)
            key = tokenize(
                identity, input_identity(conf, self.storage_options), input_identity(mask), params
            )
            records.append(Subject(name, img, conf, mask, key))
        return records, params

    # ------------------------------------------------------------------ fit
    @fill_doc
    def fit(self, imgs, y=None, confounds=None, sample_mask=None, subjects=None):
        """Compute every subject's matrix (cached ones read back) and the group matrix.

        Parameters
        ----------
        %(group_fit_params)s

        Returns
        -------
        self
        """
        del y
        connectivity = self._check_params()
        masker = self._fitted_masker()
        t_r = getattr(masker, "t_r", None)
        # the results store's keys and the input checks ask about the same objects (one
        # request each on an object store)
        with shared_lookups():
            records, params = self._subjects(
                imgs, confounds, sample_mask, subjects, masker, connectivity
            )
            # On the client, before any cluster starts: every bad subject named at once.
            problems, missing, conflicts = check_inputs(records, t_r, self.storage_options)
        warn_t_r(t_r, conflicts, len(records))
        if problems and (self.on_error == "raise" or len(problems) == len(records)):
            raise bad_inputs_error(problems, missing, len(records))
        bad_inputs = {name: f"subject {name!r}: {text}" for name, text in problems.items()}
        records = [r for r in records if r.name not in problems]
        store = (
            None if self.cache_dir is None else ResultStore(self.cache_dir, self.storage_options)
        )
        tangent = connectivity.kind == "tangent"
        step = _ConnectomeStep(masker, connectivity, self.storage_options, token=params)
        kind = connectivity.kind

        def attrs(subject):
            img = subject.img
            where = redact(img) if isinstance(img, (str, os.PathLike)) else "in-memory"
            return {"input": where, "kind": kind, "params": params}

        out = run_group(
            step,
            records,
            chunk_fn=None if tangent else partial_sum,
            combine_fn=None if tangent else combine,
            store=store,
            client=self.client,
            n_workers=self.n_workers,
            on_error=self.on_error,
            progress=self.progress,
            store_attrs=attrs,
        )
        outcomes, failures = out["outcomes"], out["failures"]
        if not outcomes:
            first = next(iter(failures.values()))
            raise SubjectError(f"every subject failed ({len(failures)}); the first: {first.error}")
        timings = dict(out["timings"])
        t0 = time.perf_counter()
        fitted = clone(connectivity)
        results = [o.result for o in outcomes.values()]
        if tangent:
            fitted.fit_from_covariances(results)
            matrices = np.stack(
                [
                    fitted.subject_connectivity(c, f"covariance of subject {name!r}")
                    for name, c in zip(outcomes, results, strict=True)
                ]
            )
        else:
            fitted.fit_from_partial(out["partial"])
            matrices = np.stack(results)
        if fitted.vectorize:
            matrices = sym_matrix_to_vec(matrices, discard_diagonal=fitted.discard_diagonal)
        timings["group"] = time.perf_counter() - t0
        timings["total"] += timings["group"]
        timings["subjects"] = {n: o.seconds for n, o in outcomes.items() if not o.cached}
        self.masker_ = masker
        self.connectivity_ = fitted
        self.subject_matrices_ = matrices
        self.group_matrix_ = fitted.mean_
        self.subjects_ = list(outcomes)
        self.regions_ = [str(r) for r in masker.get_feature_names_out()]
        self.failed_ = {**bad_inputs, **{name: f.error for name, f in failures.items()}}
        self.n_cached_ = out["n_cached"]
        self.dashboard_link_ = out["dashboard"]
        self.timings_ = timings
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "group_matrix_")

    @fill_doc
    def fit_transform(self, imgs, y=None, confounds=None, sample_mask=None, subjects=None):
        """``fit`` then return ``subject_matrices_``.

        Parameters
        ----------
        %(group_fit_params)s

        Returns
        -------
        numpy.ndarray (n_subjects, n_regions, n_regions)
            ``subject_matrices_``.
        """
        return self.fit(imgs, y, confounds, sample_mask, subjects).subject_matrices_

    def _check_fitted(self) -> None:
        check_fitted(self)

    def to_xarray(self):
        """``subject_matrices_`` as an ``xarray.DataArray`` labelled with subjects and regions.

        Dimensions ``("subject", "region_row", "region_col")``, or with ``vectorize``
        ``("subject", "edge")`` with the coordinates ``region_row`` / ``region_col`` of each
        coefficient. Attributes: ``kind``, ``vectorize``, ``discard_diagonal``, ``layout``.
        Not in nilearn. Needs the ``xarray`` package (ImportError otherwise).

        Returns
        -------
        xarray.DataArray
        """
        self._check_fitted()
        return _export.to_xarray(self)

    def export(self, path, *, overwrite=False, storage_options=None):
        """Write ``subject_matrices_`` with subject and region names, for statistics elsewhere.

        Not in nilearn. The file is readable without lazyconn: ``.npz`` by ``numpy.load``
        (arrays ``matrices``, ``group_matrix``, ``subjects``, ``regions``, ``kind``,
        ``vectorize``, ``discard_diagonal``, and ``edges`` for vectors), ``.zarr`` by
        ``zarr.open_group`` (the same arrays; names and parameters in its attributes,
        ``"complete": true`` written last).

        Parameters
        ----------
        path : str or Path
            Destination ending in ``.npz`` or ``.zarr``; a local path or a URL
            (``s3://bucket/results.zarr``).
        overwrite : bool, default=False
            Replace an existing destination (else
            :class:`~lazyconn.exceptions.OutputExistsError`).
        storage_options : dict, optional
            fsspec options for a URL (default: the estimator's ``storage_options``).

        Returns
        -------
        str
            ``path``.
        """
        self._check_fitted()
        options = self.storage_options if storage_options is None else storage_options
        return _export.export(self, path, storage_options=options, overwrite=overwrite)
