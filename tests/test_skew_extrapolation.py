"""Extrapolation in the serving-skew report (analysis/skew.py): the share of rows, per feature,
with a number beyond the training min/max or a category the training statistics never saw.
Training statistics are TFDV's, computed here over synthetic rows of the active schema's model
inputs (dataset-agnostic); the expected rates are counted here from those rows."""

from __future__ import annotations

import pytest
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import schema_pb2, statistics_pb2

from analysis import skew
from models import features
from pipeline.settings import PipelineSettings

TRAINING_ROWS = 30


@pytest.fixture(scope="module")
def schema() -> schema_pb2.Schema:
    return tfdv.load_schema_text(PipelineSettings.load({}).data.schema_path)


def inputs(schema) -> list[schema_pb2.Feature]:
    """The schema's model inputs, the features a request carries."""
    keys = set(features.raw_feature_keys())
    return [f for f in schema.feature if f.name in keys]


def categorical(feature: schema_pb2.Feature) -> bool:
    return feature.type == schema_pb2.BYTES or (
        feature.type == schema_pb2.INT and feature.int_domain.is_categorical
    )


def training_value(feature: schema_pb2.Feature, i: int):
    """Three categories, or the numbers 10..10+TRAINING_ROWS-1."""
    if feature.type == schema_pb2.BYTES:
        return f"c{i % 3}"
    if categorical(feature):
        return i % 3
    return 10 + i if feature.type == schema_pb2.INT else 10.25 + i


@pytest.fixture(scope="module")
def training_rows(schema) -> list[dict]:
    return [{f.name: training_value(f, i) for f in inputs(schema)} for i in range(TRAINING_ROWS)]


@pytest.fixture(scope="module")
def training(schema, training_rows) -> statistics_pb2.DatasetFeatureStatisticsList:
    """TFDV statistics of the training rows, with the schema (as StatisticsGen computes them)."""
    return skew.serving_statistics(training_rows, schema)


def test_requests_like_training_are_never_outside(schema, training_rows, training):
    found = skew.extrapolation(training_rows, schema, training)
    assert set(found) == {f.name for f in inputs(schema)}
    assert {name: e.rate for name, e in found.items()} == {name: 0.0 for name in found}
    assert all(e.rows == TRAINING_ROWS for e in found.values())
    assert skew.extrapolation_lines(found) == [
        "no request outside the training range (numbers within min/max, categories seen)"
    ]


def test_numbers_beyond_the_range_and_unseen_categories_give_exact_rates(
    schema, training_rows, training
):
    numeric = next(f.name for f in inputs(schema) if not categorical(f))
    category = next(f.name for f in inputs(schema) if categorical(f))
    low, high = (
        min(r[numeric] for r in training_rows),
        max(r[numeric] for r in training_rows),
    )
    requests = [dict(r) for r in training_rows[:20]]
    for r in requests[:3]:  # above the maximum
        r[numeric] = high + 1
    requests[3][numeric] = low - 1  # below the minimum
    requests[4][numeric] = high  # the maximum itself is inside
    requests[5][numeric] = None  # missing: neither inside nor outside
    string = next(f for f in inputs(schema) if f.name == category).type == schema_pb2.BYTES
    unseen = ["new-a", "new-b"] if string else [97, 98]
    for r, value in zip(requests[6:11], unseen * 3):
        r[category] = value

    found = skew.extrapolation(requests, schema, training)

    assert (found[numeric].above, found[numeric].below, found[numeric].rows) == (3, 1, 19)
    assert found[numeric].rate == pytest.approx(4 / 19)
    assert (found[category].unseen, found[category].rows) == (5, 20)
    assert found[category].rate == pytest.approx(5 / 20)
    assert found[category].unseen_values == [str(v) for v in unseen]
    assert found[category].complete
    others = {n: e.rate for n, e in found.items() if n not in (numeric, category)}
    assert others == {n: 0.0 for n in others}
    lines = skew.extrapolation_lines(found)
    assert lines[0].startswith("outside the training range in 2 feature(s)")
    assert any(
        line.startswith(f"  - {numeric}: 21.1% outside [") and "3 above the maximum" in line
        for line in lines
    ), lines
    assert any(
        line.startswith(f"  - {category}: 25.0% unseen categories (5 of 20;") for line in lines
    ), lines


def test_a_truncated_category_list_gives_an_upper_bound(schema, training_rows, training):
    """When the statistics list fewer categories than training had (TFDV keeps the most
    frequent 1,000), the report says the rate is at most that."""
    category = next(f.name for f in inputs(schema) if categorical(f))
    truncated = statistics_pb2.DatasetFeatureStatisticsList.FromString(training.SerializeToString())
    for feature in truncated.datasets[0].features:
        if (".".join(feature.path.step) or feature.name) == category:
            feature.string_stats.unique += 5
    string = next(f for f in inputs(schema) if f.name == category).type == schema_pb2.BYTES
    requests = [{**training_rows[0], category: "new" if string else 99}]
    found = skew.extrapolation(requests, schema, truncated)
    assert not found[category].complete and found[category].rate == 1.0
    assert "at most (the statistics list only some categories)" in "\n".join(
        skew.extrapolation_lines(found)
    )
