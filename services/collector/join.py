"""Log and wait: join each prediction with its label in event time. Pure, no I/O.

A prediction already carries the exact feature vector it was made with, so the
training example is that vector plus the label: nothing is recomputed, so the
model trains on exactly what it served with.

Join keys: eta joins on the order (prediction ``entities["order_id"]`` with
``order_delivered.order_id``); recs joins on (session, recommended item) —
the prediction's arm is the item shown — with ``item_clicked``.

Either side may come first. Each waits up to ``window_s`` of event time; the
clock is the highest event time seen (the watermark). When a prediction's
window closes unlabelled: eta drops it (counted: the order was never
delivered in time), recs emits reward 0 (no click is the label). A label whose
prediction never comes is dropped when its window closes (counted). Repeats
of a prediction (by request id) or of a label (by event id) are absorbed.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import MutableMapping
from dataclasses import dataclass

from shared.contracts import (
    ItemClicked,
    Message,
    OrderDelivered,
    Prediction,
    Reward,
    TrainingExample,
)

MINUTE = 60.0


@dataclass(frozen=True)
class JoinConfig:
    window_s: float = 2 * 3600.0
    # eta: a prediction within this many minutes of the actual delivery earns reward 1
    eta_tolerance_min: float = 5.0
    # recs: how long after a recommendation a click still counts
    attribution_window_s: float = 30 * 60.0


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
        if prediction.task == "recs":
            return 0 <= label.ts - prediction.ts <= self.config.attribution_window_s
        return True

    def _deadline(self, prediction: Prediction) -> float:
        if prediction.task == "recs":
            return prediction.ts + self.config.attribution_window_s
        return prediction.ts + self.config.window_s

    def _emit(self, key: str, prediction: Prediction, label: Message | None) -> Joined:
        self.done[key] = prediction.ts
        self.counts["joined" if label is not None else "closed_without_click"] += 1
        if prediction.task == "recs":
            value = reward = 1.0 if label is not None else 0.0
        else:
            assert isinstance(label, OrderDelivered)
            value = (label.ts - label.placed_ts) / MINUTE
            scalar = (
                prediction.prediction if isinstance(prediction.prediction, float) else float("nan")
            )
            reward = 1.0 if abs(scalar - value) <= self.config.eta_tolerance_min else 0.0
        label_ts = label.ts if label is not None else self._deadline(prediction)
        example = TrainingExample(
            id=prediction.id, ts=label_ts, task=prediction.task, features=prediction.features,
            label=value, model_version=prediction.model_version, arm=prediction.arm,
            propensity=prediction.propensity, prediction=prediction.prediction,
            request_ts=prediction.request_ts, label_ts=label_ts,
        )  # fmt: skip
        arm = prediction.arm or prediction.model_version
        # a recs arm is an item chosen for the request's context: the router's contextual
        # policy learns from the features it was chosen with
        features = prediction.features if prediction.task == "recs" else None
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
                if prediction.task == "recs":
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
    if prediction.task == "eta":
        order = prediction.entities.get("order_id")
        return f"order:{order}" if order else None
    session = prediction.entities.get("session_id")
    return f"click:{session}:{prediction.arm}" if session and prediction.arm else None


def join_key_of_label(label: Message) -> str | None:
    if isinstance(label, OrderDelivered):
        return f"order:{label.order_id}"
    if isinstance(label, ItemClicked):
        return f"click:{label.session_id}:{label.item_id}"
    return None
