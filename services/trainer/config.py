"""The trainer's RTML_* settings."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from rtml.services.trainer.jobs import MIN_EXAMPLES
from rtml.shared.contracts import Task
from rtml.shared.tasks.registry import served_task


class TrainerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RTML_", extra="ignore")

    trainer_host: str = "127.0.0.1"
    trainer_port: int = 8085
    # the task this trainer trains (None: the only loaded task)
    trainer_task: Task | None = None
    model_store: Path | None = None
    warehouse: Path | None = None
    # stage 2/3: retrain every this many seconds (0: no schedule)
    retrain_interval: float = Field(default=0.0, ge=0)
    # what the schedule does: a new model from scratch (stage 2) or a fine-tune of the
    # champion (stage 3)
    retrain_mode: Literal["scratch", "finetune"] = "finetune"
    # stage 4: fine-tune when the drift monitor fires
    drift_finetune: bool = True
    # features whose distribution the drift monitor watches besides the error (None:
    # the task's model.drift_features)
    drift_features: list[str] | None = None
    # the drift monitor's detectors (services/trainer/drift.py): ADWIN's confidence on
    # the error, Page-Hinkley's alarm level on a watched feature's z-score, and the
    # labelled examples a monitor sees before any alarm counts. The defaults and the
    # follow-up's were chosen on benchmarks/continual.py's seeds 100 and 101, not on
    # the seeds BENCHMARKS.md reports
    drift_error_delta: float = Field(default=0.002, gt=0, lt=1)
    drift_feature_threshold: float = Field(default=200.0, gt=0)
    drift_min_examples: int = Field(default=200, ge=1)
    # a drift fine-tune that beats its parent's holdout metric by this share or more
    # is followed by another once drift_follow_up_examples more examples are
    # labelled: the world it adapts to is still moving (a persistent shift is learnt
    # as its labels come, not only at its onset); above 1: never
    drift_follow_up_gain: float = Field(default=0.2, ge=0)
    drift_follow_up_examples: int = Field(default=600, ge=1)
    discard_after_use: bool = False
    # cold start: with no champion, the first model is trained from rtml.events once
    # this many requests of the task have their label there (at least the examples any
    # training needs)
    trainer_bootstrap_min_labels: int = Field(default=300, ge=MIN_EXAMPLES)

    @property
    def task(self) -> str:
        """The task trained: RTML_TRAINER_TASK, or the only loaded task."""
        return served_task(self.trainer_task, "RTML_TRAINER_TASK")
