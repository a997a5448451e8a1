"""How ``hybridseg experiment review`` places its trials on a Ray cluster (no Ray needed: the rule is pure).

The GPU cases cannot run on this machine; the rule that would place them can be checked here.
"""

from __future__ import annotations

import pytest
from HybridAttentionSegLib.core.errors import UserInputError
from HybridAttentionSegLib.core.experiments.runner import trial_plan


def test_one_trial_per_core_with_one_thread_on_a_cpu_machine():
    plan = trial_plan({"CPU": 2.0}, [2.0], "auto", threads=1, trials=14)
    assert (plan.count, plan.cpus, plan.gpus, plan.threads) == (2, 1, 0, 1)


def test_more_threads_per_trial_fewer_at_once_and_never_more_than_one_node():
    assert trial_plan({"CPU": 2.0}, [2.0], "auto", threads=2, trials=14).count == 1
    plan = trial_plan({"CPU": 8.0}, [4.0, 4.0], "auto", threads=8, trials=14)  # two 4-core nodes
    assert (plan.count, plan.cpus, plan.threads) == (2, 4, 4)


def test_the_same_threads_for_the_last_few_trials():
    plan = trial_plan({"CPU": 16.0}, [16.0], "auto", threads=1, trials=3)
    assert (plan.count, plan.cpus, plan.threads) == (3, 1, 1)  # not 5 threads each: times stay comparable


def test_one_trial_per_gpu_where_there_are_gpus():
    plan = trial_plan({"CPU": 32.0, "GPU": 4.0}, [32.0], "auto", threads=1, trials=14)
    assert (plan.count, plan.gpus, plan.cpus) == (4, 1, 1)
    assert trial_plan({"CPU": 32.0, "GPU": 4.0}, [32.0], "auto", threads=1, trials=2).count == 2


def test_device_cpu_ignores_the_gpus_and_cuda_needs_one():
    plan = trial_plan({"CPU": 4.0, "GPU": 1.0}, [4.0], "cpu", threads=1, trials=14)
    assert (plan.count, plan.gpus) == (4, 0)
    with pytest.raises(UserInputError, match="no GPU"):
        trial_plan({"CPU": 4.0}, [4.0], "cuda", threads=1, trials=14)
