"""One writer per store and no leftovers, with real processes (``lazyconn convert``).

A conversion is paused with SIGSTOP at a chosen moment (its lock taken, or its stage file
written) so that the second process always meets it mid-run.
"""

import json
import os
import signal
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest

import lazyconn
from lazyconn.exceptions import StoreLockedError
from lazyconn.io._locks import LOCK_SUFFIX, STAGE_PREFIX, WriterLock, is_dead, writer_record


@pytest.fixture(scope="module")
def big_run(tmp_path_factory):
    """A .nii.gz whose staging takes long enough to be caught mid-way (~10 MB raw)."""
    rng = np.random.default_rng(0)
    data = (100 + rng.standard_normal((32, 32, 24, 100))).astype(np.float32)
    path = tmp_path_factory.mktemp("big") / "run.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return str(path), data


def _convert(src, dst, *extra, scratch=None):
    cmd = [sys.executable, "-m", "lazyconn", "convert", src, "-o", dst, "--no-progress", *extra]
    if scratch is not None:
        cmd += ["--scratch-dir", str(scratch)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _stop_when(proc, condition, timeout=90.0):
    """SIGSTOP ``proc`` as soon as ``condition()`` holds (polled every millisecond)."""
    end = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        assert time.monotonic() < end, "condition never met"
        time.sleep(0.001)
    os.kill(proc.pid, signal.SIGSTOP)


def _stage_files(scratch):
    return [n for n in os.listdir(scratch) if n.startswith(STAGE_PREFIX)]


@pytest.mark.slow
def test_second_convert_refuses_while_the_first_writes(big_run, tmp_path):
    src, data = big_run
    dst = str(tmp_path / "run.zarr")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    first = _convert(src, dst, scratch=scratch)
    # Paused mid-run (its store made, now staging): what the second writer meets.
    _stop_when(first, lambda: os.path.exists(dst) and bool(_stage_files(scratch)))
    try:
        second = subprocess.run(
            [sys.executable, "-m", "lazyconn", "convert", src, "-o", dst, "--no-progress"],
            capture_output=True,
            timeout=120,
        )
        err = second.stderr.decode()
        assert second.returncode == 1, err  # before the fix: 0, the first's store deleted
        assert f"dst='{dst}' is being written by another process" in err
        assert f"pid {first.pid}" in err and "Traceback" not in err
        with open(dst + LOCK_SUFFIX) as fobj:
            record = json.load(fobj)
        assert record["pid"] == first.pid and record["host"] and record["started"]
    finally:
        os.kill(first.pid, signal.SIGCONT)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err.decode()[-2000:]
    assert not os.path.exists(dst + LOCK_SUFFIX)  # released
    np.testing.assert_array_equal(lazyconn.load(dst).data.compute(), data)


@pytest.mark.slow
def test_overwrite_takes_over_and_the_first_does_not_mark_it(big_run, tmp_path):
    src, data = big_run
    dst = str(tmp_path / "run.zarr")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    first = _convert(src, dst, scratch=scratch)
    _stop_when(first, lambda: bool(_stage_files(scratch)))  # its store made, now staging
    try:
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "lazyconn",
                "convert",
                src,
                "-o",
                dst,
                "--overwrite",
                "--no-progress",
            ],
            capture_output=True,
            timeout=120,
        )
        assert second.returncode == 0, second.stderr.decode()[-2000:]
    finally:
        os.kill(first.pid, signal.SIGCONT)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 1
    assert "was replaced by another writer" in err.decode()
    np.testing.assert_array_equal(lazyconn.load(dst).data.compute(), data)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_convert_leaves_no_stage_file_for_long(big_run, tmp_path, sig):
    """SIGTERM: cleaned at once. SIGKILL: swept, and its lock taken over, by the next run."""
    src, data = big_run
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    dst = str(tmp_path / "run.zarr")
    first = _convert(src, dst, scratch=scratch)
    _stop_when(first, lambda: bool(_stage_files(scratch)))
    os.kill(first.pid, sig)
    os.kill(first.pid, signal.SIGCONT)
    first.communicate(timeout=120)
    assert first.returncode == -sig
    lock_left = os.path.exists(dst + LOCK_SUFFIX)
    if sig == signal.SIGTERM:
        assert _stage_files(scratch) == []
        assert not lock_left
    else:
        assert len(_stage_files(scratch)) == 1
    again = _convert(src, dst, scratch=scratch)  # the dead writer's lock is taken over
    _, err = again.communicate(timeout=120)
    assert again.returncode == 0, err.decode()[-2000:]
    assert _stage_files(scratch) == []  # swept at the next start
    assert lock_left == (sig == signal.SIGKILL)
    np.testing.assert_array_equal(lazyconn.load(dst).data.compute(), data)


def test_lock_in_process(tmp_path):
    dst = str(tmp_path / "x.zarr")
    first = WriterLock(dst)
    first.acquire()
    with pytest.raises(StoreLockedError, match=r"dst='.*x.zarr' is being written by another"):
        WriterLock(dst).acquire()
    taker = WriterLock(dst)
    taker.acquire(overwrite=True)
    first.release()  # no longer its lock: left in place
    assert os.path.exists(dst + LOCK_SUFFIX)
    taker.release()
    assert not os.path.exists(dst + LOCK_SUFFIX)


def test_dead_writer_is_recognised():
    record = writer_record()
    assert not is_dead(record)
    assert is_dead({**record, "pid": 2**22 + 12345})  # no such pid
    assert is_dead({**record, "process_start": -1})  # the pid was reused
    assert not is_dead({**record, "host": "another-host", "pid": 2**22 + 12345})


def test_to_zarr_takes_the_lock(tmp_path, make_nifti):
    _, ref = make_nifti("run.nii")
    dst = str(tmp_path / "out.zarr")
    holder = WriterLock(dst)
    holder.acquire()
    img = lazyconn.load(nib.Nifti1Image(np.asarray(ref), np.eye(4)))
    with pytest.raises(StoreLockedError, match=r"pid \d+"):
        img.to_zarr(dst)
    holder.release()
    img.to_zarr(dst)
    assert not os.path.exists(dst + LOCK_SUFFIX)
    np.testing.assert_array_equal(lazyconn.load(dst).data.compute(), ref)


@pytest.mark.s3
def test_s3_lock_is_created_exclusively(s3_bucket, monkeypatch):
    """A second writer that checked before the first wrote (the race) still cannot take it:
    the create itself is conditional (If-None-Match: *), not check-then-write."""
    bucket, options = s3_bucket
    dst = f"{bucket}/run.zarr"
    first = WriterLock(dst, options)
    first.acquire()
    late = WriterLock(dst, options)
    monkeypatch.setattr(late.fs, "exists", lambda *a, **k: False)  # its check came first
    with pytest.raises(StoreLockedError, match=rf"pid {os.getpid()}"):
        late.acquire()
    assert json.loads(late.fs.cat_file(late.path))["token"] == first.record["token"]
    first.release()
    assert not late.fs.exists(late.path)


@pytest.mark.s3
def test_s3_lock_whose_create_answer_was_lost_is_held(s3_bucket, monkeypatch):
    """A conditional PUT that reached the store but whose answer was lost is retried by the
    client and refused (412): the writer must see that the lock holds its own token, not
    take itself for another writer (both racers lost under load before)."""
    bucket, options = s3_bucket
    lock = WriterLock(f"{bucket}/lost-answer.zarr", options)
    put = lock.fs.pipe_file

    def put_then_lose_the_answer(path, data, **kwargs):
        put(path, data, **kwargs)
        raise FileExistsError(path)  # what the refused retry reports

    monkeypatch.setattr(lock.fs, "pipe_file", put_then_lose_the_answer)
    lock.acquire()
    assert lock.held
    other = WriterLock(f"{bucket}/lost-answer.zarr", options)
    with pytest.raises(StoreLockedError, match=rf"pid {os.getpid()}"):
        other.acquire()
    monkeypatch.undo()
    lock.release()
    assert not lock.fs.exists(lock.path)


_RACE_LOCK = """
import json, os, sys, time
from lazyconn.exceptions import StoreLockedError
from lazyconn.io._locks import WriterLock
bucket, options, me, rounds, ready = sys.argv[1], json.loads(sys.argv[2]), *sys.argv[3:6]
won = []
for i in range(int(rounds)):
    open(f"{ready}-{i}-{me}", "w").close()
    end = time.time() + 60
    while time.time() < end and not all(os.path.exists(f"{ready}-{i}-{w}") for w in "ab"):
        time.sleep(0.001)  # not a busy loop: the S3 server shares the cores
    try:
        WriterLock(f"{bucket}/run-{i}.zarr", options).acquire()  # held: never released
        won.append(i)
    except StoreLockedError:
        pass
print(json.dumps(won))
"""


@pytest.mark.s3
@pytest.mark.slow
def test_two_processes_race_for_the_s3_lock_one_wins_each_time(s3_bucket, tmp_path):
    """The property with real processes (the old write-then-read-back also passed it: its
    race needs a PUT delayed past the read-back, which the test above forces instead)."""
    bucket, options = s3_bucket
    script = tmp_path / "race.py"
    script.write_text(_RACE_LOCK)
    rounds = 8
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), bucket, json.dumps(options), me, str(rounds)]
            + [str(tmp_path / "ready")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for me in "ab"
    ]
    won = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err.decode()[-2000:]
            won.append(json.loads(out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert sorted(won[0] + won[1]) == list(range(rounds))  # exactly one winner per round
