"""The shared hold-out: our ExampleGen's eval split of the newest span, and scoring on it.

Reads ExampleGen's output through the pipeline's MLMD store, filters the shipped CSV so
the official template never sees a hold-out row, and scores any SavedModel whose
`serving_default` signature takes serialized tf.Examples.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import glob
import os
from pathlib import Path
from typing import Iterable, Optional, Sequence

import pipeline.runtime  # noqa: F401 (first: Keras 2 before TensorFlow loads)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import ml_metadata as mlmd
import numpy as np
import tensorflow as tf
from ml_metadata.proto import metadata_store_pb2

BIG_TIP_FRACTION = 0.2
THRESHOLD = 0.5
PREDICT_BATCH = 1024


@dataclasses.dataclass(frozen=True)
class HoldOut:
    span: int
    artifact_uri: str
    serialized: list[bytes]
    labels: np.ndarray

    @property
    def majority_rate(self) -> float:
        positive = float(self.labels.mean())
        return max(positive, 1.0 - positive)


@dataclasses.dataclass(frozen=True)
class Score:
    auc: float
    accuracy: float
    output_key: str


# --- ExampleGen output ----------------------------------------------------------------------


def _open_store(metadata_path: Path) -> mlmd.MetadataStore:
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(metadata_path)
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return mlmd.MetadataStore(config)


def _span(artifact: metadata_store_pb2.Artifact) -> int:
    for properties in (artifact.custom_properties, artifact.properties):
        if "span" in properties:
            return properties["span"].int_value
    raise ValueError(f"Examples artifact {artifact.id} ({artifact.uri}) has no span")


def newest_span_examples(
    metadata_path: Path, pipeline_name: str, component_id: str = "CsvExampleGen"
) -> tuple[int, str]:
    """(span, uri) of the first Examples artifact `component_id` wrote for its newest span."""
    store = _open_store(metadata_path)
    context = store.get_context_by_type_and_name("node", f"{pipeline_name}.{component_id}")
    if context is None:
        raise LookupError(f"{metadata_path}: no node context {pipeline_name}.{component_id}")
    examples_type = store.get_artifact_type("Examples")
    artifacts = [
        a
        for a in store.get_artifacts_by_context(context.id)
        if a.type_id == examples_type.id and a.state == metadata_store_pb2.Artifact.LIVE
    ]
    if not artifacts:
        raise LookupError(f"{metadata_path}: {component_id} has no live Examples artifact")
    newest = max(_span(a) for a in artifacts)
    first = min((a for a in artifacts if _span(a) == newest), key=lambda a: a.id)
    return newest, first.uri


def read_split(examples_uri: str, split: str) -> list[bytes]:
    """Every serialized record of one split of an Examples artifact (gzipped TFRecords)."""
    files = sorted(glob.glob(os.path.join(examples_uri, f"Split-{split}", "*.gz")))
    if not files:
        raise FileNotFoundError(f"no Split-{split}/*.gz under {examples_uri}")
    return [record.numpy() for record in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def count_records(pattern: str) -> int:
    files = sorted(glob.glob(pattern))
    if not files:
        raise FileNotFoundError(f"nothing matches {pattern}")
    return sum(1 for _ in tf.data.TFRecordDataset(files, compression_type="GZIP"))


def _first_value(example: tf.train.Example, key: str):
    """The feature's single value (int, float32 or bytes), or None when missing."""
    if key not in example.features.feature:
        return None
    feature = example.features.feature[key]
    kind = feature.WhichOneof("kind")
    values = getattr(feature, kind).value if kind else []
    if not values:
        return None
    return np.float32(values[0]) if kind == "float_list" else values[0]


def big_tipper(example: tf.train.Example) -> int:
    """The label both pipelines train on: tips > 20% of the fare, a missing amount = 0.

    In float32, as both preprocessing_fns compute it: trips tipping exactly 20% (fare 13.65,
    tips 2.73) are not big tippers in float32 but would be in float64."""

    def amount(key: str) -> np.float32:
        value = _first_value(example, key)
        return np.float32(0.0 if value is None or np.isnan(value) else value)

    return int(amount("tips") > np.float32(BIG_TIP_FRACTION) * amount("fare"))


def load_holdout(metadata_path: Path, pipeline_name: str) -> HoldOut:
    """The eval split of the newest span our ExampleGen ingested, with its labels."""
    span, uri = newest_span_examples(metadata_path, pipeline_name)
    serialized = read_split(uri, "eval")
    labels = np.array([big_tipper(tf.train.Example.FromString(s)) for s in serialized])
    return HoldOut(span=span, artifact_uri=uri, serialized=serialized, labels=labels)


def same_examples(a: Sequence[bytes], b: Sequence[bytes]) -> bool:
    """Whether two lists hold the same tf.Examples, in any order. Compares deterministic
    re-serializations: the feature map's wire order differs from process to process."""

    def canonical(records: Sequence[bytes]) -> collections.Counter:
        return collections.Counter(
            tf.train.Example.FromString(r).SerializeToString(deterministic=True) for r in records
        )

    return canonical(a) == canonical(b)


# --- The official template's data: the shipped CSV minus the hold-out -----------------------


def _feature_kinds(examples: Iterable[tf.train.Example]) -> dict[str, str]:
    kinds: dict[str, str] = {}
    for example in examples:
        for key, feature in example.features.feature.items():
            kind = feature.WhichOneof("kind")
            if kind:
                kinds.setdefault(key, kind)
    return kinds


def _csv_value(raw: str, kind: Optional[str]):
    """A CSV cell as ExampleGen would store it in a feature of `kind` (None when empty)."""
    if raw == "":
        return None
    if kind == "int64_list":
        return int(raw)
    if kind == "float_list":
        return np.float32(float(raw))
    return raw.encode()


def _row_key(values: Sequence, columns: Sequence[str]) -> tuple:
    # NaN never equals itself: key it as a marker so missing floats still match.
    return tuple(
        (c, "nan" if isinstance(v, np.floating) and np.isnan(v) else v)
        for c, v in zip(columns, values)
    )


def write_csv_without(source_csv: Path, holdout: Sequence[bytes], destination_csv: Path) -> int:
    """Copies `source_csv` to `destination_csv` without the rows that are hold-out examples.

    A row matches an example when every column equals the example's feature (as ExampleGen
    converts it: int64, float32 or bytes; empty cell = absent feature). Fails unless each
    hold-out example matched exactly one row. Returns the number of rows written."""
    examples = [tf.train.Example.FromString(s) for s in holdout]
    with open(source_csv, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = list(reader)
    kinds = _feature_kinds(examples)
    wanted = collections.Counter(
        _row_key([_first_value(e, c) for c in header], header) for e in examples
    )
    kept, removed = [], collections.Counter()
    for row in rows:
        try:
            key = _row_key([_csv_value(v, kinds.get(c)) for c, v in zip(header, row)], header)
        except ValueError:  # e.g. a decimal in a column the hold-out has as int: no match
            key = None
        if key is not None and removed[key] < wanted[key]:
            removed[key] += 1
        else:
            kept.append(row)
    if removed != wanted:
        missing = sum((wanted - removed).values())
        raise ValueError(
            f"{missing} of {len(examples)} hold-out examples match no row of "
            f"{source_csv}; refusing to build the official template's data"
        )
    destination_csv.parent.mkdir(parents=True, exist_ok=True)
    with open(destination_csv, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(kept)
    return len(kept)


# --- Scoring -------------------------------------------------------------------------------


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Exact ROC AUC (Mann-Whitney U, ties count one half)."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if not positives or not negatives:
        return float("nan")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)
    ranks = ((last - counts + 1 + last) / 2.0)[inverse]  # average rank of each tie group
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def predict(
    model_dir: Path, serialized: Sequence[bytes], output_key: Optional[str] = None
) -> tuple[np.ndarray, str]:
    """Probabilities from the model's `serving_default` on serialized tf.Examples."""
    model = tf.saved_model.load(str(model_dir))
    signature = model.signatures["serving_default"]
    outputs = list(signature.structured_outputs)
    if output_key is None:
        if len(outputs) != 1:
            raise ValueError(f"{model_dir}: serving_default has outputs {outputs}; pick one")
        output_key = outputs[0]
    elif output_key not in outputs:
        raise KeyError(f"{model_dir}: serving_default has outputs {outputs}, not {output_key!r}")
    (input_name,) = signature.structured_input_signature[1]
    batches = []
    for start in range(0, len(serialized), PREDICT_BATCH):
        batch = tf.constant(list(serialized[start : start + PREDICT_BATCH]))
        batches.append(np.reshape(signature(**{input_name: batch})[output_key].numpy(), [-1]))
    return np.concatenate(batches), output_key


def score(model_dir: Path, holdout: HoldOut, output_key: Optional[str] = None) -> Score:
    """AUC and accuracy (probability > 0.5, as Keras' BinaryAccuracy) on the hold-out."""
    probabilities, key = predict(model_dir, holdout.serialized, output_key)
    if len(probabilities) != len(holdout.labels):
        raise ValueError(
            f"{model_dir}: {len(probabilities)} predictions for {len(holdout.labels)} examples"
        )
    if probabilities.min() < 0 or probabilities.max() > 1:
        raise ValueError(
            f"{model_dir}: output {key!r} is not a probability "
            f"(range {probabilities.min()}..{probabilities.max()})"
        )
    accuracy = float(((probabilities > THRESHOLD).astype(int) == holdout.labels).mean())
    return Score(auc=roc_auc(holdout.labels, probabilities), accuracy=accuracy, output_key=key)
