"""Hostile Kafka record values: what a broken or malicious producer can put on a topic."""

from __future__ import annotations

import os
from typing import Any

import msgpack
from hypothesis import strategies as st
from rtml.shared.contracts import REGISTRY, Message, encode

# hypothesis / schemathesis examples per property (and per API operation): a reduced
# run by default; the full setting is
# RTML_ABUSE_EXAMPLES=1000 python3 -m pytest -m abuse tests/abuse tests/unit/test_contracts.py
EXAMPLES = int(os.environ.get("RTML_ABUSE_EXAMPLES", "30"))


def _packed(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def hostile_frames(good: Message) -> dict[str, bytes | None]:
    """One frame of each kind of poison, named; ``good`` is a valid message of the
    topic's kind, to break in the ways that get past a first glance."""
    wire = good.to_wire()
    return {
        "null value (tombstone)": None,
        "empty": b"",
        "random bytes": os.urandom(64),
        "truncated": encode(good)[:-5],
        "trailing bytes": encode(good) + b"\x00",
        "a list, not a map": _packed([1, 2, 3]),
        "a bare string": _packed("order_placed"),
        "map without schema": _packed({k: v for k, v in wire.items() if k != "schema"}),
        "unknown schema": _packed({**wire, "schema": "order_teleported"}),
        "schema of another topic": _packed({**wire, "schema": _other_schema(good)}),
        "unknown major version": _packed({**wire, "version": "9.0"}),
        "version of 5000 digits": _packed({**wire, "version": "1." + "9" * 5000}),
        "wrong field types": _packed({**wire, "ts": "yesterday", "id": ["x"]}),
        "non-str map keys": b"\x82" + _packed("schema") + _packed(good.SCHEMA) + b"\x01\x02",
        "oversized map": _packed({f"k{i}": i for i in range(5000)}),
        "oversized string": _packed({**wire, "id": "x" * 70_000}),
        "deeply nested": b"\x91" * 100_000 + b"\xc0",
        "ext type": _packed(msgpack.ExtType(7, b"boom")),
    }


def _other_schema(good: Message) -> str:
    return "reward" if good.SCHEMA != "reward" else "order_placed"


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(),
    st.text(max_size=40),
    st.binary(max_size=40),
)
msgpack_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=6)
        | st.dictionaries(st.text(max_size=12) | st.integers(0, 9), children, max_size=6)
    ),
    max_leaves=30,
)
schemas = st.sampled_from(sorted(REGISTRY))


@st.composite
def message_like_maps(draw: st.DrawFn) -> dict[Any, Any]:
    """A map that names a real schema, with random fields, some of them the real ones."""
    kind = REGISTRY[draw(schemas)]
    names = st.sampled_from([*kind.model_fields, "version", "schema"]) | st.text(max_size=12)
    fields = draw(st.dictionaries(names, msgpack_values, max_size=12))
    return {"schema": kind.SCHEMA, **fields}
