"""Log and wait: join each prediction with its label in event time. Pure, no I/O.

A prediction already carries the exact feature vector it was made with, so the
training example is that vector plus the label: nothing is recomputed, so the
model trains on exactly what it served with.

What joins what is the task's label (``shared/tasks/spec.py``): a prediction
and its label event meet on the join key made of the label's ``join`` pairs
(a request entity such as the order, or the arm the router chose, such as the
item shown), prefixed by the task's name.

Either side may come first. A label counts for a prediction when it comes
within the label's window after it; a label waits up to ``window_s`` of event
time for its prediction. The clock is the highest event time seen (the
watermark). When a prediction's window closes unlabelled it is dropped
(counted), unless the label declares a value for that (``when_missing``: no
click is a 0), which makes an example like a label would. A label whose
prediction never comes is dropped when its window closes (counted). Repeats of
a prediction (by request id) or of a label (by event id) are absorbed.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field

from rtml.shared.contracts import Message, Prediction, Reward, TrainingExample
from rtml.shared.tasks.registry import tasks
from rtml.shared.tasks.spec import ARM, TaskSpec


@dataclass(frozen=True)
class JoinConfig:
    # how long a label waits for its prediction, and the label window of a task
    # whose label declares none
    window_s: float = 2 * 3600.0
    # per task, a label window that overrides its spec's
    label_windows: Mapping[str, float] = field(default_factory=dict)

    def label_window(self, spec: TaskSpec) -> float:
        if spec.name in self.label_windows:
            return self.label_windows[spec.name]
        return self.window_s if spec.label.window_s is None else spec.label.window_s


@dataclass(frozen=True)
class Joined:
    example: TrainingExample
    reward: Reward | None


class JoinState:
    """The join, over three key-value stores that the adapter makes durable
    (faust tables); the deadline heap and the watermark are rebuilt from them."""

    def __init__(
        self,
        config: JoinConfig,
        predictions: MutableMapping[str, Prediction],
        labels: MutableMapping[str, Message],
        done: MutableMapping[str, float],
    ) -> None:
        self.config = config
        self.predictions = predictions
        self.labels = labels
        # join keys already emitted, so a late repeat of either side is absorbed
        self.done = done
        self.counts: Counter[str] = Counter()
        # every stored record was seen, so the highest of their times is a lower
        # bound of the watermark before the restart
        self.watermark = max([*done.values(), 0.0])
        self._deadlines: list[tuple[float, str]] = []
        for key, prediction in predictions.items():
            heapq.heappush(self._deadlines, (self._deadline(prediction), key))
            self.watermark = max(self.watermark, prediction.ts)
        for key, label in labels.items():
            heapq.heappush(self._deadlines, (label.ts + config.window_s, key))
            self.watermark = max(self.watermark, label.ts)

    def on_prediction(self, prediction: Prediction) -> list[Joined]:
        key = join_key_of_prediction(prediction)
        if key is None:
            self.counts["prediction_without_join_key"] += 1
            return []
        if key in self.done or key in self.predictions:
            self.counts["duplicate_prediction"] += 1
            return self._advance(prediction.ts)
        label = self.labels.get(key)
        if label is not None and self._label_counts_for(prediction, label):
            del self.labels[key]
            return [self._emit(key, prediction, label), *self._advance(prediction.ts)]
        self.predictions[key] = prediction
        heapq.heappush(self._deadlines, (self._deadline(prediction), key))
        return self._advance(prediction.ts)

    def on_label(self, label: Message) -> list[Joined]:
        key = join_key_of_label(label)
        if key is None:
            return []
        if key in self.done or key in self.labels:
            self.counts["duplicate_label"] += 1
            return self._advance(label.ts)
        prediction = self.predictions.get(key)
        if prediction is not None and self._label_counts_for(prediction, label):
            del self.predictions[key]
            return [self._emit(key, prediction, label), *self._advance(label.ts)]
        self.labels[key] = label
        heapq.heappush(self._deadlines, (label.ts + self.config.window_s, key))
        return self._advance(label.ts)

    def _label_counts_for(self, prediction: Prediction, label: Message) -> bool:
        window = self.config.label_window(tasks()[prediction.task])
        return 0 <= label.ts - prediction.ts <= window

    def _deadline(self, prediction: Prediction) -> float:
        return prediction.ts + self.config.label_window(tasks()[prediction.task])

    def _emit(self, key: str, prediction: Prediction, label: Message | None) -> Joined:
        spec = tasks()[prediction.task]
        self.done[key] = prediction.ts
        self.counts["joined" if label is not None else "closed_without_click"] += 1
        value = spec.label.value(label) if label is not None else spec.label.when_missing
        assert value is not None, "only a label with a value when missing closes unlabelled"
        reward = spec.label.reward(prediction.prediction, value)
        label_ts = label.ts if label is not None else self._deadline(prediction)
        example = TrainingExample(
            id=prediction.id, ts=label_ts, task=prediction.task, features=prediction.features,
            label=value, model_version=prediction.model_version, arm=prediction.arm,
            propensity=prediction.propensity, prediction=prediction.prediction,
            request_ts=prediction.request_ts, label_ts=label_ts,
        )  # fmt: skip
        arm = prediction.arm or prediction.model_version
        features = prediction.features if spec.label.reward_with_features else None
        return Joined(
            example,
            Reward(
                id=prediction.id, ts=label_ts, task=prediction.task, arm=arm, reward=reward,
                features=features,
            ),
        )  # fmt: skip

    def _advance(self, ts: float) -> list[Joined]:
        """Move the watermark; close every window that ended before it."""
        self.watermark = max(self.watermark, ts)
        closed: list[Joined] = []
        while self._deadlines and self._deadlines[0][0] < self.watermark:
            _, key = heapq.heappop(self._deadlines)
            if key in self.predictions:
                prediction = self.predictions.pop(key)
                if tasks()[prediction.task].label.when_missing is not None:
                    closed.append(self._emit(key, prediction, None))
                else:
                    self.done[key] = prediction.ts
                    self.counts["prediction_expired_unlabelled"] += 1
            elif key in self.labels:
                del self.labels[key]
                self.counts["label_without_prediction"] += 1
        return closed

    def forget_done(self) -> int:
        """Let go of emitted keys older than any repeat could be (two windows);
        the adapter calls this now and then, not per message."""
        horizon = self.watermark - 2 * self.config.window_s
        stale = [key for key, ts in self.done.items() if ts < horizon]
        for key in stale:
            del self.done[key]
        return len(stale)


def join_key_of_prediction(prediction: Prediction) -> str | None:
    spec = tasks()[prediction.task]
    values = [
        prediction.arm if side == ARM else prediction.entities.get(side)
        for side, _ in spec.label.join
    ]
    return None if None in values or "" in values else ":".join([spec.name, *values])  # type: ignore[list-item]


def join_key_of_label(label: Message) -> str | None:
    spec = tasks().labelled_by(type(label).SCHEMA)
    if spec is None:
        return None
    return ":".join([spec.name, *(str(getattr(label, name)) for _, name in spec.label.join)])
