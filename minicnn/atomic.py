"""Atomic file writes and training steps: a crash mid-write never leaves a half-written file
behind, and a Ctrl-C never leaves half of a step's update (:class:`DeferredInterrupt`)."""

from __future__ import annotations

import glob
import os
import signal
import tempfile
import threading
from pathlib import Path


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` holds either the old or the new content.

    The bytes go to a temporary file in the same folder (same file system), are flushed and
    fsync'ed, and the temporary file is then renamed over ``path`` (an atomic operation on
    POSIX and Windows). On any failure the temporary file is removed and ``path`` is untouched.

    The file gets the permissions any other program's new file would get (0666 less the umask;
    the temporary file itself starts private), or keeps those of the file it replaces.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {folder} does not exist")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        if hasattr(os, "fchmod"):  # POSIX
            os.fchmod(fd, _mode_for(path))
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    _fsync_folder(folder)


def _mode_for(path: Path) -> int:
    """The permission bits ``path`` should end up with: those it has, or 0666 less the umask."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


def _umask() -> int:
    # Linux shows the umask in /proc (reading it via os.umask means setting it, briefly, for
    # every thread of the process)
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_stale_temporaries(path) -> list[Path]:
    """Delete the temporary files that interrupted :func:`atomic_write_bytes` calls for ``path``
    left behind; returns them.

    A process killed between creating its temporary file and renaming it (SIGKILL, power loss)
    cannot clean up after itself, so the next writer does: ``fit`` calls this before it writes
    checkpoints. Only call it when no other process is writing ``path`` at the same time.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    removed = []
    for name in glob.glob(os.path.join(glob.escape(str(folder)), f".{glob.escape(path.name)}.*.tmp")):
        try:
            os.unlink(name)
        except OSError:
            continue
        removed.append(Path(name))
    return removed


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class CleanInterrupt(KeyboardInterrupt):
    """Ctrl-C honoured between two steps: the model and optimizer are consistent."""


class DeferredInterrupt:
    """Turn Ctrl-C into a flag checked between steps, so a checkpoint is never taken with half
    of the parameters updated. Only possible in the main thread; elsewhere Ctrl-C is left alone."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:  # a second Ctrl-C: stop at once
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False
