"""The local server against a hostile or careless client, following TF Serving's own REST
documentation and source rather than our README: the real server process over HTTP.

- Every bad request gets TF Serving's status (http_server.cc maps its error codes: a bad input
  is INVALID_ARGUMENT = 400, an unknown model or version NOT_FOUND = 404, an unknown label
  INVALID_ARGUMENT = 400, an unmatched path or verb "Malformed request" = 400) and a JSON
  `{"error": "..."}` body naming the problem, with no file path of this machine, Python
  traceback or exception class in it; the server then still answers a good request correctly.
- One client sending bad tf.Examples among fifteen good clients fails none of their requests
  (before, the bad examples failed every micro-batch they were merged into).
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import threading
import urllib.parse
from pathlib import Path

import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv

from analysis import skew
from pipeline.settings import PipelineSettings
from serving import process
from serving.batch_predict import json_instance, raw_values
from tests.pipeline_run import read_csv

pytestmark = pytest.mark.integration

MAX_BODY_BYTES = 300_000
MODEL = "/v1/models/taxi-tips"
GOOD_CLIENTS = 15
REQUESTS_PER_CLIENT = 30


@pytest.fixture(scope="module")
def served(finished_run, tmp_path_factory):
    """A server over a copy of the finished run's pushed model."""
    tmp = tmp_path_factory.mktemp("serving_bad")
    base, copy_env = finished_run.serving_copy(tmp)
    env = {
        **copy_env,
        "PIPELINE_SERVING_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
    }
    log = tmp / "server.log"
    with process.running_server(env, str(log)) as url:
        port = urllib.parse.urlparse(url).port
        yield {
            "port": port,
            "log": log,
            # Paths of this machine no answer may show.
            "secrets": [str(tmp), str(base), finished_run.settings.serving_model_dir],
        }


@pytest.fixture(scope="module")
def rows(finished_run) -> list[dict]:
    csv_rows = read_csv(Path(finished_run.settings.data.data_dir) / "span-2" / "data.csv")[:20]
    return [raw_values(r, f"row {i}") for i, r in enumerate(csv_rows)]


def examples(rows: list[dict]) -> list[tf.train.Example]:
    schema = tfdv.load_schema_text(PipelineSettings.load({}).data.schema_path)
    return [skew.to_example(r, schema) for r in rows]


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


def with_bytes_fare(example: tf.train.Example) -> bytes:
    """The issue's poisoning example: `fare` as bytes where the model parses a float."""
    bad = tf.train.Example()
    bad.CopyFrom(example)
    bad.features.feature["fare"].ClearField("float_list")
    bad.features.feature["fare"].bytes_list.value.append(b"12.5")
    return bad.SerializeToString()


def send(port: int, verb: str, path: str, body=None, headers=None) -> tuple[int, str, dict]:
    """(status, body text, headers) of one request; `path` is sent exactly as given."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        connection.request(verb, path, body=data, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8", "replace"), dict(response.headers)
    finally:
        connection.close()


def bad_requests(rows: list[dict]) -> list[tuple]:
    """(verb, path, body, status, message fragment): what TF Serving answers, in its status."""
    good = json_instance(rows[0])
    example = examples(rows[:1])[0]
    raw = {"signature_name": "serving_raw"}
    predict = MODEL + ":predict"
    instance = json.dumps({"signature_name": "serving_raw", "instances": [good]}).encode()
    fare = f'"fare": {json.dumps(good["fare"])}'.encode()
    assert fare in instance
    return [
        # The body, as RapidJSON with TF Serving's flags reads it.
        ("POST", predict, b"", 400, "JSON Parse error: The document is empty"),
        ("POST", predict, b'{"instances": [', 400, "JSON Parse error: Invalid value."),
        ("POST", predict, b"[1, 2]", 400, "must be a JSON object, got Array"),
        ("POST", predict, instance.replace(fare, b'"fare": 1e400'), 400, "Number too big"),
        ("POST", predict, b'{"instances": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "deeply"),
        ("POST", predict, instance.replace(fare, b'"fare": "\\ud800"'), 400, "surrogate pair"),
        ("POST", predict, instance.replace(fare, b'"fare": "\xff"'), 400, "Invalid encoding"),
        ("POST", predict, {"signature_name": 3, "instances": [good]}, 400, "must be a string"),
        # Signature and inputs.
        (
            "POST",
            predict,
            {"signature_name": "serving_rwa", "instances": [good]},
            400,
            'Serving signature name: "serving_rwa" not found',
        ),
        ("POST", predict, {**raw, "instances": [good], "inputs": {}}, 400, "only one of"),
        ("POST", predict, raw, 400, "Missing 'inputs' or 'instances' key"),
        ("POST", predict, {**raw, "instances": good}, 400, "'instances' must be a list"),
        ("POST", predict, {**raw, "instances": []}, 400, "'instances' is empty"),
        ("POST", predict, {**raw, "instances": [{**good, "fare": "x"}]}, 400, "'fare' expects"),
        ("POST", predict, {**raw, "instances": [{**good, "company": 7}]}, 400, "'company'"),
        ("POST", predict, {**raw, "instances": [{**good, "tip": 1}]}, 400, "unknown input(s) tip"),
        (
            "POST",
            predict,
            {**raw, "instances": [{k: v for k, v in good.items() if k != "fare"}]},
            400,
            "missing input(s) fare",
        ),
        ("POST", predict, {**raw, "instances": [{**good, "fare": [1, 2]}]}, 400, "one value"),
        (
            "POST",
            predict,
            {**raw, "inputs": {**{k: [v] for k, v in good.items()}, "fare": [1.0, 2.0]}},
            400,
            "values, others have",
        ),
        # serving_default's serialized tf.Examples: the model's own errors, as a 400.
        ("POST", predict, {"instances": [{"b64": "***"}]}, 400, "invalid base64"),
        ("POST", predict, {"instances": [b64(b"\xff\xfe junk")]}, 400, "not a serialized"),
        (
            "POST",
            predict,
            {"instances": [b64(with_bytes_fare(example))]},
            400,
            "feature 'fare': data types don't match",
        ),
        # Models, versions, labels.
        ("POST", "/v1/models/taxi-tipz:predict", {"instances": [good]}, 404, "Latest(taxi-tipz)"),
        ("POST", MODEL + "/versions/999:predict", {"instances": [good]}, 404, "(taxi-tips, 999)"),
        ("POST", MODEL + "/versions/99999999999999999999:predict", raw, 400, "Failed to convert"),
        (
            "POST",
            MODEL + "/labels/canary:predict",
            {"instances": [good]},
            400,
            "Unrecognized servable version label: canary",
        ),
        ("GET", MODEL + "/labels/canary/metadata", None, 400, "Unrecognized servable version"),
        ("GET", "/v1/models/taxi-tipz", None, 404, "Could not find any versions of model taxi"),
        ("GET", MODEL + "/versions/999", None, 404, "Could not find version 999 of model"),
        ("GET", "/v1/models", None, 400, "Missing model name in request."),
        ("GET", "/v1/models/" + "m" * 100_000, None, 404, "Could not find any versions of model"),
        # Paths and verbs TF Serving's dispatch does not take.
        ("POST", MODEL + ":explain", {"instances": [good]}, 400, "Malformed request: POST"),
        ("POST", MODEL + ":PREDICT", {"instances": [good]}, 400, "Malformed request: POST"),
        ("POST", MODEL, {"instances": [good]}, 400, "Malformed request: POST /v1/models/taxi"),
        ("GET", predict, None, 400, "Malformed request: GET /v1/models/taxi-tips:predict"),
        ("PUT", predict, {"instances": [good]}, 400, "Malformed request: PUT"),
        ("DELETE", MODEL, None, 400, "Malformed request: DELETE"),
        ("OPTIONS", MODEL, None, 400, "Origin header is missing in CORS preflight"),
        ("GET", "/v2/models/taxi-tips", None, 404, "Not Found"),
        # Size.
        (
            "POST",
            predict,
            b'{"instances": [' + b"1," * MAX_BODY_BYTES + b"1]}",
            413,
            "request body too large",
        ),
    ]


CLASS_NAME = re.compile(r"\b[A-Z][A-Za-z]*(Error|Exception)\b")


def assert_clean(text: str, secrets: list[str]) -> None:
    """Nothing of the server's insides: no path of this machine, source file, traceback or
    Python exception class."""
    for secret in secrets:
        assert secret not in text, text
    for fragment in (".py", "Traceback", 'File "', "/tmp/", "/work/", "site-packages"):
        assert fragment not in text, text
    assert not CLASS_NAME.search(text), text


def predict_good(port: int, rows: list[dict]) -> list:
    body = {"signature_name": "serving_raw", "instances": [json_instance(r) for r in rows[:3]]}
    status, text, _ = send(port, "POST", MODEL + ":predict", body)
    assert status == 200, text
    return json.loads(text)["predictions"]


def test_every_bad_request_gets_tf_servings_status_and_a_clean_message(served, rows):
    port = served["port"]
    before = predict_good(port, rows)
    cases = bad_requests(rows)
    assert len(cases) >= 30
    for verb, path, body, status, fragment in cases:
        got, text, headers = send(port, verb, path, body)
        where = (verb, path[:80], text[:300])
        assert got == status, where
        assert headers["Content-Type"].startswith("application/json"), where
        answer = json.loads(text)
        assert list(answer) == ["error"] and fragment in answer["error"], where
        assert len(answer["error"]) < 1000, where
        assert_clean(text, served["secrets"])
    # ...and the server still answers, the same as before.
    assert predict_good(port, rows) == before


def test_what_tf_serving_accepts_is_answered(served, rows):
    """What TF Serving's parser and dispatch take, beyond plain JSON and lower-case paths."""
    port = served["port"]
    good = json_instance(rows[0])
    instance = json.dumps({"signature_name": "serving_raw", "instances": [good]}).encode()
    status, text, _ = send(port, "POST", MODEL + ":predict", instance)
    assert status == 200, text
    expected = json.loads(text)["predictions"]
    fare = f'"fare": {json.dumps(good["fare"])}'.encode()
    accepted = [
        ("POST", "/V1/MODELS/taxi-tips:predict", instance),  # the path is case-insensitive
        ("POST", MODEL + ":predict", instance + b" trailing text"),  # ignored after the value
        ("POST", MODEL + ":predict", b"\xef\xbb\xbf" + instance),  # a UTF-8 byte-order mark
    ]
    for verb, path, body in accepted:
        status, text, _ = send(port, verb, path, body)
        assert status == 200 and json.loads(text)["predictions"] == expected, (path, text)
    # NaN and Infinity are numbers, as RapidJSON's kParseNanAndInfFlag reads them; NaN is the
    # missing value of serving_raw.
    for token in (b"NaN", b"Infinity", b"-Infinity"):
        status, text, _ = send(
            port, "POST", MODEL + ":predict", instance.replace(fare, b'"fare": ' + token)
        )
        assert status == 200, text
    status, text, _ = send(port, "GET", "/V1/Models/taxi-tips")
    assert status == 200 and json.loads(text)["model_version_status"][0]["state"] == "AVAILABLE"


def test_one_poisoning_client_fails_no_good_request(served, rows):
    """Fifteen clients send good requests to serving_default (tf.Examples) and serving_raw
    while one sends bad ones to both, all at once: every good request gets its own right
    answer, every bad one a 400."""
    port = served["port"]
    serialized = [e.SerializeToString() for e in examples(rows)]
    good_bodies = []
    for i, row in enumerate(rows):
        good_bodies.append({"instances": [b64(serialized[i])]})
        good_bodies.append({"signature_name": "serving_raw", "instances": [json_instance(row)]})
    expected = {}
    for i, body in enumerate(good_bodies):  # each alone first
        status, text, _ = send(port, "POST", MODEL + ":predict", body)
        assert status == 200, text
        expected[i] = json.loads(text)["predictions"][0][0]
    bad_bodies = [
        {"instances": [b64(with_bytes_fare(examples(rows[:1])[0]))]},
        {"instances": [b64(b"\xff\xfe not a tf.Example")]},
        {"instances": [b64(serialized[0]), b64(with_bytes_fare(examples(rows[1:2])[0]))]},
        {"signature_name": "serving_raw", "instances": [{**json_instance(rows[0]), "fare": "x"}]},
    ]

    good_results: list[tuple[int, int, str]] = []
    bad_results: list[tuple[int, str]] = []
    done = threading.Event()
    lock = threading.Lock()

    def good_client(n: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        for k in range(REQUESTS_PER_CLIENT):
            i = (n + k * GOOD_CLIENTS) % len(good_bodies)
            connection.request("POST", MODEL + ":predict", json.dumps(good_bodies[i]).encode())
            response = connection.getresponse()
            with lock:
                good_results.append((i, response.status, response.read().decode()))
        connection.close()

    def poisoning_client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        k = 0
        while not done.is_set() or k < len(bad_bodies):
            body = bad_bodies[k % len(bad_bodies)]
            connection.request("POST", MODEL + ":predict", json.dumps(body).encode())
            response = connection.getresponse()
            with lock:
                bad_results.append((response.status, response.read().decode()))
            k += 1
        connection.close()

    poisoner = threading.Thread(target=poisoning_client)
    clients = [threading.Thread(target=good_client, args=(n,)) for n in range(GOOD_CLIENTS)]
    poisoner.start()
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()
    done.set()
    poisoner.join()

    assert len(good_results) == GOOD_CLIENTS * REQUESTS_PER_CLIENT
    failed = [(i, status, text[:200]) for i, status, text in good_results if status != 200]
    assert not failed, failed[:5]
    for i, _, text in good_results:
        assert json.loads(text)["predictions"][0][0] == pytest.approx(expected[i], abs=1e-5)
    assert bad_results and {status for status, _ in bad_results} == {400}
    for _, text in bad_results:
        assert_clean(text, served["secrets"])
    log = served["log"].read_text()
    assert "Traceback" not in log  # no server fault: the bad inputs were client errors
