"""The group engine (one graph over subjects, results store, schedulers, faults) on toy steps."""

import io
import logging
import os
import signal
import threading
import time

import dask
import dask.local
import dask.threaded
import numpy as np
import pytest
from dask.callbacks import Callback

from lazyconn._progress import Progress
from lazyconn.exceptions import (
    ClusterConnectionError,
    IntegrityWarning,
    OutputExistsError,
    ParameterTypeError,
    SubjectError,
)
from lazyconn.group._cache import ResultStore, input_identity, params_token
from lazyconn.group._engine import Subject, _subject_tasks, run_group, run_subject, tree_reduce
from lazyconn.testing.group import CorrcoefStep, add_sum_counts, sum_count, toy_study


def _subjects(arrays, prefix="s"):
    return [Subject(f"{prefix}{i}", a, key=f"k{prefix}{i}") for i, a in enumerate(arrays)]


def _run(step, subjects, **kw):
    kw.setdefault("progress", False)
    return run_group(step, subjects, chunk_fn=sum_count, combine_fn=add_sum_counts, **kw)


def test_local_results_and_tree_mean_match_numpy():
    arrays = toy_study(19)
    out = _run(CorrcoefStep(), _subjects(arrays), split_every=3)
    expected = [np.corrcoef(a, rowvar=False) for a in arrays]
    assert list(out["outcomes"]) == [f"s{i}" for i in range(19)]
    for got, want in zip(out["outcomes"].values(), expected, strict=True):
        np.testing.assert_allclose(got.result, want, rtol=1e-12)
    total, count = out["partial"]
    assert count == 19
    np.testing.assert_allclose(total / count, np.mean(expected, axis=0), rtol=1e-12)
    assert set(out["timings"]) == {
        "cache_lookup",
        "connect",
        "compute",
        "disconnect",
        "aggregate",
        "total",
    }
    assert out["timings"]["total"] >= out["timings"]["compute"] > 0


def test_tree_reduce_builds_a_tree_and_stays_lazy():
    leaves = [dask.delayed(lambda i: i)(i) for i in range(20)]
    with dask.config.set(scheduler=lambda *a, **k: pytest.fail("computed while building")):
        node = tree_reduce(leaves, sum_count, add_sum_counts, split_every=4)
    graph = dict(node.__dask_graph__())
    # 20 leaves, 5 chunk partials, 2 combines, 1 root.
    assert len(graph) == 20 + 5 + 2 + 1
    assert tree_reduce([], sum_count, add_sum_counts) is None


def test_store_second_run_computes_nothing_and_gives_same_numbers(tmp_path):
    arrays = toy_study(6)
    calls = tmp_path / "calls"
    calls.mkdir()
    store = ResultStore(tmp_path / "store")
    first = _run(CorrcoefStep(calls_dir=calls), _subjects(arrays), store=store)
    assert len(os.listdir(calls)) == 6 and first["n_cached"] == 0
    second = _run(CorrcoefStep(calls_dir=calls), _subjects(arrays), store=store)
    assert len(os.listdir(calls)) == 6 and second["n_cached"] == 6
    for a, b in zip(first["outcomes"].values(), second["outcomes"].values(), strict=True):
        np.testing.assert_array_equal(a.result, b.result)
    np.testing.assert_array_equal(first["partial"][0], second["partial"][0])
    assert sorted(store.keys()) == sorted(f"ks{i}" for i in range(6))


def test_run_after_a_crash_computes_only_what_is_missing(tmp_path):
    arrays = toy_study(5)
    store = ResultStore(tmp_path / "store")
    crashing = _subjects(arrays)
    crashing[3] = Subject("s3", np.zeros(3), key="ks3")  # 1-D: the step raises
    with pytest.raises(SubjectError, match="subject 's3' failed: ValueError: expected a"):
        _run(CorrcoefStep(), crashing, store=store)
    done_before = set(store.keys())
    assert "ks3" not in done_before
    calls = tmp_path / "calls"  # what the second run computes
    calls.mkdir()
    out = _run(CorrcoefStep(calls_dir=calls), _subjects(arrays), store=store)
    assert out["n_cached"] == len(done_before)
    recomputed = {name.split("-")[0] for name in os.listdir(calls)}
    assert recomputed == {f"s{i}" for i in range(5)} - {k[1:] for k in done_before}
    assert out["partial"][1] == 5


def test_half_written_entry_reads_as_missing(tmp_path, monkeypatch):
    store = ResultStore(tmp_path / "store")
    store.put("good", np.eye(3), {"subject": "a"})
    result, attrs = store.get("good")
    np.testing.assert_array_equal(result, np.eye(3))
    assert attrs["complete"] is True and attrs["subject"] == "a"

    # A crash between writing the entry and publishing it: nothing is visible, no leftover.
    def crash(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        store.put("half", np.ones((3, 3)), {"subject": "b"})
    monkeypatch.undo()
    assert store.get("half") is None and "half" not in store
    assert sorted(os.listdir(tmp_path / "store")) == ["good.result", "lazyconn-results.json"]
    # A truncated entry (its tail lost) fails its crc32c: reported, read as missing.
    store.put("lost", np.eye(3), {"subject": "c"})
    entry = tmp_path / "store" / "lost.result"
    entry.write_bytes(entry.read_bytes()[:-9])
    with pytest.warns(IntegrityWarning, match=r"entry 'lost' of subject 'c' failed verification"):
        assert store.get("lost") is None
    with pytest.warns(IntegrityWarning):
        assert store.keys() == ["good"]


def test_store_entry_is_one_object_with_a_crc32c(tmp_path):
    """The entry's layout, read back independently: header, values, crc32c of both."""
    import json

    import google_crc32c

    store = ResultStore(tmp_path / "store")
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    store.put("k", values, {"subject": "s", "notes": ["n"]})
    raw = (tmp_path / "store" / "k.result").read_bytes()
    assert raw.startswith(b"LAZYCONN-RESULT\n")
    size = int.from_bytes(raw[16:24], "little")
    header = json.loads(raw[24 : 24 + size])
    assert header == {"subject": "s", "notes": ["n"], "shape": [3, 4], "dtype": "<f4"}
    np.testing.assert_array_equal(np.frombuffer(raw[24 + size : -4], "<f4").reshape(3, 4), values)
    assert int.from_bytes(raw[-4:], "little") == google_crc32c.value(raw[:-4])
    got, attrs = store.get("k")
    np.testing.assert_array_equal(got, values)
    assert attrs["notes"] == ["n"] and attrs["complete"] is True
    got[0, 0] = 1.0  # a result read back is the caller's to modify
    # A store written by an earlier lazyconn (a zarr group per subject) is reused, its
    # entries computed again.
    import zarr

    old = tmp_path / "old"
    root = zarr.open_group(old, mode="w", attributes={"format": "lazyconn-results"})
    root.create_group("k").create_array("result", data=values)
    again = ResultStore(old)
    assert again.get("k") is None and again.keys() == []
    again.put("k", values)
    assert again.keys() == ["k"]
    other = tmp_path / "other"
    zarr.open_group(other, mode="w").create_array("x", data=values)
    with pytest.raises(
        OutputExistsError, match=r"cache_dir='.*other' is a zarr group that is not"
    ):
        ResultStore(other)


def test_store_rejects_non_path():
    with pytest.raises(
        ParameterTypeError, match=r"cache_dir=3 has type int; expected a directory"
    ):
        ResultStore(3)


def test_skip_lists_failed_subject_and_finishes_others():
    arrays = toy_study(4)
    subjects = _subjects(arrays)
    subjects[1] = Subject("bad-one", "/nonexistent/run.npy", key="kbad")
    out = _run(CorrcoefStep(), subjects, on_error="skip")
    assert list(out["outcomes"]) == ["s0", "s2", "s3"]
    assert list(out["failures"]) == ["bad-one"]
    assert "subject 'bad-one' (/nonexistent/run.npy) failed: FileNotFoundError" in str(
        out["failures"]["bad-one"]
    )
    assert out["partial"][1] == 3


def test_input_identity_changes_with_file_content(tmp_path):
    path = tmp_path / "run.npy"
    np.save(path, np.zeros((4, 2)))
    before = input_identity(str(path))
    assert input_identity(path) == before
    time.sleep(0.01)
    np.save(path, np.ones((5, 2)))
    assert input_identity(str(path)) != before
    a, b = np.zeros((3, 3)), np.zeros((3, 3))
    assert input_identity(a) == input_identity(b)
    b[0, 0] = 1
    assert input_identity(a) != input_identity(b)


def test_zarr_store_identity_follows_its_attributes(tmp_path):
    import zarr

    group = zarr.open_group(tmp_path / "run.zarr", mode="w")
    group.attrs["checksum"] = "abc"
    before = input_identity(tmp_path / "run.zarr")
    group.attrs["checksum"] = "abd"
    assert input_identity(tmp_path / "run.zarr") != before


def test_params_token_tracks_parameters_and_ignores_verbosity():
    from sklearn.covariance import LedoitWolf, ShrunkCovariance

    class Est:
        def __init__(self, radius=5.0, verbose=0, cov=None):
            self.radius, self.verbose, self.cov = radius, verbose, cov

        def get_params(self, deep=False):
            return {"radius": self.radius, "verbose": self.verbose, "cov": self.cov}

    base = params_token(Est(cov=LedoitWolf()))
    assert params_token(Est(cov=LedoitWolf())) == base
    assert params_token(Est(verbose=3, cov=LedoitWolf())) == base
    assert params_token(Est(radius=6.0, cov=LedoitWolf())) != base
    assert params_token(Est(cov=ShrunkCovariance())) != base
    assert params_token(Est(cov=LedoitWolf(block_size=10))) != base
    fitted = Est(cov=LedoitWolf())
    fitted.mask_ = np.ones(3)  # a fitted state (e.g. a computed mask) is part of the key
    assert params_token(fitted) != base


def test_progress_counts_subjects_in_plain_lines_off_a_terminal():
    stream = io.StringIO()  # not a terminal: whole lines, no carriage return
    bar = Progress("subjects", 3, stream=stream)
    bar.update()
    bar.update(failed=True)
    bar.update()
    bar.close()
    text = stream.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert lines[0].startswith("[lazyconn] subjects   0% 0/3")
    assert "subjects  66% 2/3, 1 failed" in lines[2] and "100% 3/3, 1 failed" in lines[-1]
    assert len(lines) == 4


def test_progress_redraws_one_line_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    with Progress("subjects", 2, stream=stream) as bar:
        bar.update()
        bar.update()
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n") and text.count("\r") == 4
    assert "[" + "#" * 30 + "] 2/2" in text


def test_progress_bar_in_a_local_run(capsys):
    run_group(
        CorrcoefStep(),
        _subjects(toy_study(3)),
        chunk_fn=sum_count,
        combine_fn=add_sum_counts,
        progress=True,
    )
    assert "[lazyconn] subjects" in capsys.readouterr().err


def test_unreachable_scheduler_fails_fast_naming_the_address():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    t0 = time.perf_counter()
    with pytest.raises(ClusterConnectionError, match=f"no dask scheduler answers at '{address}'"):
        _run(CorrcoefStep(), _subjects(toy_study(2)), client=address)
    assert time.perf_counter() - t0 < 5


def test_bad_client_type():
    with pytest.raises(ParameterTypeError, match=r"client=3\.5 has type float; expected None"):
        _run(CorrcoefStep(), _subjects(toy_study(1)), client=3.5)


@pytest.mark.cluster
def test_distributed_equals_local_and_skips_failures(group_client, tmp_path):
    arrays = toy_study(7)
    local = _run(CorrcoefStep(), _subjects(arrays))
    subjects = _subjects(arrays) + [Subject("broken", np.zeros(4), key="kbroken")]
    remote = _run(CorrcoefStep(), subjects, client=group_client, on_error="skip", split_every=2)
    assert list(remote["outcomes"]) == list(local["outcomes"])
    for a, b in zip(local["outcomes"].values(), remote["outcomes"].values(), strict=True):
        np.testing.assert_array_equal(a.result, b.result)
    np.testing.assert_allclose(remote["partial"][0], local["partial"][0], rtol=1e-12)
    assert list(remote["failures"]) == ["broken"]
    with pytest.raises(SubjectError, match="subject 'broken' failed: ValueError"):
        _run(CorrcoefStep(), subjects, client=group_client)


@pytest.mark.cluster
def test_client_none_runs_on_the_users_default_distributed_client(group_client):
    """``client=None`` is dask's current scheduler: a user's ``Client()`` (dask's default)
    runs the subjects, and every subject's outcome comes back (dask's local callbacks, which
    report a local run's subjects, never fire there: the run returned no outcome)."""
    import distributed

    arrays = toy_study(5)
    local = _run(CorrcoefStep(), _subjects(arrays))
    with distributed.Client(group_client.scheduler.address) as default:  # set as default
        out = _run(CorrcoefStep(), _subjects(arrays))
        assert default.status == "running"  # used as is, left open
    assert list(out["outcomes"]) == list(local["outcomes"])
    for a, b in zip(local["outcomes"].values(), out["outcomes"].values(), strict=True):
        np.testing.assert_array_equal(a.result, b.result)
    assert out["dashboard"] is not None  # a distributed run reports its dashboard
    np.testing.assert_allclose(out["partial"][0], local["partial"][0], rtol=1e-12)


@pytest.mark.cluster
def test_local_cluster_is_started_and_closed():
    arrays = toy_study(3)
    out = _run(CorrcoefStep(), _subjects(arrays), client="local", n_workers=1)
    for got, array in zip(out["outcomes"].values(), arrays, strict=True):
        np.testing.assert_allclose(got.result, np.corrcoef(array, rowvar=False), rtol=1e-12)
    import distributed

    with pytest.raises(ValueError):  # the cluster's client was closed, not left as default
        distributed.get_client()


@pytest.mark.cluster
def test_killed_worker_mid_run_gives_identical_results(group_client, tmp_path):
    arrays = toy_study(10, seed=3)
    reference = _run(CorrcoefStep(), _subjects(arrays))
    store = ResultStore(tmp_path / "store")
    pids = group_client.run(os.getpid)
    victim = sorted(pids.values())[0]
    killed = threading.Event()

    def killer():
        # Wait for the first result to land in the store, then SIGKILL one worker process.
        deadline = time.time() + 30
        while time.time() < deadline and not store.keys():
            time.sleep(0.02)
        os.kill(victim, signal.SIGKILL)
        killed.set()

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    out = _run(CorrcoefStep(sleep=0.25), _subjects(arrays), client=group_client, store=store)
    thread.join(5)
    assert killed.is_set()
    assert victim not in group_client.run(os.getpid).values()
    assert not out["failures"]
    for a, b in zip(reference["outcomes"].values(), out["outcomes"].values(), strict=True):
        np.testing.assert_array_equal(a.result, b.result)
    np.testing.assert_allclose(out["partial"][0], reference["partial"][0], rtol=1e-12)
    group_client.wait_for_workers(2, timeout=60)  # leave the shared cluster as it was found
    assert len(store.keys()) == 10


def test_sink_receives_every_result_and_outcomes_keep_none(tmp_path):
    arrays = toy_study(7)
    store = ResultStore(tmp_path / "store")
    first = _subjects(arrays[:3])
    _run(CorrcoefStep(), first, store=store)  # 3 cached for the next run
    seen = {}

    def sink(subject, result):
        seen[subject.name] = result

    out = _run(CorrcoefStep(), _subjects(arrays), store=store, sink=sink, split_every=2)
    assert sorted(seen) == sorted(f"s{i}" for i in range(7))
    for i, a in enumerate(arrays):
        np.testing.assert_allclose(seen[f"s{i}"], np.corrcoef(a, rowvar=False), rtol=1e-12)
    assert all(o.result is None for o in out["outcomes"].values())
    assert out["n_cached"] == 3
    _, count = out["partial"]  # the tree still sees the results
    assert count == 7


class _BlasThreads:
    """Toy step reporting the BLAS thread count it runs with."""

    def __call__(self, subject):
        from threadpoolctl import threadpool_info

        blas = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
        return np.array(blas)


def test_subject_runs_with_one_blas_thread_wherever_it_runs():
    """Results do not depend on the scheduler's BLAS threads (summation order)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    if not [i for i in threadpool_info() if i["user_api"] == "blas"]:
        pytest.skip("no BLAS library seen by threadpoolctl")
    with threadpool_limits(limits=2, user_api="blas"):
        outcome = run_subject(_BlasThreads(), Subject("s", None), "raise")
        assert next(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas") == 2
    assert set(outcome.result.tolist()) == {1}


def _blas_threads():
    from threadpoolctl import threadpool_info

    return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}


class _Overlapping:
    """Toy step for two overlapping tasks: "first" waits inside until "second" is inside;
    "second" then waits until the first task has left and reports the BLAS threads and the
    dask scheduler it runs with."""

    def __init__(self):
        self.inside = {n: threading.Event() for n in ("first", "second")}
        self.first_left = threading.Event()

    def __call__(self, subject):
        self.inside[subject.name].set()
        if subject.name == "first":
            assert self.inside["second"].wait(10)
            return np.zeros(0)
        assert self.inside["first"].wait(10) and self.first_left.wait(10)
        from dask.base import get_scheduler

        return np.array([max(_blas_threads()), get_scheduler() is dask.local.get_sync])


def test_overlapping_tasks_keep_one_blas_thread_and_leave_the_settings_as_they_were():
    """Two subject tasks overlapping on dask's threads. BLAS's thread count and dask's
    config are global to the process, and threadpoolctl lets one thread at a time set
    OpenBLAS's: a limit per task was a no-op in every thread but one, that thread's exit
    put 2 threads back under the other task, and dask's "sync" could stay set after it."""
    if not _blas_threads():
        pytest.skip("no BLAS library seen by threadpoolctl")
    from threadpoolctl import threadpool_limits

    step = _Overlapping()
    subjects = [Subject(n, None, key=f"k{n}") for n in ("first", "second")]

    def on_arrival(key, result, *args):
        if getattr(result, "name", None) == "first":
            step.first_left.set()

    with threadpool_limits(limits=2, user_api="blas"):
        if _blas_threads() != {2}:
            pytest.skip("BLAS cannot run 2 threads here")
        before = dask.config.get("scheduler", None)
        with dask.config.set(num_workers=2), Callback(posttask=on_arrival):
            out = run_group(step, subjects, chunk_fn=None, combine_fn=None, progress=False)
        # 1 BLAS thread and the synchronous scheduler, after the other task has left
        assert out["outcomes"]["second"].result.tolist() == [1, 1]
        assert _blas_threads() == {2}
        assert dask.config.get("scheduler", None) == before


def test_in_process_workers_keep_one_blas_thread_and_leave_it_as_it_was():
    """A cluster whose worker threads live in this process (``processes=False``): their
    own limits were ignored (another thread controls OpenBLAS), so the run sets it."""
    distributed = pytest.importorskip("distributed")
    if not _blas_threads():
        pytest.skip("no BLAS library seen by threadpoolctl")
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=2, user_api="blas"):
        if _blas_threads() != {2}:
            pytest.skip("BLAS cannot run 2 threads here")
        with (
            distributed.LocalCluster(
                n_workers=1,
                threads_per_worker=2,
                processes=False,
                dashboard_address=":0",
                silence_logs=logging.ERROR,
            ) as cluster,
            distributed.Client(cluster, set_as_default=False) as client,
        ):
            out = run_group(
                _BlasThreads(),
                _subjects(range(4)),
                chunk_fn=None,
                combine_fn=None,
                client=client,
                progress=False,
            )
        assert {int(v) for o in out["outcomes"].values() for v in o.result} == {1}
        assert _blas_threads() == {2}


class _HeavyStep(CorrcoefStep):
    """A step carrying 8 MB (as a fitted masker carries its maps and weights)."""

    def __init__(self):
        super().__init__()
        self.payload = np.ones(2**20)


@pytest.mark.cluster
def test_on_a_cluster_every_worker_holds_the_step_before_the_subjects_start(group_client):
    """The step is sent to every worker: as one task's output it sat on one worker, where
    the scheduler then queued every subject (data locality) while the others idled."""
    group_client.wait_for_workers(2, timeout=60)  # a worker killed by an earlier test restarts
    before = {k for keys in group_client.has_what().values() for k in keys}
    tasks = _subject_tasks(_HeavyStep(), _subjects(toy_study(2)), "raise", group_client)
    held = [set(keys) - before for keys in group_client.has_what().values()]
    assert len(held) == 2 and all(len(h) == 1 for h in held) and held[0] == held[1]
    outcomes = group_client.gather(group_client.compute(tasks))
    assert [o.name for o in outcomes] == ["s0", "s1"]
    assert all(o.result.shape == (5, 5) for o in outcomes)


def test_the_step_is_one_node_of_the_graph_not_a_copy_per_subject():
    import pickle

    step = _HeavyStep()
    tasks = _subject_tasks(step, _subjects(toy_study(3)), "raise")
    graph = {k: v for t in tasks for k, v in dict(t.__dask_graph__()).items()}
    (step_key,) = [k for k in graph if str(k).startswith("lazyconn-step-")]
    for task in tasks:
        assert graph[task.key].dependencies == {step_key}
        # the subject task refers to the step by key: a cluster ships the 8 MB once
        assert len(pickle.dumps(graph[task.key])) < 10_000 < 2**23 < len(pickle.dumps(step))
    out = _run(step, _subjects(toy_study(3)))
    for got, array in zip(out["outcomes"].values(), toy_study(3), strict=True):
        np.testing.assert_allclose(got.result, np.corrcoef(array, rowvar=False), rtol=1e-12)


@pytest.mark.slow
@pytest.mark.cluster
def test_local_cluster_workers_take_large_arrays_from_the_heap():
    from lazyconn.group._cluster import client_context

    names = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
    before = dask.config.get("distributed.nanny.pre-spawn-environ")
    with client_context("local", n_workers=1) as client:
        (env,) = client.run(lambda: {k: os.environ.get(k) for k in names}).values()
    # glibc's largest mmap threshold; distributed's trim threshold is kept
    assert env == {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20), "MALLOC_TRIM_THRESHOLD_": "65536"}
    assert dask.config.get("distributed.nanny.pre-spawn-environ") == before  # not leaked


_NAMED = ["threads", "threading", "sync", "synchronous", "single-threaded", "processes"]


@pytest.mark.parametrize("chosen", [None, *_NAMED, "Threads", "callable"])
def test_dask_scheduler_is_dasks_own_choice_found_without_importing_distributed(
    chosen, monkeypatch
):
    """Before distributed is imported no Client can exist: the scheduler is dask's config
    (nothing set: the threads of arrays and delayed objects), as dask's lookup finds it."""
    import sys

    import dask.array as da
    from dask.base import get_scheduler

    from lazyconn._utils import dask_scheduler

    pytest.importorskip("distributed")
    counter = lambda dsk, keys, **kwargs: dask.local.get_sync(dsk, keys, **kwargs)  # noqa: E731
    value = counter if chosen == "callable" else chosen
    with dask.config.set(scheduler=value):
        # dask's own answer (distributed imported, no default Client)
        expected = get_scheduler(collections=[da.ones(2), dask.delayed(1)])
        assert dask_scheduler() is None  # distributed imported: dask decides
        monkeypatch.delitem(sys.modules, "distributed")
        assert dask_scheduler() is expected
        monkeypatch.undo()


def test_dask_scheduler_leaves_the_rest_to_dask(monkeypatch):
    import sys

    from lazyconn._utils import dask_scheduler

    monkeypatch.delitem(sys.modules, "distributed", raising=False)
    with dask.config.set(scheduler="distributed"):
        assert dask_scheduler() is None  # dask raises its own "no Client active"


def test_local_scheduler_hold_names_the_scheduler_and_keeps_a_later_default_client(
    monkeypatch,
):
    """Held, dask's config names the scheduler dask would pick; a setting made meanwhile
    (a Client made the default in another thread sets "dask.distributed") stays."""
    import sys

    from lazyconn._utils import LOCAL_SCHEDULER

    monkeypatch.delitem(sys.modules, "distributed", raising=False)
    before = dask.config.get("scheduler", None)
    with LOCAL_SCHEDULER:
        assert dask.config.get("scheduler") is dask.threaded.get  # nothing set: the threads
    assert dask.config.get("scheduler", None) == before
    with dask.config.set(scheduler="sync"):
        with LOCAL_SCHEDULER:
            assert dask.config.get("scheduler") is dask.local.get_sync
        assert dask.config.get("scheduler") == "sync"
    theirs = dask.config.set(scheduler="dask.distributed")  # as Client(set_as_default=True)
    try:
        with LOCAL_SCHEDULER:
            pass  # a named non-local scheduler: left as it is
        assert dask.config.get("scheduler") == "dask.distributed"
    finally:
        theirs.__exit__(None, None, None)
    with dask.config.set(scheduler=None):  # puts back what was there, whatever happens
        with LOCAL_SCHEDULER:
            theirs = dask.config.set(scheduler="dask.distributed")
        assert dask.config.get("scheduler") == "dask.distributed"  # not put back over theirs
        theirs.__exit__(None, None, None)
    assert dask.config.get("scheduler", None) == before


def test_pickled_modules_are_what_unpickling_imports():
    import colorsys
    import fractions

    from lazyconn.group._engine import Subject, pickled_modules, run_subject

    assert pickled_modules((colorsys.rgb_to_hsv, [fractions.Fraction(1, 3)], 7)) == [
        "colorsys",
        "fractions",
    ]
    assert pickled_modules((run_subject, Subject("s", "/x.nii"))) == ["lazyconn.group._engine"]
    assert pickled_modules(lambda: 0) == []  # not picklable by reference: nothing ahead
