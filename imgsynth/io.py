"""Files every part of the suite shares: atomic writes, file locks, a run's status — without jax.

The launcher runs on login nodes and in job wrappers that never start a JAX backend, so this module
imports nothing heavy. In a multi-host job only process 0 writes; `is_writer` asks jax for the
process index only when the calling program has imported jax itself.
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import math
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Mapping
from typing import Any

STATUSES = ("pending", "running", "done", "failed")
STATUS_FILE = "status.json"
TUNED_LR_FILE = "tuned_lr.json"   # in a study workdir: the learning rates its grid read
# A launcher names a file here for a preparation it watches: the stage training now (its step,
# total and start), written by imgsynth.stages and read by the launcher's progress line.
STAGE_PROGRESS_ENV = "IMGSYNTH_STAGE_PROGRESS"
HEARTBEAT_S = 30.0       # a training run refreshes status.json at least this often
STALE_AFTER_S = 1800.0   # ... and one on another host is presumed gone this long after its last


def is_writer() -> bool:
    """Process 0 of a multi-host job, or the only process."""
    jax = sys.modules.get("jax")
    return jax is None or jax.process_index() == 0


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# ---- A full disk --------------------------------------------------------------------------------

class DiskFull(OSError):
    """No space left where the suite writes: an environment fault, which the command line reports
    in one line naming the path and its free space, exit 1 (`cli`)."""

    def __init__(self, path: str | os.PathLike, needed: int | None = None):
        self.path = os.path.abspath(os.fspath(path))
        need = f", about {human_bytes(needed)} needed" if needed else ""
        super().__init__(errno.ENOSPC, f"no space left on the device of {self.path} "
                         f"({human_bytes(free_bytes(self.path))} free{need}); free some and run "
                         "the same command again")

    def __str__(self) -> str:
        return self.strerror


def free_bytes(path: str) -> int:
    """Free bytes on the file system of `path` (or of its nearest existing parent)."""
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return shutil.disk_usage(path).free


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def is_disk_full(e: BaseException) -> bool:
    """Whether `e`, or what caused it, is a full disk (an OSError, or one that a library such as
    tensorstore reports as text)."""
    while e is not None:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def disk_full_path(e: BaseException) -> str:
    """The path a full-disk error names: a DiskFull's, an OSError's file, else the first quoted
    absolute path in its text (tensorstore's), else the working directory."""
    while e is not None:
        if isinstance(e, DiskFull):
            return e.path
        if isinstance(e, OSError) and e.filename:
            return os.fspath(e.filename)
        quoted = re.search(r'"(/[^"]+)"', str(e))
        if quoted:
            return quoted.group(1)
        e = e.__cause__ or e.__context__
    return os.getcwd()


@contextlib.contextmanager
def names_full_disk(path: str | os.PathLike):
    """A full disk met inside becomes a DiskFull naming `path`."""
    try:
        yield
    except DiskFull:
        raise
    except Exception as e:
        if is_disk_full(e):
            raise DiskFull(path) from e
        raise


# ---- Atomic files -------------------------------------------------------------------------------

def atomic_write(path: str | os.PathLike, data: str | bytes) -> None:
    """Writes to a temporary name in the same folder, then renames: no reader sees half a file,
    and a crash mid-write (a full disk too) leaves the previous version in place."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with names_full_disk(path), os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def json_text(obj: Any, *, indent: int | None = 2) -> str:
    """JSON of results: numpy scalars and arrays become numbers and lists, sets become lists."""
    return json.dumps(obj, indent=indent, sort_keys=True, default=_jsonable)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write(path, json_text(obj))


def read_json(path: str | os.PathLike, default: Any = None) -> Any:
    if not os.path.exists(path):
        return default
    with open(path) as f:
        return json.load(f)


@contextlib.contextmanager
def staged_dir(directory: str):
    """Yields a temporary sibling folder to fill; on success it is renamed to `directory`
    (replacing an older one), on failure removed: readers see the whole folder or none of it."""
    directory = os.path.abspath(directory)
    os.makedirs(os.path.dirname(directory), exist_ok=True)
    tmp = tempfile.mkdtemp(dir=os.path.dirname(directory), prefix=".tmp-")
    os.chmod(tmp, 0o755)   # mkdtemp makes it private; a shared cache is for every user
    try:
        with names_full_disk(directory):
            yield tmp
        if os.path.isdir(directory):
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_dir(directory: str, files: Mapping[str, bytes]) -> None:
    """Writes `files` as one folder, atomically (`staged_dir`)."""
    with staged_dir(directory) as tmp:
        for name, data in files.items():
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(data)


def install_shipped(source: str, directory: str, info_file: str, info: dict) -> None:
    """Copies a model shipped with the package (`source`: weights beside `info_file`) into a cache
    `directory`, atomically, its info file `info` (saying where it came from)."""
    with staged_dir(directory) as tmp:
        for name in os.listdir(source):
            if name != info_file:
                shutil.copy(os.path.join(source, name), tmp)
        write_json(os.path.join(tmp, info_file), info)


def _jsonable(x):
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, (set, tuple)):
        return list(x)
    raise TypeError(f"not JSON serialisable: {type(x)}")


def finite_or_none(v):
    """A number for JSON: non-finite floats become null (JSON has no NaN)."""
    if isinstance(v, (bool, str, int)) or v is None:
        return v
    v = float(v)
    return v if math.isfinite(v) else None


# ---- Locks --------------------------------------------------------------------------------------

class LockedError(RuntimeError):
    """A non-blocking lock is held by another process (the message names it)."""


class FileLock:
    """An exclusive advisory lock on `<path>.lock`, released when the holder exits or dies.

    Concurrent preparers build a stage once; a second launcher on a workdir is refused
    (`blocking=False` raises LockedError, naming the holder, instead of waiting).
    """

    def __init__(self, path: str | os.PathLike, *, blocking: bool = True):
        self.path = self.file(path)
        self.blocking = blocking
        self._f = None

    @staticmethod
    def file(path: str | os.PathLike) -> str:
        return os.path.abspath(os.fspath(path)) + ".lock"

    @classmethod
    def held(cls, path: str | os.PathLike) -> bool:
        """Whether another process holds the lock of `path` at this moment."""
        lock = cls.file(path)
        if not os.path.exists(lock):
            return False
        with open(lock) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
        return False

    def __enter__(self) -> FileLock:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self._f = open(self.path, "a+")
        try:
            fcntl.flock(self._f, fcntl.LOCK_EX | (0 if self.blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            self._f.close()
            self._f = None
            raise LockedError(f"{os.path.dirname(self.path)} is in use by another process "
                              f"({self.holder()}); wait for it or stop it") from None
        self._f.truncate(0)   # who holds it, for the message a refused process prints
        self._f.write(f"pid {os.getpid()} on {socket.gethostname()} since {now()}\n")
        self._f.flush()
        return self

    def holder(self) -> str:
        """'pid P on HOST since T' of the process that holds the lock (as it wrote it)."""
        try:
            with open(self.path) as f:
                return f.read().strip() or "unknown process"
        except OSError:
            return "unknown process"

    def __exit__(self, *exc) -> None:
        fcntl.flock(self._f, fcntl.LOCK_UN)
        self._f.close()
        self._f = None


# ---- Run status ---------------------------------------------------------------------------------

def read_status(workdir: str) -> dict:
    """status.json of a run ({'status': 'pending'} when absent or unreadable)."""
    try:
        status = read_json(os.path.join(workdir, STATUS_FILE))
    except (OSError, ValueError):   # half-written by a foreign tool: treat as unknown
        return {"status": "pending", "reason": "unreadable status.json"}
    return status or {"status": "pending", "reason": None}


def process_gone(status: dict, *, stale_after_s: float = STALE_AFTER_S) -> bool:
    """Whether the trainer a `running` status names is gone: on this host its pid is not alive; on
    another its heartbeat is older than `stale_after_s` (compiles and evaluations stay under it)."""
    if status.get("status") != "running" or "pid" not in status:
        return False
    if status.get("host") == socket.gethostname():
        try:
            os.kill(int(status["pid"]), 0)
        except ProcessLookupError:
            return True
        except PermissionError:   # alive, another user's
            return False
        return False
    beat = status.get("heartbeat")
    return beat is None or time.time() - float(beat) > stale_after_s


def write_status(workdir: str, status: str, reason: str | None = None, **extra: Any) -> None:
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    if is_writer():
        write_json(os.path.join(workdir, STATUS_FILE),
                   {"status": status, "reason": reason, "updated": now(), **extra})
