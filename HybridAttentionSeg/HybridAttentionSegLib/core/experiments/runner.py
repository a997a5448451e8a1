"""The grid on Ray: one task per (variant, seed), resumable, progress reported per finished trial.

* Ray is imported here only, inside :func:`run_pending`. Connecting and placing work reuse segment-batch's
  helpers (:mod:`..batch.runner`): :func:`~..batch.runner.start_ray` starts a local Ray with every core, or
  joins a running cluster (``address="auto"`` or ``"HOST:PORT"``, e.g. after ``ray start --head``; every node
  then needs this package installed), and :func:`~..batch.runner.plan_workers` decides what each trial asks
  for: one GPU per trial where the cluster has GPUs, otherwise ``threads`` CPUs (and as many torch threads).
* ``max_calls=1``: every trial runs in a fresh worker process, so its peak RSS is its own; ``max_retries=0``:
  a failing trial is reported, not retried, and the grid goes on.
* The data are prepared once by the driver and shared through Ray's object store (``ray.put``).
* Resume: each finished trial's result is written by the driver as ``trials/<variant>-seed<N>.json``
  (temporary name, then rename) with a fingerprint of everything that determines it (variant, seed, settings,
  data). A rerun skips trials whose file has the same fingerprint and refuses to mix in files made with other
  settings or data.
* Ctrl-C (or SIGTERM through the CLI): the trials in flight are cancelled, Ray is shut down (if this run
  started it), and the trials finished so far stay on disk for the next run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

from ..batch.runner import WorkerPlan, forwarded_env, plan_workers, start_ray
from ..errors import UserInputError
from ..inference.io import atomic_path
from .trial import trial_name

logger = logging.getLogger(__name__)

TRIALS = "trials"


def write_json(path: Path, data) -> None:
    """Write JSON all or nothing (temporary file in the same folder, then rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def fingerprint(variant, seed: int, settings, data_identity: dict, test2_identity: dict | None) -> str:
    """Hash of everything that determines a trial's result."""
    text = json.dumps({"variant": asdict(variant), "seed": seed, "settings": settings.as_dict(),
                       "data": data_identity, "test_data": test2_identity}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Grid:
    """The trials of one run and their result files under ``out_dir/trials``.

    ``trials`` holds ``(variant, seed, fingerprint, path)``, seed-major: every variant of seed 0 first, so an
    interrupted run has compared whole seeds rather than a few variants many times.
    """

    def __init__(self, out_dir, variants, seeds, settings, data_identity: dict, test2_identity: dict | None):
        self.out_dir = Path(out_dir)
        self.settings = settings
        self.trials = []
        for seed in seeds:
            for variant in variants:
                key = fingerprint(variant, seed, settings, data_identity, test2_identity)
                path = self.out_dir / TRIALS / f"{trial_name(variant.name, seed)}.json"
                self.trials.append((variant, seed, key, path))

    def finished(self, overwrite: bool = False) -> dict[str, dict]:
        """Results already on disk for this grid's trials.

        Args:
            overwrite: a result made with other settings or data is run again (and replaced) instead of
                raising.

        Raises:
            UserInputError: a result file was made with other settings or data (without ``overwrite``).
        """
        done = {}
        for _, _, key, path in self.trials:
            if not path.is_file():
                continue
            try:
                result = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                logger.warning("%s is unreadable; the trial runs again", path)
                continue
            if not isinstance(result, dict) or result.get("fingerprint") != key:
                if overwrite:
                    logger.warning("%s was made with other settings or data; the trial runs again", path)
                    continue
                raise UserInputError(f"{path} holds a result made with other settings or data; pass another --out, "
                                     "or --overwrite to run those trials again with these settings")
            done[path.stem] = result
        return done

    def pending(self, done: dict) -> list:
        """Trials still to run."""
        return [t for t in self.trials if t[3].stem not in done]


def _mean_dice(result: dict) -> float:
    rows = result["test"]["dice"]
    return sum(sum(row) / len(row) for row in rows) / len(rows)


def _cause(err: BaseException) -> str:
    text = str(err).strip()
    return " ".join(text.splitlines()[-1].split())[:300] if text else type(err).__name__


def trial_plan(resources: dict, node_cpus: list[float], device: str, threads: int, trials: int) -> WorkerPlan:
    """What each trial asks of Ray, and how many run at once (segment-batch's :func:`plan_workers` rule).

    Where the cluster has GPUs (and ``device`` is not ``cpu``) every trial takes one GPU, so as many trials run
    at once as there are GPUs. Otherwise every trial takes ``threads`` CPUs (at most one node's) and uses as
    many torch threads: the same for every trial, so that their training times stay comparable.

    Raises:
        UserInputError: ``device`` is ``cuda`` and the cluster has no GPU.
    """
    cpus = max(1, int(resources.get("CPU", 1)))
    threads = max(1, min(threads, int(max(node_cpus, default=cpus))))
    if device != "cpu" and resources.get("GPU"):
        return plan_workers(resources, node_cpus, device, None, trials)
    plan = plan_workers(resources, node_cpus, device, max(1, cpus // threads), trials)
    return replace(plan, cpus=threads, threads=threads)


def run_pending(grid: Grid, pending: list, payload: dict, address: str | None = None, device: str = "auto",
                on_trial: Callable[[str, dict | None, str], None] | None = None,
                verbose: bool = False) -> tuple[dict, list[str]]:
    """Run ``pending`` trials on Ray, writing each result as it arrives; return (results, failed trial names).

    Args:
        grid: the run's trials (its settings give the CPU threads a trial asks for).
        pending: the trials to run (``Grid.pending``).
        payload: the data (see :func:`.trial.run_trial`).
        address: a running Ray cluster to join (None: a local Ray).
        device: ``auto``, ``cpu`` or ``cuda``.
        on_trial: called as ``on_trial(name, result, error)`` when a trial ends (result None when it failed).
        verbose: Ray's own logs and the workers' output on the driver's terminal.

    Raises:
        UserInputError: the cluster cannot be reached, or ``--device cuda`` on a cluster without GPUs.
    """
    import ray

    from .trial import run_trial

    results, failed, refs = {}, [], {}
    started = start_ray(ray, address, verbose, {})
    try:
        nodes = [node["Resources"].get("CPU", 0) for node in ray.nodes() if node["Alive"]]
        plan = trial_plan(ray.cluster_resources(), nodes, device, grid.settings.threads, len(pending))
        logger.info("Ray: %d trial(s) at a time, each on %s", plan.count,
                    "one GPU" if plan.gpus else f"{plan.threads} CPU thread(s)")
        settings = replace(grid.settings, threads=plan.threads)
        env = forwarded_env()
        task = ray.remote(max_calls=1, max_retries=0)(run_trial).options(
            num_cpus=plan.cpus, num_gpus=plan.gpus, runtime_env={"env_vars": env} if env else None)
        shared = ray.put(payload)
        trial_device = "cuda" if plan.gpus else ("cpu" if device == "auto" else device)
        for variant, seed, key, path in pending:
            refs[task.remote(variant, seed, settings, shared, trial_device)] = (variant, seed, key, path)
        waiting = list(refs)
        while waiting:
            (ref,), waiting = ray.wait(waiting, num_returns=1)
            variant, seed, key, path = refs[ref]
            name = trial_name(variant.name, seed)
            try:
                result = ray.get(ref)
            except Exception as err:  # noqa: BLE001  (a failing trial is reported; the grid goes on)
                failed.append(name)
                logger.error("trial %s failed: %s", name, _cause(err))
                if on_trial:
                    on_trial(name, None, _cause(err))
                continue
            result.update(fingerprint=key, finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
            write_json(path, result)
            results[name] = result
            logger.info("trial %s: test Dice %.3f, trained in %.0f s", name, _mean_dice(result), result["train_s"])
            if on_trial:
                on_trial(name, result, "")
    except BaseException:
        for ref in refs:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001, S110  (already finished or gone)
                pass
        raise
    finally:
        if started:
            ray.shutdown()
    return results, failed
