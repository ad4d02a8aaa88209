"""Training settings derived from the number of optimizer steps, so that the defaults work on 200 images as on
200,000: the batch size from the training split's size, patience and warm-up from the steps per epoch. Values
given in params.yaml are kept as they are."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

MIN_STEPS = 50  # fewer optimizer steps than this rarely trains a network from scratch
MIN_VAL_SAMPLES = 30  # below this one sample moves the validation metric by more than 3 points
PATIENCE_STEPS = 500  # early stopping waits about this many steps without improvement
WARMUP_STEPS = 500  # onecycle's warm-up: a quarter of the run, at most about this many steps


def auto_batch_size(train_samples: int) -> int:
    """A power of two near a tenth of the samples, between 16 and 256: ~10 steps per epoch on a small folder."""
    target = max(train_samples // 10, 1)
    return min(256, max(16, 2 ** int(math.log2(target))))


def patience_epochs(patience: int | str, steps_per_epoch: int, epochs: int) -> int:
    """Epochs without improvement before stopping: given, or enough epochs for PATIENCE_STEPS steps (3 to epochs)."""
    if patience != "auto":
        return int(patience)
    return min(epochs, max(3, math.ceil(PATIENCE_STEPS / max(steps_per_epoch, 1))))


def warmup_share(warmup: float | str, total_steps: int) -> float:
    """onecycle's warm-up share of the run: given, or a quarter capped at WARMUP_STEPS steps (at least 5 %). A share
    that comes to exactly one step becomes 1.5 steps: OneCycleLR divides by (share x steps - 1)."""
    share = float(warmup) if warmup != "auto" else min(0.25, max(0.05, WARMUP_STEPS / max(total_steps, 1)))
    return 1.5 / total_steps if round(share * total_steps, 9) == 1 else share


@dataclass(frozen=True)
class StepPlan:
    batch_size: int
    steps_per_epoch: int
    total_steps: int
    patience: int
    warmup: float
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("batch_size", "steps_per_epoch", "total_steps", "patience", "warmup")}


def plan_steps(cfg: Any, train_samples: int, val_samples: int) -> StepPlan:
    """What a TrainConfig (`batch_size`, `patience`, `warmup` may be 'auto') comes to for these split sizes, with
    warnings for a run too short to train or a validation split too small to rank epochs."""
    batch = auto_batch_size(train_samples) if cfg.batch_size == "auto" else int(cfg.batch_size)
    per_epoch = max(1, math.ceil(train_samples / batch))
    total = per_epoch * cfg.epochs
    warnings = []
    if total < MIN_STEPS:
        warnings.append(
            f"only {total} optimizer steps ({cfg.epochs} epochs x {per_epoch}): too few to train reliably; "
            "lower train.batch_size, raise train.epochs, or collect more data"
        )
    if val_samples < MIN_VAL_SAMPLES:
        warnings.append(
            f"the validation split holds {val_samples} samples: too few to rank epochs (one sample moves the "
            f"metric by {100 / max(val_samples, 1):.0f} points); collect more data or raise split.val"
        )
    return StepPlan(
        batch,
        per_epoch,
        total,
        patience_epochs(cfg.patience, per_epoch, cfg.epochs),
        warmup_share(cfg.warmup, total),
        warnings,
    )
