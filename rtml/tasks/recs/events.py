"""The recs task's events: impressions, views and clicks of a session, published to
``rtml.events`` keyed by the session."""

from __future__ import annotations

from pydantic import Field

from rtml.shared.contracts import Message


class Impression(Message):
    SCHEMA = "impression"
    KEY_FIELD = "session_id"
    session_id: str = Field(min_length=1)
    item_id: int = Field(ge=0)
    position: int = Field(ge=0)
    campaign: str = "all"
    propensity: float | None = Field(default=None, gt=0, le=1)
    user_features: dict[str, str] = Field(default_factory=dict)


class ItemViewed(Message):
    SCHEMA = "item_viewed"
    KEY_FIELD = "session_id"
    session_id: str = Field(min_length=1)
    item_id: int = Field(ge=0)


class ItemClicked(Message):
    SCHEMA = "item_clicked"
    KEY_FIELD = "session_id"
    session_id: str = Field(min_length=1)
    item_id: int = Field(ge=0)
    impression_id: str | None = None
