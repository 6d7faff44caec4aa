"""The OpenAPI 3.1 document of ingestion's HTTP API, served at ``GET /openapi.json``.

Request and response schemas come from the pydantic contracts in
``shared/contracts.py`` (``wire_json_schema()``: ``model_json_schema()`` with the
envelope and the bounds validators add), so the document cannot drift from what
the handlers validate; this module adds the batch shapes and the answers.
"""

from __future__ import annotations

import copy
from typing import Any

from rtml.shared.contracts import Message, Prediction, PredictRequest, wire_json_schema
from rtml.shared.ingest_requests import MSGPACK_TYPES
from rtml.shared.tasks.registry import tasks

REF_TEMPLATE = "#/components/schemas/{model}"
# set by ingestion from its clock, never taken from the client
SERVER_SET_PREDICT_FIELDS = ("received_at",)
BODY_TYPES = ("application/json", MSGPACK_TYPES[0])


def openapi_document(*, max_batch: int, max_wait_ms: int, bearer: bool) -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    event_refs = [_add_message(schemas, kind) for kind in tasks().events]
    schemas["Event"] = {"anyOf": event_refs}
    schemas["PredictBody"] = _predict_body(schemas)
    _add_message(schemas, Prediction)
    schemas.update(_answer_schemas())
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "rtml ingestion",
            "version": "1.0.0",
            "description": "Events and prediction requests into rtml's Kafka topics. Every "
            "2xx means the broker acknowledged what was written; a 4xx names the field and "
            "the reason and writes nothing.",
        },
        "paths": {
            "/v1/events": {"post": _events_operation(max_batch)},
            "/v1/predict": {"post": _predict_operation(max_wait_ms)},
            "/v1/predictions/{request_id}": {"get": _prediction_operation()},
            "/healthz": {"get": _probe("alive: the process answers (never depends on Kafka)")},
            "/readyz": {
                "get": _probe("ready: the broker answered within the last seconds", ready=True)
            },
        },
        "components": {"schemas": schemas},
    }
    if bearer:
        document["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        for path, operations in document["paths"].items():
            if path.startswith("/v1/"):
                for operation in operations.values():
                    operation["security"] = [{"bearer": []}]
    return document


def _add_message(schemas: dict[str, Any], kind: type[Message]) -> dict[str, str]:
    """``kind``'s wire schema under components, and a reference to it."""
    schema = wire_json_schema(kind, REF_TEMPLATE)
    schemas.update(schema.pop("$defs", {}))
    schemas[kind.__name__] = schema
    return {"$ref": REF_TEMPLATE.format(model=kind.__name__)}


def _predict_body(schemas: dict[str, Any]) -> dict[str, Any]:
    _add_message(schemas, PredictRequest)
    body = copy.deepcopy(schemas.pop(PredictRequest.__name__))
    for name in SERVER_SET_PREDICT_FIELDS:
        body["properties"].pop(name)
    body["properties"]["ts"]["description"] = "event time, seconds since the epoch; default: now"
    body["required"] = [f for f in body["required"] if f not in ("ts", "schema")]
    return body


def _answer_schemas() -> dict[str, Any]:
    problem = {
        "type": "object",
        "required": ["index", "field", "reason"],
        "properties": {
            "index": {"type": "integer", "description": "item of the batch; -1: the request"},
            "field": {"type": "string"},
            "reason": {"type": "string"},
        },
    }
    return {
        "Problem": problem,
        "BadRequest": {
            "type": "object",
            "required": ["error", "problems"],
            "properties": {
                "error": {"type": "string"},
                "problems": {"type": "array", "items": {"$ref": "#/components/schemas/Problem"}},
            },
        },
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string"}},
        },
        "Accepted": {
            "type": "object",
            "required": ["accepted", "ids"],
            "properties": {
                "accepted": {"type": "integer", "minimum": 1},
                "ids": {"type": "array", "items": {"type": "string"}},
            },
        },
        "Pending": {
            "type": "object",
            "required": ["request_id"],
            "properties": {"request_id": {"type": "string"}},
        },
    }


def _events_operation(max_batch: int) -> dict[str, Any]:
    event = {"$ref": "#/components/schemas/Event"}
    batch = {"type": "array", "items": event, "minItems": 1, "maxItems": max_batch}
    body = {
        "anyOf": [
            event,
            batch,
            {"type": "object", "required": ["events"], "properties": {"events": batch}},
        ]
    }
    return {
        "summary": "Write domain events to rtml.events (all or nothing)",
        "requestBody": _request_body(body),
        "responses": {
            "200": _json("every event acknowledged by the broker", "Accepted"),
            **_refusals(),
        },
    }


def _predict_operation(max_wait_ms: int) -> dict[str, Any]:
    return {
        "summary": "Ask for a prediction (written to rtml.predict.requests)",
        "parameters": [
            {
                "name": "wait_ms",
                "in": "query",
                "required": False,
                "description": "wait this long for the prediction; 0 answers 202 at once",
                "schema": {"type": "integer", "minimum": 0, "maximum": max_wait_ms, "default": 0},
            }
        ],
        "requestBody": _request_body({"$ref": "#/components/schemas/PredictBody"}),
        "responses": {
            "200": _json("the prediction, within wait_ms", "Prediction"),
            "202": _json("accepted; the prediction was not there within wait_ms", "Pending"),
            **_refusals(),
        },
    }


def _prediction_operation() -> dict[str, Any]:
    return {
        "summary": "A prediction asked for earlier (a 202's request_id), once it is scored",
        "parameters": [
            {
                "name": "request_id",
                "in": "path",
                "required": True,
                "schema": {"type": "string"},
            }
        ],
        "responses": {
            "200": _json("the prediction", "Prediction"),
            "401": _json("missing or wrong bearer token", "Error"),
            "404": _json(
                "not scored yet, or not among the newest predictions this replica keeps", "Error"
            ),
        },
    }


def _refusals() -> dict[str, Any]:
    return {
        "400": _json("a field is invalid; nothing was written", "BadRequest"),
        "401": _json("missing or wrong bearer token", "Error"),
        "408": _json("the body did not arrive within the body read timeout", "Error"),
        "413": _json("the body (decompressed) exceeds the size limit", "Error"),
        "503": _json("the broker did not acknowledge; nothing was written, retry", "Error"),
    }


def _probe(description: str, ready: bool = False) -> dict[str, Any]:
    answers = {
        "200": {
            "description": description,
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    }
    if ready:
        answers["503"] = {
            "description": "not ready, with the failing checks",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    return {"responses": answers}


def _request_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {kind: {"schema": schema} for kind in BODY_TYPES}}


def _json(description: str, schema_name: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}
        },
    }
