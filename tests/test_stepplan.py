"""Defaults derived from optimizer steps: what 200, 20,000 and 200,000 samples get, and the warnings."""

import pytest

from lifecycle.config import TrainConfig
from lifecycle.stepplan import plan_steps


@pytest.mark.parametrize(
    ("samples", "batch", "steps_per_epoch", "patience", "warmup", "warned"),
    [
        # 25 validation samples; patience covers the whole run (the old default stopped it after 12 steps)
        (200, 16, 13, 10, 0.25, True),
        (20_000, 256, 79, 7, 0.25, False),
        (200_000, 256, 782, 3, 0.064, False),
    ],
)
def test_what_the_defaults_come_to(samples, batch, steps_per_epoch, patience, warmup, warned):
    plan = plan_steps(TrainConfig(), samples, val_samples=samples // 8)
    assert (plan.batch_size, plan.steps_per_epoch, plan.patience) == (batch, steps_per_epoch, patience)
    assert plan.total_steps == steps_per_epoch * TrainConfig().epochs
    assert plan.warmup == pytest.approx(warmup, abs=1e-3)
    assert bool(plan.warnings) == warned


def test_given_values_are_kept():
    plan = plan_steps(TrainConfig(batch_size=128, patience=5, warmup=0.3), 4000, 500)
    assert (plan.batch_size, plan.patience, plan.warmup, plan.warnings) == (128, 5, 0.3, [])


def test_a_short_run_and_a_tiny_validation_split_say_so():
    plan = plan_steps(TrainConfig(batch_size=128, epochs=6), 160, 20)
    assert plan.total_steps == 12
    assert "only 12 optimizer steps (6 epochs x 2)" in plan.warnings[0]
    assert "the validation split holds 20 samples: too few to rank epochs" in plan.warnings[1]


@pytest.mark.parametrize("epochs, steps_per_epoch", [(1, 4), (2, 2), (1, 2), (1, 1), (3, 5)])
def test_onecycle_runs_through_the_shortest_runs(epochs, steps_per_epoch):
    """A quarter of 4 steps is one warm-up step, where OneCycleLR would divide by zero."""
    import torch

    from lifecycle.trainer import build_scheduler

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = build_scheduler(optimizer, TrainConfig(epochs=epochs), steps_per_epoch)
    rates = []
    for _ in range(epochs * steps_per_epoch):
        optimizer.step()
        scheduler.step()
        rates.append(optimizer.param_groups[0]["lr"])
    assert all(0 <= rate <= 0.1 for rate in rates)
