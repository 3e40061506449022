"""The files of a run directory: config.json, status.json, metrics.jsonl — written atomically.

Analysis reads these flat files only (big_vision/nanodo style). In a multi-host job only process 0
writes; every process may read.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import tempfile
from typing import Any

import jax

STATUSES = ("pending", "running", "done", "failed")


def is_writer() -> bool:
    return jax.process_index() == 0


def write_json(path: str, obj: Any) -> None:
    """Writes to a temporary file in the same directory, then renames: readers never see half."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True, default=_jsonable)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_json(path: str, default: Any = None) -> Any:
    if not os.path.exists(path):
        return default
    with open(path) as f:
        return json.load(f)


def _jsonable(x):
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, (set, tuple)):
        return list(x)
    raise TypeError(f"not JSON serialisable: {type(x)}")


def read_status(workdir: str) -> dict:
    return read_json(os.path.join(workdir, "status.json"), {"status": "pending", "reason": None})


def write_status(workdir: str, status: str, reason: str | None = None, **extra: Any) -> None:
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    if not is_writer():
        return
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    write_json(os.path.join(workdir, "status.json"),
               {"status": status, "reason": reason, "updated": now, **extra})


def write_config(workdir: str, config) -> None:
    """Writes config.json; a workdir that already holds a different config is refused.

    Resuming with changed hyper-parameters would silently mix two runs in one set of curves.
    """
    path = os.path.join(workdir, "config.json")
    new = json.loads(config.to_json_best_effort(sort_keys=True))
    old = read_json(path)
    if old is not None and old != new:
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise ValueError(f"{workdir} holds a run with a different config (keys {changed}); "
                         "use a new --workdir or restore the original config")
    if is_writer() and old is None:
        write_json(path, new)


class MetricsLog:
    """Appends one JSON object per row to metrics.jsonl (process 0 only); non-finite → null."""

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, "metrics.jsonl")

    def write(self, row: dict) -> None:
        if not is_writer():
            return
        clean = {k: _clean(v) for k, v in row.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps(clean, sort_keys=True) + "\n")

    def rows(self) -> list[dict]:
        if not os.path.exists(self.path):
            return []
        with open(self.path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def truncate_after(self, step: int) -> None:
        """Drops rows past `step` (written after the checkpoint a resumed run restarts from)."""
        if not is_writer() or not os.path.exists(self.path):
            return
        rows = [r for r in self.rows() if r.get("step", 0) <= step]
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in rows)
        os.replace(tmp, self.path)


def _clean(v):
    if isinstance(v, (bool, str)) or v is None:
        return v
    if isinstance(v, int):
        return v
    v = float(v)
    return v if math.isfinite(v) else None
