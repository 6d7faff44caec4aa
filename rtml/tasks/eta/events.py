"""The eta task's events: the simulated marketplace's orders and couriers, published to
``rtml.events`` keyed by the restaurant or zone their features describe."""

from __future__ import annotations

from pydantic import Field

from rtml.shared.contracts import Message


class OrderPlaced(Message):
    SCHEMA = "order_placed"
    KEY_FIELD = "restaurant_id"
    order_id: str = Field(min_length=1)
    restaurant_id: str = Field(min_length=1)
    zone_id: str = Field(min_length=1)
    distance_km: float = Field(ge=0, le=500)
    n_items: int = Field(ge=1, le=1000)


class OrderReady(Message):
    SCHEMA = "order_ready"
    KEY_FIELD = "restaurant_id"
    order_id: str = Field(min_length=1)
    restaurant_id: str = Field(min_length=1)
    placed_ts: float = Field(ge=0, description="event time the order was placed")


class CourierAssigned(Message):
    SCHEMA = "courier_assigned"
    KEY_FIELD = "zone_id"
    order_id: str = Field(min_length=1)
    courier_id: str = Field(min_length=1)
    zone_id: str = Field(min_length=1)


class OrderPickedUp(Message):
    SCHEMA = "order_picked_up"
    KEY_FIELD = "restaurant_id"
    order_id: str = Field(min_length=1)
    courier_id: str = Field(min_length=1)
    restaurant_id: str = Field(min_length=1)


class OrderDelivered(Message):
    SCHEMA = "order_delivered"
    KEY_FIELD = "zone_id"
    order_id: str = Field(min_length=1)
    courier_id: str = Field(min_length=1)
    restaurant_id: str = Field(min_length=1)
    zone_id: str = Field(min_length=1)
    placed_ts: float = Field(ge=0, description="event time the order was placed")


class CourierOnline(Message):
    SCHEMA = "courier_online"
    KEY_FIELD = "zone_id"
    courier_id: str = Field(min_length=1)
    zone_id: str = Field(min_length=1)


class CourierOffline(Message):
    SCHEMA = "courier_offline"
    KEY_FIELD = "zone_id"
    courier_id: str = Field(min_length=1)
    zone_id: str = Field(min_length=1)
