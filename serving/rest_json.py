"""Request and response bodies as TF Serving's REST API reads and writes JSON.

TF Serving parses bodies with RapidJSON (tensorflow_serving/util/json_tensor.cc, flags
kParseIterativeFlag | kParseNanAndInfFlag | kParseStopWhenDoneFlag), so here too:

- `NaN`, `Infinity` and `-Infinity` are numbers (our README's missing value is NaN);
- a number beyond the double range (`1e400`) is a parse error, not infinity;
- whatever follows the top-level value is ignored (kParseStopWhenDoneFlag); a leading UTF-8
  byte-order mark is skipped;
- a lone UTF-16 surrogate escape (`"\\ud800"`) is a parse error;
- errors read "JSON Parse error: <RapidJSON's words> at offset: <byte>".

Where Python's parser cannot follow RapidJSON, the body is refused with a 400 too: bytes that
are not UTF-8 (RapidJSON copies them through unchecked; no text feature can hold them here) and
nesting deeper than Python's parser goes (RapidJSON's iterative parser has no limit, and its
answer to such a body is a 400 anyway: no signature input is nested that deep).

Responses are written as TF Serving writes them: NaN and infinite floats as the `NaN`,
`Infinity` and `-Infinity` tokens.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from serving.tensors import RequestError

_WHITESPACE = " \t\n\r"
_MAX_DOUBLE = sys.float_info.max
# A \u escape of a UTF-16 surrogate: only then can a parsed string hold a lone one.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")

# Python's decoder messages -> RapidJSON's (rapidjson/error/en.h), which TF Serving returns.
_RAPIDJSON_WORDS = (
    ("Expecting value", "Invalid value."),
    ("Expecting property name", "Missing a name for object member."),
    ("Expecting ':' delimiter", "Missing a colon after a name of object member."),
    ("Expecting ',' delimiter", "Missing a comma or a closing bracket after a value."),
    ("Unterminated string", "Missing a closing quotation mark in string."),
    ("Invalid control character", "Invalid encoding in string."),
    ("Invalid \\uXXXX escape", "Incorrect hex digit after \\u escape in string."),
    ("Invalid \\escape", "Invalid escape character in string."),
)


class _NumberTooBig(Exception):
    pass


def _float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):  # 1e400: RapidJSON's kParseErrorNumberTooBig
        raise _NumberTooBig(text)
    return value


def _int(text: str) -> int:
    # RapidJSON reads an integer past 64 bits as a double, which 1e309 and beyond overflow.
    if len(text) > 300:
        try:
            if abs(int(text)) > _MAX_DOUBLE:
                raise _NumberTooBig(text)
        except ValueError:  # past Python's digit limit for int(): far past the double range
            raise _NumberTooBig(text) from None
    return int(text)


_DECODER = json.JSONDecoder(parse_float=_float, parse_int=_int)
# Without the hooks above (each a Python call per number: a tenth of a one-row :predict's
# parsing) for bodies in which no number can leave the double range: one with an exponent
# (a digit or point followed by e/E) or a run of 300 digits may, and takes the checked path.
_PLAIN_DECODER = json.JSONDecoder()
_MAYBE_TOO_BIG = re.compile(r"[0-9.][eE]|[0-9]{300}")


def _parse_error(words: str, text: str = "", position: int = 0) -> RequestError:
    offset = len(text[:position].encode("utf-8", "surrogatepass"))
    return RequestError(f"JSON Parse error: {words} at offset: {offset}")


def parse_body(raw: bytes) -> dict:
    """A request body as a JSON object; RequestError (400) naming what is wrong otherwise."""
    if not raw:
        raise RequestError("JSON Parse error: The document is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RequestError(
            f"JSON Parse error: Invalid encoding in string. at offset: {error.start}"
        ) from None
    start = 1 if text.startswith("\ufeff") else 0
    while start < len(text) and text[start] in _WHITESPACE:
        start += 1
    if start == len(text):
        raise _parse_error("The document is empty.", text, start)
    try:
        decoder = _DECODER if _MAYBE_TOO_BIG.search(text, start) else _PLAIN_DECODER
        body, _ = decoder.raw_decode(text, start)  # what follows the value is ignored
    except json.JSONDecodeError as error:
        words = next((w for p, w in _RAPIDJSON_WORDS if error.msg.startswith(p)), "Invalid value.")
        raise _parse_error(words, text, error.pos) from None
    except _NumberTooBig as error:
        position = text.find(str(error), start)
        raise _parse_error("Number too big to be stored in double.", text, position) from None
    except RecursionError:
        raise RequestError(
            "JSON Parse error: the document is nested too deeply (no input of a signature "
            "is nested more than a few levels)"
        ) from None
    if _SURROGATE_ESCAPE.search(text, start) and _has_lone_surrogate(body):
        raise RequestError("JSON Parse error: The surrogate pair in string is invalid.")
    if not isinstance(body, dict):
        raise RequestError(
            f"JSON Parse error: the body must be a JSON object, got {json_type(body)}"
        )
    return body


def _has_lone_surrogate(value: Any) -> bool:
    """Any string (or object key) holding a UTF-16 surrogate: Python's parser joins a valid
    pair into one character, so any surrogate left is a lone one. Iterative: the document may
    be nested as deeply as the parser allows."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def json_type(value: Any) -> str:
    """The JSON type of a parsed value, in TF Serving's words (JsonTypeString)."""
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (int, float)):
        return "Number"
    if isinstance(value, str):
        return "String"
    return "Array" if isinstance(value, list) else "Object"


def dumps(value: Any) -> str:
    """A response body; non-finite floats as TF Serving writes them (NaN, Infinity,
    -Infinity), which Python's json module writes the same way."""
    return json.dumps(value)


def error_body(message: str) -> str:
    return json.dumps({"error": message})
