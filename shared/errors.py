"""Typed errors shared by every service."""

from __future__ import annotations


class RtmlError(Exception):
    """Base class of the errors rtml raises on purpose."""


class ContractError(RtmlError):
    """A message that does not satisfy its contract; names the field and the reason."""

    def __init__(self, field: str, reason: str, schema: str | None = None) -> None:
        self.field = field
        self.reason = reason
        self.schema = schema
        where = f"{schema}." if schema else ""
        super().__init__(f"{where}{field or '<message>'}: {reason}")

    @property
    def dlq_reason(self) -> str:
        """The reason ``rtml.dlq`` files it under: ``schema`` when a field broke its
        contract, ``decode`` when the message could not be read at all."""
        return "schema" if self.field else "decode"


class BrokerUnavailable(RtmlError):
    """The Kafka bootstrap address never answered within the retry budget."""


class ModelStoreError(RtmlError):
    """The model store refused an operation; the message says which version and why."""


class UnknownVersion(ModelStoreError):
    """No registered version has this id (or the id is not a valid version name)."""


class VersionExists(ModelStoreError):
    """A version with this id is already registered; versions are immutable."""


class IntegrityError(ModelStoreError):
    """A stored artifact or record is not what was registered (hash mismatch, corrupt file)."""


class UnsafeModelError(ModelStoreError):
    """The artifact is not XGBoost UBJSON/JSON (a pickle, say) and was never deserialised."""


class ChampionChanged(ModelStoreError):
    """The champion pointer no longer names the version the caller saw; it was not moved."""
