"""The data-leakage check: an injected copy of the label (with noise) and a training-only
column are reported with their evidence; the shipped data reports nothing; the pipeline step
ran in a real run and wrote its report."""

import json
import os

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import schema_pb2

from models import features
from pipeline import label_expression, leakage
from pipeline.components.leakage_check import DataLeakageReport
from pipeline.names import LEAKAGE_CHECK_ID
from tests.pipeline_run import ROOT, read_csv

# Runs a pipeline, a server, a Beam job or a subprocess: `make test-fast` leaves it out.
pytestmark = pytest.mark.integration

LEAK = "tip_flag"  # a label copy with noise
TRAINING_ONLY = "dispatcher_note"  # only known after the trip; the schema keeps it out of SERVING


def _shipped_schema() -> schema_pb2.Schema:
    return tfdv.load_schema_text(str(ROOT / "schema" / "schema.pbtxt"))


def _write_examples_and_stats(tmp_path, rows: list[dict], schema: schema_pb2.Schema):
    """The layout ExampleGen, ImportSchemaGen and StatisticsGen write: Split-train/*.gz,
    schema.pbtxt, Split-train/FeatureStats.pb."""
    types = {f.name: f.type for f in schema.feature}
    examples_dir = tmp_path / "examples"
    (examples_dir / "Split-train").mkdir(parents=True)
    with tf.io.TFRecordWriter(str(examples_dir / "Split-train" / "data.gz"), "GZIP") as writer:
        for row in rows:
            example = tf.train.Example()
            for key, value in row.items():
                feature = example.features.feature[key]
                if value == "":
                    continue  # as CsvExampleGen: an empty value list
                if types[key] == schema_pb2.INT:
                    feature.int64_list.value.append(int(value))
                elif types[key] == schema_pb2.FLOAT:
                    feature.float_list.value.append(float(value))
                else:
                    feature.bytes_list.value.append(str(value).encode())
            writer.write(example.SerializeToString())
    schema_dir = tmp_path / "schema"
    schema_dir.mkdir()
    tfdv.write_schema_text(schema, str(schema_dir / "schema.pbtxt"))
    frame = pd.DataFrame(rows).replace("", np.nan)
    stats = tfdv.generate_statistics_from_dataframe(frame)
    stats_dir = tmp_path / "statistics" / "Split-train"
    stats_dir.mkdir(parents=True)
    (stats_dir / "FeatureStats.pb").write_bytes(stats.SerializeToString())
    return str(examples_dir), str(schema_dir), str(tmp_path / "statistics")


def _leaky_rows(span: int) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = read_csv(ROOT / "data" / f"span-{span}" / "data.csv")
    labels = label_expression.evaluate_columns(
        features.LABEL, {c: [r[c] for r in rows] for c in label_expression.columns(features.LABEL)}
    )
    for row, label in zip(rows, labels):
        row[LEAK] = f"{label + rng.normal(0, 0.3):.4f}"
        row[TRAINING_ONLY] = rng.choice(["radio", "app", "street"])
    return rows


def _leaky_schema() -> schema_pb2.Schema:
    schema = _shipped_schema()
    schema.feature.add(name=LEAK, type=schema_pb2.FLOAT)  # in both environments
    schema.feature.add(name=TRAINING_ONLY, type=schema_pb2.BYTES).not_in_environment.append(
        "SERVING"
    )
    return schema


def test_injected_leaks_are_reported_with_evidence(tmp_path):
    uris = _write_examples_and_stats(tmp_path, _leaky_rows(6), _leaky_schema())
    report = leakage.run_check(
        *uris,
        report_uri=str(tmp_path / "report"),
        auc_threshold=0.98,
        sample_rows=5000,
        fail_on_leak=False,
    )
    found = {(f.feature, f.kind): f for f in report.findings}
    assert set(found) == {(LEAK, "strong_relation"), (TRAINING_ONLY, "training_only")}
    # Noise of 0.3 around 0/1 still separates the labels almost perfectly.
    assert found[(LEAK, "strong_relation")].auc > 0.99
    assert "single-feature AUC 0.99" in found[(LEAK, "strong_relation")].evidence
    assert "2503 sampled training rows" in found[(LEAK, "strong_relation")].evidence
    assert "2503 of 2503 training examples" in found[(TRAINING_ONLY, "training_only")].evidence
    assert "out of the SERVING environment" in found[(TRAINING_ONLY, "training_only")].evidence
    # The label's source is neither reported nor scored; real features stay below the threshold.
    assert "tips" not in report.auc_by_feature
    assert 0.85 < report.auc_by_feature["payment_type"] < 0.98
    written = leakage.load_report(str(tmp_path / "report"))
    assert written == report


def test_fail_setting_stops_with_the_features_named(tmp_path):
    uris = _write_examples_and_stats(tmp_path, _leaky_rows(6)[:600], _leaky_schema())
    with pytest.raises(leakage.DataLeakageError) as error:
        leakage.run_check(
            *uris,
            report_uri=str(tmp_path / "report"),
            auc_threshold=0.98,
            sample_rows=5000,
            fail_on_leak=True,
        )
    message = str(error.value)
    assert f"feature '{LEAK}': single-feature AUC" in message
    assert f"feature '{TRAINING_ONLY}'" in message and "PIPELINE_LEAKAGE_FAILS_RUN" in message
    # The evidence is kept for the report even when the run fails.
    assert len(leakage.load_report(str(tmp_path / "report")).findings) == 2


@pytest.mark.parametrize("span", [1, 6])
def test_shipped_spans_report_no_leak(tmp_path, span):
    rows = read_csv(ROOT / "data" / f"span-{span}" / "data.csv")
    uris = _write_examples_and_stats(tmp_path, rows, _shipped_schema())
    report = leakage.run_check(
        *uris,
        report_uri=str(tmp_path / "report"),
        auc_threshold=0.98,
        sample_rows=5000,
        fail_on_leak=True,
    )
    assert report.findings == []
    assert report.sample_rows == len(rows)
    # payment_type is the strongest real feature (cash tips are not recorded), below 0.98.
    assert max(report.auc_by_feature, key=report.auc_by_feature.get) == "payment_type"


def test_the_pipeline_step_ran_and_found_nothing(finished_run):
    (artifact,) = finished_run.outputs(LEAKAGE_CHECK_ID, DataLeakageReport.TYPE_NAME)
    assert artifact.custom_properties["findings"].int_value == 0
    with open(os.path.join(artifact.uri, leakage.REPORT_FILE)) as f:
        report = json.load(f)
    assert report["findings"] == [] and report["auc_threshold"] == 0.98
    # The run's newest span has 400 rows, about 3/4 of them in the train split.
    assert 250 < report["sample_rows"] < 350
    assert set(report["auc_by_feature"]) >= {"fare", "payment_type", "trip_start_hour"}
