"""Seeded card traffic: authorizations, the fraud task's predict requests, chargebacks.

Each card pays at its own pace and typical amount. Now and then a card is
compromised: a burst of larger payments, mostly without the card and often abroad,
each charged back ``chargeback_delay_s`` later (sampled); a few legitimate payments
are charged back too (disputes). Every authorization is scored first -- a predict
request at its event time -- and recorded just after, so the features of a request
never include the payment it scores.

    rtml-fraud generate --hours 6 --out fraud.log     # an event log, for rtml train
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import count

import click
from rtml.shared.contracts import Message, PredictRequest
from rtml.shared.eventlog import write_event_log

from rtml_fraud.events import CardAuthorization, Chargeback
from rtml_fraud.spec import TASK

# an authorization is recorded this long after it was scored
RECORDED_AFTER_S = 0.01


@dataclass(frozen=True)
class FraudConfig:
    seed: int = 0
    n_cards: int = 400
    n_merchants: int = 60
    # payments per card per hour, on average (cards vary around it)
    payments_per_card_hour: float = 0.5
    # compromised cards per hour, across all cards
    compromises_per_hour: float = 6.0
    # fraudulent payments in a burst, and the seconds between them
    burst_size: tuple[int, int] = (3, 8)
    burst_gap_s: tuple[float, float] = (20.0, 240.0)
    chargeback_delay_s: tuple[float, float] = (3600.0, 6 * 3600.0)
    # the share of legitimate payments disputed anyway
    dispute_rate: float = 0.003
    ids: str = "fraud"


@dataclass(frozen=True)
class _Card:
    card_id: str
    typical_amount: float
    rate_per_s: float
    card_not_present: float


def generate(config: FraudConfig, duration_s: float, start_ts: float) -> Iterator[Message]:
    """The traffic of ``duration_s`` of event time from ``start_ts``, in event-time order."""
    rng = random.Random(config.seed)
    cards = [
        _Card(
            card_id=f"{config.ids}-card{i:05d}",
            typical_amount=rng.lognormvariate(math.log(40.0), 0.6),
            rate_per_s=config.payments_per_card_hour * rng.uniform(0.3, 1.7) / 3600.0,
            card_not_present=rng.uniform(0.1, 0.5),
        )
        for i in range(config.n_cards)
    ]
    end = start_ts + duration_s
    serial = count()
    # (ts, tiebreak, message) of everything scheduled; popped in event-time order
    pending: list[tuple[float, int, Message]] = []

    def schedule(message: Message) -> None:
        heapq.heappush(pending, (message.ts, next(serial), message))

    def pay(card: _Card, ts: float, amount: float, cnp: bool, foreign: bool, fraud: bool) -> None:
        authorization_id = f"{config.ids}-a{next(serial)}"
        merchant = f"{config.ids}-m{rng.randrange(config.n_merchants):03d}"
        schedule(
            PredictRequest(
                id=f"{authorization_id}-q",
                ts=ts,
                task=TASK.name,
                entities={"card_id": card.card_id, "authorization_id": authorization_id},
                inputs={
                    "amount": amount,
                    "card_not_present": float(cnp),
                    "foreign": float(foreign),
                },
            )
        )
        schedule(
            CardAuthorization(
                id=f"{authorization_id}-auth",
                ts=ts + RECORDED_AFTER_S,
                authorization_id=authorization_id,
                card_id=card.card_id,
                merchant_id=merchant,
                amount=amount,
                card_not_present=cnp,
                foreign=foreign,
            )
        )
        if fraud or rng.random() < config.dispute_rate:
            schedule(
                Chargeback(
                    id=f"{authorization_id}-cb",
                    ts=ts + rng.uniform(*config.chargeback_delay_s),
                    authorization_id=authorization_id,
                    card_id=card.card_id,
                )
            )

    for card in cards:  # every card's own payments, a Poisson process
        ts = start_ts + rng.expovariate(card.rate_per_s)
        while ts < end:
            amount = round(rng.lognormvariate(math.log(card.typical_amount), 0.5), 2)
            pay(card, ts, amount, rng.random() < card.card_not_present, rng.random() < 0.03, False)
            ts += rng.expovariate(card.rate_per_s)
    ts = start_ts + rng.expovariate(config.compromises_per_hour / 3600.0)
    while ts < end:  # compromised cards: a burst each
        card = rng.choice(cards)
        burst_ts = ts
        for _ in range(rng.randint(*config.burst_size)):
            amount = round(card.typical_amount * rng.uniform(2.0, 12.0), 2)
            pay(card, burst_ts, amount, rng.random() < 0.9, rng.random() < 0.6, True)
            burst_ts += rng.uniform(*config.burst_gap_s)
        ts += rng.expovariate(config.compromises_per_hour / 3600.0)
    while pending:
        ts, _, message = heapq.heappop(pending)
        if ts >= end:
            break
        yield message


@click.group()
def main() -> None:
    """The fraud example's traffic."""


@main.command("generate")
@click.option("--hours", type=float, default=6.0, show_default=True, help="event time")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--start-ts", type=float, default=1_767_225_600.0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="event log file")
def generate_command(hours: float, seed: int, start_ts: float, out: str) -> None:
    """Write ``--hours`` of card traffic to an event log (``rtml train --task fraud
    --event-log``, ``rtml skew``)."""
    written = write_event_log(out, generate(FraudConfig(seed=seed), hours * 3600, start_ts))
    click.echo(f"wrote {written} messages to {out}")
