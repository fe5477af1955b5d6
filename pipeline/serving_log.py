"""The model server's request log as the pipeline reads it (the leakage check and
analysis/skew.py):
JSON lines, one per sampled request (serving/request_log.py writes them), turned back into
raw feature rows whatever format the request used."""

from __future__ import annotations

import base64
import json
from typing import Any, Iterable, Iterator

import tensorflow as tf


def logged_rows(records: Iterable[dict]) -> Iterable[dict[str, Any]]:
    """Raw feature rows of the successful requests in a request log (every format the server
    takes: instances, inputs, classify/regress examples, b64 tf.Examples)."""
    for record in records:
        body = record.get("request")
        if record.get("status") != 200 or not isinstance(body, dict):
            continue
        if "examples" in body and record.get("method") in ("classify", "regress"):
            context = body.get("context") or {}
            for example in body["examples"]:
                yield {
                    k: (v[0] if v else None) if isinstance(v, list) else v
                    for k, v in {**context, **example}.items()
                }
        elif "instances" in body:
            for instance in body["instances"]:
                yield from _instance_rows(instance)
        elif "inputs" in body:
            inputs = body["inputs"]
            if isinstance(inputs, list):
                inputs = {"examples": inputs}
            length = max(len(v) if isinstance(v, list) else 1 for v in inputs.values())
            for i in range(length):
                yield from _instance_rows(
                    {k: v[i] if isinstance(v, list) else v for k, v in inputs.items()}
                )


def _instance_rows(instance: Any) -> Iterable[dict[str, Any]]:
    if isinstance(instance, dict) and set(instance) == {"examples"}:
        instance = instance["examples"]
    if isinstance(instance, dict) and set(instance) == {"b64"}:
        example = tf.train.Example.FromString(base64.b64decode(instance["b64"]))
        row = {}
        for key, feature in example.features.feature.items():
            values = (
                list(getattr(feature, feature.WhichOneof("kind")).value)
                if feature.WhichOneof("kind")
                else []
            )
            row[key] = values[0] if values else None
        yield row
    elif isinstance(instance, dict):
        yield instance


def read(path: str) -> Iterator[dict]:
    """The records of a log file, skipping a torn last line (a server killed mid-write)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue
