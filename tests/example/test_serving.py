"""The local model server, started as a real process on a copy of a freshly pushed model and
called over HTTP: every endpoint, both request formats, bad requests, request logging, and a
hot swap under load with rollback of a version that fails to load."""

from __future__ import annotations

import base64
import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv

from analysis import skew
from pipeline import serving_log
from serving import process
from serving.batch_predict import json_instance, raw_values
from tests.pipeline_run import read_csv

# Runs a pipeline, a server, a Beam job or a subprocess: `make test-fast` leaves it out.
pytestmark = pytest.mark.integration

MAX_BODY_BYTES = 200_000
ROWS = 40


@pytest.fixture(scope="module")
def served(finished_run, tmp_path_factory):
    """A server over a copy of the finished run's pushed model (the hot-swap test adds
    versions to the copy)."""
    tmp = tmp_path_factory.mktemp("serving")
    base, copy_env = finished_run.serving_copy(tmp)
    env = {
        **copy_env,
        "PIPELINE_SERVING_POLL_SECONDS": "0.3",
        "PIPELINE_SERVING_LOG_SAMPLING_RATE": "1",
        "PIPELINE_SERVING_LOG_PATH": str(tmp / "requests.jsonl"),
        "PIPELINE_SERVING_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
    }
    with process.running_server(env, str(tmp / "server.log")) as url:
        yield {
            "url": url,
            "base": base,
            "log": tmp / "requests.jsonl",
            "model_url": f"{url}/v1/models/taxi-tips",
            "version": int(finished_run.pushed_versions()[-1]),
        }


@pytest.fixture(scope="module")
def rows(finished_run) -> list[dict]:
    csv_rows = read_csv(Path(finished_run.settings.data.data_dir) / "span-2" / "data.csv")[:ROWS]
    return [raw_values(r, f"row {i}") for i, r in enumerate(csv_rows)]


@pytest.fixture(scope="module")
def in_process(finished_run):
    version = finished_run.pushed_versions()[-1]
    return tf.saved_model.load(os.path.join(finished_run.settings.serving_model_dir, version))


def call_raw(in_process, rows: list[dict]) -> np.ndarray:
    signature = in_process.signatures["serving_raw"]
    inputs = {
        k: tf.constant(
            [r[k] for r in rows], tf.string if isinstance(rows[0][k], str) else tf.float64
        )
        for k in rows[0]
    }
    return signature(**inputs)["probabilities"].numpy().reshape(-1)


def test_status_and_metadata(served):
    status, body, _ = process.call(served["model_url"])
    assert status == 200
    assert body == {
        "model_version_status": [
            {
                "version": str(served["version"]),
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    status, body, _ = process.call(f"{served['model_url']}/versions/{served['version']}")
    assert status == 200 and body["model_version_status"][0]["version"] == str(served["version"])

    status, body, _ = process.call(served["model_url"] + "/metadata")
    assert status == 200
    assert body["model_spec"] == {
        "name": "taxi-tips",
        "signature_name": "",
        "version": str(served["version"]),
    }
    signatures = body["metadata"]["signature_def"]["signature_def"]
    # Every signature in the SavedModel is listed, as TF Serving does.
    assert {"serving_default", "serving_raw", "serving_keyed"} <= set(signatures)
    assert signatures["serving_default"]["inputs"]["examples"]["dtype"] == "DT_STRING"
    assert signatures["serving_raw"]["inputs"]["fare"]["dtype"] == "DT_DOUBLE"
    assert signatures["serving_keyed"]["outputs"]["key"]["dtype"] == "DT_STRING"
    assert signatures["serving_raw"]["method_name"] == "tensorflow/serving/predict"


def test_predictions_equal_in_process_signatures(served, rows, in_process):
    expected = call_raw(in_process, rows)
    instances = [json_instance(r) for r in rows]
    url = served["model_url"] + ":predict"

    # Row format.
    status, body, headers = process.call(
        url, {"signature_name": "serving_raw", "instances": instances}
    )
    assert status == 200, body
    assert headers["X-Model-Version"] == str(served["version"])
    np.testing.assert_allclose(np.array(body["predictions"]).reshape(-1), expected, atol=1e-6)

    # Columnar format, through a version URL.
    columns = {k: [i[k] for i in instances] for k in instances[0]}
    status, body, _ = process.call(
        f"{served['model_url']}/versions/{served['version']}:predict",
        {"signature_name": "serving_raw", "inputs": columns},
    )
    assert status == 200, body
    np.testing.assert_allclose(np.array(body["outputs"]).reshape(-1), expected, atol=1e-6)

    # The keyed signature passes the key through.
    keyed = [{**i, "key": f"k{n}"} for n, i in enumerate(instances)]
    status, body, _ = process.call(url, {"signature_name": "serving_keyed", "instances": keyed})
    assert status == 200, body
    assert [p["key"] for p in body["predictions"]] == [f"k{n}" for n in range(ROWS)]
    np.testing.assert_allclose(
        [p["probabilities"][0] for p in body["predictions"]], expected, atol=1e-6
    )

    # serving_default (the default signature) on serialized tf.Examples as {"b64": ...}.
    schema = tfdv.load_schema_text(served_schema_path())
    serialized = [skew.to_example(r, schema).SerializeToString() for r in rows]
    status, body, _ = process.call(
        url, {"instances": [{"b64": base64.b64encode(s).decode()} for s in serialized]}
    )
    assert status == 200, body
    by_example = (
        in_process.signatures["serving_default"](examples=tf.constant(serialized))["probabilities"]
        .numpy()
        .reshape(-1)
    )
    np.testing.assert_allclose(np.array(body["predictions"]).reshape(-1), by_example, atol=1e-6)
    np.testing.assert_allclose(by_example, expected, atol=1e-5)


def served_schema_path() -> str:
    from pipeline.settings import PipelineSettings

    return PipelineSettings.load({}).data.schema_path


def test_int_values_for_float_features(served, rows, in_process):
    row = {**rows[0], "fare": 12.0, "trip_miles": 3.0}
    instance = {**json_instance(row), "fare": 12, "trip_miles": 3}  # JSON ints
    status, body, _ = process.call(
        served["model_url"] + ":predict", {"signature_name": "serving_raw", "instances": [instance]}
    )
    assert status == 200, body
    assert body["predictions"][0][0] == pytest.approx(call_raw(in_process, [row])[0], abs=1e-6)


def test_bad_requests_get_4xx_naming_the_problem(served, rows):
    good = json_instance(rows[0])
    url = served["model_url"] + ":predict"
    raw = {"signature_name": "serving_raw"}
    cases = [
        (url, b'{"instances": [', 400, "JSON Parse error"),
        (url, b"[1, 2]", 400, "must be a JSON object"),
        (url, {**raw, "instances": [{**good, "fare": "twelve"}]}, 400, "'fare' expects a number"),
        (url, {**raw, "instances": [{**good, "company": 7}]}, 400, "'company' expects a string"),
        (url, {**raw, "instances": [{**good, "tip_pct": 3}]}, 400, "unknown input(s) tip_pct"),
        (
            url,
            {**raw, "instances": [{k: v for k, v in good.items() if k != "fare"}]},
            400,
            "missing input(s) fare",
        ),
        (url, {**raw, "instances": []}, 400, "'instances' is empty"),
        (url, {**raw}, 400, "Missing 'inputs' or 'instances' key"),
        (
            url,
            {"signature_name": "serving_rwa", "instances": [good]},
            400,
            'Serving signature name: "serving_rwa" not found',  # TF Serving's wording
        ),
        (url, {"instances": [{"b64": "***"}]}, 400, "invalid base64"),
        (url, b'{"instances": [' + b"1," * MAX_BODY_BYTES + b"1]}", 413, "request body too large"),
        (
            served["url"] + "/v1/models/taxi-tipz:predict",
            {"instances": [good]},
            404,
            "Servable not found for request: Latest(taxi-tipz)",
        ),
        (
            served["model_url"] + "/versions/999:predict",
            {"instances": [good]},
            404,
            "Specific(taxi-tips, 999)",
        ),
        (
            served["model_url"] + "/labels/canary:predict",
            {"instances": [good]},
            400,  # TF Serving: INVALID_ARGUMENT
            "Unrecognized servable version label: canary",
        ),
        # TF Serving: "Malformed request" (400) for a method it does not dispatch.
        (served["model_url"] + ":explain", {"instances": [good]}, 400, "Malformed request"),
        (served["model_url"] + ":regress", {"examples": []}, 400, "'examples' value is an empty"),
    ]
    for target, body, status, message in cases:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        got_status, got, _ = process.call(target, data=data)
        assert (got_status, message in got.get("error", "")) == (status, True), (target, got)
        # ...and the server keeps serving.
        got_status, got, _ = process.call(url, {**raw, "instances": [good]})
        assert got_status == 200, got


def test_requests_are_logged_with_version_and_latency(served, rows):
    process.call(
        served["model_url"] + ":predict",
        {"signature_name": "serving_raw", "instances": [json_instance(rows[2])]},
    )
    records = list(serving_log.read(str(served["log"])))
    ok = [r for r in records if r["status"] == 200 and r["method"] == "predict"]
    assert ok and all(r["version"] == str(served["version"]) and r["latency_ms"] > 0 for r in ok)
    assert ok[-1]["request"]["instances"][0]["fare"] == rows[2]["fare"]
    assert len(ok[-1]["response"]["predictions"]) == 1
    assert any(r["status"] == 400 and "error" in r["response"] for r in records)


def test_hot_swap_under_load_then_rollback(served, rows):
    """A client loop predicts while a new version is pushed (copied in place, as a Pusher
    writes it): no request fails and the responses switch to the new version (told apart by
    the X-Model-Version header). A broken newer version then fails to load and the server
    keeps serving the last good one."""
    old, new = served["version"], served["version"] + 1
    body = {"signature_name": "serving_raw", "instances": [json_instance(r) for r in rows[:4]]}
    results, stop = [], threading.Event()

    def client():
        while not stop.is_set():
            status, answer, headers = process.call(served["model_url"] + ":predict", body)
            results.append((status, headers.get("X-Model-Version"), answer))

    threads = [threading.Thread(target=client) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1)
        shutil.copytree(served["base"] / str(old), served["base"] / str(new))
        deadline = time.monotonic() + 90
        while not any(v == str(new) for _, v, _ in results[-5:]):
            assert time.monotonic() < deadline, "the new version was never served"
            time.sleep(0.2)
        time.sleep(1)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    failures = [(s, a) for s, _, a in results if s != 200]
    assert not failures, failures[:3]
    versions = [v for _, v, _ in results]
    assert versions[0] == str(old) and versions[-1] == str(new)
    # Once swapped, never back: each request sees one whole set of versions.
    assert str(old) not in versions[versions.index(str(new)) + 3 * 2 :]
    # The previous version stays loaded (the two newest are kept).
    status, _, headers = process.call(f"{served['model_url']}/versions/{old}:predict", body)
    assert status == 200 and headers["X-Model-Version"] == str(old)

    broken = served["base"] / str(new + 1)
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
    deadline = time.monotonic() + 60
    while True:
        _, status_body, _ = process.call(served["model_url"])
        states = {s["version"]: s for s in status_body["model_version_status"]}
        if str(new + 1) in states:
            break
        assert time.monotonic() < deadline, status_body
        time.sleep(0.3)
    assert states[str(new + 1)]["state"] == "END"
    assert states[str(new + 1)]["status"]["error_message"]
    assert states[str(new)]["state"] == "AVAILABLE"
    status, _, headers = process.call(served["model_url"] + ":predict", body)
    assert status == 200 and headers["X-Model-Version"] == str(new)
