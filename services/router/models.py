"""Arms follow ``rtml.models``; promotions go to the model store and back on the topic.

On start the router replays rtml.models to its end (the last word per version,
as compaction would leave it) and takes each task's champion from the model
store's pointer, the source of truth. Then it follows the topic. A promotion
decided by the router sets the store's champion first and then announces
``promoted`` with the rule's reason, so a crash in between leaves the store
right and the announcement missing, never the reverse.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client import Counter
from rtml.services.router.handlers import PromotionProposal, Router
from rtml.services.router.metrics import forget_arm
from rtml.shared.contracts import ModelAnnouncement, Task
from rtml.shared.errors import ChampionChanged, ModelStoreError
from rtml.shared.logging import get_logger
from rtml.shared.model_announcements import (
    MODELS_PARTITION,
    announce,
    decode_announcement,
    last_word,
    open_announcement_reader,
    read_to_end,
)
from rtml.shared.model_store import ModelStore
from rtml.shared.settings import Settings

log = get_logger(__name__)

PROMOTIONS = Counter(
    "rtml_router_promotions_total", "champions promoted by the router", ["task", "outcome"]
)


class AnnouncementFollower:
    def __init__(self, settings: Settings, router: Router, store: ModelStore) -> None:
        self._settings = settings
        self._router = router
        self._store = store
        self._consumer: AIOKafkaConsumer | None = None
        # versions announced and not retired, per task: /readyz wants an arm for each such task
        self._live: dict[Task, set[str]] = defaultdict(set)

    async def start(self) -> None:
        self._consumer = await open_announcement_reader(self._settings)
        announcements = await read_to_end(self._consumer, self._settings)
        for announcement in last_word(announcements).values():
            self.apply(announcement)
        for task in self._router.tasks:
            await take_champion_from_store(self._router, self._store, task)
        log.info(
            "arms_rebuilt",
            announcements=len(announcements),
            arms={task: self._router.arms(task) for task in self._router.tasks},
        )

    async def run(self, stop: asyncio.Event) -> None:
        assert self._consumer is not None, "start() first"
        while not stop.is_set():
            batches = await self._consumer.getmany(MODELS_PARTITION, timeout_ms=100)
            for record in batches.get(MODELS_PARTITION, []):
                announcement = decode_announcement(record.value, record.offset)
                if announcement is not None:
                    self.apply(announcement)

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    def apply(self, announcement: ModelAnnouncement) -> None:
        live = self._live[announcement.task]
        if announcement.action == "retired":
            live.discard(announcement.model_version)
            forget_arm(announcement.task, announcement.model_version)
        else:
            live.add(announcement.model_version)
        self._router.on_announcement(announcement)
        log.info(
            "arm_announcement",
            task=announcement.task,
            version=announcement.model_version,
            action=announcement.action,
        )

    def readiness(self) -> bool | str:
        missing = [
            task for task, live in self._live.items() if live and not self._router.arms(task)
        ]
        return f"no arm for announced models of {missing}" if missing else True


class Promoter:
    def __init__(self, router: Router, store: ModelStore, producer: AIOKafkaProducer) -> None:
        self._router = router
        self._store = store
        self._producer = producer

    async def promote(self, proposal: PromotionProposal) -> bool:
        """Set the champion in the store, then announce it; False if the store refused.

        The store's pointer moves only from the champion this router knows (compare-and-
        swap): when another replica or an operator moved it first, this promotion is
        dropped and the router takes the store's champion instead.
        """
        known = self._router.champion(proposal.task)
        try:
            record = await asyncio.to_thread(
                self._store.set_champion, proposal.task, proposal.arm, replacing=known
            )
        except ChampionChanged as exc:
            PROMOTIONS.labels(proposal.task, "superseded").inc()
            log.warning(
                "promotion_superseded", task=proposal.task, arm=proposal.arm, error=str(exc)
            )
            await take_champion_from_store(self._router, self._store, proposal.task)
            return False
        except (ModelStoreError, OSError) as exc:
            PROMOTIONS.labels(proposal.task, "failed").inc()
            log.error("promotion_failed", task=proposal.task, arm=proposal.arm, error=str(exc))
            return False
        await announce(self._producer, record, "promoted", proposal.reason)
        self._router.set_champion(proposal.task, proposal.arm)
        PROMOTIONS.labels(proposal.task, "promoted").inc()
        log.info("champion_promoted", task=proposal.task, arm=proposal.arm, reason=proposal.reason)
        return True


async def take_champion_from_store(router: Router, store: ModelStore, task: Task) -> None:
    """The store's pointer is the source of truth: the router's champion follows it."""
    try:
        record = await asyncio.to_thread(store.champion, task)
    except (ModelStoreError, OSError) as exc:
        log.error("champion_pointer_unreadable", task=task, error=str(exc))
        return
    if record is not None:
        router.set_champion(task, record.version)
