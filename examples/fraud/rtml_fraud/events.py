"""The fraud task's events, keyed on ``rtml.events`` by the card they describe."""

from __future__ import annotations

from pydantic import Field
from rtml.shared.contracts import Message


class CardAuthorization(Message):
    """A card payment the issuer was asked to authorize."""

    SCHEMA = "card_authorization"
    KEY_FIELD = "card_id"
    authorization_id: str = Field(min_length=1, max_length=128)
    card_id: str = Field(min_length=1, max_length=128)
    merchant_id: str = Field(min_length=1, max_length=128)
    amount: float = Field(ge=0, le=1_000_000, description="in the card's currency")
    # the card was not present (an online or phone payment)
    card_not_present: bool = False
    # the merchant is in another country than the card's
    foreign: bool = False


class Chargeback(Message):
    """The cardholder disputed an authorization: the label, weeks later in real life."""

    SCHEMA = "chargeback"
    KEY_FIELD = "card_id"
    authorization_id: str = Field(min_length=1, max_length=128)
    card_id: str = Field(min_length=1, max_length=128)
