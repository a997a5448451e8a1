"""All-or-nothing output sets: never replace silently, stage beside the destination, move in when complete.

Every command that writes results (``segment``, ``refine``, ``train``, the worker) goes through
:class:`OutputSet`:

1. :meth:`~OutputSet.check` (before any inference): the destination is a folder or can become one, and none
   of the files the run would write exists yet (unless ``overwrite``); :meth:`~OutputSet.check_space` once
   the size is known.
2. :meth:`~OutputSet.open` creates the staging folder ``DIR/.KEY.hybridseg-partial``. ``mkdir`` is atomic,
   so that folder is also the lock of ``KEY`` in ``DIR`` (a second run writing the same stem there is
   refused), and creating it proves that ``DIR`` is writable.
3. The run writes its files at :meth:`~OutputSet.path` (inside the staging folder).
4. :meth:`~OutputSet.commit` moves them in, in the order given (the JSON summary last), with SIGINT, SIGTERM
   and SIGHUP held back until the moves are done; earlier outputs of the stem are replaced only with
   ``overwrite`` and are put back if a move fails.
5. Leaving the ``with`` block without a commit (an error, Ctrl-C, SIGTERM turned into an exception by the
   CLI) deletes the staging folder and the folders :meth:`~OutputSet.open` created.

A run killed with SIGKILL (or a power cut) leaves its staging folder behind; the next run finds that its
owner process is gone and removes it. Hand-written rather than a lock library: the staging folder has to
exist anyway, and making it the lock leaves one thing to clean up (``filelock`` leaves its lock file in the
user's folder, and a crashed run's temporary files would still need this cleanup).
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import json
import logging
import os
import shutil
import signal
import socket
import threading
import time
from pathlib import Path

from .errors import UserInputError

logger = logging.getLogger(__name__)

#: suffix of a staging folder: ``.KEY.hybridseg-partial``
PARTIAL_SUFFIX = ".hybridseg-partial"
_OWNER = "owner.json"
#: a staging folder without its owner file that is younger than this is still being created by another run
_FRESH_S = 60.0
_DEFERRED = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
#: write errors that are the environment's (disk, permissions), reported as one line with exit code 2
_USER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (a zombie counts as alive)."""
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C_EVENT on Windows
        import ctypes

        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return ctypes.get_last_error() == 5  # ERROR_ACCESS_DENIED: exists, owned by someone else
        try:
            code = ctypes.c_ulong()
            kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
            return code.value == 259  # STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def deferred_signals():
    """Hold SIGINT/SIGTERM/SIGHUP back during the block (main thread only); deliver the first one after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {}
    try:
        for sig in _DEFERRED:
            previous[sig] = signal.signal(sig, lambda signum, _frame: received.append(signum))
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        if received:
            signal.raise_signal(received[0])


def megabytes(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path.cwd()


class OutputSet:
    """The files one run writes into one folder, written all together or not at all (see the module docstring).

    Args:
        folder: destination folder (created if missing).
        key: what the run writes (the input's stem); names the staging folder, i.e. the lock.
        names: final file names, in the order they are moved in (put the JSON summary last).
        overwrite: replace earlier outputs instead of refusing.
        replaces: ``fnmatch`` patterns (in ``folder``) of the key's earlier outputs that this run supersedes
            (e.g. attention maps of methods not run this time): refused, or removed with ``overwrite``.
        option: the command-line option that names the destination, for messages.
        remedy: what to do about existing outputs, for messages.
    """

    def __init__(self, folder, key: str, names, *, overwrite: bool = False, replaces=(), option: str = "--out",
                 remedy: str | None = None):
        if not str(folder).strip():
            message = f"{option} is empty; give an output folder (it is created if missing)"
            raise UserInputError(message)
        self.folder = Path(folder).expanduser()
        self.key = key
        self.names = list(names)
        self.overwrite = overwrite
        self.replaces = tuple(replaces)
        self.option = option
        self.remedy = remedy or f"pass --overwrite to replace them or choose another {option}"
        self.staging: Path | None = None
        self._created: list[Path] = []
        self._committed = False

    # ------------------------------------------------------------------------------------------ checks
    def existing(self) -> list[Path]:
        """Files in the folder that this run would replace."""
        found = {self.folder / name for name in self.names if os.path.lexists(self.folder / name)}
        if self.replaces and self.folder.is_dir():
            for entry in os.scandir(self.folder):
                if any(fnmatch.fnmatchcase(entry.name, pattern) for pattern in self.replaces):
                    found.add(self.folder / entry.name)
        return sorted(found)

    def check(self) -> None:
        """Refuse a destination that is a file, sits below a file, or already holds this run's outputs."""
        if self.folder.exists() and not self.folder.is_dir():
            message = (f"{self.option} {self.folder} is an existing file, not a folder; give a folder "
                       "(it is created if missing)")
            raise UserInputError(message)
        ancestor = _nearest_existing(self.folder)
        if not ancestor.is_dir():
            message = f"{self.option} {self.folder} is below the file {ancestor}; give a folder path"
            raise UserInputError(message)
        if not os.access(ancestor, os.W_OK | os.X_OK):
            message = f"{self.option} {self.folder} is not writable ({ancestor}); choose a folder you can write to"
            raise UserInputError(message)
        existing = self.existing()
        folders = [p.name for p in existing if p.is_dir() and not p.is_symlink()]
        if folders:
            message = (f"{self.folder} holds folders where results would go ({', '.join(folders)}); choose "
                       f"another {self.option}")
            raise UserInputError(message)
        if existing and not self.overwrite:
            more = f" and {len(existing) - 6} more" if len(existing) > 6 else ""
            shown = ", ".join(p.name for p in existing[:6]) + more
            message = f"outputs already exist in {self.folder}: {shown}; {self.remedy}"
            raise UserInputError(message)

    def check_space(self, need_bytes: int) -> None:
        """Refuse when the destination's disk has less than ``need_bytes`` free."""
        ancestor = _nearest_existing(self.folder)
        free = shutil.disk_usage(ancestor).free
        if free < need_bytes:
            message = (f"not enough free space for the results in {ancestor}: {megabytes(free)} free, up to "
                       f"{megabytes(need_bytes)} needed; free some space or choose another {self.option}")
            raise UserInputError(message)

    # --------------------------------------------------------------------------------- staging / lock
    def open(self) -> OutputSet:
        """Create the destination (if missing) and the staging folder, which locks ``key`` in it."""
        try:
            for folder in reversed([self.folder, *self.folder.parents]):
                if not folder.exists():
                    folder.mkdir()
                    self._created.append(folder)
            self.staging = self._lock()
            (self.staging / _OWNER).write_text(json.dumps({
                "pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}))
        except OSError as err:
            self.abort()
            message = (f"cannot write into {self.folder} ({err.strerror or err}); choose a writable folder "
                       f"with free space ({self.option})")
            raise UserInputError(message) from err
        except BaseException:
            self.abort()
            raise
        return self

    def _lock(self) -> Path:
        staging = self.folder / f".{self.key}{PARTIAL_SUFFIX}"
        for _ in range(5):
            try:
                staging.mkdir()
                return staging
            except FileExistsError:
                owner = self._owner(staging)
                if owner:
                    message = (f"another hybridseg run ({owner}) is writing {self.key} into {self.folder}; wait "
                               f"for it to finish or choose another {self.option} (if no run is active, delete "
                               f"{staging})")
                    raise UserInputError(message) from None
                self._clear_stale(staging)
        message = f"could not take the lock {staging}; delete it if no hybridseg run is active"
        raise UserInputError(message)

    @staticmethod
    def _owner(staging: Path) -> str | None:
        """Who holds ``staging`` (``"pid N"``), or None when its owner is gone."""
        try:
            data = json.loads((staging / _OWNER).read_text())
        except (OSError, ValueError):  # being created right now, or its owner died before writing this
            try:
                young = time.time() - staging.stat().st_mtime < _FRESH_S
            except OSError:
                return None
            return "starting" if young else None
        pid, host = int(data.get("pid", 0)), data.get("host")
        if host != socket.gethostname():
            return f"pid {pid} on {host}"
        return f"pid {pid}" if pid_alive(pid) else None

    @staticmethod
    def _clear_stale(staging: Path) -> None:
        """Remove a crashed run's staging folder (renamed first, so two runs never both clear it)."""
        aside = staging.with_name(f"{staging.name}.stale-{os.getpid()}-{time.monotonic_ns()}")
        try:
            os.rename(staging, aside)
        except FileNotFoundError:
            return
        logger.info("removing %s left by a run that was killed", staging)
        shutil.rmtree(aside, ignore_errors=True)

    def path(self, name: str) -> Path:
        """Where to write ``name`` now (inside the staging folder)."""
        if self.staging is None:
            raise RuntimeError("OutputSet.path() before open()")
        return self.staging / name

    @contextlib.contextmanager
    def writing(self):
        """Turn disk-full / permission errors of the block into one-line user errors naming the folder."""
        try:
            yield
        except OSError as err:
            if err.errno not in _USER_ERRNOS:
                raise
            message = (f"could not write the results into {self.folder} ({err.strerror or err}); nothing was "
                       f"written: free some space or choose another {self.option}")
            raise UserInputError(message) from err

    # ------------------------------------------------------------------------------------ commit / abort
    def commit(self) -> dict[str, Path]:
        """Move every staged file to its final name (signals held back); return ``{name: final path}``."""
        if self.staging is None:
            raise RuntimeError("OutputSet.commit() before open()")
        missing = [name for name in self.names if not (self.staging / name).is_file()]
        if missing:
            raise RuntimeError(f"outputs not written before commit: {missing}")
        with deferred_signals():
            old = self.existing()
            if old and not self.overwrite:
                message = (f"outputs appeared in {self.folder} while this run was working: "
                           f"{', '.join(p.name for p in old)}; {self.remedy}")
                raise UserInputError(message)
            self._move_all(old)
            self._committed = True
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging = None
        return {name: self.folder / name for name in self.names}

    def _move_all(self, old: list[Path]) -> None:
        backup = self.staging / ".replaced"
        backup.mkdir()
        moved_old, moved_new = [], []
        try:
            for path in old:
                os.replace(path, backup / path.name)
                moved_old.append(path)
            for name in self.names:
                _move_no_clobber(self.staging / name, self.folder / name)
                moved_new.append(name)
        except OSError as err:
            for name in reversed(moved_new):
                with contextlib.suppress(OSError):
                    os.replace(self.folder / name, self.staging / name)
            for path in reversed(moved_old):
                with contextlib.suppress(OSError):
                    os.replace(backup / path.name, path)
            message = (f"could not move the results into {self.folder} ({err.strerror or err}); nothing was "
                       f"replaced: check the folder and run again")
            raise UserInputError(message) from err

    def abort(self) -> None:
        """Delete the staging folder and the folders :meth:`open` created (if still empty)."""
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None
        for folder in reversed(self._created):
            with contextlib.suppress(OSError):
                folder.rmdir()
        self._created = []

    def __enter__(self) -> OutputSet:
        return self if self.staging is not None else self.open()

    def __exit__(self, *exc) -> bool:
        if not self._committed:
            self.abort()
        return False


def _move_no_clobber(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target``, failing if ``target`` exists (a hard link is the atomic no-clobber)."""
    try:
        os.link(source, target)
    except FileExistsError:
        raise
    except OSError:  # file systems without hard links (FAT, some network shares): check, then rename
        if os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, "exists", str(target)) from None
        os.replace(source, target)
        return
    os.unlink(source)
