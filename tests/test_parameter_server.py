"""Parameter-server training (`distribution_strategy=parameter_server`) through the template's
own `run_fn`, for real:

- an in-process cluster (2 workers, 2 ps: servers in this process, TF_CONFIG pointing at
  them, as Vertex writes it for a chief) trains the model-parallel variant: the loss falls, the
  crossed embedding's table is split across both ps tasks, the exported signatures
  predict what the reloaded (unsharded) Keras model predicts, and a retrain warm-starts from
  the export into its shards;
- a worker killed mid-training (the cluster run_fn starts itself): the coordinator carries
  on with the other worker and the training finishes, its processes all stopped;
- the whole pipeline with parameter_server on a small slice: the Trainer starts its
  loopback cluster, stops exactly those processes, and the pushed model shows no skew
  between Transform's output and the serving signatures (dataset-agnostic).
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras

from models import features, model
from pipeline import ps_cluster
from pipeline.pipeline import EXAMPLE_GEN_ID
from tests.pipeline_run import ROOT, new_run, read_records, write_data_slice
from tests.test_distributed_training import (
    _epoch_losses,
    _eval_examples,
    _transform_outputs,
)

# Runs a pipeline, a server, a Beam job or a subprocess: `make test-fast` leaves it out.
pytestmark = pytest.mark.integration

WORKER = ROOT / "tests" / "train_worker.py"
TIMEOUT_S = 900
SEED = 7
# Big enough for the partitioner to split (100k x 4 floats = 1.6 MB > 2 x 256 KiB).
CROSSED_BUCKETS = 100_000
SIGNATURE_TOLERANCE = 1e-6


def _spec(run, out: Path, train_steps: int, **custom) -> dict:
    graph, train, evaluation = _transform_outputs(run)
    return {
        "transform_graph": graph,
        "train_files": train,
        "eval_files": evaluation,
        "serving_model_dir": str(out / "serving"),
        "model_run_dir": str(out / "run"),
        "train_steps": train_steps,
        "eval_steps": 3,
        "custom_config": {
            "seed": SEED,
            "batch_size": 32,
            "distribution_strategy": "parameter_server",
            **custom,
        },
    }


def raw_inputs(serialized: list[bytes], raw_feature_spec: dict) -> dict[str, tf.Tensor]:
    """serving_raw's inputs for tf.Examples, for any dataset: every raw feature the model
    reads, numbers as float64 with NaN and strings with "" where a value is missing."""
    keys = features.raw_feature_keys()
    parsed = tf.io.parse_example(
        tf.constant(serialized), {k: tf.io.VarLenFeature(raw_feature_spec[k].dtype) for k in keys}
    )
    rows = len(serialized)
    inputs = {}
    for key in keys:
        sparse = tf.sparse.reset_shape(parsed[key], [rows, 1])
        if sparse.dtype == tf.string:
            inputs[key] = tf.sparse.to_dense(sparse, default_value=b"")[:, 0]
        else:
            sparse = tf.SparseTensor(
                sparse.indices, tf.cast(sparse.values, tf.float64), sparse.dense_shape
            )
            inputs[key] = tf.sparse.to_dense(sparse, default_value=float("nan"))[:, 0]
    return inputs


def model_inputs(transformed: list[bytes], tf_transform_output: tft.TFTransformOutput) -> dict:
    """The model's inputs parsed from Transform's own output records (for any dataset)."""
    spec = tf_transform_output.transformed_feature_spec()
    parsed = tf.io.parse_example(
        tf.constant(transformed), {k: spec[k] for k in model.model_input_keys()}
    )
    return parsed


def assert_no_skew(
    model_dir: str,
    raw: list[bytes],
    transformed: list[bytes],
    tf_transform_output: tft.TFTransformOutput,
) -> None:
    """serving_default (tf.Examples), serving_raw (typed values) and the Keras model applied
    to Transform's Beam-computed output give the same predictions for the same rows."""
    loaded = tf.saved_model.load(model_dir)
    from_examples = (
        loaded.signatures["serving_default"](examples=tf.constant(raw))[model.PREDICTION_KEY]
        .numpy()
        .ravel()
    )
    from_raw = (
        loaded.signatures[model.SERVING_RAW_SIGNATURE](
            **raw_inputs(raw, tf_transform_output.raw_feature_spec())
        )[model.PREDICTION_KEY]
        .numpy()
        .ravel()
    )
    np.testing.assert_allclose(from_raw, from_examples, atol=1e-5)
    assert len(transformed) == len(raw)
    from_transform = (
        keras.models.load_model(model_dir)(model_inputs(transformed, tf_transform_output))
        .numpy()
        .ravel()
    )
    # Beam may write rows in another order: compare the sorted predictions.
    np.testing.assert_allclose(np.sort(from_transform), np.sort(from_examples), atol=1e-5)


def _running(pids: list[int]) -> list[int]:
    """Those of `pids` that are still a cluster task process (a reused pid is not)."""
    alive = []
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"pipeline.ps_cluster" in cmdline:
            alive.append(pid)
    return alive


def _shard_devices(log: str, variable: str) -> list[str]:
    match = re.search(rf"Sharded variable {re.escape(variable)}: (.*)", log)
    assert match, log[-3000:]
    return re.findall(r"on (/job:ps/replica:0/task:\d+)", match.group(1))


@pytest.fixture
def in_process_cluster(monkeypatch):
    """Two workers and two ps as servers in this process; TF_CONFIG names this process the
    chief, so run_fn coordinates them as it would on Vertex. The eager context is reset
    afterwards (it stays connected to the servers otherwise)."""
    cluster = ps_cluster.local_cluster_spec(num_workers=2, num_ps=2)
    servers = ps_cluster.in_process_servers(cluster)
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "chief", "index": 0}})
    )
    yield cluster
    del servers
    ps_cluster._forget_cluster()


def test_in_process_cluster_trains_a_sharded_embedding_and_exports_it(
    finished_run, tmp_path, in_process_cluster, caplog, capsys
):
    from tests.train_worker import main as train

    caplog.set_level(logging.INFO, logger="absl")
    train(_spec(finished_run, tmp_path, train_steps=100, crossed_embedding_buckets=CROSSED_BUCKETS))
    log, printed = caplog.text, capsys.readouterr().out

    assert "Training on 1 replica(s) with ParameterServerStrategy" in log
    losses = _epoch_losses(printed)
    assert len(losses) == 10, printed[-3000:]
    assert losses[-1] < 0.8 * losses[0], losses
    # The crossed embedding's table is split across both ps tasks; smaller tables are not.
    devices = _shard_devices(log, f"{model.CROSSED_EMBEDDING_LAYER}/embeddings")
    assert sorted(devices) == ["/job:ps/replica:0/task:0", "/job:ps/replica:0/task:1"], devices
    assert log.count("Sharded variable") == 1, log

    model_dir = str(tmp_path / "serving")
    examples = _eval_examples(finished_run)
    loaded = tf.saved_model.load(model_dir)
    assert set(loaded.signatures) == {
        "serving_default",
        model.SERVING_RAW_SIGNATURE,
        model.SERVING_KEYED_SIGNATURE,
        model.TRANSFORM_SIGNATURE,
        model.CLASSIFY_SIGNATURE,
        model.REGRESS_SIGNATURE,
    }
    exported = (
        loaded.signatures["serving_default"](examples=tf.constant(examples))[model.PREDICTION_KEY]
        .numpy()
        .ravel()
    )
    transformed = loaded.signatures[model.TRANSFORM_SIGNATURE](examples=tf.constant(examples))
    reloaded = keras.models.load_model(model_dir)
    # Reloaded, the table is one variable again.
    table = reloaded.get_layer(model.CROSSED_EMBEDDING_LAYER).embeddings
    assert table.shape.as_list()[0] == CROSSED_BUCKETS
    direct = reloaded({k: transformed[k] for k in model.model_input_keys()}).numpy().ravel()
    assert len(exported) == len(examples) > 50
    np.testing.assert_allclose(exported, direct, atol=SIGNATURE_TOLERANCE)
    regressed = loaded.signatures[model.REGRESS_SIGNATURE](inputs=tf.constant(examples))
    np.testing.assert_allclose(regressed["outputs"].numpy(), exported, atol=1e-6)

    # A retrain warm-starts from the exported model: its whole table is split into the new
    # model's shards (the first epoch starts near the trained loss, not the initial one).
    caplog.clear()
    train(
        {
            **_spec(
                finished_run,
                tmp_path / "warm",
                train_steps=20,
                crossed_embedding_buckets=CROSSED_BUCKETS,
                warm_start_steps_fraction=1.0,
            ),
            "base_model": model_dir,
        }
    )
    assert f"Warm start: starting from the weights of {model_dir}" in caplog.text, caplog.text
    warm_losses = _epoch_losses(capsys.readouterr().out)
    assert warm_losses[0] < losses[0], (warm_losses, losses)


def test_a_worker_killed_mid_training_is_survived(finished_run, tmp_path):
    """run_fn starts its own loopback cluster (2 workers, 2 ps); worker 1 is killed once the
    first epoch is done: its closures go to worker 0 and the training finishes."""
    spec = _spec(finished_run, tmp_path, train_steps=600)
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(TF_USE_LEGACY_KERAS="1", PYTHONPATH=str(ROOT))
    log_path = tmp_path / "trainer.log"
    with open(log_path, "w") as log:
        trainer = subprocess.Popen(
            [sys.executable, "-u", str(WORKER), json.dumps(spec)],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    pids_file = tmp_path / "run" / "ps-cluster" / "pids.json"
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while "Epoch 2/" not in log_path.read_text(errors="replace"):
            assert trainer.poll() is None, log_path.read_text(errors="replace")[-5000:]
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.5)
        started = json.loads(pids_file.read_text())
        worker_1 = started["tasks"]["worker-1"]
        cmdline = Path(f"/proc/{worker_1}/cmdline").read_bytes().split(b"\0")
        assert cmdline[4:6] == [b"worker", b"1"], cmdline  # python -m module spec type index
        os.kill(worker_1, signal.SIGKILL)
        returncode = trainer.wait(TIMEOUT_S)
    finally:
        if trainer.poll() is None:
            trainer.kill()
            trainer.wait()
    output = log_path.read_text(errors="replace")
    assert returncode == 0, output[-6000:]
    assert "Worker /job:worker/replica:0/task:1 failed" in output, output[-6000:]
    assert len(_epoch_losses(output)) == 10, output[-6000:]
    assert (tmp_path / "serving" / "saved_model.pb").is_file()
    assert _running(started["pids"]) == []


@pytest.mark.slow
def test_pipeline_with_parameter_server_training(tmp_path):
    write_data_slice(tmp_path / "data", [1, 2], 400)
    run = new_run(
        tmp_path,
        PIPELINE_ENABLE_TUNING="0",
        PIPELINE_DISTRIBUTION_STRATEGY="parameter_server",
        PIPELINE_CROSSED_EMBEDDING_BUCKETS=str(CROSSED_BUCKETS),
    )
    result = run.run()
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert run.pushed_versions(), output[-6000:]

    # The Trainer started its cluster, sharded the table, and stopped exactly its processes.
    assert "Parameter-server cluster up" in output and "Parameter-server cluster stopped" in output
    assert sorted(_shard_devices(output, f"{model.CROSSED_EMBEDDING_LAYER}/embeddings")) == [
        "/job:ps/replica:0/task:0",
        "/job:ps/replica:0/task:1",
    ]
    (model_run,) = run.outputs("Trainer", "ModelRun")
    started = json.loads(Path(model_run.uri, "ps-cluster", "pids.json").read_text())
    assert len(started["pids"]) == 4
    assert _running(started["pids"]) == []

    # No skew between Transform's output and the pushed model's serving signatures.
    raw = [
        record
        for artifact in run.outputs(EXAMPLE_GEN_ID, "Examples")
        for record in read_records(os.path.join(artifact.uri, "Split-train", "*.gz"))
    ]
    (transformed_artifact,) = run.outputs("Transform", "Examples")
    transformed = read_records(os.path.join(transformed_artifact.uri, "Split-train", "*.gz"))
    graph = run.outputs("Transform", "TransformGraph")[-1].uri
    pushed = os.path.join(run.settings.serving_model_dir, run.pushed_versions()[-1])
    assert_no_skew(pushed, raw, transformed, tft.TFTransformOutput(graph))
