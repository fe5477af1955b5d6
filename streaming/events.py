"""One event: a JSON object with the raw columns of a training row (label included), checked
against the schema before it may land in a span.

Checks per schema feature: present unless it may be empty (`value_count.min: 0`), the type
(INT: a whole number; FLOAT: a number; BYTES: a string), `int_domain`/`float_domain` bounds and
closed string domains. A field the schema does not know is an error too: a typo would
otherwise drop a column silently.
"""

from __future__ import annotations

import json
import math
from typing import Any

from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2


class InvalidEvent(ValueError):
    """The reason an event cannot be used; it goes to the dead-letter output."""


def load_schema(path: str) -> schema_pb2.Schema:
    with open(path) as f:
        return text_format.Parse(f.read(), schema_pb2.Schema())


def columns(schema: schema_pb2.Schema) -> list[str]:
    """The CSV columns of a span, in schema order."""
    return [feature.name for feature in schema.feature]


def parse_event(
    line: str | bytes, schema: schema_pb2.Schema, time_field: str
) -> tuple[int, dict[str, str]]:
    """(event time in seconds, the CSV row) of one JSON line, or InvalidEvent saying why."""
    try:
        event = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidEvent(f"not JSON: {error}") from None
    if not isinstance(event, dict):
        raise InvalidEvent(f"expected a JSON object, got {type(event).__name__}")
    known = set(columns(schema))
    unknown = sorted(set(event) - known)
    if unknown:
        raise InvalidEvent(f"unknown field(s) {unknown}: the schema has no such feature")
    domains = {domain.name: set(domain.value) for domain in schema.string_domain}
    row = {
        feature.name: _cell(feature, event.get(feature.name), domains) for feature in schema.feature
    }
    if row.get(time_field, "") == "":
        raise InvalidEvent(f"field {time_field!r}: the event time is missing")
    return int(row[time_field]), row


def _cell(feature: schema_pb2.Feature, value: Any, domains: dict[str, set[str]]) -> str:
    """The CSV cell of one value; floats always with a decimal point, so CsvExampleGen infers
    FLOAT for the column even when every value of a span is whole."""
    name = feature.name
    if value is None or value == "":
        if feature.value_count.min >= 1:
            raise InvalidEvent(f"field {name!r}: missing, the schema requires a value")
        return ""
    if feature.type == schema_pb2.INT:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (isinstance(value, float) and not value.is_integer())
        ):
            raise InvalidEvent(f"field {name!r}: expected a whole number (INT), got {value!r}")
        value = int(value)
        if feature.HasField("int_domain"):
            _check_range(name, value, feature.int_domain)
        return str(value)
    if feature.type == schema_pb2.FLOAT:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            raise InvalidEvent(f"field {name!r}: expected a number (FLOAT), got {value!r}")
        if feature.HasField("float_domain"):
            _check_range(name, value, feature.float_domain)
        return repr(float(value))
    if not isinstance(value, str):
        raise InvalidEvent(f"field {name!r}: expected a string, got {value!r}")
    allowed = (
        set(feature.string_domain.value)
        if feature.HasField("string_domain")
        else domains.get(feature.domain)
        if feature.HasField("domain")
        else None
    )
    if allowed is not None and value not in allowed:
        raise InvalidEvent(
            f"field {name!r}: {value!r} is not in the schema's domain {sorted(allowed)}"
        )
    return value


def _check_range(name: str, value: float, domain) -> None:
    if domain.HasField("min") and value < domain.min:
        raise InvalidEvent(f"field {name!r}: {value} is below the schema's minimum {domain.min}")
    if domain.HasField("max") and value > domain.max:
        raise InvalidEvent(f"field {name!r}: {value} is above the schema's maximum {domain.max}")
