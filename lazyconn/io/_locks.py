"""One writer per store, and no scratch files left behind.

* **Writer lock.** A store being written has a lock file next to it,
  ``<store>.lazyconn-lock`` (JSON: host, pid, process start, start time, token), created
  atomically: ``O_EXCL`` locally; on S3 a conditional PutObject (``If-None-Match: *``,
  honoured by AWS S3 since 2024, MinIO and moto); on a store that answers 501 to it, or a
  filesystem without exclusive create, written after an existence check and read back
  (a narrow race remains there). A second writer refuses with
  :class:`~lazyconn.exceptions.StoreLockedError` naming the first, unless the first is
  provably dead (same host and boot, and its pid gone or reused) or ``overwrite=True``.
  The same record is kept in the store's ``lazyconn.writer`` attribute; the completion
  mark is only set by the writer the store names.
* **Scratch files.** Stage files are named ``lazyconn-stage-<host>-<pid>-<id>.raw``;
  :func:`sweep_stale_scratch` removes those of dead processes of this host, and
  :func:`terminate_cleanly` turns SIGTERM into an exception so that cleanup code runs
  before the process ends with SIGTERM's status.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import re
import signal
import socket
import threading
import time
import uuid

from lazyconn.exceptions import StoreLockedError
from lazyconn.io._fs import access_errors, get_fs, is_local, local_path, redact

LOCK_SUFFIX = ".lazyconn-lock"
STAGE_PREFIX = "lazyconn-stage-"


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as fobj:
            return fobj.read().strip()
    except OSError:
        return None


def _process_start(pid: int) -> int | None:
    """Start time of ``pid`` (clock ticks since boot, Linux), or None if unknown/gone."""
    try:
        with open(f"/proc/{pid}/stat") as fobj:
            stat = fobj.read()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22: starttime


def host_name() -> str:
    return socket.gethostname()


def writer_record() -> dict:
    """Who is writing: host, pid (and its start, to tell a reused pid), when, a token."""
    return {
        "host": host_name(),
        "pid": os.getpid(),
        "process_start": _process_start(os.getpid()),
        "boot_id": _boot_id(),
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "token": uuid.uuid4().hex,
    }


def is_dead(record: dict) -> bool:
    """True only if the writer is provably gone: same host and boot, pid gone or reused."""
    if record.get("host") != host_name():
        return False  # another machine: cannot tell
    boot = _boot_id()
    if record.get("boot_id") and boot and record["boot_id"] != boot:
        return True  # the machine rebooted since
    pid = record.get("pid")
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # exists, another user's
    start = record.get("process_start")
    now = _process_start(pid)
    return start is not None and now is not None and now != start


def describe(record: dict) -> str:
    return f"host {record.get('host')!r}, pid {record.get('pid')}, started {record.get('started')}"


class WriterLock:
    """The lock of one destination; ``acquire`` then ``release`` (idempotent)."""

    def __init__(self, dst: str, storage_options=None, *, name: str = "dst"):
        self.dst = dst
        self.storage_options = storage_options
        self.name = name
        self.record = writer_record()
        self.held = False
        fs, path = get_fs(dst, storage_options)
        self.fs, self.path = fs, path.rstrip("/") + LOCK_SUFFIX

    def __repr__(self) -> str:
        return f"<WriterLock {redact(self.dst)!r} held={self.held}>"

    def __getstate__(self):
        state = self.__dict__.copy()
        state["fs"] = None  # rebuilt: filesystems need not pickle
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.fs = get_fs(self.dst, self.storage_options)[0]

    def _read(self) -> dict | None:
        for _ in range(20):  # a lock file being written is empty for a moment
            try:
                text = self.fs.cat_file(self.path)
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                return None  # no lock (or no directory: the destination checks say so)
            try:
                return json.loads(text)
            except ValueError:
                time.sleep(0.05)
        return {}

    def _create(self, data: bytes) -> bool | None:
        if is_local(self.dst):
            path = local_path(self.dst).rstrip("/") + LOCK_SUFFIX
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                # No directory to write in: the destination checks that follow say so.
                return None
            with os.fdopen(fd, "wb") as fobj:
                fobj.write(data)
            return True
        # Object stores: an exclusive create where the store has one (S3's conditional
        # PutObject, "If-None-Match: *", which s3fs sends for mode="create").
        try:
            self.fs.pipe_file(self.path, data, mode="create")
            return True
        except FileExistsError:
            return False
        except TypeError:
            pass  # a filesystem without mode=: the fallback below
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                return False  # 412 Precondition Failed, the condition not named
            if exc.errno != errno.ENOSYS:
                raise
            # 501 Not Implemented: a store without conditional writes: the fallback below
        # Fallback: write, then check that ours is what stayed (a narrow race remains).
        if self.fs.exists(self.path):
            return False
        self.fs.pipe_file(self.path, data)
        time.sleep(0.2)
        held = self._read()
        return bool(held) and held.get("token") == self.record["token"]

    def check(self, overwrite: bool = False) -> None:
        """Raise StoreLockedError now if a live writer holds the lock (nothing is written)."""
        if overwrite:
            return
        with access_errors(self.name, self.dst):
            other = self._read()
        if other and not is_dead(other):
            raise self._locked(other)

    def _locked(self, other: dict) -> StoreLockedError:
        return StoreLockedError(
            f"{self.name}={redact(self.dst)!r} is being written by another process "
            f"({describe(other)}; lock file {redact(self.dst).rstrip('/') + LOCK_SUFFIX!r}); "
            "expected no other writer: wait for it to finish, or pass overwrite=True "
            "(--overwrite) if that process is gone."
        )

    def acquire(self, overwrite: bool = False) -> None:
        """Take the lock, or raise StoreLockedError (AccessDeniedError: credentials refused)."""
        with access_errors(self.name, self.dst):
            self._acquire(overwrite)

    def _acquire(self, overwrite: bool) -> None:
        data = json.dumps(self.record).encode()
        for _ in range(5):
            created = self._create(data)
            if created is None:
                return
            if created:
                self.held = True
                return
            other = self._read()
            if other is None:
                continue  # released meanwhile: try again
            if other.get("token") == self.record["token"]:
                # Our create went through but its answer was lost (a timeout under load)
                # and the client's retry was refused: the lock is ours.
                self.held = True
                return
            if not (overwrite or not other or is_dead(other)):
                raise self._locked(other)
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(self.path)  # a dead writer's (or overwritten) lock
        raise StoreLockedError(
            f"{self.name}={redact(self.dst)!r}: could not take the writer lock (other "
            "processes keep taking it); expected a single writer."
        )

    def release(self) -> None:
        """Remove the lock if it is still ours."""
        if not self.held:
            return
        self.held = False
        with contextlib.suppress(OSError):
            other = self._read()
            if other is not None and other.get("token") == self.record["token"]:
                self.fs.rm_file(self.path)


# --- scratch files --------------------------------------------------------------------
_SAFE = re.compile(r"[^A-Za-z0-9.-]")


def scratch_name(scratch_dir: str) -> str:
    """A new stage file path of this process: ``lazyconn-stage-<host>-<pid>-<id>.raw``."""
    host = _SAFE.sub("_", host_name())
    return os.path.join(scratch_dir, f"{STAGE_PREFIX}{host}-{os.getpid()}-{uuid.uuid4().hex}.raw")


def sweep_stale_scratch(scratch_dir: str) -> list[str]:
    """Remove stage files of dead processes of this host from ``scratch_dir``; return them."""
    host = _SAFE.sub("_", host_name())
    pattern = re.compile(rf"^{re.escape(STAGE_PREFIX)}{re.escape(host)}-(\d+)-[0-9a-f]+\.raw$")
    removed = []
    try:
        names = os.listdir(scratch_dir)
    except OSError:
        return removed
    for entry in names:
        match = pattern.match(entry)
        if not match:
            continue
        pid = int(match.group(1))
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
            continue  # alive (or another user's): not ours to remove
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        with contextlib.suppress(OSError):
            os.remove(os.path.join(scratch_dir, entry))
            removed.append(entry)
    return removed


class Terminated(SystemExit):
    """Raised in the main thread on SIGTERM while cleanup-aware work runs."""


@contextlib.contextmanager
def terminate_cleanly():
    """Within this block SIGTERM raises :class:`Terminated` (so ``finally``/``except``
    cleanup runs); afterwards the process ends with SIGTERM as it would have.

    Only in the main thread and when SIGTERM has its default action (a handler installed
    by the application is left alone).
    """
    main = threading.current_thread() is threading.main_thread()
    if not main or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def _raise(signum, frame):
        raise Terminated(128 + signum)

    signal.signal(signal.SIGTERM, _raise)
    terminated = False
    try:
        yield
    except Terminated:
        terminated = True
        raise
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if terminated:
            os.kill(os.getpid(), signal.SIGTERM)  # cleanup done: end as SIGTERM would
