"""The data-leakage check (no `from __future__ import annotations`: TFX reads the
component's type hints at runtime): a pipeline step after ExampleValidator that looks for features a
model could learn at training time but will not have (or should not have) when serving.

It reports, naming each feature with its evidence:
- training-only features: present in the new span's training statistics but left out of the
  schema's SERVING environment (or missing from the schema), other than the label's source;
- suspiciously strong features: whose single-feature AUC for the label, on a sample of the
  new span's train split, exceeds `leakage_auc_threshold`. The label comes from
  models/preprocessing.py's `label`, the definition Transform uses.

A warning by default; with `leakage_fails_run` a finding fails the run before Transform.
The findings go to a JSON file in the step's output artifact, which the run report shows.
"""

import dataclasses
import json
import os
from typing import Optional

import numpy as np
import tensorflow as tf
from absl import logging
from tensorflow_metadata.proto.v0 import schema_pb2, statistics_pb2
from tfx import v1 as tfx
from tfx.types.artifact import Artifact

from analysis import artifacts
from models import features
from pipeline import label_expression

LEAKAGE_CHECK_ID = "LeakageCheck"
REPORT_FILE = "leakage.json"
SERVING = "SERVING"
TRAIN_SPLIT = "train"
# Smoothing of per-category label rates toward the overall rate, in pseudo-rows: a category
# seen on a few rows cannot score as a perfect predictor.
CATEGORY_PRIOR_ROWS = 10
NUMERIC_BINS = 10


class DataLeakageError(RuntimeError):
    """The new span has features that leak the label; the message names each with evidence."""


class DataLeakageReport(Artifact):
    """The leakage check's findings: REPORT_FILE in the artifact's directory."""
    # "<namespace>.<Name>": the form Kubeflow v2 compilation requires of custom types.
    TYPE_NAME = "analysis.DataLeakageReport"


@dataclasses.dataclass
class Finding:
    feature: str
    kind: str  # "training_only" or "strong_relation"
    evidence: str
    auc: Optional[float] = None


@dataclasses.dataclass
class LeakageReport:
    split: str
    sample_rows: int
    label_rate: Optional[float]
    auc_threshold: float
    auc_by_feature: dict[str, float]
    findings: list[Finding]

    def describe(self) -> list[str]:
        return [f"feature '{f.feature}': {f.evidence}" for f in self.findings]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "LeakageReport":
        raw = json.loads(text)
        raw["findings"] = [Finding(**f) for f in raw["findings"]]
        return cls(**raw)


def load_report(uri: str) -> LeakageReport:
    """The report a LeakageCheck execution wrote to its output artifact."""
    with tf.io.gfile.GFile(os.path.join(uri, REPORT_FILE)) as f:
        return LeakageReport.from_json(f.read())


# ---- Training-only features ------------------------------------------------------------------

def environments(feature: schema_pb2.Feature, schema: schema_pb2.Schema) -> set[str]:
    """The environments a feature belongs to, by TFDV's rules: its in_environment if any,
    else the schema's default environments minus its not_in_environment."""
    if feature.in_environment:
        return set(feature.in_environment)
    return set(schema.default_environment) - set(feature.not_in_environment)


def present_counts(statistics: statistics_pb2.DatasetFeatureStatisticsList) -> dict[str, int]:
    """Examples with a value, per feature, in the (first) dataset of the statistics."""
    counts = {}
    for feature in statistics.datasets[0].features:
        name = feature.path.step[0] if feature.path.step else feature.name
        stats = feature.WhichOneof("stats")
        common = getattr(feature, stats).common_stats if stats in (
            "num_stats", "string_stats", "bytes_stats", "struct_stats") else None
        if common is not None:
            # An empty CSV cell is a present feature with no value: count values too.
            counts[name] = min(common.num_non_missing, common.tot_num_values)
    return counts


def training_only_features(
        schema: schema_pb2.Schema,
        statistics: statistics_pb2.DatasetFeatureStatisticsList) -> list[Finding]:
    """Features with values in the training statistics that serving requests will not carry."""
    if SERVING not in schema.default_environment and not any(
            SERVING in f.in_environment for f in schema.feature):
        return []  # the schema defines no SERVING environment: nothing to compare with
    by_name = {f.name: f for f in schema.feature}
    total = statistics.datasets[0].num_examples
    findings = []
    for name, count in sorted(present_counts(statistics).items()):
        if count == 0 or name in features.label_columns():
            continue
        where = f"has values in {count} of {total} training examples"
        if name not in by_name:
            findings.append(Finding(name, "training_only",
                                    f"{where} but is not in the schema, so serving requests "
                                    "are not expected to carry it"))
        elif SERVING not in environments(by_name[name], schema):
            findings.append(Finding(name, "training_only",
                                    f"{where} but the schema leaves it out of the {SERVING} "
                                    "environment (only the label's source columns "
                                    f"{features.label_columns()} may be)"))
    return findings


# ---- Single-feature AUC on a sample ----------------------------------------------------------

def load_sample(examples_uri: str, schema: schema_pb2.Schema, max_rows: int,
                split: str = TRAIN_SPLIT) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The first `max_rows` examples of a split: one array per schema feature (floats with NaN
    for missing values, or strings with None) and the label from models/preprocessing.py."""
    # Imported here: the label's TensorFlow code is only needed when the check runs.
    from models import preprocessing

    pattern = os.path.join(examples_uri, f"Split-{split}", "*")
    files = tf.io.gfile.glob(pattern)
    if not files:
        raise FileNotFoundError(f"no examples match {pattern}")
    records = list(tf.data.TFRecordDataset(files, compression_type="GZIP").take(max_rows))
    if not records:
        raise ValueError(f"split '{split}' of {examples_uri} has no examples")
    dtypes = {schema_pb2.INT: tf.int64, schema_pb2.FLOAT: tf.float32, schema_pb2.BYTES: tf.string}
    spec = {f.name: tf.io.VarLenFeature(dtypes[f.type]) for f in schema.feature
            if f.type in dtypes}
    parsed = tf.io.parse_example(tf.stack(records), spec)
    missing_label_inputs = [k for k in label_expression.columns(features.LABEL)
                            if k not in parsed]
    if missing_label_inputs:
        raise ValueError(f"the schema has no {missing_label_inputs}: the label "
                         f"{features.LABEL!r} (models/features.py) cannot be derived")
    labels = preprocessing.label(parsed).numpy()
    columns = {}
    for name, sparse in parsed.items():
        dense = tf.sparse.to_dense(
            tf.SparseTensor(sparse.indices, sparse.values, [len(records), 1]),
            default_value="" if sparse.dtype == tf.string else 0).numpy()[:, 0]
        has_value = np.zeros(len(records), bool)
        has_value[sparse.indices.numpy()[:, 0]] = True
        if sparse.dtype == tf.string:
            columns[name] = np.array([v.decode() if ok else None
                                      for v, ok in zip(dense, has_value)], dtype=object)
        else:
            columns[name] = np.where(has_value, dense.astype(float), np.nan)
    return columns, labels


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of scores for binary labels (Mann-Whitney; ties count half)."""
    from scipy.stats import rankdata

    positives = labels == 1
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if not n_pos or not n_neg:
        raise ValueError("AUC needs both label values")
    ranks = rankdata(scores)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _out_of_fold_rates(groups: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each row scored by the smoothed label rate of its group on the other half of the
    sample, so a group seen once (an id) cannot predict its own label."""
    folds = np.arange(len(labels)) % 2
    scores = np.empty(len(labels))
    for fold in (0, 1):
        train, test = folds != fold, folds == fold
        prior = labels[train].mean()
        sums, counts = {}, {}
        for group, label in zip(groups[train], labels[train]):
            sums[group] = sums.get(group, 0.0) + label
            counts[group] = counts.get(group, 0) + 1
        scores[test] = [(sums.get(g, 0.0) + CATEGORY_PRIOR_ROWS * prior)
                        / (counts.get(g, 0) + CATEGORY_PRIOR_ROWS) for g in groups[test]]
    return scores


def single_feature_auc(values: np.ndarray, labels: np.ndarray, categorical: bool) -> float:
    """How well one feature alone separates the labels, direction-free (0.5 = not at all).

    Categorical: out-of-fold label rate per value. Numeric: the better of the raw ranking
    (either direction; missing values rank lowest) and out-of-fold rates of quantile bins
    (a non-monotonic relation)."""
    if categorical:
        groups = np.array(["" if v is None else str(v) for v in values], dtype=object)
        return max(auc(_out_of_fold_rates(groups, labels), labels), 0.5)
    present = ~np.isnan(values)
    ranked = np.where(present, values, np.nanmin(values) - 1 if present.any() else 0.0)
    raw = auc(ranked, labels)
    if present.sum() < 2:
        return 0.5
    edges = np.unique(np.quantile(values[present], np.linspace(0, 1, NUMERIC_BINS + 1)[1:-1]))
    bins = np.where(present, np.searchsorted(edges, np.nan_to_num(values), side="right"), -1)
    binned = auc(_out_of_fold_rates(bins, labels), labels)
    return max(raw, 1 - raw, binned)


def is_categorical(feature: schema_pb2.Feature) -> bool:
    return feature.type == schema_pb2.BYTES or (
        feature.HasField("int_domain") and feature.int_domain.is_categorical)


def strong_features(columns: dict[str, np.ndarray], labels: np.ndarray,
                    schema: schema_pb2.Schema, threshold: float
                    ) -> tuple[dict[str, float], list[Finding]]:
    """Every feature's single-feature AUC, and those above the threshold as findings."""
    by_name = {f.name: f for f in schema.feature}
    aucs, findings = {}, []
    for name in sorted(columns):
        if name in features.label_columns():
            continue  # the label's source predicts the label by definition
        values = columns[name]
        has_value = values != None if values.dtype == object else ~np.isnan(values)  # noqa: E711
        if not has_value.any():
            continue
        aucs[name] = round(single_feature_auc(values, labels, is_categorical(by_name[name])), 4)
        if aucs[name] > threshold:
            findings.append(Finding(
                name, "strong_relation",
                f"single-feature AUC {aucs[name]:.3f} for the label on {len(labels)} sampled "
                f"training rows (threshold {threshold}): it alone nearly determines the label, "
                "which a feature known before the trip ends should not", aucs[name]))
    return aucs, findings


def check(examples_uri: str, schema: schema_pb2.Schema,
          statistics: statistics_pb2.DatasetFeatureStatisticsList,
          auc_threshold: float, sample_rows: int) -> LeakageReport:
    """Both checks on the train split of one Examples artifact and its statistics."""
    columns, labels = load_sample(examples_uri, schema, sample_rows)
    findings = training_only_features(schema, statistics)
    aucs: dict[str, float] = {}
    label_rate = float(labels.mean())
    if 0 < label_rate < 1:
        aucs, strong = strong_features(columns, labels, schema, auc_threshold)
        findings += strong
    else:
        logging.warning("Leakage check: the sampled label is constant (%s); no AUC computed",
                        label_rate)
    return LeakageReport(TRAIN_SPLIT, len(labels), label_rate, auc_threshold, aucs, findings)


def _load_schema(uri: str) -> schema_pb2.Schema:
    from tfx.utils import io_utils
    return io_utils.SchemaReader().read(os.path.join(uri, "schema.pbtxt"))


def write_report(report: LeakageReport, uri: str) -> None:
    """Written to a temp file and renamed, so a reader never sees half a report."""
    tf.io.gfile.makedirs(uri)
    path = os.path.join(uri, REPORT_FILE)
    with tf.io.gfile.GFile(path + ".tmp", "w") as f:
        f.write(report.to_json())
    tf.io.gfile.rename(path + ".tmp", path, overwrite=True)


def run_check(examples_uri: str, schema_uri: str, statistics_uri: str, report_uri: str,
              auc_threshold: float, sample_rows: int, fail_on_leak: bool) -> LeakageReport:
    """The step's work: check, write the report, then warn or raise."""
    report = check(examples_uri, _load_schema(schema_uri),
                   artifacts.load_statistics(statistics_uri, TRAIN_SPLIT), auc_threshold, sample_rows)
    write_report(report, report_uri)
    problems = report.describe()
    if problems and fail_on_leak:
        raise DataLeakageError(
            f"Possible data leakage in {examples_uri} ({len(problems)} findings); the run stops "
            "before Transform, Trainer and Pusher and the pushed model is unchanged. Remove the "
            "feature or fix the schema's SERVING environment, or set "
            "PIPELINE_LEAKAGE_FAILS_RUN=0 to only warn:\n  - " + "\n  - ".join(problems))
    for problem in problems:
        logging.warning("Possible data leakage: %s", problem)
    return report


@tfx.dsl.components.component
def LeakageCheck(
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    schema: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Schema],
    statistics: tfx.dsl.components.InputArtifact[
        tfx.types.standard_artifacts.ExampleStatistics],
    report: tfx.dsl.components.OutputArtifact[DataLeakageReport],
    auc_threshold: tfx.dsl.components.Parameter[float],
    sample_rows: tfx.dsl.components.Parameter[int],
    fail_on_leak: tfx.dsl.components.Parameter[int],
) -> None:
    """Reports (or with fail_on_leak, fails the run on) features that leak the label."""
    result = run_check(examples.uri, schema.uri, statistics.uri, report.uri,
                       auc_threshold, sample_rows, bool(fail_on_leak))
    report.set_int_custom_property("findings", len(result.findings))


def leakage_check(settings, examples: tfx.types.BaseChannel, schema: tfx.types.BaseChannel,
                  statistics: tfx.types.BaseChannel) -> Optional[tfx.types.BaseComponent]:
    """The step for create_pipeline, or None when `leakage_check` is off."""
    if not settings.leakage_check:
        return None
    return LeakageCheck(examples=examples, schema=schema, statistics=statistics,
                        auc_threshold=settings.leakage_auc_threshold,
                        sample_rows=settings.leakage_sample_rows,
                        fail_on_leak=int(settings.leakage_fails_run)).with_id(LEAKAGE_CHECK_ID)
