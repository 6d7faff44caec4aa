"""The eta marketplace simulator: determinism, event invariants, scenarios, pacing."""

from __future__ import annotations

import asyncio
import math
import statistics
from collections import defaultdict
from typing import Any, TypeVar

import pytest
from rtml.shared.contracts import Message, PredictRequest, encode

from rtml.tasks.eta.events import (
    CourierAssigned,
    CourierOffline,
    CourierOnline,
    OrderDelivered,
    OrderPickedUp,
    OrderPlaced,
    OrderReady,
)
from rtml.tasks.eta.simulator import world
from rtml.tasks.eta.simulator.world import (
    Marketplace,
    SimConfig,
    demand_multiplier,
    paced,
    simulate,
)

HOUR = 3600.0
STAGES = (OrderPlaced, OrderReady, OrderPickedUp, OrderDelivered)
ORDER_EVENTS = (*STAGES, CourierAssigned)
KINDS = {*ORDER_EVENTS, CourierOnline, CourierOffline, PredictRequest}
M = TypeVar("M", bound=Message)


def run(duration_s: float = 6 * HOUR, **overrides: Any) -> list[Message]:
    return list(simulate(SimConfig(**overrides), duration_s))


@pytest.fixture(scope="module")
def six_hours() -> list[Message]:
    return run(seed=7)


def wire_bytes(messages: list[Message]) -> bytes:
    return b"".join(encode(m) for m in messages)


def of_kind(messages: list[Message], kind: type[M]) -> list[M]:
    return [m for m in messages if isinstance(m, kind)]


def delivery_minutes(messages: list[Message], placed_from: float, placed_to: float) -> list[float]:
    return [
        (m.ts - m.placed_ts) / 60
        for m in of_kind(messages, OrderDelivered)
        if placed_from <= m.placed_ts < placed_to
    ]


# --- determinism -------------------------------------------------------------------


def test_same_seed_gives_identical_bytes() -> None:
    assert wire_bytes(run(3 * HOUR, seed=11)) == wire_bytes(run(3 * HOUR, seed=11))


def test_different_seeds_give_different_runs() -> None:
    # one id prefix for both, so that only the world can make them differ
    first = run(3 * HOUR, seed=11, id_prefix="run")
    second = run(3 * HOUR, seed=12, id_prefix="run")
    assert wire_bytes(first) != wire_bytes(second)


def test_run_continues_the_same_world() -> None:
    marketplace = Marketplace(SimConfig(seed=3))
    in_two_steps = [*marketplace.run(HOUR), *marketplace.run(2 * HOUR)]
    assert wire_bytes(in_two_steps) == wire_bytes(run(2 * HOUR, seed=3))


def test_a_scenario_changes_nothing_before_its_shift() -> None:
    config = SimConfig(seed=5, scenario="storm")
    shift_ts = config.start_ts + config.shift_at_s
    storm = [m for m in run(4 * HOUR, seed=5, scenario="storm") if m.ts < shift_ts]
    calm = [m for m in run(4 * HOUR, seed=5) if m.ts < shift_ts]
    assert storm and wire_bytes(storm) == wire_bytes(calm)


def test_ids_are_unique_and_carry_the_prefix() -> None:
    messages = run(2 * HOUR, seed=4, id_prefix="demo9")
    ids = [m.id for m in messages]
    assert len(set(ids)) == len(ids)
    assert all(i.startswith("demo9-") for i in ids)


# --- event invariants --------------------------------------------------------------


def test_messages_are_contract_kinds_in_event_time_order(six_hours: list[Message]) -> None:
    assert {type(m) for m in six_hours} == KINDS
    times = [m.ts for m in six_hours]
    assert times == sorted(times)
    assert times[0] >= SimConfig().start_ts and times[-1] < SimConfig().start_ts + 6 * HOUR


def test_every_order_goes_through_its_stages_in_order(six_hours: list[Message]) -> None:
    timelines: dict[str, dict[type[Message], float]] = defaultdict(dict)
    for m in six_hours:
        if isinstance(m, ORDER_EVENTS):
            stages = timelines[m.order_id]
            assert type(m) not in stages, f"{m.SCHEMA} twice for {m.order_id}"
            stages[type(m)] = m.ts

    end = SimConfig().start_ts + 6 * HOUR
    for order_id, stages in timelines.items():
        reached = [s for s in STAGES if s in stages]
        assert reached == list(STAGES[: len(reached)]), f"{order_id} skipped a stage: {reached}"
        times = [stages[s] for s in reached]
        assert times == sorted(times), f"{order_id} stages out of time order"
        if OrderPickedUp in stages:
            assert stages[CourierAssigned] <= stages[OrderPickedUp]
        # only orders still in flight at the end may stop short of delivery
        if stages[OrderPlaced] < end - 2 * HOUR:
            assert OrderDelivered in stages, f"{order_id} never delivered"


def test_each_order_placed_has_a_matching_predict_request(six_hours: list[Message]) -> None:
    requests = {m.entities["order_id"]: m for m in of_kind(six_hours, PredictRequest)}
    placed = of_kind(six_hours, OrderPlaced)
    assert len(requests) == len(placed)
    for order in placed:
        request = requests[order.order_id]
        assert request.task == "eta" and request.ts == order.ts
        assert request.entities == {
            "order_id": order.order_id,
            "restaurant_id": order.restaurant_id,
            "zone_id": order.zone_id,
        }
        assert request.inputs == {"distance_km": order.distance_km, "n_items": order.n_items}


def test_couriers_carry_one_order_at_a_time_and_only_while_online(
    six_hours: list[Message],
) -> None:
    online: set[str] = set()
    carrying: dict[str, str] = {}
    for m in six_hours:
        match m:
            case CourierOnline(courier_id=courier):
                assert courier not in online
                online.add(courier)
            case CourierOffline(courier_id=courier):
                assert courier in online, f"{courier} went offline while not online"
                assert courier not in carrying, f"{courier} left with an order"
                online.remove(courier)
            case CourierAssigned(courier_id=courier, order_id=order_id):
                assert courier in online, f"{courier} assigned while offline"
                assert courier not in carrying, f"{courier} assigned a second order"
                carrying[courier] = order_id
            case OrderPickedUp(courier_id=courier, order_id=order_id):
                assert carrying[courier] == order_id
            case OrderDelivered(courier_id=courier, order_id=order_id):
                assert carrying.pop(courier) == order_id
    assert of_kind(six_hours, CourierOffline), "no courier ever went offline"


# --- realism -----------------------------------------------------------------------


def test_default_delivery_times_are_realistic(six_hours: list[Message]) -> None:
    minutes = delivery_minutes(six_hours, 0, math.inf)
    assert 20 <= statistics.median(minutes) <= 50
    assert min(minutes) > 5


def test_orders_at_a_full_kitchen_wait_for_a_free_slot(six_hours: list[Message]) -> None:
    capacity = {r.restaurant_id: r.capacity for r in Marketplace(SimConfig(seed=7)).restaurants}
    cooking: dict[str, int] = defaultdict(int)
    found_full: dict[str, bool] = {}
    prep_minutes: dict[bool, list[float]] = {False: [], True: []}
    for m in six_hours:
        if isinstance(m, OrderPlaced):
            found_full[m.order_id] = cooking[m.restaurant_id] >= capacity[m.restaurant_id]
            cooking[m.restaurant_id] += 1
        elif isinstance(m, OrderReady):
            cooking[m.restaurant_id] -= 1
            prep_minutes[found_full[m.order_id]].append((m.ts - m.placed_ts) / 60)
    assert prep_minutes[True], "no kitchen was ever full"
    assert statistics.mean(prep_minutes[True]) > 1.3 * statistics.mean(prep_minutes[False])


def test_demand_curve_averages_one_over_a_day() -> None:
    samples = [demand_multiplier(minute * 60.0) for minute in range(24 * 60)]
    assert statistics.mean(samples) == pytest.approx(1.0, rel=1e-3)
    assert demand_multiplier(12.5 * HOUR) > 3 * demand_multiplier(3.5 * HOUR)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_one_hour_brings_about_the_poisson_number_of_orders(seed: int) -> None:
    config = SimConfig(seed=seed)
    rate_per_minute = [
        config.orders_per_hour / 60 * demand_multiplier(config.start_ts + (m + 0.5) * 60)
        for m in range(60)
    ]
    expected = sum(rate_per_minute)
    placed = len(of_kind(run(HOUR, seed=seed), OrderPlaced))
    # four standard deviations of a Poisson count
    assert abs(placed - expected) <= 4 * math.sqrt(expected)


# --- scenarios ---------------------------------------------------------------------


def test_storm_makes_deliveries_slower_after_the_shift() -> None:
    config = SimConfig(seed=21, scenario="storm")
    shift = config.start_ts + config.shift_at_s
    storm = run(5 * HOUR, seed=21, scenario="storm")
    calm = run(5 * HOUR, seed=21)
    before = statistics.mean(delivery_minutes(storm, shift - 2 * HOUR, shift))
    after = statistics.mean(delivery_minutes(storm, shift, shift + 2 * HOUR))
    calm_after = statistics.mean(delivery_minutes(calm, shift, shift + 2 * HOUR))
    assert after > 1.2 * before
    assert after > 1.2 * calm_after


def test_slow_kitchen_doubles_prep_at_the_busiest_restaurants() -> None:
    config = SimConfig(seed=8, scenario="slow-kitchen")
    slow = {r.restaurant_id for r in Marketplace(config).slow_kitchens}
    assert len(slow) == config.n_slow_kitchens
    shift = config.start_ts + config.shift_at_s
    prep: dict[bool, list[float]] = {False: [], True: []}
    for ready in of_kind(run(4 * HOUR, seed=8, scenario="slow-kitchen"), OrderReady):
        if ready.restaurant_id in slow:
            prep[ready.placed_ts >= shift].append(ready.ts - ready.placed_ts)
    assert statistics.mean(prep[True]) > 1.5 * statistics.mean(prep[False])


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="scenario"):
        SimConfig(scenario="flood")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_couriers"):
        SimConfig(n_couriers=0)
    with pytest.raises(ValueError, match="storm_courier_share"):
        SimConfig(storm_courier_share=0)


# --- pacing ------------------------------------------------------------------------


async def test_paced_sleeps_so_event_time_runs_speedup_times_faster(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    messages = run(HOUR, seed=6)
    loop = asyncio.get_running_loop()
    clock = [loop.time()]
    requested: list[float] = []

    async def sleep_on_the_fake_clock(delay: float) -> None:
        requested.append(delay)
        clock[0] += delay

    monkeypatch.setattr(loop, "time", lambda: clock[0])
    monkeypatch.setattr(world.asyncio, "sleep", sleep_on_the_fake_clock)
    passed = [m async for m in paced(messages, speedup=36.0)]
    assert passed == messages
    assert all(delay > 0 for delay in requested)
    assert sum(requested) == pytest.approx((messages[-1].ts - messages[0].ts) / 36.0)


async def test_paced_rejects_a_non_positive_speedup() -> None:
    with pytest.raises(ValueError, match="speedup"):
        await paced([], speedup=0).__anext__()
