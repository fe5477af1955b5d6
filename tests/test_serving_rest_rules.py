"""TF Serving's REST rules, as its source states them: JSON bodies as RapidJSON parses them
with the flags json_tensor.cc sets (NaN and Infinity accepted, numbers past the double range
refused, what follows the value ignored), paths and verbs as http_rest_api_util.cc matches
them, and TensorFlow's error messages stripped of what only their authors need."""

import math

import pytest

from serving import model_errors, rest_json, rest_routes
from serving.tensors import RequestError


def _error(call) -> str:
    with pytest.raises(RequestError) as raised:
        call()
    assert raised.value.status == 400
    return str(raised.value)


@pytest.mark.parametrize(
    "body, expected",
    [
        (b'{"a": NaN, "b": [Infinity, -Infinity]}', {"a": "nan", "b": ["inf", "-inf"]}),
        (b'{"a": 1} and then anything', {"a": 1}),  # kParseStopWhenDoneFlag
        (b'\xef\xbb\xbf {"a": "\\ud83d\\ude00"}', {"a": "\U0001f600"}),  # BOM; a valid pair
        (b'{"a": 1e308, "b": 1e-400}', {"a": 1e308, "b": 0.0}),
    ],
)
def test_bodies_tf_serving_accepts(body, expected):
    parsed = rest_json.parse_body(body)

    def plain(value):
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    assert {k: plain(v) for k, v in parsed.items()} == expected


@pytest.mark.parametrize(
    "body, message",
    [
        (b"", "JSON Parse error: The document is empty"),
        (b"  \n", "JSON Parse error: The document is empty. at offset: 3"),
        (b'{"a": 1e400}', "Number too big to be stored in double. at offset: 6"),
        (b'{"a": -1' + b"0" * 400 + b"}", "Number too big to be stored in double."),
        # Past the double range only through digits and exponent together, or in capitals.
        (b'{"a": [0.5, 1' + b"0" * 250 + b"e99]}", "Number too big to be stored in double."),
        (b'{"b": "x", "a": 1.5E+309}', "Number too big to be stored in double. at offset: 16"),
        (b'{"a": "\\ud800"}', "The surrogate pair in string is invalid."),
        (b'{"\\udc00": 1}', "The surrogate pair in string is invalid."),
        (b'{"a": "\xff"}', "Invalid encoding in string. at offset: 7"),
        (b'{"a": "\t"}', "Invalid encoding in string."),
        (b'{"a": [1,]}', "Invalid value. at offset: 9"),
        (b"{a: 1}", "Missing a name for object member. at offset: 1"),
        (b'{"a" 1}', "Missing a colon after a name of object member."),
        (b'{"a": 1 "b": 2}', "Missing a comma or a closing bracket after a value."),
        (b'{"a": "open', "Missing a closing quotation mark in string."),
        (b'{"a": "\\q"}', "Invalid escape character in string."),
        (b'{"a": "\\u12g4"}', "Incorrect hex digit after \\u escape in string."),
        (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
        (b"[1, 2]", "the body must be a JSON object, got Array"),
        (b'"text"', "the body must be a JSON object, got String"),
    ],
)
def test_bodies_tf_serving_refuses(body, message):
    assert message in _error(lambda: rest_json.parse_body(body))


def test_responses_write_non_finite_floats_as_tf_serving():
    assert rest_json.dumps({"p": [math.nan, math.inf, -math.inf, 0.5]}) == (
        '{"p": [NaN, Infinity, -Infinity, 0.5]}'
    )


@pytest.mark.parametrize(
    "verb, path, route",
    [
        ("GET", "/v1/models/m", rest_routes.Route("GET", "m")),
        ("GET", "/V1/MODELS/m/VERSIONS/3", rest_routes.Route("GET", "m", version=3)),
        (
            "GET",
            "/v1/models/m/labels/a%20b/metadata",
            rest_routes.Route("GET", "m", label="a b", metadata=True),
        ),
        ("GET", "/v1/models/m/METADATA", rest_routes.Route("GET", "m")),  # a status request
        ("GET", "/v1/models", rest_routes.Route("GET", "")),
        (
            "POST",
            "/V1/Models/m/versions/7:predict",
            rest_routes.Route("POST", "m", 7, None, "predict"),
        ),
        (
            "POST",
            "/v1/models/m/labels/stable:classify",
            rest_routes.Route("POST", "m", None, "stable", "classify"),
        ),
    ],
)
def test_paths_tf_serving_dispatches(verb, path, route):
    assert rest_routes.is_api(path)
    assert rest_routes.parse(verb, path) == route


@pytest.mark.parametrize(
    "verb, path, message",
    [
        ("POST", "/v1/models/m:explain", "Malformed request: POST /v1/models/m:explain"),
        ("POST", "/v1/models/m:PREDICT", "Malformed request: POST /v1/models/m:PREDICT"),
        ("POST", "/v1/models/m", "Malformed request: POST /v1/models/m"),
        ("POST", "/v1/models/m:predict?x=1", "Malformed request"),  # the query is matched too
        ("GET", "/v1/models/m:predict", "Malformed request: GET /v1/models/m:predict"),
        ("GET", "/v1/models/", "Malformed request: GET /v1/models/"),
        ("GET", "/v1/models/m/versions/x", "Malformed request"),
        ("PUT", "/v1/models/m:predict", "Malformed request: PUT /v1/models/m:predict"),
        ("DELETE", "/v1/models/m", "Malformed request: DELETE"),
        ("GET", "/v1/models/m/versions/" + "9" * 20, "Failed to convert version: 99999"),
        ("GET", "/v1/models/" + "m" * 5000 + "/x", "..."),  # echoed bounded
    ],
)
def test_paths_tf_serving_refuses(verb, path, message):
    text = _error(lambda: rest_routes.parse(verb, path))
    assert message in text and len(text) < 300


def test_paths_outside_the_api():
    assert not rest_routes.is_api("/v2/models/m") and not rest_routes.is_api("/")
    assert rest_routes.is_api("/V1/anything")


def test_tensorflow_messages_lose_their_stack_node_and_paths():
    message = (
        "Graph execution error:\n\nDetected at node ParseExample/ParseExampleV2 defined at "
        '(most recent call last):\n  File "/home/me/project/models/model.py", line 408, in '
        "serve_examples\n\nName: <unknown>, Key: fare, Index: 0.  Data types don't match. "
        "Expected type: float, Actual type: string\n\t [[{{node ParseExample/ParseExampleV2}}]]"
        " [Op:__inference_signature_wrapper_4444]"
    )
    assert model_errors.readable(message) == (
        "Name: <unknown>, Key: fare, Index: 0.  Data types don't match. Expected type: float, "
        "Actual type: string"
    )
    assert model_errors.readable("cannot open /srv/models/7/assets/vocab.txt") == (
        "cannot open <path>"
    )
