"""The data-leakage checks of the LeakageCheck step (pipeline/components/leakage_check.py),
a pipeline step after ExampleValidator that looks for features a
model could learn at training time but will not have (or should not have) when predicting:
"a feature which could not be actually known when a prediction is made", such as a name
present in the training data but an empty string in every prediction request.

It reports, naming each feature with its evidence (the dataset's facts come from
models/features.py; nothing here names a column):
- leaks (`fail_on_leak` fails the run on them):
  - serving presence: a model input with a value in a much larger share of the new span's
    training rows than of the requests the model server logged (serving/request_log.py);
  - serving distribution: a model input whose values are distributed very differently in those
    requests (categories: L-infinity distance of value frequencies; numbers: of the frequencies
    of the training deciles' bins plus below/above the training range);
  - known after the label: a model input listed in `KNOWN_AFTER_LABEL`;
  - training-only: present in the training statistics but left out of the schema's SERVING
    environment (or missing from the schema), other than the label's source and the columns
    declared known after the label;
- warnings (never fail the run by themselves):
  - a strong single feature: its single-feature AUC for the label, on a sample of the new
    span's train split, exceeds `auc_threshold`. Legitimate strong features exist; the
    warning asks to check the feature is known when a prediction is made. The label comes
    from models/preprocessing.py's `label`, the definition Transform uses;
  - a model input present in more logged requests than training rows (training/serving skew
    rather than leakage).

The serving comparison needs `min_serving_rows` logged rows (and as many values of a feature
for its distribution); with fewer, or no log, it is skipped with a note. An empty split or a
constant label is a note of the report too, not a crash. The findings and notes go to a JSON
file in the step's output artifact, which the run report shows.
"""

import collections
import dataclasses
import json
import math
import os
from typing import Any, Optional

import numpy as np
import tensorflow as tf
import tensorflow_data_validation as tfdv
from absl import logging
from tensorflow_metadata.proto.v0 import schema_pb2, statistics_pb2

from models import features
from pipeline import label_expression
from pipeline.names import LEAKAGE_REPORT_FILE as REPORT_FILE
from pipeline.names import STATISTICS_FILE, TRAIN_SPLIT, split_dir_name
from pipeline.rejections import SpanRejectedError
from pipeline.serving_log import logged_rows

SERVING = "SERVING"
# Smoothing of per-category label rates toward the overall rate, in pseudo-rows: a category
# seen on a few rows cannot score as a perfect predictor.
CATEGORY_PRIOR_ROWS = 10
NUMERIC_BINS = 10

# Severities: a leak fails the run with `fail_on_leak`; a warning never does.
LEAK = "leak"
WARNING = "warning"
# Finding kinds.
TRAINING_ONLY = "training_only"
KNOWN_AFTER_LABEL = "known_after_label"
SERVING_PRESENCE = "serving_presence"
SERVING_DISTRIBUTION = "serving_distribution"
STRONG_RELATION = "strong_relation"

# Defaults of the serving comparison (LeakageSettings in pipeline/settings.py passes them).
MIN_SERVING_ROWS = 200
PRESENCE_GAP = 0.2
DISTRIBUTION_DISTANCE = 0.25


class DataLeakageError(SpanRejectedError):
    """The new span has features that leak the label; the message names each with evidence."""


@dataclasses.dataclass
class Finding:
    feature: str
    kind: str  # one of the kinds above
    evidence: str
    auc: Optional[float] = None
    severity: str = LEAK  # LEAK or WARNING
    # The numbers behind the evidence (rates, distances), for the report's tables.
    measures: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class LeakageReport:
    split: str
    sample_rows: int
    label_rate: Optional[float]
    auc_threshold: float
    auc_by_feature: dict[str, float]
    findings: list[Finding]
    # What the check could not judge and why (an empty split, a constant label, no log...).
    notes: list[str] = dataclasses.field(default_factory=list)
    # The serving comparison: the log read ("" = none), its rows (newest, at most sample_rows),
    # the thresholds, and per model input the measures compared.
    serving_log: str = ""
    serving_rows: int = 0
    serving_thresholds: dict[str, float] = dataclasses.field(default_factory=dict)
    serving_by_feature: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)

    def leaks(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == LEAK]

    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity != LEAK]

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
    path = os.path.join(uri, REPORT_FILE)
    with tf.io.gfile.GFile(path) as f:
        text = f.read()
    try:
        return LeakageReport.from_json(text)
    except (ValueError, TypeError, KeyError) as error:
        raise ValueError(f"{path}: not a leakage report ({error})") from error


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
    if not statistics.datasets:
        return counts
    for feature in statistics.datasets[0].features:
        name = feature.path.step[0] if feature.path.step else feature.name
        stats = feature.WhichOneof("stats")
        common = (
            getattr(feature, stats).common_stats
            if stats in ("num_stats", "string_stats", "bytes_stats", "struct_stats")
            else None
        )
        if common is not None:
            # An empty CSV cell is a present feature with no value: count values too.
            counts[name] = min(common.num_non_missing, common.tot_num_values)
    return counts


def training_only_features(
    schema: schema_pb2.Schema, statistics: statistics_pb2.DatasetFeatureStatisticsList
) -> list[Finding]:
    """Features with values in the training statistics that serving requests will not carry.
    The label's source columns and the columns declared known after the label are expected to
    be training-only (a declared one used as a model input is reported by
    `known_after_label_inputs`)."""
    if SERVING not in schema.default_environment and not any(
        SERVING in f.in_environment for f in schema.feature
    ):
        return []  # the schema defines no SERVING environment: nothing to compare with
    by_name = {f.name: f for f in schema.feature}
    total = statistics.datasets[0].num_examples if statistics.datasets else 0
    expected = set(features.label_columns()) | set(features.KNOWN_AFTER_LABEL)
    findings = []
    for name, count in sorted(present_counts(statistics).items()):
        if count == 0 or name in expected:
            continue
        where = f"has values in {count} of {total} training examples"
        measures = {"training_rows_with_value": count, "training_rows": total}
        if name not in by_name:
            findings.append(
                Finding(
                    name,
                    TRAINING_ONLY,
                    f"{where} but is not in the schema, so serving requests "
                    "are not expected to carry it",
                    measures=measures,
                )
            )
        elif SERVING not in environments(by_name[name], schema):
            findings.append(
                Finding(
                    name,
                    TRAINING_ONLY,
                    f"{where} but the schema leaves it out of the {SERVING} "
                    "environment (only the label's source columns "
                    f"{features.label_columns()} may be)",
                    measures=measures,
                )
            )
    return findings


# ---- Columns declared known only after the label ---------------------------------------------


def known_after_label_inputs(
    inputs: Optional[list[str]] = None,
    known_after: Optional[list[str]] = None,
    columns: Optional[dict[str, np.ndarray]] = None,
) -> list[Finding]:
    """Model inputs that models/features.py declares known only after the label (defaults:
    raw_feature_keys() and KNOWN_AFTER_LABEL). A declared column that is not an input is fine.
    `columns` (the training sample) adds how many rows carry a value."""
    inputs = features.raw_feature_keys() if inputs is None else inputs
    known_after = features.KNOWN_AFTER_LABEL if known_after is None else known_after
    findings = []
    for name in sorted(set(inputs) & set(known_after)):
        measures, seen = {}, ""
        if columns is not None and name in columns and len(columns[name]):
            rate = float(present_mask(columns[name]).mean())
            measures = {"training_presence": round(rate, 4)}
            seen = f" It has a value in {rate:.1%} of {len(columns[name])} sampled training rows."
        findings.append(
            Finding(
                name,
                KNOWN_AFTER_LABEL,
                "is declared known only after the label (KNOWN_AFTER_LABEL in models/features.py) "
                "but is a model input: the model would learn from a value it cannot have when a "
                "prediction is made. Remove it from the model's inputs." + seen,
                measures=measures,
            )
        )
    return findings


# ---- The new span's training sample ----------------------------------------------------------


def load_sample(
    examples_uri: str, schema: schema_pb2.Schema, max_rows: int, split: str = TRAIN_SPLIT
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The first `max_rows` examples of a split: one array per schema feature (floats with NaN
    for missing values, or strings with None) and the label from models/preprocessing.py.
    An empty split gives ({}, an empty label array); a missing split or an unreadable file
    raises, naming it."""
    # Imported here: the label's TensorFlow code is only needed when the check runs.
    from models import preprocessing

    split_dir = os.path.join(examples_uri, split_dir_name(split))
    if not tf.io.gfile.isdir(split_dir):
        raise FileNotFoundError(f"no split '{split}' in {examples_uri}: {split_dir} does not exist")
    records = []
    for path in sorted(tf.io.gfile.glob(os.path.join(split_dir, "*"))):
        if len(records) >= max_rows:
            break
        try:
            records += list(
                tf.data.TFRecordDataset(path, compression_type="GZIP").take(max_rows - len(records))
            )
        except tf.errors.OpError as error:
            raise ValueError(
                f"{path}: not readable as GZIP-compressed TFRecords "
                f"({error.message.splitlines()[0]})"
            ) from error
    if not records:
        return {}, np.zeros(0, np.int64)
    dtypes = {schema_pb2.INT: tf.int64, schema_pb2.FLOAT: tf.float32, schema_pb2.BYTES: tf.string}
    spec = {f.name: tf.io.VarLenFeature(dtypes[f.type]) for f in schema.feature if f.type in dtypes}
    try:
        parsed = tf.io.parse_example(tf.stack(records), spec)
    except tf.errors.OpError as error:
        raise ValueError(
            f"{split_dir}: records that are not tf.Examples of the schema's types "
            f"({error.message.splitlines()[0]})"
        ) from error
    missing_label_inputs = [k for k in label_expression.columns(features.LABEL) if k not in parsed]
    if missing_label_inputs:
        raise ValueError(
            f"the schema has no {missing_label_inputs}: the label "
            f"{features.LABEL!r} (models/features.py) cannot be derived"
        )
    labels = preprocessing.label(parsed).numpy()
    columns = {}
    for name, sparse in parsed.items():
        dense = tf.sparse.to_dense(
            tf.SparseTensor(sparse.indices, sparse.values, [len(records), 1]),
            default_value="" if sparse.dtype == tf.string else 0,
        ).numpy()[:, 0]
        has_value = np.zeros(len(records), bool)
        has_value[sparse.indices.numpy()[:, 0]] = True
        if sparse.dtype == tf.string:
            columns[name] = np.array(
                [v.decode("utf-8", "replace") if ok else None for v, ok in zip(dense, has_value)],
                dtype=object,
            )
        else:
            columns[name] = np.where(has_value, dense.astype(float), np.nan)
    return columns, labels


# ---- Single-feature AUC on a sample ----------------------------------------------------------


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
        scores[test] = [
            (sums.get(g, 0.0) + CATEGORY_PRIOR_ROWS * prior)
            / (counts.get(g, 0) + CATEGORY_PRIOR_ROWS)
            for g in groups[test]
        ]
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
        feature.HasField("int_domain") and feature.int_domain.is_categorical
    )


def strong_features(
    columns: dict[str, np.ndarray], labels: np.ndarray, schema: schema_pb2.Schema, threshold: float
) -> tuple[dict[str, float], list[Finding]]:
    """Every feature's single-feature AUC, and those above the threshold as warnings: a
    strong feature is a leak only if its value is not known when a prediction is made, which
    the data alone cannot tell."""
    by_name = {f.name: f for f in schema.feature}
    aucs, findings = {}, []
    for name in sorted(columns):
        if name in features.label_columns():
            continue  # the label's source predicts the label by definition
        values = columns[name]
        if not present_mask(values).any():
            continue
        aucs[name] = round(single_feature_auc(values, labels, is_categorical(by_name[name])), 4)
        if aucs[name] > threshold:
            findings.append(
                Finding(
                    name,
                    STRONG_RELATION,
                    f"single-feature AUC {aucs[name]:.3f} for the label on {len(labels)} sampled "
                    f"training rows (threshold {threshold}): it alone separates the label almost "
                    "perfectly. Check that its value is known when a prediction is made (not "
                    "recorded after the outcome); if it is, this is just a strong feature",
                    aucs[name],
                    WARNING,
                    {"auc": aucs[name]},
                )
            )
    return aucs, findings


# ---- Training rows against logged serving requests -------------------------------------------


def is_missing(value: Any) -> bool:
    """No value: absent (None), an empty string, or NaN."""
    if value is None:
        return True
    if isinstance(value, (str, bytes)):
        return not value.strip()
    return isinstance(value, (float, np.floating)) and math.isnan(value)


def present_mask(values) -> np.ndarray:
    return np.array([not is_missing(v) for v in values], dtype=bool)


def _category(value: Any) -> str:
    """A value as a category key, alike for training and serving: b"x" and "x" are "x";
    5, 5.0 and "5" are "5"."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        value = number if math.isfinite(number) else value
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        number = float(value)
        return str(int(number)) if number.is_integer() else repr(number)
    return str(value)


def _numbers(values) -> np.ndarray:
    """Present values as floats (a value that is not a number is left out)."""
    out = []
    for value in values:
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        try:
            out.append(float(value))
        except (TypeError, ValueError):
            continue
    return np.array([v for v in out if not math.isnan(v)], dtype=float)


def categorical_distance(training: list, serving: list) -> tuple[float, str, float, float]:
    """L-infinity distance between the value frequencies of two lists of present values, and
    the value that differs most with its training and serving frequencies."""
    train_counts = collections.Counter(_category(v) for v in training)
    serve_counts = collections.Counter(_category(v) for v in serving)
    worst = ("", 0.0, 0.0, 0.0)
    for value in sorted(set(train_counts) | set(serve_counts)):
        p = train_counts[value] / len(training)
        q = serve_counts[value] / len(serving)
        if abs(p - q) > worst[1]:
            worst = (value, abs(p - q), p, q)
    value, distance, p, q = worst
    return distance, value, p, q


def numeric_distance(training: np.ndarray, serving: np.ndarray) -> tuple[float, float]:
    """(L-infinity distance between the frequencies of bins, share of serving values outside
    the training range). The bins: the training values' deciles, plus below and above the
    training range (where no training value falls)."""
    low, high = training.min(), training.max()
    edges = np.unique(np.quantile(training, np.linspace(0, 1, NUMERIC_BINS + 1)[1:-1]))
    inner = len(edges) + 1

    def frequencies(values: np.ndarray) -> np.ndarray:
        bins = np.searchsorted(edges, values, side="right")
        bins = np.where(values < low, inner, np.where(values > high, inner + 1, bins))
        return np.bincount(bins, minlength=inner + 2) / len(values)

    outside = float(((serving < low) | (serving > high)).mean())
    return float(np.abs(frequencies(training) - frequencies(serving)).max()), outside


def compare_with_serving(
    columns: dict[str, np.ndarray],
    serving_rows: list[dict],
    schema: schema_pb2.Schema,
    inputs: Optional[list[str]] = None,
    min_rows: int = MIN_SERVING_ROWS,
    presence_gap: float = PRESENCE_GAP,
    distribution_distance: float = DISTRIBUTION_DISTANCE,
    where: str = "the serving request log",
) -> tuple[dict[str, dict[str, float]], list[Finding], list[str]]:
    """Each model input (default: raw_feature_keys()) in the training sample `columns` against
    the logged serving rows (raw values as pipeline/serving_log.py's logged_rows gives them): its
    presence rate (a value that is not empty or NaN), and with at least `min_rows` present
    values on both sides its distribution. Returns (measures per feature, findings, notes).
    With fewer than `min_rows` logged rows nothing is judged."""
    inputs = features.raw_feature_keys() if inputs is None else inputs
    if len(serving_rows) < min_rows:
        return (
            {},
            [],
            [
                f"{len(serving_rows)} logged serving rows in {where}, fewer than the "
                f"{min_rows} needed: training and serving data not compared"
            ],
        )
    by_name = {f.name: f for f in schema.feature}
    measures, findings, notes = {}, [], []
    n_train, n_serve = None, len(serving_rows)
    for name in inputs:
        if name not in columns or name not in by_name:
            notes.append(
                f"model input '{name}' is not in the schema or the training examples: "
                "not compared with serving"
            )
            continue
        train_values = columns[name]
        n_train = len(train_values)
        serve_values = [row.get(name) for row in serving_rows]
        train_present, serve_present = present_mask(train_values), present_mask(serve_values)
        train_rate, serve_rate = float(train_present.mean()), float(serve_present.mean())
        entry = {
            "training_presence": round(train_rate, 4),
            "serving_presence": round(serve_rate, 4),
        }
        measures[name] = entry
        rates = (
            f"has a value in {train_rate:.1%} of {n_train} sampled training rows but in "
            f"{serve_rate:.1%} of {n_serve} logged serving rows"
        )
        if train_rate - serve_rate > presence_gap:
            findings.append(
                Finding(
                    name,
                    SERVING_PRESENCE,
                    f"{rates} (a gap above {presence_gap}): present when training, missing when "
                    "predicting, so the model learnt from something it will not have. Drop it from "
                    "the inputs, or make the training data hold only what is known when a "
                    "prediction is made",
                    None,
                    LEAK,
                    dict(entry),
                )
            )
        elif serve_rate - train_rate > presence_gap:
            findings.append(
                Finding(
                    name,
                    SERVING_PRESENCE,
                    f"{rates} (a gap above {presence_gap}): requests carry it more often than the "
                    "training data does, so the training data is filled differently from what is "
                    "sent when predicting (training/serving skew)",
                    None,
                    WARNING,
                    dict(entry),
                )
            )
        train_kept = [v for v, ok in zip(train_values, train_present) if ok]
        serve_kept = [v for v, ok in zip(serve_values, serve_present) if ok]
        if is_categorical(by_name[name]):
            if min(len(train_kept), len(serve_kept)) < min_rows:
                continue
            distance, value, p, q = categorical_distance(train_kept, serve_kept)
            entry.update(distance=round(distance, 4))
            detail = (
                f"L-infinity distance of the value frequencies {distance:.3f} between "
                f"{len(train_kept)} training and {len(serve_kept)} serving values "
                f"(threshold {distribution_distance}); most different value '{value}': "
                f"{p:.1%} of training values, {q:.1%} of serving values"
            )
        else:
            train_numbers, serve_numbers = _numbers(train_kept), _numbers(serve_kept)
            if min(len(train_numbers), len(serve_numbers)) < min_rows:
                continue
            distance, outside = numeric_distance(train_numbers, serve_numbers)
            entry.update(distance=round(distance, 4), outside_training_range=round(outside, 4))
            detail = (
                f"L-infinity distance {distance:.3f} of the frequencies of the training "
                f"deciles' bins between {len(train_numbers)} training and "
                f"{len(serve_numbers)} serving values (threshold {distribution_distance}); "
                f"{outside:.1%} of serving values outside the training range "
                f"[{train_numbers.min():g}, {train_numbers.max():g}]; median "
                f"{np.median(train_numbers):g} when training, "
                f"{np.median(serve_numbers):g} when serving"
            )
        if distance > distribution_distance:
            findings.append(
                Finding(
                    name,
                    SERVING_DISTRIBUTION,
                    f"{detail}: its values when predicting differ from those the model learnt "
                    "from; check how the column is filled at training time against what a request "
                    "carries",
                    None,
                    LEAK,
                    dict(entry),
                )
            )
    return measures, findings, notes


def load_serving_rows(path: str, max_rows: int) -> tuple[list[dict], list[str]]:
    """The newest `max_rows` raw rows of the successful requests in a request log (the
    server's JSON lines, serving/request_log.py; every request format the server takes, as
    analysis/skew.py reads them), and notes on lines that could not be read (a torn last line
    of a running server is skipped silently)."""
    rows: collections.deque = collections.deque(maxlen=max_rows)
    bad, lines = [], 0
    with tf.io.gfile.GFile(path) as f:
        for number, line in enumerate(f, 1):
            lines = number
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                bad.append((number, f"not JSON ({error.msg})"))
                continue
            try:
                rows.extend(logged_rows([record]))
            except Exception as error:  # noqa: BLE001 (a bad record is skipped and named)
                bad.append((number, f"{type(error).__name__}: {error}"))
    if bad and bad[-1][0] == lines and bad[-1][1].startswith("not JSON"):
        bad.pop()  # the last line of a running server may be half written
    notes = (
        [f"{path}: skipped {len(bad)} unreadable line(s), first line {bad[0][0]}: {bad[0][1]}"]
        if bad
        else []
    )
    return list(rows), notes


# ---- The step ---------------------------------------------------------------------------------


def check(
    examples_uri: str,
    schema: schema_pb2.Schema,
    statistics: statistics_pb2.DatasetFeatureStatisticsList,
    auc_threshold: float,
    sample_rows: int,
    serving_log: str = "",
    min_serving_rows: int = MIN_SERVING_ROWS,
    presence_gap: float = PRESENCE_GAP,
    distribution_distance: float = DISTRIBUTION_DISTANCE,
) -> LeakageReport:
    """Every check on the train split of one Examples artifact and its statistics, and, when
    `serving_log` names an existing request log, against the requests logged there."""
    columns, labels = load_sample(examples_uri, schema, sample_rows)
    findings = known_after_label_inputs(columns=columns) + training_only_features(
        schema, statistics
    )
    notes: list[str] = []
    aucs: dict[str, float] = {}
    label_rate = float(labels.mean()) if len(labels) else None
    if not len(labels):
        notes.append(
            f"split '{TRAIN_SPLIT}' of {examples_uri} has no examples: no AUC screen "
            "and no comparison with serving requests"
        )
    elif 0 < label_rate < 1:
        aucs, strong = strong_features(columns, labels, schema, auc_threshold)
        findings += strong
    else:
        notes.append(
            f"the label ({features.LABEL_KEY} = {features.LABEL}) is {int(label_rate)} "
            f"on all {len(labels)} sampled training rows: no single-feature AUC"
        )
    report = LeakageReport(
        TRAIN_SPLIT, len(labels), label_rate, auc_threshold, aucs, findings, notes
    )
    if not serving_log:
        notes.append(
            "no serving request log configured: training data not compared with serving requests"
        )
    elif not tf.io.gfile.exists(serving_log):
        notes.append(
            f"no serving request log at {serving_log} (the model server logs requests "
            "with PIPELINE_SERVING_LOG_SAMPLING_RATE>0): training data not compared "
            "with serving requests"
        )
    elif len(labels):
        rows, log_notes = load_serving_rows(serving_log, sample_rows)
        measures, serving_findings, compare_notes = compare_with_serving(
            columns,
            rows,
            schema,
            min_rows=min_serving_rows,
            presence_gap=presence_gap,
            distribution_distance=distribution_distance,
            where=serving_log,
        )
        report.serving_log, report.serving_rows = serving_log, len(rows)
        report.serving_thresholds = {
            "min_rows": min_serving_rows,
            "presence_gap": presence_gap,
            "distribution_distance": distribution_distance,
        }
        report.serving_by_feature = measures
        findings += serving_findings
        notes += log_notes + compare_notes
    return report


def _load_schema(uri: str) -> schema_pb2.Schema:
    from tfx.utils import io_utils

    path = os.path.join(uri, "schema.pbtxt")
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"no schema at {path}")
    return io_utils.SchemaReader().read(path)


def _load_statistics(uri: str) -> statistics_pb2.DatasetFeatureStatisticsList:
    path = os.path.join(uri, split_dir_name(TRAIN_SPLIT), STATISTICS_FILE)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"no statistics of split '{TRAIN_SPLIT}' at {path}")
    return tfdv.load_stats_binary(path)


def write_report(report: LeakageReport, uri: str) -> None:
    """Written to a temp file and renamed, so a reader never sees half a report."""
    tf.io.gfile.makedirs(uri)
    path = os.path.join(uri, REPORT_FILE)
    with tf.io.gfile.GFile(path + ".tmp", "w") as f:
        f.write(report.to_json())
    tf.io.gfile.rename(path + ".tmp", path, overwrite=True)


def run_check(
    examples_uri: str,
    schema_uri: str,
    statistics_uri: str,
    report_uri: str,
    auc_threshold: float,
    sample_rows: int,
    fail_on_leak: bool,
    serving_log: str = "",
    min_serving_rows: int = MIN_SERVING_ROWS,
    presence_gap: float = PRESENCE_GAP,
    distribution_distance: float = DISTRIBUTION_DISTANCE,
) -> LeakageReport:
    """The step's work: check, write the report, then log the findings, or with
    `fail_on_leak` raise when there is a leak (warnings alone never fail the run)."""
    report = check(
        examples_uri,
        _load_schema(schema_uri),
        _load_statistics(statistics_uri),
        auc_threshold,
        sample_rows,
        serving_log,
        min_serving_rows,
        presence_gap,
        distribution_distance,
    )
    write_report(report, report_uri)
    for note in report.notes:
        logging.info("Leakage check: %s", note)
    leaks = [f"feature '{f.feature}': {f.evidence}" for f in report.leaks()]
    warnings = [f"feature '{f.feature}': {f.evidence}" for f in report.warnings()]
    if leaks and fail_on_leak:
        raise DataLeakageError(
            f"Data leakage in {examples_uri} ({len(leaks)} leaks); the run stops before "
            "Transform, Trainer and Pusher and the pushed model is unchanged. Remove the "
            "feature, fix the schema's SERVING environment or the training data, or set "
            "PIPELINE_LEAKAGE_FAILS_RUN=0 to only warn:\n  - "
            + "\n  - ".join(leaks)
            + (
                "\nWarnings (these alone would not stop the run):\n  - " + "\n  - ".join(warnings)
                if warnings
                else ""
            )
        )
    for problem in leaks:
        logging.warning("Data leakage: %s", problem)
    for problem in warnings:
        logging.warning("Possible data leakage (check it): %s", problem)
    return report
