"""What a prediction service with no champion waits for, in its users' words.

The trainer bootstraps a task's first model from the labelled history on the topics
and says how far it is on ``rtml.trainer.status`` (one record per task). The service
follows that topic while it has no champion, and ``/readyz`` repeats the trainer's
last word: how many requests have their label, out of how many the first model
waits for, or why no first model can come from the events.
"""

from __future__ import annotations

from aiokafka import TopicPartition
from rtml.shared import topics
from rtml.shared.contracts import TrainerStatus, decode
from rtml.shared.errors import ContractError
from rtml.shared.kafka import start_consumer
from rtml.shared.logging import get_logger
from rtml.shared.settings import Settings

log = get_logger(__name__)

STATUS_PARTITION = TopicPartition(topics.TRAINER_STATUS.name, 0)


class TrainerProgress:
    """The trainer's last status per task."""

    def __init__(self) -> None:
        self._latest: dict[str, TrainerStatus] = {}

    def apply(self, status: TrainerStatus) -> None:
        self._latest[status.task] = status

    def waiting_for(self, task: str) -> str:
        status = self._latest.get(task)
        if status is None:
            return f"no word from the trainer about {task} yet ({topics.TRAINER_STATUS.name})"
        if status.phase == "collecting":
            said = (
                f"the trainer bootstraps the first {task} model from rtml.events once "
                f"{status.needed} requests have their label: {status.labelled} so far"
            )
            return f"{said} ({status.detail})" if status.detail else said
        if status.phase == "training":
            return f"the trainer is training the first {task} model on {status.labelled} labels"
        if status.phase == "has_champion":
            return f"the trainer reports champion {status.detail}; loading it"
        return status.detail

    async def follow(self, settings: Settings) -> None:
        """Apply every status on the topic from its beginning, until cancelled."""
        # statuses are rare and a second late is fine: a long poll keeps the follower cheap
        consumer = await start_consumer(settings, group_id=None, fetch_max_wait_ms=500)
        try:
            consumer.assign([STATUS_PARTITION])
            await consumer.seek_to_beginning(STATUS_PARTITION)
            while True:
                fetched = await consumer.getmany(STATUS_PARTITION, timeout_ms=1000)
                for record in fetched.get(STATUS_PARTITION, []):
                    try:
                        self.apply(decode(record.value, TrainerStatus))  # type: ignore[arg-type]
                    except ContractError as exc:
                        # a control topic: a loud log line, no dead letter (as rtml.models)
                        log.error("bad_trainer_status", offset=record.offset, error=str(exc))
        finally:
            await consumer.stop()
