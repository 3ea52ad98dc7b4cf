"""Running one picklable per-subject step over many subjects as one dask graph.

The graph: one task per subject that is not in the results store (the subject's own chunk
graph, read -> clean -> extract -> matrix, runs inside that task with dask's synchronous
scheduler), then a tree reduction (``split_every`` partials per node) of the subjects'
results to a group partial. Parallelism is across subjects; each worker thread holds one
subject's working set at a time, so memory per worker does not grow with the number of
subjects, and a task lost with its worker is simply run again elsewhere.

Each result is written to the results store on the client as soon as it arrives, so a run
that crashes keeps everything finished before the crash; the next run computes only what
is missing.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import sys
import time
import traceback
import types
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dask
import dask.local
import numpy as np
from dask.delayed import delayed

from lazyconn._progress import Progress
from lazyconn._utils import LOCAL_SCHEDULER, ProcessWide
from lazyconn.exceptions import ClusterConnectionError, DataWarning, SubjectError
from lazyconn.group._cache import ResultStore
from lazyconn.group._cluster import client_context
from lazyconn.group._report import StageTimer

logger = logging.getLogger("lazyconn.group")


@dataclass(frozen=True)
class Subject:
    """One subject's inputs, its display name and its results-store key."""

    name: str
    img: Any
    confounds: Any = None
    sample_mask: Any = None
    key: str = ""


@dataclass
class Noted:
    """A step's result with notes about the subject's data, warned on the client.

    Warnings raised inside a task stay on the worker (and ``catch_warnings`` is not
    thread-safe), so a step returns what the user must hear; the notes are kept in the
    results store with the result, and a cached subject is warned about again.
    """

    result: Any
    notes: tuple[str, ...] = ()


@dataclass
class Outcome:
    """What a subject task returns: its result, how long it took, notes on its data."""

    name: str
    result: np.ndarray
    seconds: float
    cached: bool = False
    notes: tuple[str, ...] = ()


@dataclass
class Failure:
    """A subject that failed (with ``on_error="skip"``): its name and the error text."""

    name: str
    error: str
    traceback: str = field(default="", repr=False)

    def __str__(self) -> str:
        return self.error


def _describe(subject: Subject) -> str:
    img = subject.img
    src = img if isinstance(img, str) else getattr(img, "source", None)
    return f"subject {subject.name!r}" + (f" ({src})" if src and src != subject.name else "")


def _one_blas_thread():
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    return threadpool_limits(limits=1, user_api="blas")


#: One BLAS thread in this process while any subject task runs in it (and for the whole of
#: a run, set once by the thread that starts it).
ONE_BLAS_THREAD = ProcessWide(_one_blas_thread)
#: dask's synchronous scheduler for the subject graphs computed inside tasks: the function,
#: which dask's lookup returns as is (the name "sync" imports distributed: see dask_scheduler).
SYNC_INSIDE_TASKS = ProcessWide(lambda: dask.config.set(scheduler=dask.local.get_sync))


def run_subject(step: Callable, subject: Subject, on_error: str) -> Outcome | Failure:
    """Run ``step(subject)`` with the synchronous scheduler; name the subject in any error.

    BLAS runs single-threaded inside the task: parallelism is across subjects, and the
    result then does not depend on where it ran (a BLAS thread count changes the order of
    sums, hence the last bits: ~1e-6 between a threaded run and a cluster run otherwise),
    so results computed anywhere can share one results store. Both settings are held
    process-wide while any task runs (:class:`ProcessWide`), not saved and restored per task.
    """
    t0 = time.perf_counter()
    try:
        # Inside a task (threads or a distributed worker) the subject's graph runs in place.
        with SYNC_INSIDE_TASKS, ONE_BLAS_THREAD:
            value = step(subject)
            notes = ()
            if isinstance(value, Noted):
                value, notes = value.result, tuple(value.notes)
            result = np.asarray(value)
    except Exception as exc:
        message = f"{_describe(subject)} failed: {type(exc).__name__}: {exc}"
        if on_error == "raise":
            raise SubjectError(message) from exc
        return Failure(subject.name, message, traceback.format_exc())
    return Outcome(subject.name, result, time.perf_counter() - t0, notes=notes)


def _partial(chunk_fn: Callable, items: list) -> Any:
    """Partial of a list of outcomes/partials, failures dropped (None when nothing is left)."""
    results = [o.result for o in items if isinstance(o, Outcome)]
    return chunk_fn(results) if results else None


def _combine(combine_fn: Callable, partials: list) -> Any:
    partials = [p for p in partials if p is not None]
    return combine_fn(partials) if partials else None


def tree_reduce(leaves: list, chunk_fn: Callable, combine_fn: Callable, split_every: int = 8):
    """A delayed tree reduction: ``chunk_fn`` on groups of outcomes, then ``combine_fn`` up."""
    if not leaves:
        return None
    level = [
        delayed(_partial, pure=True)(chunk_fn, leaves[i : i + split_every])
        for i in range(0, len(leaves), split_every)
    ]
    while len(level) > 1:
        level = [
            delayed(_combine, pure=True)(combine_fn, level[i : i + split_every])
            for i in range(0, len(level), split_every)
        ]
    return level[0]


def _subject_tasks(step, subjects: list[Subject], on_error: str, client=None) -> list:
    # Task names: readable, and unique per run, so a re-run on a long-lived cluster never
    # meets the keys of a cancelled earlier run still being released.
    run = uuid.uuid4().hex[:8]
    # The step (a fitted masker: maps, regions, weights; often 10-30 MB) is ONE node of the
    # graph that every subject task depends on: serialised once, not inlined in every
    # subject's task. On a cluster it is sent to every worker before the subjects start: as
    # a task's output it sat on one worker, and the scheduler, placing subjects by where
    # their data is, queued them all there while the other workers idled (seen: 20 s of a
    # cold 4-subject run on 2 workers) until work stealing moved them.
    if client is None:
        shared = delayed(step, name=f"lazyconn-step-{run}", pure=True)
    else:
        shared = client.scatter(step, broadcast=True, hash=False)
    return [
        delayed(run_subject, pure=True)(
            shared, s, on_error, dask_key_name=f"lazyconn-subject-{s.name}-{run}-{s.key[:12]}"
        )
        for s in subjects
    ]


class _ModuleRecorder(pickle.Pickler):
    """Pickles into nothing, noting the module of every object, class and function it
    meets (what unpickling the object will import)."""

    def __init__(self):
        super().__init__(_Discard(), protocol=pickle.HIGHEST_PROTOCOL)
        self.modules: set[str] = set()

    def reducer_override(self, obj):
        owner = obj if isinstance(obj, (type, types.FunctionType)) else type(obj)
        module = getattr(owner, "__module__", None)
        if isinstance(module, str):
            self.modules.add(module)
        return NotImplemented  # pickled as usual


class _Discard:
    def write(self, data) -> int:
        return len(memoryview(data))


def pickled_modules(obj) -> list[str]:
    """The modules unpickling ``obj`` imports (none of the interpreter's built-in ones),
    or [] when ``obj`` does not pickle with the standard pickler.

    Parameters
    ----------
    obj : object
        Pickled once into nothing (a large array costs one pass over its bytes).
    """
    recorder = _ModuleRecorder()
    try:
        recorder.dump(obj)
    except Exception:  # cloudpickle may still manage; there is just nothing to import ahead
        return []
    return sorted(m for m in recorder.modules if m.split(".")[0] not in sys.builtin_module_names)


#: Seconds :func:`import_on_cluster` waits for the cluster's processes to import.
IMPORT_TIMEOUT = 60.0


def import_on_cluster(client, step, graph) -> None:
    """Import, on the scheduler and on every worker at once, the modules that unpickling the
    run will import: ``graph`` (the subjects and the functions of the tasks, which the
    scheduler unpickles too) and, on the workers, ``step``.

    A fresh process spends seconds importing lazyconn and its dependencies at its first
    unpickling (~3.7 s here), and a cold cluster otherwise did that in turn: broadcasting
    the step (``client.scatter(..., broadcast=True)``) stores it on one worker, then copies
    it to the next, each unpickling it; then the scheduler unpickled the graph. A 12-subject
    run on a fresh scheduler and two workers: 11 s, ~0.5 s once warm. Here all of them
    import at once, each in a thread (their event loops keep answering). What fails to
    import is left to the run itself to report.

    Parameters
    ----------
    client : distributed.Client
    step : object
        What is broadcast to the workers (the subjects' shared step).
    graph : object
        What the run's tasks pickle besides it (functions, subjects, reducers).
    """
    from concurrent.futures import ThreadPoolExecutor, wait

    from lazyconn._utils import import_modules

    on_scheduler = pickled_modules(graph)
    on_workers = sorted({*on_scheduler, *pickled_modules(step)})
    pool = ThreadPoolExecutor(2, thread_name_prefix="lazyconn-imports")
    calls = [
        pool.submit(client.run_on_scheduler, import_modules, on_scheduler),
        pool.submit(client.run, import_modules, on_workers, on_error="ignore"),
    ]
    # Only a head start: a process that has not answered within the timeout is left to the
    # run, which reports a lost worker or scheduler itself.
    wait(calls, timeout=IMPORT_TIMEOUT)
    pool.shutdown(wait=False)


def _without_result(outcome):
    if not isinstance(outcome, Outcome):
        return outcome
    return Outcome(outcome.name, None, outcome.seconds, notes=outcome.notes)


def _run_local(tasks, group, on_result, keep_results=True):
    from dask.callbacks import Callback

    subject_keys = {t.key for t in tasks}
    if not keep_results:
        # Ask for light copies: dask then frees each result once the callback has seen it.
        tasks = [delayed(_without_result, pure=True)(t) for t in tasks]

    class _Arrivals(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            if key in subject_keys:
                on_result(result)

    if _local_scheduler():
        # Ours handed to the scheduler with the global ones as they are now, instead of
        # registered globally: dask empties the global set for a run and restores it after,
        # and a nested compute still running in a thread of an earlier, failed run (dask
        # does not wait for those) restored a set without ours, so a run returned no
        # outcome at all. Nested computes now also see the global ones.
        callbacks = [*Callback.active, _Arrivals()._callback]
        _, group_value = dask.compute(tasks, group, callbacks=callbacks)
    else:  # a scheduler set in dask's config as a callable: callbacks registered globally
        with _Arrivals():
            _, group_value = dask.compute(tasks, group)
    return group_value


def _local_scheduler() -> bool:
    """Whether dask.compute runs on one of dask's local schedulers (threads by default)."""
    import dask.local
    import dask.multiprocessing
    import dask.threaded
    from dask.base import get_scheduler

    return get_scheduler() in (
        None,
        dask.threaded.get,
        dask.local.get_sync,
        dask.multiprocessing.get,
    )


def _scheduler_lost(client, exc: BaseException, done: int, total: int):
    """ClusterConnectionError for a run whose scheduler went away, else None."""
    from concurrent.futures import CancelledError

    from distributed.comm import CommClosedError

    if not isinstance(exc, (CancelledError, CommClosedError, OSError)):
        return None
    if client.status == "running" and "connection" not in str(exc).lower():
        return None  # cancelled for another reason
    address = getattr(client.scheduler, "address", None) or "?"
    return ClusterConnectionError(
        f"the dask scheduler at {address!r} was lost mid-run ({type(exc).__name__}); "
        f"{done} of {total} subjects had finished (kept in the results store, if any); "
        "expected a scheduler that stays up: restart it and re-run, which computes only the "
        "missing subjects."
    )


def _run_distributed(client, tasks, group, on_result):
    from distributed import as_completed

    futures = client.compute([*tasks, group] if group is not None else list(tasks))
    subject_futures = futures[: len(tasks)]
    done = 0
    try:
        for future in as_completed(subject_futures, loop=client.loop):
            on_result(future.result())  # re-raises SubjectError of on_error="raise"
            done += 1
            # Let workers drop the result once the tree has used it: worker memory then
            # stays flat in the number of subjects.
            future.release()
        return futures[-1].result() if group is not None else None
    except BaseException as exc:
        lost = _scheduler_lost(client, exc, done, len(tasks))
        if lost is not None:
            # A lost scheduler has nothing left to cancel; fail now rather than reconnect.
            raise lost from exc
        client.cancel(futures)  # stop the other subjects (finished ones are in the store)
        raise


def run_group(
    step: Callable,
    subjects: list[Subject],
    *,
    chunk_fn: Callable | None,
    combine_fn: Callable | None,
    store: ResultStore | None = None,
    client=None,
    n_workers: int | None = None,
    on_error: str = "raise",
    progress: bool = True,
    split_every: int = 8,
    store_attrs: Callable[[Subject], dict] | None = None,
    sink: Callable[[Subject, np.ndarray], None] | None = None,
) -> dict:
    """Compute ``step`` for every subject (cached ones read back) and the group partial.

    Returns a dict: ``outcomes`` (name -> Outcome, in input order), ``failures``
    (name -> Failure), ``partial`` (the combined partial of every successful subject; None
    without ``chunk_fn``, which skips the tree), ``timings`` (seconds per stage:
    ``cache_lookup``; when subjects are computed ``connect`` (starting a LocalCluster or
    connecting), ``compute``, ``disconnect``; ``aggregate``; ``total``), ``n_cached``,
    ``dashboard`` (the dask dashboard's URL when a distributed client ran the subjects, also
    logged to the ``lazyconn.group`` logger and printed above the progress bar; else None).

    ``sink(subject, result)``, when given, receives every subject's result (cached ones
    first, then each computed one as it arrives, in the client process) and the outcomes
    keep ``result=None``: the results of a study larger than memory can be written
    elsewhere (e.g. a Zarr array) instead of being held. The tree's partial is unaffected.
    """
    timer = StageTimer()
    outcomes: dict[str, Outcome] = {}
    failures: dict[str, Failure] = {}
    with timer("cache_lookup"):
        todo = []
        # one listing and one read per stored subject (not a lookup per subject)
        hits = store.get_many([s.key for s in subjects]) if store is not None else {}
        for s in subjects:
            hit = hits.get(s.key)
            if hit is None:
                todo.append(s)
            else:
                result, attrs = hit
                notes = tuple(attrs.get("notes", ()))
                outcomes[s.name] = Outcome(s.name, result, attrs.get("seconds", 0.0), True, notes)
        cached = [outcomes[s.name] for s in subjects if s.name in outcomes]
        cached_partial = chunk_fn([o.result for o in cached]) if chunk_fn and cached else None
        if sink is not None:
            by_all = {s.name: s for s in subjects}
            for o in cached:
                sink(by_all[o.name], o.result)
                o.result = None
    by_name = {s.name: s for s in todo}
    bar = Progress("subjects", len(todo), enabled=progress)

    def on_result(outcome):
        if isinstance(outcome, Failure):
            failures[outcome.name] = outcome
            bar.update(failed=True)
            return
        outcomes[outcome.name] = outcome
        if store is not None:
            s = by_name[outcome.name]
            attrs = {"subject": s.name, "seconds": outcome.seconds}
            if outcome.notes:
                attrs["notes"] = list(outcome.notes)
            attrs.update(store_attrs(s) if store_attrs else {})
            store.put(s.key, outcome.result, attrs)
        if sink is not None:
            sink(by_name[outcome.name], outcome.result)
            outcome.result = None
        bar.update()

    new_partial = None
    dashboard = None
    try:
        if todo:
            with contextlib.ExitStack() as stack:
                with timer("connect"):
                    c = stack.enter_context(client_context(client, n_workers=n_workers))
                if c is not None:
                    dashboard = c.dashboard_link
                    if dashboard:
                        logger.info("dask dashboard: %s", dashboard)
                        bar.note(f"dask dashboard: {dashboard}")
                # The BLAS limit set once for the run, by this thread: threadpoolctl ignores a
                # limit set by a task on one of dask's threads (or an in-process worker's)
                # while another thread controls OpenBLAS, and then restores nothing.
                with timer("compute"), ONE_BLAS_THREAD, LOCAL_SCHEDULER:
                    if c is not None:
                        import_on_cluster(c, step, (run_subject, todo, chunk_fn, combine_fn))
                    tasks = _subject_tasks(step, todo, on_error, c)
                    group = None
                    if chunk_fn:
                        group = tree_reduce(tasks, chunk_fn, combine_fn, split_every)
                    if c is None:
                        new_partial = _run_local(tasks, group, on_result, sink is None)
                    else:
                        new_partial = _run_distributed(c, tasks, group, on_result)
                bar.close()
                with timer("disconnect"):
                    stack.close()
    finally:
        bar.close()
    with timer("aggregate"):
        partial = None
        if chunk_fn is not None:
            partial = _combine(combine_fn, [new_partial, cached_partial])
    ordered = {s.name: outcomes[s.name] for s in subjects if s.name in outcomes}
    by_all = {s.name: s for s in subjects}
    for outcome in ordered.values():  # cached subjects too: their notes were stored
        for note in outcome.notes:
            warnings.warn(f"{_describe(by_all[outcome.name])}: {note}", DataWarning, stacklevel=3)
    timings = dict(timer.seconds)
    timings["total"] = timer.total()
    return {
        "outcomes": ordered,
        "failures": failures,
        "partial": partial,
        "timings": timings,
        "n_cached": len(cached),
        "dashboard": dashboard,
    }
