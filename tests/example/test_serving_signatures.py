"""TF Serving's :classify / :regress, version labels and version policy against the real server
process over HTTP, on copies of the finished run's pushed model.

Expected behaviour is TF Serving's (classifier.cc, regressor.cc, json_tensor.cc,
server_core.cc, file_system_storage_path_source.cc): the classification / regression
signatures answer the same probabilities as the predict signatures; a signature TF Serving's
Classify would reject is rejected here with its message; labels are only those of a model
config file (deploy/kubernetes/models.config's format); a version removed from disk is
unloaded, a restart serves the newest version that loads, and an idle server loads nothing."""

from __future__ import annotations

import base64
import collections
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv

from analysis import skew
from pipeline.settings import PipelineSettings
from serving import process
from serving.batch_predict import raw_values
from tests.pipeline_run import read_csv

pytestmark = pytest.mark.integration

ROWS = 40
DEPLOY_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "models.config"


def _json_example(example: tf.train.Example) -> dict:
    """A tf.Example as TF Serving's REST :classify takes it: floats as JSON numbers with a
    fraction (float_list), integers as JSON integers (int64_list), strings; a missing value
    left out."""
    out = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        values = list(getattr(feature, kind).value) if kind else []
        if not values:
            continue
        if kind == "bytes_list":
            values = [v.decode("utf-8") for v in values]
        elif kind == "float_list":
            values = [float(v) for v in values]
        out[name] = values[0] if len(values) == 1 else values
    return out


@pytest.fixture(scope="module")
def examples(finished_run) -> list[tf.train.Example]:
    path = Path(finished_run.settings.data.data_dir) / "span-2" / "data.csv"
    schema = tfdv.load_schema_text(PipelineSettings.load({}).data.schema_path)
    rows = [raw_values(r, f"row {i}") for i, r in enumerate(read_csv(path)[:ROWS])]
    return [skew.to_example(r, schema) for r in rows]


@pytest.fixture(scope="module")
def pushed(finished_run) -> tuple[Path, int]:
    version = finished_run.pushed_versions()[-1]
    return Path(finished_run.settings.serving_model_dir) / version, int(version)


def _labelled_config(versions: dict[str, int]) -> str:
    """deploy/kubernetes/models.config with its commented version_labels example switched on,
    pointing at `versions`."""
    text = DEPLOY_CONFIG.read_text()
    pattern = re.compile(r'^(\s*)# (version_labels \{ key: "(\w+)" value: )\d+( \})$', re.M)
    found = [m.group(3) for m in pattern.finditer(text)]
    assert sorted(found) == sorted(versions), found
    return pattern.sub(
        lambda m: f"{m.group(1)}{m.group(2)}{versions[m.group(3)]}{m.group(4)}", text
    )


@pytest.fixture(scope="module")
def labelled(finished_run, pushed, tmp_path_factory):
    """A server over two versions (the pushed model and a copy), with the shared model config
    file's labels: stable -> the older, canary -> the newer."""
    source, version = pushed
    tmp = tmp_path_factory.mktemp("signatures")
    base = tmp / "outputs" / "serving_model" / finished_run.settings.name
    shutil.copytree(source, base / str(version))
    shutil.copytree(source, base / str(version + 1))
    config = tmp / "models.config"
    config.write_text(_labelled_config({"stable": version, "canary": version + 1}))
    env = {
        **finished_run.env,
        "PIPELINE_OUTPUT_DIR": str(tmp / "outputs"),
        "PIPELINE_SERVING_POLL_SECONDS": "0.3",
        "PIPELINE_SERVING_MODEL_CONFIG_FILE": str(config),
    }
    with process.running_server(env, str(tmp / "server.log")) as url:
        # Up once the newest serves; the older loads at a following poll.
        _wait_for_states(
            f"{url}/v1/models/taxi-tips", {version + 1: "AVAILABLE", version: "AVAILABLE"}
        )
        yield {
            "model_url": f"{url}/v1/models/taxi-tips",
            "version": version,
            "config": config,
            "log": tmp / "server.log",
        }


def _predict_examples(url: str, serialized: list[bytes]) -> np.ndarray:
    status, body, _ = process.call(
        url + ":predict",
        {"instances": [{"b64": base64.b64encode(s).decode()} for s in serialized]},
    )
    assert status == 200, body
    return np.array(body["predictions"], dtype=np.float64).reshape(-1)


def test_classify_and_regress_equal_the_predict_probabilities(labelled, examples, pushed):
    url = labelled["model_url"]
    serialized = [e.SerializeToString() for e in examples]
    p = _predict_examples(url, serialized)
    in_process = tf.saved_model.load(str(pushed[0]))
    direct = in_process.signatures["serving_default"](examples=tf.constant(serialized))
    np.testing.assert_allclose(p, direct["probabilities"].numpy().reshape(-1), atol=1e-6)
    assert 0 < p.min() < p.max() < 1
    body = [_json_example(e) for e in examples]

    status, answer, headers = process.call(
        url + ":classify", {"signature_name": "classification", "examples": body}
    )
    assert status == 200, answer
    assert headers["X-Model-Version"] == str(labelled["version"] + 1)
    assert list(answer) == ["results"] and len(answer["results"]) == ROWS
    assert all([label for label, _ in r] == ["0", "1"] for r in answer["results"])
    scores = np.array([[score for _, score in r] for r in answer["results"]])
    np.testing.assert_allclose(scores[:, 1], p, atol=1e-6)
    np.testing.assert_allclose(scores[:, 0], 1 - p, atol=1e-6)

    status, answer, _ = process.call(
        url + ":regress", {"signature_name": "regression", "examples": body}
    )
    assert status == 200, answer
    assert list(answer) == ["results"]
    np.testing.assert_allclose(answer["results"], p, atol=1e-6)

    # "context" holds features shared by every example; an example's own value wins.
    shared = "payment_type"
    context = {shared: body[0][shared]}
    stripped = [
        {k: v for k, v in e.items() if k != shared} for e in body if e[shared] == body[0][shared]
    ]
    same = [i for i, e in enumerate(body) if e[shared] == body[0][shared]]
    other = next(i for i, e in enumerate(body) if e[shared] != body[0][shared])
    status, answer, _ = process.call(
        url + ":regress",
        {"signature_name": "regression", "context": context, "examples": stripped + [body[other]]},
    )
    assert status == 200, answer
    np.testing.assert_allclose(answer["results"], p[same + [other]], atol=1e-6)


def test_metadata_lists_tf_serving_method_names(labelled):
    status, body, _ = process.call(labelled["model_url"] + "/metadata")
    assert status == 200
    signatures = body["metadata"]["signature_def"]["signature_def"]
    classification, regression = signatures["classification"], signatures["regression"]
    assert classification["method_name"] == "tensorflow/serving/classify"
    assert regression["method_name"] == "tensorflow/serving/regress"
    for signature in (classification, regression):
        assert list(signature["inputs"]) == ["inputs"]
        assert signature["inputs"]["inputs"]["dtype"] == "DT_STRING"
    assert {k: v["dtype"] for k, v in classification["outputs"].items()} == {
        "classes": "DT_STRING",
        "scores": "DT_FLOAT",
    }
    assert regression["outputs"]["outputs"]["dtype"] == "DT_FLOAT"
    # The predict signatures stay predict signatures.
    for name in ("serving_default", "serving_raw", "serving_keyed"):
        assert signatures[name]["method_name"] == "tensorflow/serving/predict"


def test_what_tf_serving_rejects_is_rejected_with_its_message(labelled, examples):
    url = labelled["model_url"]
    example = _json_example(examples[0])
    float_feature = next(k for k, v in example.items() if isinstance(v, float))
    cases = [
        # TF Serving's default signature for :classify is serving_default: a predict signature.
        (":classify", {"examples": [example]}, "No classification inputs found in SignatureDef"),
        (
            ":classify",
            {"signature_name": "serving_raw", "examples": [example]},
            "Expected one input Tensor.",
        ),
        (
            ":regress",
            {"signature_name": "serving_default", "examples": [example]},
            "No regression inputs found in SignatureDef",
        ),
        (
            ":regress",
            {"signature_name": "classification", "examples": [example]},
            "Expected one output Tensor.",
        ),
        (
            ":classify",
            {"signature_name": "regression", "examples": [example]},
            "Expected classification signature outputs to contain at least one of",
        ),
        (
            ":classify",
            {"signature_name": "classifier", "examples": [example]},
            "No signature was found with the name: classifier",
        ),
        (
            ":classify",
            {"signature_name": "classification"},
            "key 'examples' is expected and was not found",
        ),
        (
            ":classify",
            {"signature_name": "classification", "examples": example},
            "Expecting 'examples' value to be an list/array",
        ),
        (
            ":regress",
            {"signature_name": "regression", "examples": []},
            "'examples' value is an empty array",
        ),
        (
            ":regress",
            {"signature_name": "regression", "examples": [3]},
            "Example must be JSON object but got JSON Number",
        ),
        (
            ":regress",
            {"signature_name": "regression", "context": [], "examples": [example]},
            "Example must be JSON object but got JSON Array",
        ),
        (
            ":regress",
            {"signature_name": "regression", "examples": [{**example, float_feature: None}]},
            f"Feature: {float_feature} has element with unexpected JSON type: Null",
        ),
        (
            ":regress",
            {"signature_name": "regression", "examples": [{**example, float_feature: [1.5, "x"]}]},
            f"Unexpected element type in feature: {float_feature} expecting type: float",
        ),
        (
            ":regress",
            {"signature_name": "regression", "examples": [{**example, float_feature: [[1.5]]}]},
            "has element with unexpected JSON type: Array",
        ),
        (
            ":regress",
            {"signature_name": "regression", "examples": [{**example, "x": 2**63}]},
            "Feature: x has uint64_t element. Only int64_t is supported.",
        ),
        (
            ":regress",
            {"signature_name": "regression", "examples": [{**example, "x": {"b64": "***"}}]},
            "Unable to base64 decode",
        ),
        (
            "/labels/latest:classify",
            {"signature_name": "classification", "examples": [example]},
            "Unrecognized servable version label: latest",
        ),
    ]
    for path, body, message in cases:
        status, answer, _ = process.call(url + path, body)
        assert (status, message in answer.get("error", "")) == (400, True), (path, body, answer)
    status, answer, _ = process.call(
        url + ":classify", {"signature_name": "classification", "examples": [example]}
    )
    assert status == 200, answer  # still serving


def test_labels_come_from_the_model_config_file(labelled, examples):
    url, version = labelled["model_url"], labelled["version"]
    body = {"signature_name": "regression", "examples": [_json_example(examples[0])]}
    for label, expected in (("stable", version), ("canary", version + 1)):
        status, answer, headers = process.call(f"{url}/labels/{label}:regress", body)
        assert status == 200 and headers["X-Model-Version"] == str(expected), answer
        # A label URL's status lists every version: TF Serving's GetModelStatus reads only a
        # version number, not a label (get_model_status_impl.cc).
        status, answer, _ = process.call(f"{url}/labels/{label}")
        assert status == 200
        statuses = [s["version"] for s in answer["model_version_status"]]
        assert statuses == [str(version + 1), str(version)]

    # Moving a label to a version that is not loaded: TF Serving's NOT_FOUND for that version.
    config = labelled["config"]
    config.write_text(_labelled_config({"stable": version + 7, "canary": version + 1}))
    deadline = time.monotonic() + 60
    while True:
        status, answer, _ = process.call(f"{url}/labels/stable:regress", body)
        if status != 200:
            break
        assert time.monotonic() < deadline, "the edited config was never read"
        time.sleep(0.3)
    assert status == 404, answer
    assert f"Servable not found for request: Specific(taxi-tips, {version + 7})" in answer["error"]
    status, _, headers = process.call(f"{url}/labels/canary:regress", body)
    assert status == 200 and headers["X-Model-Version"] == str(version + 1)


def _load_counts(log: Path) -> collections.Counter:
    return collections.Counter(
        int(v) for v in re.findall(r"loading model version (\d+)", log.read_text())
    )


def _wait_for_states(url: str, wanted: dict[int, str]) -> None:
    """Polls the status endpoint until it lists exactly `wanted` (version -> state)."""
    deadline = time.monotonic() + 120
    while True:
        status, body, _ = process.call(url)
        states = (
            {int(s["version"]): s["state"] for s in body["model_version_status"]}
            if status == 200
            else {}
        )
        if states == wanted:
            return
        assert time.monotonic() < deadline, (wanted, status, body)
        time.sleep(0.3)


def test_versions_follow_tf_serving_policy(finished_run, pushed, examples, tmp_path):
    """A < B < C, the two newest loaded: C removed from disk is unloaded and A loaded, once;
    then idle polls load nothing (two broken versions pushed one after the other mark that
    polls went by). A restart with those two broken newest versions serves B."""
    source, a = pushed
    b, c = a + 1, a + 2
    base = tmp_path / "outputs" / "serving_model" / finished_run.settings.name
    for version in (a, b, c):
        shutil.copytree(source, base / str(version))
    env = {
        **finished_run.env,
        "PIPELINE_OUTPUT_DIR": str(tmp_path / "outputs"),
        "PIPELINE_SERVING_POLL_SECONDS": "0.2",
        "PIPELINE_SERVING_KEEP_VERSIONS": "2",
    }
    body = {"signature_name": "regression", "examples": [_json_example(examples[0])]}
    log = tmp_path / "server.log"
    with process.running_server(env, str(log)) as url:
        model_url = f"{url}/v1/models/taxi-tips"
        _wait_for_states(model_url, {c: "AVAILABLE", b: "AVAILABLE"})
        shutil.rmtree(base / str(c))
        _wait_for_states(model_url, {b: "AVAILABLE", a: "AVAILABLE"})
        status, answer, headers = process.call(model_url + ":regress", body)
        assert status == 200 and headers["X-Model-Version"] == str(b), answer
        status, _, _ = process.call(f"{model_url}/versions/{c}:regress", body)
        assert status == 404

        for marker in (c + 10, c + 11):  # broken newer versions: each is tried once
            (base / str(marker)).mkdir()
            (base / str(marker) / "saved_model.pb").write_bytes(b"not a SavedModel")
            _wait_for_states(
                model_url,
                {
                    **{m: "END" for m in (c + 10, c + 11) if m <= marker},
                    b: "AVAILABLE",
                    a: "AVAILABLE",
                },
            )
        assert _load_counts(log) == {a: 1, b: 1, c: 1, c + 10: 1, c + 11: 1}
        assert log.read_text().count("removed from disk: unloaded") == 1  # C, once
        assert "unloaded by the version policy" not in log.read_text()

    # Restart: the two newest versions are broken; the newest that loads serves.
    restart_log = tmp_path / "restart.log"
    with process.running_server(env, str(restart_log)) as url:
        model_url = f"{url}/v1/models/taxi-tips"
        _wait_for_states(model_url, {c + 11: "END", c + 10: "END", b: "AVAILABLE", a: "AVAILABLE"})
        status, answer, headers = process.call(model_url + ":regress", body)
        assert status == 200 and headers["X-Model-Version"] == str(b), answer
        # Status lists only versions on disk: a broken version removed disappears.
        shutil.rmtree(base / str(c + 11))
        _wait_for_states(model_url, {c + 10: "END", b: "AVAILABLE", a: "AVAILABLE"})
        assert _load_counts(restart_log) == {a: 1, b: 1, c + 10: 1, c + 11: 1}
