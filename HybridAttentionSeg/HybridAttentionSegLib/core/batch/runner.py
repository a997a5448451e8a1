"""The batch on Ray: :class:`~.worker.CaseWorker` actors, one case at a time each, until every case has an answer.

Workers: one per GPU where the cluster has GPUs (``num_gpus=1``; Ray gives each its own device), otherwise one
per CPU core with one torch thread each, so that they do not oversubscribe the cores (``workers`` fewer: more
threads each). A worker that dies (killed for memory, a crash) fails its case, not the batch: its staging
folder is removed and a new worker takes its place. Ctrl-C (or SIGTERM) asks every worker to cancel its case
(the case removes its own staging folder), waits for them briefly, shuts Ray down and removes whatever staging
folder is still there: no partial outputs.

``ray`` is imported inside :func:`run_batch` only; ``ray.init()`` starts a local Ray unless ``address``
(``auto`` or ``HOST:PORT``) or ``RAY_ADDRESS`` names a running cluster. Every node must see the inputs and
``--out`` at the same paths (a shared file system) and have this package installed (the wheel).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import UserInputError
from ..outputs import OutputSet
from .cohort import Case
from .worker import BatchJob, CaseWorker

logger = logging.getLogger(__name__)

#: seconds the workers get to stop their cases after Ctrl-C before Ray is shut down under them
CANCEL_GRACE_S = 20.0
_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


@dataclass(frozen=True)
class WorkerPlan:
    """How many workers, and what each one asks of Ray."""

    count: int
    cpus: int
    gpus: int
    threads: int


def plan_workers(resources: dict, node_cpus: list[float], device: str, requested: int | None,
                 cases: int) -> WorkerPlan:
    """Workers for ``cases`` on a cluster with ``resources`` (``ray.cluster_resources()``)."""
    cpus = max(1, int(resources.get("CPU", 1)))
    largest_node = max(1, int(max(node_cpus, default=cpus)))
    gpus = 0 if device == "cpu" else int(resources.get("GPU", 0))
    if device.startswith("cuda") and not gpus:
        raise UserInputError("--device cuda but the Ray cluster has no GPU; use --device auto or cpu")
    if gpus:
        count = max(1, min(requested or gpus, gpus, cases))
        return WorkerPlan(count, 1, 1, max(1, min(cpus // count, largest_node)))
    count = max(1, min(requested or cpus, cases))
    threads = max(1, min(cpus // count, largest_node))
    return WorkerPlan(count, threads, 0, threads)


def forwarded_env() -> dict:
    """The driver's ``HYBRIDSEG_*`` settings (cache, catalog, fast path) for workers on any node."""
    return {key: value for key, value in os.environ.items() if key.startswith("HYBRIDSEG_")}


def check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """Refuse a ``HOST:PORT`` nobody listens on in seconds (``ray.init`` retries such an address for minutes).

    ``auto``, ``ray://`` client addresses and None are left to Ray.
    """
    if not address or address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UserInputError(f"--ray-address {address}: give HOST:PORT of a running Ray head (e.g. 10.0.0.5:6379) "
                             "or 'auto'")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        raise UserInputError(f"cannot connect to the Ray cluster at {address} ({err.strerror or err}); start it "
                             "(`ray start --head`) or drop --ray-address") from err


def start_ray(ray, address: str | None, verbose: bool, init_kwargs: dict) -> bool:
    """Connect to (or start) Ray unless this process already is; True when this call did it."""
    if ray.is_initialized():
        return False
    check_reachable(address)
    handlers = {sig: signal.getsignal(sig) for sig in _SIGNALS}
    kwargs = {"address": address, "log_to_driver": verbose,
              "logging_level": logging.INFO if verbose else logging.ERROR}
    if not (address or os.environ.get("RAY_ADDRESS")):
        kwargs["include_dashboard"] = False
    kwargs.update(init_kwargs)
    try:
        ray.init(**kwargs)
    except ConnectionError as err:
        message = (f"cannot connect to the Ray cluster at {address} ({err}); start it (`ray start --head`) or "
                   "drop --ray-address")
        raise UserInputError(message) from err
    finally:  # ray.init installs its own SIGTERM handler: keep the CLI's (SIGTERM -> clean cancel)
        for sig, handler in handlers.items():
            if handler is not None:
                signal.signal(sig, handler)
    return True


def remove_staging(out_dir: str, stem: str, timeout: float = 10.0) -> None:
    """Remove the staging folder a killed worker left for ``stem`` (taking the lock clears a dead owner's)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            OutputSet(out_dir, stem, []).open().abort()
            return
        except UserInputError:  # its owner is still alive (a worker being shut down): wait for it
            if time.monotonic() > deadline:
                logger.warning("could not remove the staging folder of %s in %s", stem, out_dir)
                return
            time.sleep(0.2)


def run_batch(cases: list[Case], job: BatchJob, *, address: str | None = None, workers: int | None = None,
              on_result: Callable[[Case, dict], None] | None = None,
              on_start: Callable[[WorkerPlan], None] | None = None, verbose: bool = False,
              init_kwargs: dict | None = None) -> dict[str, dict]:
    """Segment ``cases`` on Ray; returns ``{stem: CaseWorker.segment result}`` (status done/failed).

    Raises:
        UserInputError: the model does not load on a worker, or the cluster cannot be reached / lacks GPUs.
        KeyboardInterrupt: after a clean cancel (see the module docstring).
    """
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError, RayError

    results: dict[str, dict] = {}
    if not cases:
        return results
    started = start_ray(ray, address, verbose, init_kwargs or {})
    running: dict = {}  # object ref -> (actor, case; None while the actor starts)
    actors: list = []
    stopped = False
    try:
        nodes = [node["Resources"].get("CPU", 0) for node in ray.nodes() if node["Alive"]]
        plan = plan_workers(ray.cluster_resources(), nodes, job.device, workers, len(cases))
        logger.info("%d worker(s), %d CPU thread(s) and %d GPU each", plan.count, plan.threads, plan.gpus)
        if on_start:
            on_start(plan)
        env = forwarded_env()
        remote = ray.remote(CaseWorker).options(num_cpus=plan.cpus, num_gpus=plan.gpus, max_concurrency=2,
                                                runtime_env={"env_vars": env} if env else None)

        def new_worker():
            actor = remote.remote(job, plan.threads)
            actors.append(actor)
            running[actor.ready.remote()] = (actor, None)

        pending = list(cases)
        for _ in range(plan.count):
            new_worker()
        while running:
            (ref,), _ = ray.wait(list(running), num_returns=1)
            actor, case = running.pop(ref)
            try:
                answer = ray.get(ref)
            except RayError as err:
                if case is None:
                    raise UserInputError(f"a Ray worker could not start: {' '.join(str(err).split())[:300]}") from err
                answer = {"status": "failed", "seconds": 0.0, "segments": [],
                          "reason": f"the worker died ({type(err).__name__}; out of memory?)"}
                if isinstance(err, RayActorError):  # its staging folder stays behind: remove it, replace it
                    actors.remove(actor)
                    actor = None
                    remove_staging(job.out_dir, case.stem)
                    if pending:
                        new_worker()
            if case is None:  # a worker's start-up answer
                if answer.get("error"):
                    raise UserInputError(f"model {job.model_id!r} could not be loaded: {answer['error']}")
            else:
                results[case.stem] = answer
                if on_result:
                    on_result(case, answer)
            if actor is not None and pending:
                case = pending.pop(0)
                running[actor.segment.remote(case.stem, case.input)] = (actor, case)
        return results
    except KeyboardInterrupt:
        in_flight = [case for _, case in running.values() if case is not None]
        with contextlib.suppress(Exception, KeyboardInterrupt):
            for actor in actors:
                actor.cancel.remote()
            with contextlib.suppress(GetTimeoutError):
                ray.wait(list(running), num_returns=len(running), timeout=CANCEL_GRACE_S)
        _stop(ray, actors, started)
        stopped = True
        for case in in_flight:
            remove_staging(job.out_dir, case.stem)
        raise
    finally:
        if not stopped:
            _stop(ray, actors, started)


def _stop(ray, actors: list, started: bool) -> None:
    """Shut down the Ray this batch started, or kill this batch's workers in a Ray someone else started."""
    if started:
        ray.shutdown()
        return
    for actor in actors:
        with contextlib.suppress(Exception):
            ray.kill(actor)
