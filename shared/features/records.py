"""The batch feature record on ``rtml.features.batch``.

One record per entity, keyed ``"<entity>:<id>"`` (``restaurant:r001``,
``zone:z0``) on the compacted topic, so the newest record of an entity is its
current batch features. Its ``ts`` is the event time of the newest event the
job used, which is what a batch feature's freshness is measured from.

It is a contract message like the others (schema, version, id, ts), kept here
until it joins ``shared/contracts.py``.
"""

from __future__ import annotations

import hashlib
from typing import ClassVar

from pydantic import Field, ValidationError, field_validator
from rtml.shared.contracts import Message, unpack
from rtml.shared.errors import ContractError


class BatchFeatureRecord(Message):
    SCHEMA: ClassVar[str] = "batch_features"
    KEY_FIELD: ClassVar[str] = "entity"

    entity: str = Field(min_length=3, max_length=256, description="<entity>:<id>")
    names: list[str] = Field(max_length=256)
    values: list[float] = Field(max_length=256)
    # how many events the values were computed from
    n_events: int = Field(ge=0)

    @field_validator("values")
    @classmethod
    def _one_value_per_name(cls, values: list[float], info: object) -> list[float]:
        names = getattr(info, "data", {}).get("names")
        if names is not None and len(values) != len(names):
            raise ValueError(f"has {len(values)} values for {len(names)} names")
        return values

    def value(self, name: str) -> float | None:
        try:
            return self.values[self.names.index(name)]
        except ValueError:
            return None


def entity_key(entity: str, entity_id: str) -> str:
    """How an entity is named where entities share a key space (this topic)."""
    return f"{entity}:{entity_id}"


def batch_record(
    entity: str, entity_id: str, features: dict[str, float], as_of: float, n_events: int
) -> BatchFeatureRecord:
    """The record of an entity's batch features (or static data such as an item table)."""
    key = entity_key(entity, entity_id)
    # the same values always get the same id: a re-published record is recognisable
    digest = hashlib.sha256(repr((key, features, as_of)).encode()).hexdigest()[:32]
    return BatchFeatureRecord(
        id=f"batch-{digest}",
        ts=as_of,
        entity=key,
        names=list(features),
        values=list(features.values()),
        n_events=n_events,
    )


def decode_batch_record(data: bytes) -> BatchFeatureRecord:
    body = unpack(data)
    if not isinstance(body, dict) or body.get("schema") != BatchFeatureRecord.SCHEMA:
        raise ContractError("schema", f"expected {BatchFeatureRecord.SCHEMA!r}")
    if not str(body.get("version", "1.0")).startswith("1."):
        raise ContractError("version", "only major version 1 is known", BatchFeatureRecord.SCHEMA)
    fields = {k: v for k, v in body.items() if k not in ("schema", "version")}
    try:
        return BatchFeatureRecord.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ContractError(
            ".".join(str(p) for p in first["loc"]), first["msg"], BatchFeatureRecord.SCHEMA
        ) from exc
