"""preprocessing_fn through tf.Transform's Beam implementation, on hand-made rows."""

import json
import math

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

from models import features
from models.preprocessing import preprocessing_fn

FLOAT = ["fare", "trip_miles", "tips"] + features.BUCKET_FEATURES
INT = ["trip_seconds", "dropoff_census_tract"] + list(features.IDENTITY_FEATURES)
STRING = features.STRING_FEATURES


def _row(fare, tips, payment_type, company=None, hour=None, lat=None, tract=None):
    """A raw row as ExampleGen would parse it: missing values are empty lists."""
    row = {key: [] for key in FLOAT + INT + STRING}
    row.update(
        fare=[fare], tips=[tips], trip_miles=[1.0], trip_seconds=[600], payment_type=[payment_type]
    )
    if company is not None:
        row["company"] = [company]
    if hour is not None:
        row["trip_start_hour"] = [hour]
    if lat is not None:
        row["pickup_latitude"] = [lat]
    if tract is not None:
        row["dropoff_census_tract"] = [tract]
    return row


ROWS = [
    _row(10.0, 3.0, "Credit Card", "Acme", hour=8, lat=41.80, tract=17031081500),
    _row(20.0, 0.0, "Cash", "Acme", hour=25, lat=41.85, tract=17031081500),
    _row(30.0, 6.0, "Cash", None, hour=0, lat=41.90),
    _row(40.0, 10.0, "Cash", "Acme", lat=41.95, tract=17031081500),
]


def _to_json(row) -> str:  # untyped: Beam type-checks annotations
    return json.dumps({k: v.item() if hasattr(v, "item") else v for k, v in row.items()})


def _raw_feature_spec() -> dict:
    spec = {key: tf.io.VarLenFeature(tf.float32) for key in FLOAT}
    spec.update({key: tf.io.VarLenFeature(tf.int64) for key in INT})
    spec.update({key: tf.io.VarLenFeature(tf.string) for key in STRING})
    return spec


@pytest.fixture(scope="module")
def transformed(tmp_path_factory):
    metadata = dataset_metadata.DatasetMetadata(
        schema_utils.schema_from_feature_spec(_raw_feature_spec())
    )
    temp_dir = str(tmp_path_factory.mktemp("tft"))
    transform_dir = str(tmp_path_factory.mktemp("transform_output"))
    rows_path = str(tmp_path_factory.mktemp("rows") / "rows")
    with beam.Pipeline() as pipeline, tft_beam.Context(temp_dir=temp_dir):
        raw = pipeline | beam.Create(ROWS)
        (transformed_rows, _), transform_fn = (raw, metadata) | tft_beam.AnalyzeAndTransformDataset(
            preprocessing_fn
        )
        _ = transform_fn | tft_beam.WriteTransformFn(transform_dir)
        _ = (
            transformed_rows
            | beam.Map(_to_json)
            | beam.io.WriteToText(rows_path, shard_name_template="")
        )
    with open(rows_path) as f:
        outputs = [json.loads(line) for line in f]
    # Beam may reorder rows: put them back in input order (fare's z-score is monotonic).
    outputs.sort(key=lambda row: row[features.transformed_name("fare")])
    return outputs, tft.TFTransformOutput(transform_dir)


def test_numeric_features_are_z_scores_of_log1p(transformed):
    outputs, _ = transformed
    logs = np.log1p([10.0, 20.0, 30.0, 40.0])
    expected = (logs - logs.mean()) / logs.std()
    got = [row[features.transformed_name("fare")] for row in outputs]
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # trip_miles is constant here: a zero variance scales to 0, not NaN.
    assert all(row[features.transformed_name("trip_miles")] == 0.0 for row in outputs)


def test_label_is_tip_above_twenty_percent_of_fare(transformed):
    outputs, _ = transformed
    # 3/10 > 0.2, 0/20 no, 6/30 = 0.2 exactly is not above, 10/40 > 0.2.
    assert [row[features.LABEL_KEY] for row in outputs] == [1, 0, 0, 1]


def test_vocabularies_are_by_frequency_and_rare_values_are_out_of_vocabulary(transformed):
    outputs, tft_output = transformed
    assert tft_output.vocabulary_by_name("payment_type") == [b"Cash", b"Credit Card"]
    assert [row[features.transformed_name("payment_type")] for row in outputs] == [1, 0, 0, 0]
    # company keeps values seen at least 5 times: "Acme" (3) and missing (1) hash into the
    # out-of-vocabulary ids, which follow the vocabulary.
    for key in ("company", "dropoff_census_tract"):
        ids = [row[features.transformed_name(key)] for row in outputs]
        size = tft_output.vocabulary_size_by_name(key)
        assert all(size <= i < size + features.NUM_OOV_BUCKETS for i in ids), (key, ids)
    company_ids = [row[features.transformed_name("company")] for row in outputs]
    assert company_ids[0] == company_ids[1] == company_ids[3]


def test_identity_ids_map_missing_and_out_of_range_to_zero(transformed):
    outputs, _ = transformed
    assert [row[features.transformed_name("trip_start_hour")] for row in outputs] == [8, 0, 0, 0]


def test_bucketized_coordinates_keep_order_and_missing_gets_its_own_bucket(transformed):
    outputs, _ = transformed
    pickup = [row[features.transformed_name("pickup_latitude")] for row in outputs]
    assert pickup == sorted(pickup) and pickup[0] < pickup[-1]
    dropoff = [row[features.transformed_name("dropoff_latitude")] for row in outputs]
    assert dropoff == [features.NUM_BUCKETS] * 4


def test_serving_graph_without_label_applies_the_same_transform(transformed):
    outputs, tft_output = transformed
    layer = tft_output.transform_features_layer()
    raw_spec = {k: v for k, v in _raw_feature_spec().items() if k != "tips"}
    examples = []
    for row in ROWS[:2]:
        feature = {}
        for key, values in row.items():
            if key == "tips" or not values:
                continue
            if key in STRING:
                feature[key] = tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[v.encode() for v in values])
                )
            elif key in INT:
                feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
            else:
                feature[key] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
        examples.append(
            tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
        )
    result = layer(tf.io.parse_example(tf.constant(examples), raw_spec))
    assert features.LABEL_KEY not in result
    fare_key = features.transformed_name("fare")
    np.testing.assert_allclose(
        result[fare_key].numpy(), [outputs[0][fare_key], outputs[1][fare_key]], rtol=1e-5
    )
    assert not any(math.isnan(v) for v in result[fare_key].numpy())
