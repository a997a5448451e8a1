"""Start, talk to and stop the inference worker process (:mod:`HybridAttentionSegLib.worker`).

The worker runs in its own session / process group, so cancelling kills the whole process tree at once
(``PythonSlicer`` is a launcher with a child interpreter; torch may start helpers). Reading is non-blocking:
a daemon thread turns stdout lines into events on a queue, which the caller polls (a ``QTimer`` in the Slicer
widget, :meth:`HybridAttentionSegLogic.waitForTask` headless). Stderr is kept as a short tail for error
messages. No slicer, qt or vtk imports here.
"""

from __future__ import annotations

import atexit
import itertools
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import weakref
from collections import deque
from pathlib import Path

logger = logging.getLogger(__name__)

#: the folder that holds the ``HybridAttentionSegLib`` package (put on the worker's PYTHONPATH)
LIBRARY_PARENT = Path(__file__).resolve().parents[1]
#: seconds the whole worker process tree has to be gone after :meth:`WorkerClient.stop`
STOP_TIMEOUT_S = 2.0


class WorkerError(RuntimeError):
    """The worker could not be started or stopped talking."""


def insideSlicerApplication() -> bool:
    """True inside the Slicer application (``slicer.app`` exists), False under plain slicer-core or none."""
    slicerModule = sys.modules.get("slicer")
    return slicerModule is not None and getattr(slicerModule, "app", None) is not None


def workerPython() -> str:
    """The Python that runs the worker: ``PythonSlicer`` inside Slicer, else this interpreter (the venv's).

    Inside Slicer, ``sys.executable`` is the application itself, which cannot run ``-m module``; Slicer ships
    ``PythonSlicer`` (a launcher that sets up Slicer's Python environment) next to it, and puts it on PATH.
    """
    if not insideSlicerApplication():
        return sys.executable
    name = "PythonSlicer.exe" if os.name == "nt" else "PythonSlicer"
    found = shutil.which("PythonSlicer")
    if found:
        return found
    executable = Path(sys.executable).resolve()
    for folder in (executable.parent, executable.parent.parent / "bin"):
        if (folder / name).is_file():
            return str(folder / name)
    message = (f"{name} was not found on PATH or next to {executable}; "
               "reinstall 3D Slicer (PythonSlicer ships with every Slicer installation)")
    raise WorkerError(message)


def _killProcessTree(process: subprocess.Popen, timeout: float) -> None:
    """Kill the worker's whole process group (POSIX) or tree (Windows) and reap the worker.

    Hand-written rather than psutil (MONAIAuto3DSeg's choice): psutil is not part of Slicer's Python, and the
    worker's own session makes one ``killpg`` reach every descendant, including ``PythonSlicer``'s child.
    """
    if os.name == "nt":
        if process.poll() is None:
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True,
                           timeout=timeout, check=False)
    else:
        try:
            # start_new_session=True made the worker a group leader: its pid is the group id. The group
            # outlives its leader, so this also reaches children of a worker that already exited.
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


class WorkerClient:
    """One worker process and its event queue.

    Args:
        python: interpreter for the worker (default: :func:`workerPython`).
        threads: torch CPU threads in the worker (``--threads``); None leaves torch's default.
        env: extra environment variables for the worker.

    Usage::

        client = WorkerClient()
        requestId = client.send("info")
        event = client.waitEvent(timeout=60)      # {"type": "ready"}, then {"type": "result", "id": ...}
        client.stop()                             # the whole process tree is gone within 2 s
    """

    def __init__(self, python: str | None = None, threads: int | None = None, env: dict | None = None):
        self.python = python
        self.threads = threads
        self.env = dict(env or {})
        self.process: subprocess.Popen | None = None
        self.events: queue.Queue = queue.Queue()
        self.stderrTail: deque[str] = deque(maxlen=40)
        self._ids = itertools.count(1)
        self._writeLock = threading.Lock()
        atexit.register(_stopAtExit, weakref.ref(self))

    # --------------------------------------------------------------------------------------- lifecycle
    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def command(self) -> list[str]:
        """The worker's command line."""
        command = [self.python or workerPython(), "-m", "HybridAttentionSegLib.worker.server"]
        if self.threads:
            command += ["--threads", str(int(self.threads))]
        return command

    def start(self) -> None:
        """Start the worker if it is not running (returns at once; ``ready`` arrives as an event)."""
        if self.running:
            return
        env = {**os.environ, **self.env}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(LIBRARY_PARENT), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONIOENCODING"] = "utf-8"
        options = {}
        if os.name == "nt":
            options["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW
        else:
            options["start_new_session"] = True
        command = self.command()
        try:
            self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, env=env, text=True, encoding="utf-8",
                                            errors="replace", bufsize=1, **options)
        except OSError as err:
            message = f"cannot start the inference worker ({command[0]}: {err}); check the Python install"
            raise WorkerError(message) from err
        # a fresh queue per process: events of a killed worker can never reach the next one
        self.events = queue.Queue()
        self.stderrTail.clear()
        threading.Thread(target=self._readStdout, args=(self.process, self.events), daemon=True,
                         name="hybridseg-worker-stdout").start()
        threading.Thread(target=self._readStderr, args=(self.process,), daemon=True,
                         name="hybridseg-worker-stderr").start()
        logger.info("started inference worker (pid %d)", self.process.pid)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Kill the worker's whole process tree now (cancel); the next :meth:`send` starts a fresh worker."""
        process, self.process = self.process, None
        if process is None:
            return
        _killProcessTree(process, timeout)
        self.events = queue.Queue()
        logger.info("stopped inference worker (pid %d)", process.pid)

    def close(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Ask the worker to exit (``shutdown``); kill it if it does not within ``timeout``."""
        if self.running:
            try:
                self._write({"id": "shutdown", "cmd": "shutdown"})
                self.process.wait(timeout=timeout)
            except (WorkerError, subprocess.TimeoutExpired):
                pass
        self.stop(timeout)

    # --------------------------------------------------------------------------------------- messages
    def send(self, cmd: str, **fields) -> str:
        """Send a request (starting the worker if needed); returns its id."""
        self.start()
        requestId = f"r{next(self._ids)}"
        self._write({"id": requestId, "cmd": cmd, **fields})
        return requestId

    def _write(self, request: dict) -> None:
        line = json.dumps(request) + "\n"
        with self._writeLock:
            try:
                self.process.stdin.write(line)
                self.process.stdin.flush()
            except (BrokenPipeError, OSError, ValueError) as err:
                message = f"the inference worker is not accepting requests ({err}); {self.lastErrors()}"
                raise WorkerError(message) from err

    def pollEvents(self) -> list[dict]:
        """All events received so far (never blocks)."""
        out = []
        while True:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                return out

    def waitEvent(self, timeout: float) -> dict | None:
        """The next event, waiting up to ``timeout`` seconds; None if none came."""
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            return None

    def lastErrors(self, lines: int = 12) -> str:
        """The worker's last stderr lines, for error messages."""
        tail = list(self.stderrTail)[-lines:]
        return "worker stderr: " + " | ".join(tail) if tail else "the worker wrote nothing to stderr"

    # --------------------------------------------------------------------------------------- readers
    def _readStdout(self, process: subprocess.Popen, events: queue.Queue) -> None:
        for raw in process.stdout:
            line = raw.strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                event = None
            if not isinstance(event, dict) or "type" not in event:
                event = {"type": "log", "id": None, "level": "INFO", "message": line}
            events.put(event)
        events.put({"type": "exit", "id": None, "returncode": process.wait()})

    def _readStderr(self, process: subprocess.Popen) -> None:
        for raw in process.stderr:
            line = raw.rstrip()
            if line:
                self.stderrTail.append(line)
                logger.debug("worker stderr: %s", line)


def _stopAtExit(reference) -> None:
    client = reference()
    if client is not None:
        client.stop()


def cardByIdFrom(environment: dict | None, modelId: str) -> dict | None:
    """The card with ``modelId`` in an ``info`` answer, or None."""
    for card in (environment or {}).get("catalog", []):
        if card.get("id") == modelId:
            return card
    return None
