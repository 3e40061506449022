"""TensorBoard scalars, written without TensorFlow.

clu's metric writers and tensorboard's own EventFileWriter (through `tf.io.gfile`) import
TensorFlow: about 5 s of every training process's start-up, for a file that is only TFRecord
framing around `Event` protos. The tensorboard package frames and encodes those on its own.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

log = logging.getLogger(__name__)


class ScalarWriter:
    """Appends scalars to one `events.out.tfevents.*` file in `logdir` (TensorBoard reads it)
    and logs each row; `enabled=False` (every process but the writer) only logs."""

    def __init__(self, logdir: str, enabled: bool = True):
        self._records = None
        if enabled:
            os.makedirs(logdir, exist_ok=True)
            name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
            self._records = RecordWriter(open(os.path.join(logdir, name), "ab"))
            self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

    def _write(self, event) -> None:
        self._records.write(event.SerializeToString())

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        log.info("[%d] %s", step, ", ".join(f"{k}={v:.6g}" for k, v in scalars.items()))
        if self._records is None:
            return
        values = [summary_pb2.Summary.Value(tag=k, simple_value=float(v))
                  for k, v in scalars.items()]
        self._write(event_pb2.Event(wall_time=time.time(), step=int(step),
                                    summary=summary_pb2.Summary(value=values)))

    def flush(self) -> None:
        if self._records is not None:
            self._records.flush()

    def close(self) -> None:
        if self._records is not None:
            self._records.close()
            self._records = None
