"""Error handling of every command line: a user's mistake is one line and exit code 2.

A mistake in what was asked for — an unknown config key or size, a workdir that is a file or holds
another run, a budget below one step, a run another trainer owns — prints `error: …` and exits 2
before anything expensive starts. A fault of the environment (a full disk, wherever it strikes)
prints one line naming the path and its free space and exits 1. The traceback is for `--verbose`
(or IMGSYNTH_VERBOSE=1). Other faults (a bug) keep their traceback and exit 1. No jax here: the
launcher uses it too.
"""
from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence

from imgsynth import config as config_lib, io

USAGE_EXIT = 2
ENVIRONMENT_EXIT = 1
VERBOSE_FLAG, VERBOSE_ENV = "--verbose", "IMGSYNTH_VERBOSE"
WATCH_PARENT_ENV = "IMGSYNTH_PARENT_PID"


class UsageError(ValueError):
    """A mistake in the command line or in the config it names."""


USAGE_ERRORS = (UsageError, config_lib.ConfigError, io.LockedError)
PREPARE = "python -m imgsynth.stages --config={config}"


class MissingStage(FileNotFoundError):
    """A stage's output (an autoencoder, a trained instrument) is not on disk. Wherever it is
    found missing, the message names the one command that prepares every stage of a run; a
    caller that knows the run's config names it (`for_config`)."""

    def __init__(self, what: str, config: str = "..."):
        self.what = what
        super().__init__(f"{what}; prepare the run's stages with `{PREPARE.format(config=config)}`")

    def for_config(self, config: str) -> "MissingStage":
        return MissingStage(self.what, config)


def message(e: BaseException) -> str:
    """The exception's text on one line (a KeyError's without its quotes)."""
    text = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    return " ".join(str(text).split()) or type(e).__name__


@contextlib.contextmanager
def usage_errors(*types: type[BaseException]):
    """Inside, `types` count as the user's mistake: the config's own checks raise KeyError for an
    unknown size or paradigm and ValueError for a bad data spec."""
    try:
        yield
    except USAGE_ERRORS:
        raise
    except types as e:
        raise UsageError(message(e)) from e


def _verbose(argv: Sequence[str]) -> bool:
    return VERBOSE_FLAG in argv or os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def _report(e: BaseException, verbose: bool) -> int:
    if verbose:
        traceback.print_exception(e)
    print(f"error: {message(e)}", file=sys.stderr, flush=True)
    return USAGE_EXIT


def _environment_fault(e: BaseException, verbose: bool) -> int:
    """A full disk in one line (`io.DiskFull`'s text, naming the path and its free space)."""
    if verbose:
        traceback.print_exception(e)
    full = e if isinstance(e, io.DiskFull) else io.DiskFull(io.disk_full_path(e))
    print(f"error: {full}", file=sys.stderr, flush=True)
    return ENVIRONMENT_EXIT


def watch_parent() -> None:
    """Where the launcher cannot ask the kernel to stop its children when it dies (no prctl, see
    launch/local.py), it names itself in IMGSYNTH_PARENT_PID; a daemon thread here then sends this
    process SIGTERM (checkpoint and stop) once the parent is gone."""
    parent = os.environ.pop(WATCH_PARENT_ENV, "")
    if not parent.isdigit():
        return

    def watch():
        while os.getppid() == int(parent):
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True, name="parent-watchdog").start()


def run(main: Callable[[list[str]], int | None], argv: Sequence[str] | None = None) -> int:
    """Calls `main(argv)` (an argparse main; `--verbose` removed) and returns its exit code, or 2
    after one line for a usage error. Console scripts and `python -m` both `sys.exit` it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = _verbose(argv)
    watch_parent()
    try:
        return main([a for a in argv if a != VERBOSE_FLAG]) or 0
    except USAGE_ERRORS as e:
        return _report(e, verbose)
    except Exception as e:
        if io.is_disk_full(e):
            return _environment_fault(e, verbose)
        raise


def one_line(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """argparse's own errors (a missing or malformed flag) as one line, exit 2, not the usage."""
    def error(text):
        raise UsageError(f"{text} (see {parser.prog} --help)")
    parser.error = error
    return parser


def check_workdir(workdir: str | None, parallel: int = 1) -> None:
    """The launcher's own arguments, checked before a grid is planned."""
    if workdir and os.path.exists(workdir) and not os.path.isdir(workdir):
        raise UsageError(f"--workdir={workdir} is a file, not a directory")
    if parallel < 1:
        raise UsageError(f"--parallel={parallel}: at least one run at a time")


def run_absl(main: Callable[[list[str]], None]) -> None:
    """`absl.app.run(main)` with one-line usage errors, including those raised while the flags are
    parsed: ml_collections loads the config file there and applies `--config.a.b=v` overrides."""
    from absl import app, flags

    verbose = _verbose(sys.argv)
    watch_parent()
    sys.argv = [a for a in sys.argv if a != VERBOSE_FLAG]   # config_flags re-reads sys.argv

    def parse(args):
        try:
            return flags.FLAGS(args)
        except flags.Error as e:   # a missing required flag, a malformed value, an unknown flag
            raise UsageError(message(e)) from e
        except SystemExit:
            raise
        except Exception as e:   # noqa: BLE001 - the config file or an override is wrong
            raise UsageError(_override_message(e)) from e

    try:
        app.run(main, flags_parser=parse)
    except USAGE_ERRORS as e:
        sys.exit(_report(e, verbose))
    except Exception as e:
        if io.is_disk_full(e):
            sys.exit(_environment_fault(e, verbose))
        raise


def _override_message(e: BaseException) -> str:
    """For an unknown `--config.<path>` key: the key and the nearest known one."""
    tb = e.__traceback__
    while tb is not None:   # the frame of config_flags' parser holds the config and the key
        local = tb.tb_frame.f_locals
        if isinstance(e, (AttributeError, KeyError)) and "field_path" in local and hasattr(
                local.get("config"), "items"):
            return unknown_key(local["config"], local["field_path"],
                               getattr(local.get("self"), "name", "config"))
        tb = tb.tb_next
    return message(e)


def unknown_key(config, path: str, flag: str = "config") -> str:
    known = list(_paths(config))
    near = (difflib.get_close_matches(path, known, n=1, cutoff=0.5)
            or difflib.get_close_matches(path.split(".")[-1], known, n=1, cutoff=0.0))
    hint = f"; the nearest known key is --{flag}.{near[0]}" if near else ""
    return f"--{flag}.{path}: the config has no key {path!r}{hint}"


def _paths(config, prefix: str = ""):
    for key, value in config.items():
        yield prefix + key
        if hasattr(value, "items"):
            yield from _paths(value, f"{prefix}{key}.")
