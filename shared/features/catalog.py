"""What a set of tasks asks of each entity: the features its state computes.

The registry builds it for the loaded tasks (``tasks().entities``). An entity's name
is one namespace across tasks: two tasks that both declare
``Entity("restaurant", key="restaurant_id")`` share its state, and the features
service computes the union of their features for it (a feature both declare must
be the same declaration). Events reach an entity by their topic key: an event
whose ``KEY_FIELD`` is an entity's key belongs to that entity.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from rtml.shared.contracts import Message
from rtml.shared.tasks.spec import (
    STREAMING_KINDS,
    WINDOWED_KINDS,
    CustomFeatures,
    Feature,
    TaskSpec,
)


@dataclass(frozen=True)
class EntityFeatures:
    name: str
    # the field its events are keyed by on rtml.events, and a request names it by
    key: str
    # every task's streaming features of the entity, each name once, in declaration order
    streaming: tuple[Feature, ...]
    batch: tuple[Feature, ...]

    @property
    def lookback_s(self) -> float:
        """How far back of ``t`` any of its features looks: what pruning keeps."""
        windows = [f.window_s or 0.0 for f in self.streaming if f.kind in WINDOWED_KINDS]
        custom = [
            f.custom.lookback_s for f in self.streaming if isinstance(f.custom, CustomFeatures)
        ]
        return max([0.0, *windows, *custom])

    @property
    def events(self) -> tuple[type[Message], ...]:
        """Every event its streaming features read."""
        return tuple(dict.fromkeys(e for f in self.streaming for e in f.sources))


class CatalogError(ValueError):
    pass


def entity_catalog(specs: Iterable[TaskSpec]) -> dict[str, EntityFeatures]:
    """The entities of ``specs`` with their features; CatalogError when two tasks
    disagree on an entity's key or on a feature both declare."""
    keys: dict[str, str] = {}
    features: dict[str, dict[str, Feature]] = {}
    for spec in specs:
        for entity in spec.entities:
            known = keys.setdefault(entity.name, entity.key)
            if known != entity.key:
                raise CatalogError(
                    f"task {spec.name}: entity {entity.name} is keyed by {entity.key!r}, "
                    f"another task keys it by {known!r}"
                )
            features.setdefault(entity.name, {})
        for feature in spec.features:
            if feature.entity is None:
                continue
            declared = features.setdefault(feature.entity, {})
            other = declared.setdefault(feature.name, feature)
            if other != feature:
                raise CatalogError(
                    f"task {spec.name}: feature {feature.name} of {feature.entity} differs "
                    "from another task's declaration of it"
                )
    by_key: dict[str, str] = {}
    for name, key in keys.items():
        if by_key.setdefault(key, name) != name:
            raise CatalogError(f"entities {by_key[key]} and {name} are both keyed by {key!r}")
    return {
        name: EntityFeatures(
            name=name,
            key=keys[name],
            streaming=tuple(f for f in features[name].values() if f.kind in STREAMING_KINDS),
            batch=tuple(f for f in features[name].values() if f.kind == "batch"),
        )
        for name in keys
    }


def entity_of(event: Message, entities: dict[str, EntityFeatures]) -> tuple[str, str] | None:
    """The entity an event belongs to, the one its topic key names, and its id; None
    when no entity is keyed by that field."""
    key_field = type(event).KEY_FIELD
    for entity in entities.values():
        if entity.key == key_field:
            return entity.name, str(getattr(event, key_field))
    return None
