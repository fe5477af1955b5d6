"""Data-parallel training through the template's own `run_fn`, for real.

Each training runs tests/train_worker.py in a subprocess (devices and TF_CONFIG must be set
before TensorFlow initialises) on the Transform output of the shared `finished_run`:

- MirroredStrategy over two logical CPU devices: the loss falls and the export has the same
  signatures as the pipeline's pushed model;
- MultiWorkerMirroredStrategy: two worker processes on loopback ports with TF_CONFIG; both
  finish, only the chief writes the model, and its predictions match a single-worker run
  with the same global batch on the same data.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from models import features
from pipeline.metadata import span_of
from pipeline.pipeline import EXAMPLE_GEN_ID
from tests.pipeline_run import ROOT, read_records

# Runs a pipeline, a server, a Beam job or a subprocess: `make test-fast` leaves it out.
pytestmark = pytest.mark.integration

WORKER = ROOT / "tests" / "train_worker.py"
TIMEOUT_S = 900  # generous: the machines that run the suite may be loaded
SEED = 7
TRAIN_STEPS = 100
PER_REPLICA_BATCH = 32
# Dropout off: its random masks are drawn per replica, so they would differ between one
# worker and two even with the same seed; everything else is seeded.
HYPERPARAMETERS = {"dropout": 0.0}
# Two workers reproduce one worker's training up to float32 rounding: the same global batches
# (see models.model.input_dataset), the same seeded initial weights, gradients all-reduced
# (two partial sums) instead of summed at once. Measured here: predictions agree within
# 5e-8. The bound leaves room for rounding to grow through 100 Adam steps on other CPUs
# (other kernels, other summation orders), while a step that saw other records or another
# batch size moves the weights, and so the predictions, by orders of magnitude more.
PREDICTION_TOLERANCE = 1e-4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _transform_outputs(run) -> tuple[str, list[str], list[str]]:
    """(transform graph dir, train file patterns, eval file patterns) of a finished run."""
    graph = run.outputs("Transform", "TransformGraph")[-1].uri
    examples = run.outputs("Transform", "Examples")
    assert examples, "the finished run has no transformed examples"
    return (
        graph,
        [os.path.join(a.uri, "Split-train", "*") for a in examples],
        [os.path.join(a.uri, "Split-eval", "*") for a in examples],
    )


def _spec(run, out: Path, strategy: str, batch_size: int, **extra) -> dict:
    graph, train, evaluation = _transform_outputs(run)
    return {
        "transform_graph": graph,
        "train_files": train,
        "eval_files": evaluation,
        "serving_model_dir": str(out / "serving"),
        "model_run_dir": str(out / "run"),
        "train_steps": TRAIN_STEPS,
        "eval_steps": 3,
        "hyperparameters": HYPERPARAMETERS,
        "custom_config": {
            "seed": SEED,
            "batch_size": batch_size,
            "distribution_strategy": strategy,
        },
        **extra,
    }


def _start(spec: dict, tf_config: dict | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(TF_USE_LEGACY_KERAS="1", PYTHONPATH=str(ROOT))
    if tf_config:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return subprocess.Popen(
        [sys.executable, str(WORKER), json.dumps(spec)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(process: subprocess.Popen, name: str) -> str:
    try:
        output, _ = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        pytest.fail(f"{name} did not finish in {TIMEOUT_S} s:\n{output[-4000:]}")
    assert process.returncode == 0, f"{name} failed:\n{output[-6000:]}"
    return output


def _epoch_losses(output: str) -> list[float]:
    """Training losses Keras printed per epoch (verbose=2: '10/10 - 1s - loss: 0.61 - ...')."""
    return [float(x) for x in re.findall(r"\d+/\d+ - .*? - loss: ([0-9.]+)", output)]


def _signature_inputs(model_dir: str) -> dict[str, dict]:
    loaded = tf.saved_model.load(model_dir)
    return {
        name: {
            k: (v.dtype.name, v.shape.as_list())
            for k, v in fn.structured_input_signature[1].items()
        }
        for name, fn in loaded.signatures.items()
    }


def _predict(model_dir: str, serialized: list[bytes]) -> np.ndarray:
    serve = tf.saved_model.load(model_dir).signatures["serving_default"]
    return serve(examples=tf.constant(serialized))["probabilities"].numpy().ravel()


def _eval_examples(run) -> list[bytes]:
    newest = max(run.outputs(EXAMPLE_GEN_ID, "Examples"), key=span_of)
    return read_records(os.path.join(newest.uri, "Split-eval", "*.gz"))


def test_mirrored_strategy_on_two_logical_cpus_trains_and_exports(finished_run, tmp_path):
    output = _finish(
        _start(_spec(finished_run, tmp_path, "mirrored", PER_REPLICA_BATCH, logical_cpus=2)),
        "MirroredStrategy training",
    )

    # run_fn logs the strategy it trained with: two replicas, the global batch doubled.
    assert re.search(
        r"Training on 2 replica\(s\) with MirroredStrategy, global batch "
        f"{2 * PER_REPLICA_BATCH}",
        output,
    ), output[-3000:]
    losses = _epoch_losses(output)
    assert len(losses) == 10, output[-3000:]
    assert losses[-1] < 0.8 * losses[0], losses

    pushed = os.path.join(
        finished_run.settings.serving_model_dir, finished_run.pushed_versions()[-1]
    )
    assert _signature_inputs(str(tmp_path / "serving")) == _signature_inputs(pushed)


def test_multi_worker_training_matches_a_single_worker(finished_run, tmp_path):
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    workers = [
        _start(
            _spec(finished_run, tmp_path / "multi", "multi_worker", PER_REPLICA_BATCH),
            {"cluster": cluster, "task": {"type": "worker", "index": index}},
        )
        for index in range(2)
    ]
    # The single-worker reference trains meanwhile: one replica, the same global batch.
    single = _start(_spec(finished_run, tmp_path / "single", "default", 2 * PER_REPLICA_BATCH))
    outputs = [_finish(worker, f"worker {i}") for i, worker in enumerate(workers)]
    _finish(single, "single-worker training")

    for output in outputs:  # CollectiveAllReduceStrategy: MultiWorkerMirroredStrategy's class
        assert re.search(
            r"Training on 2 replica\(s\) with CollectiveAllReduceStrategy, global "
            f"batch {2 * PER_REPLICA_BATCH}",
            output,
        ), output[-3000:]
    chief_model = tmp_path / "multi" / "serving"
    assert (chief_model / "saved_model.pb").is_file()
    # Worker 1 saved too (saving is collective), but only to its scratch directory.
    assert (tmp_path / "multi" / "run" / "worker-scratch" / "1" / "saved_model.pb").is_file()

    examples = _eval_examples(finished_run)
    multi = _predict(str(chief_model), examples)
    reference = _predict(str(tmp_path / "single" / "serving"), examples)
    assert len(multi) == len(examples) > 50
    difference = np.abs(multi - reference).max()
    assert difference < PREDICTION_TOLERANCE, (difference, multi[:5], reference[:5])
    # Not trivially equal: the model learned something.
    labels = tf.saved_model.load(str(chief_model)).signatures["transform_features"](
        examples=tf.constant(examples)
    )[features.LABEL_KEY]
    auc = keras.metrics.AUC()
    auc.update_state(tf.reshape(labels, [-1]), multi)
    assert auc.result().numpy() > 0.75
