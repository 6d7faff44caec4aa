"""``rtml schemas export DIR``: what a producer in another language needs to write
rtml's topics, generated from the code that reads them.

- ``<schema>.json`` for every message contract (the loaded tasks' domain events and
  rtml's own messages): its JSON Schema as the message is on the wire
  (``shared.contracts.wire_json_schema``), with ``id`` required, because a message on
  a topic is recognised by its id when it is delivered twice;
- ``contracts.json``: each contract's schema name, version, topic, key field and file;
- ``wire-format.md``: the record itself (envelope, msgpack, key, partition, headers,
  compression), the topics and the contracts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from rtml.shared import topics
from rtml.shared.contracts import (
    MAX_MESSAGE_BYTES,
    PREDICT_CHAIN,
    UNPACK_LIMITS,
    BatchPrediction,
    DlqRecord,
    Message,
    ModelAnnouncement,
    PredictEnriched,
    Prediction,
    PredictRequest,
    PredictRouted,
    Reward,
    RouterState,
    TrainingExample,
    encode,
    wire_json_schema,
)
from rtml.shared.features.records import BatchFeatureRecord
from rtml.shared.kafka import partition_of
from rtml.shared.settings import Settings
from rtml.shared.tasks.registry import tasks
from rtml.tasks.eta.events import OrderPlaced

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
INDEX = "contracts.json"
DOCUMENT = "wire-format.md"

# the topic each of rtml's own contracts is written to (docs/ARCHITECTURE.md, "Topics");
# the loaded tasks' domain events go to rtml.events
TOPIC_OF: dict[type[Message], topics.Topic] = {
    PredictRequest: topics.PREDICT_REQUESTS,
    PredictEnriched: topics.PREDICT_ENRICHED,
    PredictRouted: topics.PREDICT_ROUTED,
    Prediction: topics.PREDICTIONS,
    TrainingExample: topics.TRAINING_EXAMPLES,
    Reward: topics.REWARDS,
    ModelAnnouncement: topics.MODELS,
    RouterState: topics.ROUTER_STATE,
    BatchPrediction: topics.BATCH_PREDICTIONS,
    DlqRecord: topics.DLQ,
    BatchFeatureRecord: topics.FEATURES_BATCH,
}
DEFAULT_PARTITIONS: int = Settings.model_fields["partitions"].default


def contracts() -> tuple[type[Message], ...]:
    """Every message contract: the loaded tasks' domain events, then rtml's own."""
    return (*tasks().events, *PREDICT_CHAIN, BatchFeatureRecord)


def topic_of(kind: type[Message]) -> topics.Topic:
    return TOPIC_OF.get(kind, topics.EVENTS)


def contract_schema(kind: type[Message]) -> dict[str, Any]:
    """``kind``'s JSON Schema as a message of it is on a topic."""
    schema = wire_json_schema(kind)
    schema["required"] = [*schema["required"], "id"]
    return {"$schema": JSON_SCHEMA_DIALECT, "$id": f"{kind.SCHEMA}.json", **schema}


def contract_index() -> list[dict[str, str]]:
    return [
        {
            "schema": kind.SCHEMA,
            "version": _version(kind),
            "topic": topic_of(kind).name,
            "key_field": kind.KEY_FIELD,
            "json_schema": f"{kind.SCHEMA}.json",
        }
        for kind in contracts()
    ]


def export(directory: Path) -> list[Path]:
    """Write the schemas, the index and the document into ``directory``; returns the files."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {f"{kind.SCHEMA}.json": _json(contract_schema(kind)) for kind in contracts()}
    files[INDEX] = _json({"contracts": contract_index()})
    files[DOCUMENT] = wire_format_document()
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")
    return [directory / name for name in files]


def _json(document: Any) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _version(kind: type[Message]) -> str:
    return f"{kind.VERSION[0]}.{kind.VERSION[1]}"


def wire_format_document() -> str:
    example = OrderPlaced(
        id="8c5e0f7a2b1d4e3f9a6b5c4d3e2f1a0b", ts=1_700_000_000.5, order_id="o-1",
        restaurant_id="r-17", zone_id="z-3", distance_km=2.4, n_items=3,
    )  # fmt: skip
    partitions = DEFAULT_PARTITIONS
    return "\n".join(
        [
            _RECORD.format(
                record_parts="\n".join(
                    ["| part | what rtml writes and reads |", "| --- | --- |"]
                    + [f"| {part} | {what} |" for part, what in RECORD_PARTS]
                ),
                max_bytes=MAX_MESSAGE_BYTES,
                max_str_bytes=UNPACK_LIMITS["max_str_len"],
                max_str_chars=Message.model_config["str_max_length"],
                max_map=UNPACK_LIMITS["max_map_len"],
                max_array=UNPACK_LIMITS["max_array_len"],
                example_map=json.dumps(example.to_wire(), indent=2),
                example_key=example.key.decode(),
                example_hex=encode(example).hex(),
                partitions=partitions,
                example_partition=partition_of(example.key, partitions),
            ),
            "## Topics",
            "",
            "| topic | partitions | cleanup | holds |",
            "| --- | --- | --- | --- |",
            *(
                f"| `{t.name}` | {t.partitions or f'`RTML_PARTITIONS` ({DEFAULT_PARTITIONS})'} "
                f"| {t.configs.get('cleanup.policy', 'delete')} | {t.description} |"
                for t in topics.ALL
            ),
            "",
            "## Contracts",
            "",
            "| schema | version | topic | key field | JSON Schema |",
            "| --- | --- | --- | --- | --- |",
            *(
                f"| `{c['schema']}` | {c['version']} | `{c['topic']}` | `{c['key_field']}` "
                f"| [{c['json_schema']}]({c['json_schema']}) |"
                for c in contract_index()
            ),
            "",
        ]
    )


# the parts of a record, as the document's table shows them
RECORD_PARTS: tuple[tuple[str, str], ...] = (
    ("value", "one message: a [msgpack](https://msgpack.org) map with string keys, the "
              "envelope and the contract's fields (below)"),
    ("key", "the UTF-8 bytes of the value of the contract's key field (table below): an "
            "`order_placed` is keyed by its `restaurant_id`"),
    ("partition", "Kafka's default partitioner, `(murmur2(key) & 0x7fffffff) % partitions`, "
                  "as the Java client and aiokafka compute it; librdkafka (confluent-kafka, "
                  "kcat) needs `partitioner=murmur2_random`, its default is another hash. "
                  "rtml's workers find an entity's state by this partition: a record placed "
                  "elsewhere is missing from its entity's features"),
    ("headers", "none: rtml writes none and ignores any (tracing headers are fine)"),
    ("timestamp", "not read: the event time is the message's `ts`"),
    ("compression", "none or gzip (rtml's consumers decode these two)"),
    ("acks", "`all`; a retried send may write a record twice: with the same `id` the repeat "
             "is absorbed"),
)  # fmt: skip

_RECORD = """\
# rtml's wire format

Written by `rtml schemas export`, from the code rtml's services read records with.
A producer outside rtml (any language, any Kafka client) publishes domain events by
writing records to `rtml.events` as described here; the other topics are written
by rtml's services and described so that anyone can read them.

## A record

{record_parts}

### The envelope and the fields

Every message is a map of:

- `schema`: the contract's name (`order_placed`, ...);
- `version`: `"MAJOR.MINOR"` of the contract (a string). A reader accepts any minor of
  its major and ignores the fields it does not know; another major is refused;
  without it, the reader's own version is assumed;
- `id`: a unique string (1-128 characters). A message delivered twice is recognised by
  it: always set it, and keep it when you retry a send;
- `ts`: the event time, seconds since the Unix epoch (an integer or a float, >= 0);
- the contract's own fields, as its JSON Schema (`<schema>.json`) gives them: names,
  types, bounds and which are required. A field that may be null may also be left out.

msgpack types: strings are `str` (UTF-8), a field of `"format": "binary"` is `bin`,
numbers are integers (64-bit) or floats, maps have string keys; no extension types.
Limits (a record beyond them is refused): {max_bytes:,} bytes per value,
{max_str_bytes:,} bytes per msgpack string and {max_str_chars:,} characters per string,
{max_map:,} entries per map, {max_array:,} items per array.

A record that is not a valid message of its topic (undecodable, unknown schema or
major version, a field out of its contract) is written to `rtml.dlq` with the
reason, and the service goes on with the next (`rtml.models` is a control topic: a
bad announcement there is logged instead).

### Example

An `order_placed` (an event of the eta task), as a map (JSON notation):

```json
{example_map}
```

key `{example_key}`, partition {example_partition} of {partitions}; the value's msgpack bytes (hex):

```
{example_hex}
```

Create the topics with `rtml topics` before the first write: a topic the broker
creates on its own gets the broker's default partition count, not rtml's.
"""


@click.group("schemas")
def schemas_group() -> None:
    """The message contracts as JSON Schema, and the wire format."""


@schemas_group.command("export")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def export_command(directory: Path) -> None:
    """Write one JSON Schema per message contract, contracts.json and wire-format.md."""
    written = export(directory)
    click.echo(f"wrote {len(written)} files to {directory}")
