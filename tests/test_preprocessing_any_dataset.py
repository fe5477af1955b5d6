"""preprocessing_fn is generic over models/features.py: here it runs through tf.Transform's
Beam implementation on a dataset unlike the shipped one (sensor readings: negative floats,
an integer-coded category, a string label with missing values), declared by patching the
features module as `make new-dataset` would have written it."""

import json

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

from models import features
from models.preprocessing import preprocessing_fn

SENSORS = {
    "NUMERIC_FEATURES": {"temperature_c": "linear", "load_kw": "log"},
    "NUMERIC_BUCKETS": 2,
    "BUCKET_FEATURES": ["altitude_m"],
    "NUM_BUCKETS": 2,
    "IDENTITY_FEATURES": {"weekday": 7},
    "VOCAB_FEATURES": {"site_code": (5, 1), "vendor": (5, 1)},
    "NUM_OOV_BUCKETS": 1,
    "STRING_FEATURES": ["vendor", "status"],
    "UNUSED_FEATURES": ["reading_time"],
    "LABEL": "status == 'fault' or load_kw * 2 > 100",
    "LABEL_KEY": "needs_service",
    "KNOWN_AFTER_LABEL": [],
}
FLOAT, INT = ["temperature_c", "load_kw", "altitude_m"], ["weekday", "site_code"]
STRING = ["vendor", "status"]
ROWS = [  # temperature, load, altitude, weekday, site, vendor, status
    (-10.0, 0.0, 100.0, 0, 7, "acme", "ok"),
    (-5.0, 60.0, 200.0, 6, 7, "acme", None),  # 60 * 2 > 100: needs service
    (5.0, 9.0, None, 9, 3, None, "fault"),  # weekday out of range; fault
    (30.0, None, 400.0, None, 7, "zenith", "ok"),  # load missing: counts as 0
]


@pytest.fixture(scope="module")
def sensors():
    patch = pytest.MonkeyPatch()
    for name, value in SENSORS.items():
        patch.setattr(features, name, value)
    yield
    patch.undo()


def _rows() -> list[dict]:
    rows = []
    for values in ROWS:
        row = {
            key: [] if value is None else [value]
            for key, value in zip(FLOAT + INT + STRING, values)
        }
        rows.append(row)
    return rows


def _spec(with_label_source: bool = True) -> dict:
    spec = {key: tf.io.VarLenFeature(tf.float32) for key in FLOAT}
    spec.update({key: tf.io.VarLenFeature(tf.int64) for key in INT})
    spec.update({key: tf.io.VarLenFeature(tf.string) for key in STRING})
    if not with_label_source:
        del spec["status"]
    return spec


@pytest.fixture(scope="module")
def transformed(sensors, tmp_path_factory):
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(_spec()))
    transform_dir = str(tmp_path_factory.mktemp("transform_output"))
    rows_path = str(tmp_path_factory.mktemp("rows") / "rows")
    with (
        beam.Pipeline() as pipeline,
        tft_beam.Context(temp_dir=str(tmp_path_factory.mktemp("tft"))),
    ):
        (out, _), transform_fn = (
            pipeline | beam.Create(_rows()),
            metadata,
        ) | tft_beam.AnalyzeAndTransformDataset(preprocessing_fn)
        _ = transform_fn | tft_beam.WriteTransformFn(transform_dir)
        _ = (
            out
            | beam.Map(
                lambda r: json.dumps({k: getattr(v, "item", lambda: v)() for k, v in r.items()})  # noqa: B023
            )
            | beam.io.WriteToText(rows_path, shard_name_template="")
        )
    with open(rows_path) as f:
        outputs = [json.loads(line) for line in f]
    # Beam may reorder rows: temperature's z-score is monotonic in the input order.
    outputs.sort(key=lambda row: row["temperature_c_xf"])
    return outputs, tft.TFTransformOutput(transform_dir)


def test_linear_numbers_are_plain_z_scores_of_negative_values(transformed):
    outputs, _ = transformed
    raw = np.array([-10.0, -5.0, 5.0, 30.0])
    np.testing.assert_allclose(
        [r["temperature_c_xf"] for r in outputs], (raw - raw.mean()) / raw.std(), rtol=1e-5
    )


def test_log_numbers_take_log1p_with_missing_as_zero(transformed):
    outputs, _ = transformed
    logs = np.log1p([0.0, 60.0, 9.0, 0.0])
    np.testing.assert_allclose(
        [r["load_kw_xf"] for r in outputs], (logs - logs.mean()) / logs.std(), rtol=1e-5
    )


def test_label_expression_mixes_a_string_test_and_arithmetic(transformed):
    outputs, _ = transformed
    assert [r["needs_service"] for r in outputs] == [0, 1, 1, 0]


def test_integer_codes_get_a_vocabulary_and_identity_ids_clip(transformed):
    outputs, tft_output = transformed
    assert tft_output.vocabulary_by_name("site_code") == [b"7", b"3"]
    assert [r["site_code_xf"] for r in outputs] == [0, 0, 1, 0]
    # weekday 9 is out of range and a missing weekday: both id 0.
    assert [r["weekday_xf"] for r in outputs] == [0, 6, 0, 0]
    # a missing string vendor lands in the out-of-vocabulary bucket after the 2 known ones
    assert tft_output.vocabulary_by_name("vendor") == [b"acme", b"zenith"]
    assert [r["vendor_xf"] for r in outputs] == [0, 0, 2, 1]


def test_serving_inputs_without_the_label_source_give_no_label(transformed, sensors):
    outputs, tft_output = transformed
    layer = tft_output.transform_features_layer()
    example = tf.train.Example(
        features=tf.train.Features(
            feature={
                "temperature_c": tf.train.Feature(float_list=tf.train.FloatList(value=[-5.0])),
                "load_kw": tf.train.Feature(float_list=tf.train.FloatList(value=[60.0])),
            }
        )
    )
    result = layer(
        tf.io.parse_example(
            tf.constant([example.SerializeToString()]), _spec(with_label_source=False)
        )
    )
    assert "needs_service" not in result
    np.testing.assert_allclose(
        result["temperature_c_xf"].numpy(), [outputs[1]["temperature_c_xf"]], rtol=1e-5
    )
