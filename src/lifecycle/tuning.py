"""The `tune` section of a task's params.yaml: the search space, the search's settings and how they are checked
against the rest of the task's section (beside the task sections of lifecycle.config)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, cast

from pydantic import AfterValidator, BaseModel, Field, model_validator

from lifecycle.config import ConfigError, Strict, load_overrides, read_yaml, value_at, with_overrides


class SearchDimension(Strict):
    """One dimension of the tuning search space: a range (`low`, `high`, optional `log` or `step`) or a list of
    `choices`. A range whose bounds are both integers is searched over integers."""

    low: int | float | None = None
    high: int | float | None = None
    log: bool = False
    step: int | float | None = Field(None, gt=0)
    choices: list[Any] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _range_or_choices(self) -> SearchDimension:
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give either choices or low/high, not both")
            return self
        if self.low is None or self.high is None:
            raise ValueError("a range needs both low and high (or give choices)")
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and (self.low <= 0 or self.step is not None):
            raise ValueError("a log range needs low > 0 and no step")
        return self

    @property
    def is_int(self) -> bool:
        return all(isinstance(v, int) for v in (self.low, self.high)) and (
            self.step is None or isinstance(self.step, int)
        )

    def candidates(self) -> list[Any]:
        """Values that must all give a valid config: the choices, or both ends of the range."""
        return list(self.choices) if self.choices is not None else [self.low, self.high]

    def contains(self, value: Any) -> bool:
        if self.choices is not None:
            return value in self.choices
        return cast(float, self.low) <= value <= cast(float, self.high)

    def distribution(self) -> Any:
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.choices is not None:
            return CategoricalDistribution(self.choices)
        if self.is_int:
            return IntDistribution(
                int(cast(int, self.low)), int(cast(int, self.high)), log=self.log, step=int(self.step or 1)
            )
        return FloatDistribution(
            float(cast(float, self.low)), float(cast(float, self.high)), log=self.log, step=self.step
        )


STUDY_STORAGES = ("postgresql", "mysql", "sqlite")  # SQLAlchemy dialects Optuna's RDB storage supports


def _study_storage(url: str | None) -> str | None:
    if url is not None and ("://" not in url or url.split("://")[0].split("+")[0] not in STUDY_STORAGES):
        raise ValueError(f"{url!r} is not a database URL ({', '.join(d + '://...' for d in STUDY_STORAGES)})")
    return url


RETIRED_TUNE_KEYS = {
    "epochs": "trials now run up to train.epochs, stopped early by successive halving: set tune.min_epochs "
    "(the first point where a trial can be stopped) and tune.reduction_factor instead",
    "pruner_startup_trials": "the successive-halving pruner compares every trial with trial 0 (params.yaml's values)",
    "pruner_warmup_epochs": "renamed tune.min_epochs (epochs every trial runs before it can be stopped)",
}


class TuneConfig(Strict):
    """A hyperparameter search: Optuna's TPE sampler, trials run by a Prefect task runner and stopped early by
    successive halving at min_epochs x reduction_factor^k epochs; trials that survive run to train.epochs."""

    enabled: bool = False
    trials: int = Field(6, ge=1, description="finished trials the study needs; raise it to extend a search")
    parallel: int = Field(2, ge=1, description="trials running at once")
    min_epochs: int = Field(1, ge=1, description="epochs every trial runs before it can be stopped (<= train.epochs)")
    reduction_factor: int = Field(
        3, ge=2, description="at each rung a trial runs on only if in the best 1/reduction_factor of those there"
    )
    min_delta: float = Field(
        0.0,
        ge=0,
        description="the tuned values are used only when the best trial beats trial 0 (params.yaml's values) on "
        "validation at train.epochs by at least this; else train uses params.yaml",
    )
    runner: Literal["threads", "dask"] = "threads"
    dask_address: str | None = Field(None, description="a running Dask scheduler; null starts a local cluster")
    storage: Annotated[str | None, AfterValidator(_study_storage)] = Field(
        None,
        description="the study's database URL, shared by searches on several machines (postgresql://user@host:port/db; "
        "needs psycopg); null: SQLite in models/<task>/tune/study.db",
    )
    heartbeat_seconds: int = Field(
        10, ge=1, description="a running trial records that it is alive this often; one silent 3x as long is retried"
    )
    seed: int = 0
    sampler_startup_trials: int = Field(3, ge=0, description="random trials before TPE models the space")
    space: dict[str, SearchDimension] = Field(
        default_factory=dict, description="config key path under model. or train. (e.g. train.lr) -> dimension"
    )

    @model_validator(mode="before")
    @classmethod
    def _retired_keys(cls, data: Any) -> Any:
        for key in RETIRED_TUNE_KEYS.keys() & (data.keys() if isinstance(data, dict) else set()):
            raise ValueError(f"tune.{key} is retired: {RETIRED_TUNE_KEYS[key]}")
        return data

    def fingerprint_fields(self) -> dict[str, Any]:
        """What defines the study; how many trials and how they run do not (so a search can be extended), nor
        min_delta (it decides between the study's results after the search)."""
        return self.model_dump(
            mode="json",
            exclude={
                "enabled",
                "trials",
                "parallel",
                "min_delta",
                "runner",
                "dask_address",
                "storage",
                "heartbeat_seconds",
            },
        )


def check_search_space(section: BaseModel) -> BaseModel:
    """Every tuning dimension must name an existing model/train key, and each of its values must be valid there.
    An enabled search also needs params.yaml's own values inside the space (they are its trial 0, the baseline
    tuning must beat) and tune.min_epochs within train.epochs (the length every surviving trial runs)."""
    cfg = cast(Any, section)
    for key, dim in cfg.tune.space.items():
        for value in dim.candidates():
            try:
                with_overrides(section, {key: value})
            except ConfigError as e:
                raise ValueError(f"tune.space['{key}'] = {value!r}: {e}") from None
        if cfg.tune.enabled and not dim.contains(own := value_at(section, key)):
            raise ValueError(
                f"tune.space['{key}'] does not contain params.yaml's {key} = {own!r}: the search's trial 0 is "
                "params.yaml's values, the baseline the tuned values must beat"
            )
    if cfg.tune.enabled and cfg.tune.min_epochs > cfg.train.epochs:
        raise ValueError(f"tune.min_epochs ({cfg.tune.min_epochs}) must not exceed train.epochs ({cfg.train.epochs})")
    return section


def tuning_decision(path: Path) -> str:
    """Why training uses the values it does, as the tune stage wrote it in its tuned-values file."""
    data = read_yaml(path) if path.exists() else None
    reason = data.get("reason") if isinstance(data, dict) else None
    if reason:
        return str(reason)
    values = "tuned values" if load_overrides(path) else "params.yaml's values"
    return f"{values} ({path} gives no reason)"
