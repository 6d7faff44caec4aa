"""A seeded discrete-event simulation of a food-delivery marketplace (the eta use case).

The world: zones, each with its own traffic (minutes per km); restaurants in those
zones with their own lognormal prep times and a kitchen that cooks a few orders at
once (the rest queue, so prep grows with load); couriers who come online and go
offline over the day and serve their zone; orders arriving by a Poisson process whose
rate follows a daily curve; light rain now and then.

An order's life: placed (with a predict request at the same instant) -> the kitchen
cooks it, after the orders ahead of it -> ready. Meanwhile, a few minutes before the
platform expects the food, the nearest idle courier of the zone is assigned (or the
order waits for one) and rides to the restaurant -> picked up once both food and
courier are there -> delivered after the ride to the customer. The label of the eta
task is ``delivered.ts - placed_ts``.

Scripted scenarios shift the world ``shift_at_s`` seconds into the run: ``storm``
slows every ride and sends couriers home; ``slow-kitchen`` multiplies prep times (x2 by
default) at the most popular restaurants.

``simulate`` yields contract messages in non-decreasing event time, as fast as it
can; ``paced`` spreads them over wall time for a live run. The same config always
gives the same messages, ids included.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import math
import random
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from rtml.shared.contracts import Message, PredictRequest
from rtml.tasks.eta.events import (
    CourierAssigned,
    CourierOffline,
    CourierOnline,
    OrderDelivered,
    OrderPickedUp,
    OrderPlaced,
    OrderReady,
)

Scenario = Literal["none", "storm", "slow-kitchen"]
SCENARIOS: tuple[Scenario, ...] = ("none", "storm", "slow-kitchen")

# Relative order rate at each hour of the day (UTC of the simulated clock): lunch and
# dinner peaks, quiet nights. Scaled to a mean of 1 so that orders_per_hour is the
# daily mean rate.
_RAW_HOURLY_DEMAND = (
    0.35, 0.2, 0.12, 0.08, 0.08, 0.12, 0.25, 0.45, 0.6, 0.7, 0.9, 1.5,
    2.0, 1.6, 0.9, 0.7, 0.8, 1.2, 1.8, 2.3, 2.0, 1.4, 0.9, 0.6,
)  # fmt: skip
_HOURLY_DEMAND = tuple(v * 24 / sum(_RAW_HOURLY_DEMAND) for v in _RAW_HOURLY_DEMAND)
_PEAK_DEMAND = max(_HOURLY_DEMAND)

# Streets are not straight lines.
_ROAD_DETOUR = 1.3
# Parking, stairs, handing the bag over.
_HANDOVER_S = (60.0, 240.0)
# Spread of a ride around its expected time (lognormal sigma): lights, traffic.
_TRAVEL_NOISE_SIGMA = 0.2
# Spread of one dish's prep time around the restaurant's mean (lognormal sigma).
_PREP_SIGMA = 0.35
# Each extra item adds this share of the base prep time.
_PREP_PER_EXTRA_ITEM = 0.08
_MIN_DISTANCE_KM = 0.3
# Kitchen capacity is chosen so that the usual rush fills this share of it.
_KITCHEN_PEAK_UTILISATION = (0.6, 0.95)
# The platform calls a courier this long before it expects the food to be ready, so
# couriers ride while the kitchen cooks instead of waiting at the counter.
_DISPATCH_LEAD_S = 8 * 60.0

# Couriers work sessions of a few hours; the share online follows demand (with lag,
# as real couriers do) within these bounds.
_SESSION_S = (1.5 * 3600, 5 * 3600)
_ONLINE_SHARE_PER_DEMAND = 0.45
_ONLINE_SHARE_BOUNDS = (0.08, 0.95)

# Rain comes and goes; the model never sees it, so it is part of the irreducible noise.
_WEATHER_STEP_S = 1800.0
_RAIN_FACTOR = 1.25
_RAIN_STARTS_P = 0.08
_RAIN_STOPS_P = 0.35


@dataclass(frozen=True)
class SimConfig:
    """Everything a run depends on; equal configs give byte-identical runs."""

    seed: int = 0
    n_zones: int = 4
    n_restaurants: int = 80
    n_couriers: int = 120
    # daily mean; the hourly demand curve shapes it
    orders_per_hour: float = 120.0
    # 2024-06-03 11:00 UTC: the run opens into the lunch peak
    start_ts: float = 1_717_412_400.0
    scenario: Scenario = "none"
    # seconds after start_ts when the scenario's shift begins (it then lasts)
    shift_at_s: float = 2 * 3600.0
    storm_travel_factor: float = 1.5
    # share of couriers who keep working through the storm
    storm_courier_share: float = 0.75
    slow_kitchen_factor: float = 2.0
    n_slow_kitchens: int = 3
    zone_size_km: float = 4.0
    # prefix of every id; the default "s<seed>" repeats across runs of one seed, so set
    # a distinct one when a stack must tell such runs apart
    id_prefix: str = ""

    def __post_init__(self) -> None:
        _require(self.scenario in SCENARIOS, "scenario", f"must be one of {SCENARIOS}")
        for name in ("n_zones", "n_restaurants", "n_couriers"):
            _require(getattr(self, name) >= 1, name, "must be at least 1")
        _require(self.n_restaurants >= self.n_zones, "n_restaurants", "must be >= n_zones")
        _require(
            0 <= self.n_slow_kitchens <= self.n_restaurants,
            "n_slow_kitchens",
            "must be between 0 and n_restaurants",
        )
        for name in ("orders_per_hour", "storm_travel_factor", "slow_kitchen_factor"):
            _require(getattr(self, name) > 0, name, "must be positive")
        _require(0 < self.storm_courier_share <= 1, "storm_courier_share", "must be in (0, 1]")
        _require(self.zone_size_km > 0, "zone_size_km", "must be positive")
        _require(self.start_ts >= 0, "start_ts", "must be non-negative")
        _require(self.shift_at_s >= 0, "shift_at_s", "must be non-negative")

    @property
    def ids(self) -> str:
        return self.id_prefix or f"s{self.seed}"


def _require(ok: bool, name: str, reason: str) -> None:
    if not ok:
        raise ValueError(f"SimConfig.{name}: {reason}")


def demand_multiplier(ts: float) -> float:
    """Order rate at event time ``ts`` relative to the daily mean (linear between hours)."""
    hours = (ts % 86400.0) / 3600.0
    hour = int(hours)
    now, later = _HOURLY_DEMAND[hour], _HOURLY_DEMAND[(hour + 1) % 24]
    return now + (later - now) * (hours - hour)


# --- the world -------------------------------------------------------------------


@dataclass(frozen=True)
class Zone:
    index: int
    zone_id: str
    minutes_per_km: float


@dataclass(eq=False)
class Restaurant:
    restaurant_id: str
    zone: Zone
    x: float
    y: float
    mean_prep_s: float
    # orders the kitchen cooks at once; the rest wait their turn
    capacity: int
    popularity: float
    # scenario multiplier on prep times
    prep_factor: float = 1.0
    cooking: int = 0
    waiting: deque[Order] = field(default_factory=deque)


@dataclass(eq=False)
class Courier:
    courier_id: str
    zone: Zone
    x: float = 0.0
    y: float = 0.0
    online: bool = False
    # counts sessions, so that the end of an earlier session cannot end a later one
    session: int = 0
    order: Order | None = None
    # finish the current delivery, then go offline
    leaving: bool = False


@dataclass(eq=False)
class Order:
    order_id: str
    restaurant: Restaurant
    x: float
    y: float
    distance_km: float
    n_items: int
    placed_ts: float
    ready: bool = False
    courier: Courier | None = None
    courier_waiting: bool = False


_Handler = Callable[[Any], None]


class Marketplace:
    """The simulation state and its event handlers; ``run`` advances the clock."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        seed = config.seed
        # one stream per concern, so that a scenario changes only what it touches:
        # the same seed places the same orders whatever the scenario
        world_rng = random.Random(f"{seed}/world")
        self._arrivals = random.Random(f"{seed}/arrivals")
        self._orders = random.Random(f"{seed}/orders")
        self._kitchens = random.Random(f"{seed}/kitchens")
        self._rides = random.Random(f"{seed}/rides")
        self._shifts = random.Random(f"{seed}/shifts")
        self._weather = random.Random(f"{seed}/weather")

        self.zones = [Zone(i, f"z{i}", world_rng.uniform(2.4, 3.6)) for i in range(config.n_zones)]
        self.restaurants = self._new_restaurants(world_rng)
        self.couriers = self._new_couriers()
        self._restaurant_weights = list(_cumulative(r.popularity for r in self.restaurants))
        self._idle: list[dict[str, Courier]] = [{} for _ in self.zones]
        self._unassigned: list[deque[Order]] = [deque() for _ in self.zones]

        self.now = config.start_ts
        self._queue: list[tuple[float, int, _Handler, Any]] = []
        self._seq = 0
        self._outbox: list[Message] = []
        self._n_events = 0
        self._n_orders = 0
        self._weather_factor = 1.0
        self._storm = False
        self._courier_share = 1.0
        self._start()

    @property
    def slow_kitchens(self) -> list[Restaurant]:
        """The restaurants the slow-kitchen scenario slows down: the busiest ones."""
        by_popularity = sorted(self.restaurants, key=lambda r: -r.popularity)
        return by_popularity[: self.config.n_slow_kitchens]

    def run(self, duration_s: float) -> Iterator[Message]:
        """Yield the messages of event times before ``start_ts + duration_s``.

        Calling it again with a longer duration continues the same world; math.inf
        runs forever.
        """
        end = self.config.start_ts + duration_s
        queue = self._queue
        while queue and queue[0][0] < end:
            self.now, _, handler, arg = heapq.heappop(queue)
            handler(arg)
            yield from self._outbox
            self._outbox.clear()

    # --- construction ----------------------------------------------------------------

    def _new_restaurants(self, rng: random.Random) -> list[Restaurant]:
        size = self.config.zone_size_km
        popularity = [rng.lognormvariate(0, 0.8) for _ in range(self.config.n_restaurants)]
        peak_orders_per_s = self.config.orders_per_hour * _PEAK_DEMAND / 3600.0
        restaurants = []
        for index, weight in enumerate(popularity):
            mean_prep_s = rng.uniform(7, 18) * 60
            # kitchens are sized for the rush they usually get, some more tightly than
            # others: at the peak they run near full and orders start to queue
            peak_load = peak_orders_per_s * weight / sum(popularity) * mean_prep_s
            capacity = max(1, math.ceil(peak_load / rng.uniform(*_KITCHEN_PEAK_UTILISATION)))
            restaurants.append(
                Restaurant(
                    restaurant_id=f"r{index:03d}",
                    zone=self.zones[index % len(self.zones)],
                    x=rng.uniform(0, size),
                    y=rng.uniform(0, size),
                    mean_prep_s=mean_prep_s,
                    capacity=capacity,
                    popularity=weight,
                )
            )
        return restaurants

    def _new_couriers(self) -> list[Courier]:
        # couriers spread over zones in proportion to demand, so no zone starts starved
        zone_demand = [0.0] * len(self.zones)
        for restaurant in self.restaurants:
            zone_demand[restaurant.zone.index] += restaurant.popularity
        cumulative = list(_cumulative(zone_demand))
        n = self.config.n_couriers
        zones = [bisect.bisect(cumulative, (i + 0.5) / n * cumulative[-1]) for i in range(n)]
        return [Courier(f"c{i:03d}", self.zones[zone]) for i, zone in enumerate(zones)]

    def _start(self) -> None:
        start = self.config.start_ts
        share = self._online_share(start)
        for courier in self.couriers:
            if self._shifts.random() < share:
                self._at(start, self._courier_online, courier)
            else:
                self._at(self._back_online_at(), self._courier_online, courier)
        self._at(self._next_arrival(start), self._order_arrives, None)
        self._at(start + _WEATHER_STEP_S, self._weather_changes, None)
        if self.config.scenario != "none":
            self._at(start + self.config.shift_at_s, self._shift_world, None)

    # --- the event queue -------------------------------------------------------------

    def _at(self, ts: float, handler: _Handler, arg: Any) -> None:
        # the sequence number keeps equal times in scheduling order, deterministically
        self._seq += 1
        heapq.heappush(self._queue, (ts, self._seq, handler, arg))

    def _emit(self, kind: type[Message], **fields: Any) -> None:
        self._n_events += 1
        self._outbox.append(
            kind(id=f"{self.config.ids}-e{self._n_events}", ts=round(self.now, 3), **fields)
        )

    # --- orders ----------------------------------------------------------------------

    def _next_arrival(self, after: float) -> float:
        # thinning: draw at the peak rate, keep each draw with probability rate/peak
        peak_per_s = self.config.orders_per_hour * _PEAK_DEMAND / 3600.0
        ts = after
        while True:
            ts += self._arrivals.expovariate(peak_per_s)
            if self._arrivals.random() * _PEAK_DEMAND < demand_multiplier(ts):
                return ts

    def _order_arrives(self, _: None) -> None:
        self._at(self._next_arrival(self.now), self._order_arrives, None)
        order = self._new_order()
        restaurant = order.restaurant
        zone_id = restaurant.zone.zone_id
        self._emit(
            OrderPlaced,
            order_id=order.order_id,
            restaurant_id=restaurant.restaurant_id,
            zone_id=zone_id,
            distance_km=order.distance_km,
            n_items=order.n_items,
        )
        self._outbox.append(
            PredictRequest(
                id=f"{self.config.ids}-q{self._n_orders}",
                ts=order.placed_ts,
                task="eta",
                entities={
                    "order_id": order.order_id,
                    "restaurant_id": restaurant.restaurant_id,
                    "zone_id": zone_id,
                },
                inputs={"distance_km": order.distance_km, "n_items": float(order.n_items)},
            )
        )
        self._at(self._dispatch_time(order), self._dispatch, order)
        if restaurant.cooking < restaurant.capacity:
            self._start_cooking(order)
        else:
            restaurant.waiting.append(order)

    def _new_order(self) -> Order:
        rng = self._orders
        self._n_orders += 1
        restaurant = rng.choices(self.restaurants, cum_weights=self._restaurant_weights)[0]
        size = self.config.zone_size_km
        x, y = rng.uniform(0, size), rng.uniform(0, size)
        distance = max(_MIN_DISTANCE_KM, _road_km(restaurant.x, restaurant.y, x, y))
        return Order(
            order_id=f"{self.config.ids}-o{self._n_orders}",
            restaurant=restaurant,
            x=x,
            y=y,
            distance_km=round(distance, 2),
            # mostly one to three items, a few large group orders
            n_items=min(20, 1 + int(rng.expovariate(1 / 1.5))),
            placed_ts=round(self.now, 3),
        )

    # --- kitchens --------------------------------------------------------------------

    def _start_cooking(self, order: Order) -> None:
        restaurant = order.restaurant
        restaurant.cooking += 1
        # parametrised by its mean, so mean_prep_s is what a kitchen averages on one item
        mu = math.log(restaurant.mean_prep_s) - _PREP_SIGMA**2 / 2
        prep_s = (
            self._kitchens.lognormvariate(mu, _PREP_SIGMA)
            * _items_factor(order.n_items)
            * restaurant.prep_factor
        )
        self._at(self.now + prep_s, self._order_ready, order)

    def _order_ready(self, order: Order) -> None:
        restaurant = order.restaurant
        self._emit(
            OrderReady,
            order_id=order.order_id,
            restaurant_id=restaurant.restaurant_id,
            placed_ts=order.placed_ts,
        )
        order.ready = True
        restaurant.cooking -= 1
        if restaurant.waiting:
            self._start_cooking(restaurant.waiting.popleft())
        if order.courier_waiting:
            self._pick_up(order)

    # --- couriers and rides ----------------------------------------------------------

    def _dispatch_time(self, order: Order) -> float:
        # the platform's guess from the kitchen's queue and usual pace; it does not know
        # about a scenario's slowdown, so a slow kitchen keeps couriers waiting
        restaurant = order.restaurant
        batches_ahead = len(restaurant.waiting) // restaurant.capacity + 1
        expected_prep_s = batches_ahead * restaurant.mean_prep_s * _items_factor(order.n_items)
        return max(self.now, self.now + expected_prep_s - _DISPATCH_LEAD_S)

    def _dispatch(self, order: Order) -> None:
        zone = order.restaurant.zone
        idle = self._idle[zone.index]
        if not idle:
            self._unassigned[zone.index].append(order)
            return
        r = order.restaurant
        nearest = min(idle.values(), key=lambda c: (c.x - r.x) ** 2 + (c.y - r.y) ** 2)
        self._assign(nearest, order)

    def _assign(self, courier: Courier, order: Order) -> None:
        del self._idle[courier.zone.index][courier.courier_id]
        courier.order = order
        order.courier = courier
        restaurant = order.restaurant
        self._emit(
            CourierAssigned,
            order_id=order.order_id,
            courier_id=courier.courier_id,
            zone_id=courier.zone.zone_id,
        )
        distance = _road_km(courier.x, courier.y, restaurant.x, restaurant.y)
        self._at(self.now + self._ride_s(courier.zone, distance), self._courier_arrives, order)

    def _courier_arrives(self, order: Order) -> None:
        courier = order.courier
        assert courier is not None
        courier.x, courier.y = order.restaurant.x, order.restaurant.y
        if order.ready:
            self._pick_up(order)
        else:
            order.courier_waiting = True

    def _pick_up(self, order: Order) -> None:
        courier = order.courier
        assert courier is not None
        self._emit(
            OrderPickedUp,
            order_id=order.order_id,
            courier_id=courier.courier_id,
            restaurant_id=order.restaurant.restaurant_id,
        )
        ride_s = self._ride_s(courier.zone, order.distance_km) + self._rides.uniform(*_HANDOVER_S)
        self._at(self.now + ride_s, self._order_delivered, order)

    def _order_delivered(self, order: Order) -> None:
        courier = order.courier
        assert courier is not None
        self._emit(
            OrderDelivered,
            order_id=order.order_id,
            courier_id=courier.courier_id,
            restaurant_id=order.restaurant.restaurant_id,
            zone_id=courier.zone.zone_id,
            placed_ts=order.placed_ts,
        )
        courier.x, courier.y = order.x, order.y
        courier.order = None
        self._courier_free(courier)

    def _courier_free(self, courier: Courier) -> None:
        if courier.leaving:
            self._go_offline(courier)
            return
        self._idle[courier.zone.index][courier.courier_id] = courier
        waiting = self._unassigned[courier.zone.index]
        if waiting:
            self._assign(courier, waiting.popleft())

    def _ride_s(self, zone: Zone, distance_km: float) -> float:
        expected_s = distance_km * zone.minutes_per_km * 60.0 * self._weather_factor
        return expected_s * self._rides.lognormvariate(0.0, _TRAVEL_NOISE_SIGMA)

    # --- courier shifts --------------------------------------------------------------

    def _courier_online(self, courier: Courier) -> None:
        size = self.config.zone_size_km
        courier.x, courier.y = self._shifts.uniform(0, size), self._shifts.uniform(0, size)
        courier.online = True
        courier.session += 1
        self._emit(CourierOnline, courier_id=courier.courier_id, zone_id=courier.zone.zone_id)
        session_end = self.now + self._shifts.uniform(*_SESSION_S)
        self._at(session_end, self._session_ends, (courier, courier.session))
        self._courier_free(courier)

    def _session_ends(self, courier_session: tuple[Courier, int]) -> None:
        courier, session = courier_session
        if courier.online and courier.session == session:
            self._end_shift(courier)

    def _end_shift(self, courier: Courier) -> None:
        if courier.order is None:
            self._go_offline(courier)
        else:
            courier.leaving = True

    def _go_offline(self, courier: Courier) -> None:
        self._idle[courier.zone.index].pop(courier.courier_id, None)
        courier.online = False
        courier.leaving = False
        self._emit(CourierOffline, courier_id=courier.courier_id, zone_id=courier.zone.zone_id)
        self._at(self._back_online_at(), self._courier_online, courier)

    def _back_online_at(self) -> float:
        # thinning over the rate of coming back that keeps the share online near the
        # target of each hour as it passes, so a break begun at night ends by lunch
        peak_rate = _return_rate(_ONLINE_SHARE_BOUNDS[1])
        ts = self.now
        while True:
            ts += self._shifts.expovariate(peak_rate)
            if self._shifts.random() * peak_rate < _return_rate(self._online_share(ts)):
                return ts

    def _online_share(self, ts: float) -> float:
        low, high = _ONLINE_SHARE_BOUNDS
        target = _ONLINE_SHARE_PER_DEMAND * demand_multiplier(ts) * self._courier_share
        return min(high, max(low, target))

    # --- weather and scenarios -------------------------------------------------------

    def _weather_changes(self, _: None) -> None:
        if self._storm:
            return
        raining = self._weather_factor > 1.0
        if self._weather.random() < (_RAIN_STOPS_P if raining else _RAIN_STARTS_P):
            self._weather_factor = 1.0 if raining else _RAIN_FACTOR
        self._at(self.now + _WEATHER_STEP_S, self._weather_changes, None)

    def _shift_world(self, _: None) -> None:
        if self.config.scenario == "storm":
            self._storm = True
            self._weather_factor = self.config.storm_travel_factor
            self._courier_share = self.config.storm_courier_share
            for courier in self.couriers:
                if courier.online and self._shifts.random() >= self._courier_share:
                    self._end_shift(courier)
        elif self.config.scenario == "slow-kitchen":
            for restaurant in self.slow_kitchens:
                restaurant.prep_factor = self.config.slow_kitchen_factor


def _return_rate(online_share: float) -> float:
    # per offline courier and second: with sessions of mean length L, a share s stays
    # online when couriers come back at rate s / ((1 - s) L)
    mean_session_s = sum(_SESSION_S) / 2
    return online_share / ((1 - online_share) * mean_session_s)


def _items_factor(n_items: int) -> float:
    return 1 + _PREP_PER_EXTRA_ITEM * (n_items - 1)


def _road_km(x0: float, y0: float, x1: float, y1: float) -> float:
    return math.hypot(x1 - x0, y1 - y0) * _ROAD_DETOUR


def _cumulative(values: Iterable[float]) -> Iterator[float]:
    total = 0.0
    for value in values:
        total += value
        yield total


def simulate(config: SimConfig, duration_s: float) -> Iterator[Message]:
    """The messages of ``duration_s`` simulated seconds from ``config.start_ts``.

    Domain events (order_placed, order_ready, courier_assigned, order_picked_up,
    order_delivered, courier_online, courier_offline) and a predict request next to
    every order_placed, in non-decreasing ``ts``. Orders still in flight at the end
    simply stop short of delivery.
    """
    return Marketplace(config).run(duration_s)


async def paced(messages: Iterable[Message], speedup: float) -> AsyncIterator[Message]:
    """Yield ``messages`` as event time advances ``speedup`` times faster than wall time.

    The first message anchors the two clocks. A consumer that falls behind gets the
    overdue messages at once rather than a slower clock, so event time keeps its pace.
    """
    if not speedup > 0:
        raise ValueError(f"speedup must be positive, got {speedup}")
    loop = asyncio.get_running_loop()
    anchor: tuple[float, float] | None = None
    for message in messages:
        if anchor is None:
            anchor = (message.ts, loop.time())
        first_ts, first_wall = anchor
        delay = first_wall + (message.ts - first_ts) / speedup - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        yield message
