"""Training throughput of three input paths on the same data, in one run.

    TF_USE_LEGACY_KERAS=1 .venv/bin/python benchmarks/input_path.py [--output-dir DIR] [--steps 300]

All three train the template's model (models/model.py, default hyperparameters, batch 128)
for the same number of steps on the same rows, and report examples per second after a
warm-up (tracing and the first batches excluded), training and reading alone (the batches
produced without training: each path's ceiling):

  python-loop    the raw CSV parsed row by row with Python's csv module, batches built in
                 Python, the Transform graph applied, each batch fed by a Python loop to
                 train_on_batch (the hand-written training loop);
  python-csv     the same Python-parsed batches handed to tf.data as a generator, the
                 Transform graph mapped over them, fed to fit();
  tf.data-csv    tf.data's CsvDataset (parsing in C++), batched, the Transform graph mapped
                 over batches in parallel, prefetched, fed to fit();
  tfrecords      `models.model.input_dataset`, what the Trainer uses: Transform's
                 materialized, gzipped TFRecords, batched before parsing, cached, prefetched.

The data is a finished run's: its Transform output (graph and transformed examples of the
training window) and the raw CSV files of the same spans. --output-dir names a run's
PIPELINE_OUTPUT_DIR; without it, the local runner runs on the shipped data (Tuner off) in a
temporary directory first. Goal (issue 7): tfrecords at least 3x python-csv.
"""

from __future__ import annotations

import argparse
import csv
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import pipeline.runtime  # noqa: F401 (first: Keras 2 before TensorFlow loads)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras

from models import features, hyperparameters, model
from pipeline import metadata, spans
from pipeline.settings import PipelineSettings

REPO = Path(__file__).resolve().parents[1]
BATCH_SIZE = 128
WARMUP_STEPS = 20
GOAL = 3.0


def finished_run(output_dir: Optional[Path], workdir: Path) -> PipelineSettings:
    """Settings of a run whose Transform output exists (running one if needed)."""
    if output_dir is None:
        output_dir = workdir / "outputs"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
        env.update(
            PIPELINE_OUTPUT_DIR=str(output_dir), PIPELINE_ENABLE_TUNING="0", TF_USE_LEGACY_KERAS="1"
        )
        print(f"running the pipeline on the shipped data into {output_dir} ...", flush=True)
        with open(workdir / "pipeline.log", "wb") as log:
            subprocess.run(
                [sys.executable, str(REPO / "local_runner.py")],
                env=env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=True,
            )
    return PipelineSettings.load(output_dir=str(output_dir))


def transform_output(settings: PipelineSettings) -> tuple[str, list[str], list[int]]:
    """(transform graph dir, transformed file patterns, spans read) of the run's newest
    Transform execution."""
    import ml_metadata as mlmd

    store = metadata.open_store(settings)
    executions = metadata.node_executions(store, settings.name, "Transform") if store else []
    if not executions:
        raise FileNotFoundError(
            "no Transform execution recorded under "
            f"{settings.data.output_dir}: not a finished run's "
            "PIPELINE_OUTPUT_DIR"
        )
    events = store.get_events_by_execution_ids([executions[-1].id])
    artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
    types = {t.id: t.name for t in store.get_artifact_types()}
    inputs = [artifacts[e.artifact_id] for e in events if e.type == mlmd.proto.Event.INPUT]
    outputs = [artifacts[e.artifact_id] for e in events if e.type in metadata.OUTPUT_EVENTS]
    (graph,) = [a.uri for a in outputs if types[a.type_id] == "TransformGraph"]
    patterns = [
        os.path.join(a.uri, f"Split-{split}", "*")
        for a in outputs
        if types[a.type_id] == "Examples"
        for split in ("train", "eval")
    ]
    span_numbers = sorted({metadata.span_of(a) for a in inputs if types[a.type_id] == "Examples"})
    return graph, patterns, span_numbers


def raw_csv_files(settings: PipelineSettings, span_numbers: Sequence[int]) -> list[str]:
    files = []
    for span in span_numbers:
        files += sorted(glob.glob(os.path.join(spans.span_dir(settings, span), "*.csv")))
    if not files:
        raise FileNotFoundError(
            f"no CSV files for spans {list(span_numbers)} under {settings.data.data_dir}"
        )
    return files


class RawTransformer:
    """Applies the Transform graph to a batch of raw columns (dense, "" / NaN = missing)."""

    def __init__(self, tf_transform_output: tft.TFTransformOutput) -> None:
        self.layer = tf_transform_output.transform_features_layer()
        self.spec = tf_transform_output.raw_feature_spec()
        self.input_keys = model.model_input_keys()

    def __call__(self, columns: dict[str, tf.Tensor]) -> tuple[dict, tf.Tensor]:
        raw = {
            k: model.raw_to_sparse(v, self.spec[k].dtype)  # as serving_raw converts
            for k, v in columns.items()
            if k in self.spec
        }
        transformed = self.layer(raw)
        return (
            {k: transformed[k] for k in self.input_keys},
            tf.reshape(transformed[features.LABEL_KEY], [-1]),
        )


def column_kinds(spec: dict) -> dict[str, bool]:
    """Raw column -> is it a string column."""
    return {k: v.dtype == tf.string for k, v in spec.items()}


def python_batches(files: Sequence[str], kinds: dict[str, bool]) -> Iterator[dict]:
    """Endless batches of raw columns parsed with Python's csv module."""
    while True:
        for path in files:
            with open(path, newline="") as f:
                batch: list[dict[str, str]] = []
                for row in csv.DictReader(f):
                    batch.append(row)
                    if len(batch) == BATCH_SIZE:
                        yield {
                            k: (
                                np.array([r[k] for r in batch])
                                if is_string
                                else np.array([float(r[k]) if r[k] else np.nan for r in batch])
                            )
                            for k, is_string in kinds.items()
                        }
                        batch = []


def tfdata_csv(
    files: Sequence[str], kinds: dict[str, bool], transformer: RawTransformer
) -> tf.data.Dataset:
    with open(files[0], newline="") as f:
        header = next(csv.reader(f))
    missing = [k for k in kinds if k not in header]
    if missing:
        raise ValueError(f"{files[0]}: no column(s) {missing}")
    selected = [header.index(k) for k in kinds]
    names = [header[i] for i in sorted(selected)]
    defaults = [
        tf.constant("", tf.string) if kinds[n] else tf.constant(np.nan, tf.float64) for n in names
    ]
    dataset = tf.data.experimental.CsvDataset(
        list(files), defaults, header=True, select_cols=sorted(selected)
    )
    return (
        dataset.repeat()
        .batch(BATCH_SIZE, drop_remainder=True)
        .map(
            lambda *values: transformer(dict(zip(names, values))),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        .prefetch(tf.data.AUTOTUNE)
    )


def examples_per_second(train_steps: Callable[[int], None], steps: int) -> float:
    train_steps(WARMUP_STEPS)
    start = time.perf_counter()
    train_steps(steps)
    return steps * BATCH_SIZE / (time.perf_counter() - start)


def fresh_model():
    keras.utils.set_random_seed(1)
    return model.build_model(hyperparameters.search_space())


def fit_steps(dataset: tf.data.Dataset) -> Callable[[int], None]:
    network, iterator = fresh_model(), iter(dataset)

    def run(steps: int) -> None:
        network.fit(iterator, steps_per_epoch=steps, epochs=1, verbose=0)

    return run


def read_steps(batches: Iterator) -> Callable[[int], None]:
    """Only produces the batches (no training): the input path's own ceiling."""

    def run(steps: int) -> None:
        for _ in range(steps):
            next(batches)

    return run


def python_csv(
    files: Sequence[str], kinds: dict[str, bool], transformer: RawTransformer
) -> tf.data.Dataset:
    """Batches parsed in Python (python_batches), handed to tf.data, then transformed."""
    signature = {
        k: tf.TensorSpec([BATCH_SIZE], tf.string if is_string else tf.float64)
        for k, is_string in kinds.items()
    }
    dataset = tf.data.Dataset.from_generator(
        lambda: python_batches(files, kinds), output_signature=signature
    )
    return dataset.map(transformer, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def python_feed_steps(dataset: tf.data.Dataset) -> Callable[[int], None]:
    """The classic hand-written loop: each batch handed to train_on_batch from Python."""
    network, batches = fresh_model(), iter(dataset)

    def run(steps: int) -> None:
        for _ in range(steps):
            network.train_on_batch(*next(batches))

    return run


def count_rows(files: Sequence[str]) -> int:
    return sum(sum(1 for _ in open(path)) - 1 for path in files)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help="a finished run's PIPELINE_OUTPUT_DIR (default: run one)",
    )
    parser.add_argument("--steps", type=int, default=300, help="timed steps per path")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="input_path-"))
    try:
        settings = finished_run(args.output_dir, workdir)
        graph, patterns, span_numbers = transform_output(settings)
        tf_transform_output = tft.TFTransformOutput(graph)
        csv_files = raw_csv_files(settings, span_numbers)
        records = sum(
            1
            for p in patterns
            for f in glob.glob(p)
            for _ in tf.data.TFRecordDataset(f, compression_type="GZIP")
        )
        print(
            f"data: spans {span_numbers}: {count_rows(csv_files)} CSV rows, {records} "
            f"transformed records; batch {BATCH_SIZE}, {args.steps} timed steps after "
            f"{WARMUP_STEPS} warm-up; {os.cpu_count()} CPUs, load average "
            f"{os.getloadavg()[0]:.1f}",
            flush=True,
        )
        transformer = RawTransformer(tf_transform_output)
        kinds = column_kinds({k: v for k, v in tf_transform_output.raw_feature_spec().items()})
        datasets = {
            "python-csv": lambda: python_csv(csv_files, kinds, transformer),
            "tf.data-csv": lambda: tfdata_csv(csv_files, kinds, transformer),
            "tfrecords": lambda: model.input_dataset(
                patterns, tf_transform_output, BATCH_SIZE, seed=1
            ),
        }
        runs = {
            "python-loop": (
                python_feed_steps(datasets["python-csv"]()),
                read_steps(iter(datasets["python-csv"]())),
            )
        }
        runs.update(
            {name: (fit_steps(make()), read_steps(iter(make()))) for name, make in datasets.items()}
        )
        rates, readings = {}, {}
        print(f"{'path':<12} {'training':>12} {'input only':>12}  (examples/s)")
        for name, (train, read) in runs.items():
            rates[name] = examples_per_second(train, args.steps)
            readings[name] = examples_per_second(read, args.steps)
            print(f"{name:<12} {rates[name]:>12,.0f} {readings[name]:>12,.0f}", flush=True)
        print("\ngoal: tfrecords >= 3x the Python-fed path (training):")
        for python in ("python-loop", "python-csv"):
            ratio = rates["tfrecords"] / rates[python]
            print(f"  vs {python}: x{ratio:.1f} -> {'met' if ratio >= GOAL else 'NOT met'}")
        print(
            f"  (tf.data-csv vs python-csv: x{rates['tf.data-csv'] / rates['python-csv']:.1f};"
            " input only, tfrecords vs python-csv: "
            f"x{readings['tfrecords'] / readings['python-csv']:.1f})"
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
