"""The trainer's RTML_* settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from rtml.services.trainer.jobs import MIN_EXAMPLES
from rtml.shared.contracts import Task
from rtml.shared.settings import model_store_field, warehouse_field
from rtml.shared.tasks.registry import served_task


class TrainerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RTML_", extra="ignore")

    trainer_host: str = Field(default="127.0.0.1", description="trainer's listen address")
    trainer_port: int = Field(default=8085, description="trainer's HTTP side port")
    trainer_task: Task | None = Field(
        default=None, description="the task this trainer trains (unset: the only loaded task)"
    )
    model_store: str | None = model_store_field()
    warehouse: str | None = warehouse_field()
    # stage 2/3
    retrain_interval: float = Field(
        default=0.0, ge=0, description="retrain every this many seconds (0: no schedule)"
    )
    retrain_mode: Literal["scratch", "finetune"] = Field(
        default="finetune", description="what the schedule does: a new model from scratch "
        "(stage 2) or a fine-tune of the champion (stage 3)"
    )  # fmt: skip
    # stage 4
    drift_finetune: bool = Field(
        default=True, description="fine-tune the champion when the drift monitor fires"
    )
    drift_features: list[str] | None = Field(
        default=None, description="features whose mean the drift monitor watches besides the "
        "error, JSON (unset: the task's model.drift_features)"
    )  # fmt: skip
    # the drift monitor's detectors (services/trainer/drift.py). The defaults and the
    # episode's were chosen on benchmarks/continual.py's seeds 100-104, not on the seeds
    # BENCHMARKS.md reports
    drift_error_delta: float = Field(
        default=2e-5, gt=0, lt=1, description="ADWIN's confidence on the watched error "
        "(smaller: fewer, surer alarms)"
    )  # fmt: skip
    drift_feature_threshold: float = Field(
        default=500.0, gt=0, description="Page-Hinkley's alarm level on a watched feature's "
        "z-score"
    )  # fmt: skip
    drift_min_examples: int = Field(
        default=200, ge=1, description="labelled examples a monitor sees before any alarm counts"
    )
    drift_error_signal: Literal["error", "residual"] | None = Field(
        default=None, description="what ADWIN watches on each labelled example: the "
        "champion's error of the task's metric, or its signed residual (label - prediction) "
        "(unset: the residual for a regression task, whose drifts bias the answers; the "
        "error for a binary one, whose classes may swap and leave the mean answer right)"
    )  # fmt: skip
    # a drift episode: the world a drift fine-tune adapts to may still be moving, a lasting
    # shift is learnt as its labels come, and a fine-tune the holdout gate dropped is tried
    # again, while the error is off its level before the drift by more than chance
    # (services/trainer/drift.py's Episode)
    drift_follow_up_examples: int = Field(
        default=600, ge=2, description="labelled examples after each fine-tune of a drift "
        "episode (kept or dropped) before the episode tests the champion's error again; a "
        "follow-up fine-tunes on every example labelled since the drift fired"
    )  # fmt: skip
    drift_episode_significance: float = Field(
        default=0.01, gt=0, lt=1, description="a drift episode fine-tunes again while a "
        "one-sided Welch test says the champion's mean error over those examples is off the "
        "error before the drift (by more than RTML_DRIFT_EPISODE_MARGIN) with a p-value below "
        "this; otherwise it ends"
    )  # fmt: skip
    # 0.5: a calm day's dinner peak biases a model that never saw one by 0.25-0.4 of a
    # spread, a real bias that a margin of 0.25 fine-tuned for (2.8 calm trainings of 7
    # on the exploration seeds against 1.4; BENCHMARKS.md)
    drift_episode_margin: float = Field(
        default=0.5, ge=0, description="standard deviations of the error before the drift "
        "within which a drift episode's champion counts as back whatever the test says"
    )  # fmt: skip
    drift_episode_fine_tunes: int = Field(
        default=8, ge=1, description="fine-tunes a drift episode runs at most (the first "
        "included)"
    )  # fmt: skip
    discard_after_use: bool = Field(
        default=False, description="delete the warehouse examples a kept fine-tune consumed"
    )
    # cold start: at least the examples any training needs
    trainer_bootstrap_min_labels: int = Field(
        default=300, ge=MIN_EXAMPLES, description="with no champion, the first model is "
        "trained from rtml.events once this many requests of the task have their label there"
    )  # fmt: skip

    @property
    def task(self) -> str:
        """The task trained: RTML_TRAINER_TASK, or the only loaded task."""
        return served_task(self.trainer_task, "RTML_TRAINER_TASK")
