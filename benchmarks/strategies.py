"""The same model trained under each distribution strategy, and with one slow worker.

    .venv/bin/python benchmarks/strategies.py [--output-dir DIR] [--steps 1000]

Each configuration runs the template's `run_fn` (tests/train_worker.py's way: a process per
task, devices and TF_CONFIG set before TensorFlow starts) for --steps steps of batch 128 per
replica (default hyperparameters, seeded), on a finished run's Transform output of the
training window, and is scored on the run's hold-out (the eval split of the window, labels
from the exported `transform_features` signature):

  default                one device (TensorFlow uses every core for it)
  mirrored               MirroredStrategy over 2 logical CPU devices (global batch 256)
  multi_worker           MultiWorkerMirroredStrategy, 2 worker processes on loopback ports
  parameter_server       ParameterServerStrategy, a coordinator, 2 workers and 2 ps tasks
                         started by run_fn on loopback ports (each worker step: one batch)
  ... + slow worker      the same with worker 1's input delayed by --delay-ms per batch

Printed, not asserted: steps/s (from the end of the first epoch, which traces, to the end of
the last; a step is a synchronous step of all replicas, or under parameter_server one
worker's batch),
examples/s, wall time (process start to exit: imports, cluster start, export included) and
hold-out AUC. --output-dir names a finished run's PIPELINE_OUTPUT_DIR; without it, the local
runner runs on the shipped data (Tuner off) in a temporary directory first.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import runpy
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import pipeline.runtime  # noqa: F401 (first: Keras 2 before TensorFlow loads)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
BATCH_SIZE = 128
SEED = 42
EPOCHS = 10  # run_fn trains 10 epochs of steps/10


@dataclasses.dataclass(frozen=True)
class Config:
    name: str
    strategy: str
    slow_worker: bool = False
    logical_cpus: int = 0
    workers: int = 1  # processes started here (multi_worker); parameter_server starts its own


CONFIGS = [
    Config("default", "default"),
    Config("mirrored (2 logical CPUs)", "mirrored", logical_cpus=2),
    Config("multi_worker (2 workers)", "multi_worker", workers=2),
    Config("parameter_server (2 workers, 2 ps)", "parameter_server"),
    Config("multi_worker, slow worker", "multi_worker", slow_worker=True, workers=2),
    Config("parameter_server, slow worker", "parameter_server", slow_worker=True),
]


def train_task(spec: dict) -> None:
    """One training process (`--task SPEC`): tests/train_worker.py, with worker 1's training
    input delayed when the spec asks for a slow worker."""
    if spec.get("slow_worker_delay_ms"):
        import tensorflow as tf
        from tensorflow.python.data.experimental.ops import testing

        from models import model

        undelayed = model.input_dataset
        delay_us = int(spec["slow_worker_delay_ms"] * 1000)

        def input_dataset(*args, input_context=None, shuffle=True, **kwargs):
            dataset = undelayed(*args, input_context=input_context, shuffle=shuffle, **kwargs)
            if not shuffle:  # the evaluation input
                return dataset
            try:  # parameter_server: known when the dataset function runs on a worker
                worker = tf.distribute.coordinator.experimental_get_current_worker_index()
            except RuntimeError:  # multi_worker: the input pipeline is the worker
                worker = input_context.input_pipeline_id if input_context else 0
            delay = tf.cast(tf.equal(worker, 1), tf.int64) * delay_us
            return dataset.apply(testing.sleep(delay))  # a graph op: it runs on the worker

        model.input_dataset = input_dataset  # run_fn looks it up when it builds the input
    _time_epochs()
    train_worker = runpy.run_path(str(REPO / "tests" / "train_worker.py"))  # no package
    train_worker["main"](spec)


def _time_epochs() -> None:
    """Every fit() also prints `epoch-end <epoch> <steps> <seconds>` lines (Keras rounds its
    own epoch times to whole seconds)."""
    import tf_keras as keras

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            print(
                f"epoch-end {epoch} {self.params.get('steps')} {time.perf_counter():.6f}",
                flush=True,
            )

    undecorated = keras.Model.fit

    def fit(self, *args, callbacks=None, **kwargs):
        return undecorated(self, *args, callbacks=[*(callbacks or []), EpochTimer()], **kwargs)

    keras.Model.fit = fit


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_config(config: Config, base_spec: dict, out: Path, delay_ms: float) -> tuple[float, str]:
    """(wall seconds, the chief's output) of one configuration."""
    spec = {
        **base_spec,
        "serving_model_dir": str(out / "serving"),
        "model_run_dir": str(out / "run"),
        "logical_cpus": config.logical_cpus,
        "custom_config": {**base_spec["custom_config"], "distribution_strategy": config.strategy},
    }
    if config.slow_worker:
        spec["slow_worker_delay_ms"] = delay_ms
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(
        TF_USE_LEGACY_KERAS="1",
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p),
    )
    cluster = {"worker": [f"127.0.0.1:{_free_port()}" for _ in range(config.workers)]}
    started = time.monotonic()
    processes = []
    for index in range(config.workers):
        task_env = dict(env)
        if config.workers > 1:
            task_env["TF_CONFIG"] = json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}
            )
        processes.append(
            subprocess.Popen(
                [sys.executable, __file__, "--task", json.dumps(spec)],
                env=task_env,
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = [p.communicate()[0] for p in processes]
    wall = time.monotonic() - started
    for process, output in zip(processes, outputs):
        if process.returncode:
            raise RuntimeError(f"{config.name} failed:\n{output[-4000:]}")
    return wall, outputs[0]


def steps_per_second(output: str) -> float:
    """Steps per second from the end of the first epoch (which traces) to the end of the
    last (the `epoch-end` lines of _time_epochs; validation included)."""
    ends = [
        (int(steps), float(t))
        for _, steps, t in re.findall(r"^epoch-end (\d+) (\d+) ([0-9.]+)$", output, re.MULTILINE)
    ]
    if len(ends) < 2:
        raise ValueError(f"no epoch timings in the output:\n{output[-3000:]}")
    return sum(steps for steps, _ in ends[1:]) / (ends[-1][1] - ends[0][1])


def holdout_auc(model_dir: Path, serialized: list[bytes]) -> float:
    import numpy as np
    import tensorflow as tf

    from benchmarks import holdout
    from models import features, model

    loaded = tf.saved_model.load(str(model_dir))
    examples = tf.constant(serialized)
    labels = loaded.signatures[model.TRANSFORM_SIGNATURE](examples=examples)[features.LABEL_KEY]
    scores = loaded.signatures["serving_default"](examples=examples)[model.PREDICTION_KEY]
    return holdout.roc_auc(np.reshape(labels.numpy(), [-1]), np.reshape(scores.numpy(), [-1]))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help="a finished run's PIPELINE_OUTPUT_DIR (default: run one)",
    )
    parser.add_argument("--steps", type=int, default=1000, help="training steps per config")
    parser.add_argument(
        "--delay-ms", type=float, default=300.0, help="the slow worker's delay per batch"
    )
    parser.add_argument("--only", nargs="*", help="configs whose name starts with these")
    parser.add_argument("--task", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.task:
        train_task(json.loads(args.task))
        return 0

    from benchmarks import input_path

    workdir = Path(tempfile.mkdtemp(prefix="strategies-"))
    try:
        settings = input_path.finished_run(args.output_dir, workdir)
        graph, patterns, span_numbers = input_path.transform_output(settings)
        train = [p for p in patterns if "Split-train" in p]
        evaluation = [p for p in patterns if "Split-eval" in p]
        # The hold-out: ExampleGen's eval split of the window's spans (raw tf.Examples).
        hold_out = raw_eval_examples(settings, span_numbers)
        base = {
            "transform_graph": graph,
            "train_files": train,
            "eval_files": evaluation,
            "train_steps": args.steps,
            "eval_steps": 5,
            "custom_config": {"seed": SEED, "batch_size": BATCH_SIZE},
        }
        print(
            f"hold-out: eval split of span(s) {span_numbers}, {len(hold_out)} rows; "
            f"{args.steps} steps "
            f"of batch {BATCH_SIZE} per replica; slow worker: +{args.delay_ms:.0f} ms per "
            f"batch; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        header = (
            f"{'strategy':<38} {'global batch':>12} {'steps/s':>8} {'examples/s':>10} "
            f"{'wall s':>7} {'AUC':>6}"
        )
        print(header + "\n" + "-" * len(header), flush=True)
        for index, config in enumerate(CONFIGS):
            if args.only and not any(config.name.startswith(o) for o in args.only):
                continue
            out = workdir / f"config-{index}"
            wall, output = run_config(config, base, out, args.delay_ms)
            rate = steps_per_second(output)
            batch = BATCH_SIZE * (2 if config.strategy in ("mirrored", "multi_worker") else 1)
            auc = holdout_auc(out / "serving", hold_out)
            print(
                f"{config.name:<38} {batch:>12} {rate:>8.1f} {rate * batch:>10,.0f} "
                f"{wall:>7.1f} {auc:>6.3f}",
                flush=True,
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def raw_eval_examples(settings, span_numbers: Sequence[int]) -> list[bytes]:
    """ExampleGen's eval split of these spans, newest artifact per span."""
    from benchmarks import holdout
    from pipeline import metadata
    from pipeline.pipeline import EXAMPLE_GEN_ID

    store = metadata.open_store(settings)
    newest = {}
    for artifact in metadata.node_outputs(store, settings.name, EXAMPLE_GEN_ID, "Examples"):
        span = metadata.span_of(artifact)
        if span in span_numbers and artifact.id > newest.get(span, (0, ""))[0]:
            newest[span] = (artifact.id, artifact.uri)
    return [r for span in sorted(newest) for r in holdout.read_split(newest[span][1], "eval")]


if __name__ == "__main__":
    sys.exit(main())
