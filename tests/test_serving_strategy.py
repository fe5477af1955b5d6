"""The serving-strategy advice (analysis/serving_strategy.py, `tfx-template serving-strategy`):
synthetic peaked (Zipf), flat (uniform) and low-cardinality workloads each get the seed's
recommendation, with figures recomputed here from collections.Counter; request keys are the
same whatever format a row came in (JSON instances, columnar inputs, b64 tf.Example, classify
examples, a span's CSV), logs written by the server's own logger; the table size estimate is
checked against a real warehouse file. Dataset-agnostic: rows come from the shipped spans."""

from __future__ import annotations

import base64
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tensorflow_data_validation as tfdv
from typer.testing import CliRunner

from analysis import serving_strategy as strategy
from analysis import skew
from analysis.settings import ServingStrategySettings
from cli.main import app
from models import features
from pipeline.names import KEY_INPUT, SERVING_KEYED_SIGNATURE
from pipeline.settings import PipelineSettings
from pipeline.spans import read_csv, write_csv
from serving import request_log, warehouse
from serving.batch_predict import json_instance, raw_values

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = ServingStrategySettings.load({})


# ---- expected figures, computed here from a Counter ------------------------------------------


def expected_head(counter: Counter, coverage: float) -> int:
    total, covered = sum(counter.values()), 0
    for size, (_, count) in enumerate(counter.most_common(), start=1):
        covered += count
        if covered >= coverage * total:
            return size
    raise AssertionError("unreachable")


def top_share(counter: Counter, k: int) -> float:
    return sum(c for _, c in counter.most_common(k)) / sum(counter.values())


def zipf_keys(rows: int = 40_000, seed: int = 0) -> list[str]:
    return [f"user-{v}" for v in np.random.default_rng(seed).zipf(1.3, rows)]


def uniform_keys(rows: int = 40_000, seed: int = 1) -> list[str]:
    return [f"user-{v}" for v in np.random.default_rng(seed).integers(0, 10**7, rows)]


def low_cardinality_keys(rows: int = 40_000, seed: int = 2) -> list[str]:
    return [f"user-{v}" for v in np.random.default_rng(seed).integers(0, 50, rows)]


def check_figures(workload: strategy.Workload, keys: list[str]) -> Counter:
    counter = Counter(keys)
    assert workload.rows == len(keys)
    assert workload.distinct == len(counter)
    assert workload.seen_once == sum(1 for c in counter.values() if c == 1)
    for k, share in workload.top_k_share.items():
        assert share == pytest.approx(top_share(counter, k), abs=1e-12), k
    assert set(workload.top_k_share) == {k for k in strategy.TOP_K if k <= len(counter)}
    for coverage, head in workload.head_for.items():
        assert head == expected_head(counter, coverage), coverage
    return counter


def test_peaked_workload_gets_hybrid_with_the_head():
    keys = zipf_keys()
    workload = strategy.describe(keys)
    counter = check_figures(workload, keys)
    advice = strategy.recommend(workload, DEFAULTS)
    head = expected_head(counter, 0.8)
    assert advice.strategy == "hybrid", advice
    assert advice.table_rows == head
    assert advice.hit_rate == pytest.approx(top_share(counter, head))
    assert 0.8 <= advice.hit_rate < 0.81
    # Peaked and high cardinality, as the thresholds say.
    assert head / len(counter) <= DEFAULTS.peaked_max_head_share
    assert sum(1 for c in counter.values() if c == 1) / len(keys) > DEFAULTS.static_max_unseen_rate
    mean_key = sum(len(k) for k, _ in counter.most_common(head)) / head
    assert advice.table_bytes == strategy.table_bytes(head, mean_key, strategy.VERSION_BYTES)


def test_flat_workload_gets_dynamic():
    keys = uniform_keys()
    workload = strategy.describe(keys)
    counter = check_figures(workload, keys)
    advice = strategy.recommend(workload, DEFAULTS)
    assert advice.strategy == "dynamic", advice
    assert (advice.table_rows, advice.hit_rate) == (0, 0.0)
    assert expected_head(counter, 0.8) / len(counter) > DEFAULTS.peaked_max_head_share


def test_low_cardinality_workload_gets_static():
    keys = low_cardinality_keys()
    workload = strategy.describe(keys)
    counter = check_figures(workload, keys)
    advice = strategy.recommend(workload, DEFAULTS)
    assert advice.strategy == "static", advice
    assert advice.table_rows == len(counter) == 50
    once = sum(1 for c in counter.values() if c == 1)
    assert advice.hit_rate == pytest.approx(1 - once / len(keys))


def test_thresholds_are_settings():
    peaked = strategy.describe(zipf_keys())
    low = strategy.describe(low_cardinality_keys())
    strict = ServingStrategySettings.load(
        {
            "PIPELINE_SERVING_STRATEGY_PEAKED_MAX_HEAD_SHARE": "0.01",
            "PIPELINE_SERVING_STRATEGY_STATIC_MAX_KEYS": "49",
        }
    )
    assert strategy.recommend(peaked, strict).strategy == "dynamic"
    assert strategy.recommend(low, strict).strategy == "dynamic"  # 50 keys, flat
    wider = ServingStrategySettings.load({"PIPELINE_SERVING_STRATEGY_HEAD_COVERAGE": "0.9"})
    counter = Counter(zipf_keys())
    advice = strategy.recommend(peaked, wider)
    assert advice.table_rows == expected_head(counter, 0.9)
    assert advice.strategy == ("hybrid" if advice.table_rows / len(counter) <= 0.2 else "dynamic")


def test_storage_estimate_matches_a_real_warehouse_table(tmp_path):
    """The estimate against the SQLite file the batch job's warehouse code writes, for hashed
    keys and for the batch job's `<span>:<file>:<row>` keys, small and larger tables."""
    assert warehouse.COLUMN_NAMES == ("key", "probability", "model_version", "span")
    rng = np.random.default_rng(3)
    for rows in (50, 1_000, 20_000):
        for name, keys in {
            "hashed": [strategy.row_key({"a": i, "b": "x"}, ["a", "b"]) for i in range(rows)],
            "located": [f"6:data.csv:{i}" for i in rng.permutation(rows)],
        }.items():
            path = str(tmp_path / f"{name}-{rows}.db")
            with warehouse.connect(path) as connection:
                warehouse.create_table(connection, "predictions")
                warehouse.insert(
                    connection, "predictions", [(k, 0.5, "1700000000", 6) for k in keys]
                )
            mean_key = sum(len(k) for k in keys) / len(keys)
            estimate = strategy.table_bytes(len(keys), mean_key, len("1700000000"))["sqlite"]
            assert estimate == pytest.approx(os.path.getsize(path), rel=0.15), (name, rows)


# ---- keys from the logged rows ---------------------------------------------------------------


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    path = sorted((ROOT / "data").glob("span-*/*.csv"))[0]
    return [raw_values(r, str(path)) for r in read_csv(path)[:6]]


@pytest.fixture(scope="module")
def schema():
    return tfdv.load_schema_text(PipelineSettings.load({}).data.schema_path)


def write_log(path: Path, bodies: list[tuple[str, str, dict]], status: int = 200) -> None:
    """Requests logged by the server's own logger: (method, signature, body)."""
    logger = request_log.RequestLogger(str(path), sampling_rate=1.0)
    for method, signature, body in bodies:
        logger.log(
            model="m",
            version="1700000000",
            signature=signature,
            method=method,
            status=status,
            latency_ms=1.0,
            request=body,
            response={},
        )
    logger.close()


def test_every_request_format_gives_the_rows_the_same_key(rows, schema, tmp_path):
    instances = [json_instance(r) for r in rows]
    b64 = [
        {"b64": base64.b64encode(skew.to_example(r, schema).SerializeToString()).decode()}
        for r in rows
    ]
    columnar = {k: [i[k] for i in instances] for k in instances[0]}
    classify = [{k: [] if v is None else [v] for k, v in i.items()} for i in instances]
    formats = {
        "instances": ("predict", "serving_raw", {"instances": instances}),
        "inputs": ("predict", "serving_raw", {"inputs": columnar}),
        "b64": ("predict", "serving_default", {"instances": b64}),
        "classify": ("classify", "serving_raw", {"examples": classify}),
    }
    expected = [strategy.row_key(i, features.raw_feature_keys()) for i in instances]
    assert len(set(expected)) == len(rows)  # the rows differ, so do their keys
    for name, body in formats.items():
        log = tmp_path / f"{name}.jsonl"
        write_log(log, [body])
        got = strategy.log_keys(str(log))
        assert got.keys == expected, name
        assert got.description == f"a hash of the {len(features.raw_feature_keys())} model inputs"
        assert got.version == "1700000000"
    # Any input changed: another key.
    changed = dict(instances[0])
    first = features.raw_feature_keys()[0]
    changed[first] = "other" if first in features.STRING_FEATURES else 123456.25
    assert strategy.row_key(changed, features.raw_feature_keys()) != expected[0]


def test_keyed_requests_use_their_key_and_failed_requests_count_not(rows, tmp_path):
    instances = [json_instance(r) for r in rows]
    log = tmp_path / "requests.jsonl"
    keyed = [{**i, KEY_INPUT: f"id-{n % 2}"} for n, i in enumerate(instances)]
    write_log(
        log,
        [
            (
                "predict",
                SERVING_KEYED_SIGNATURE,
                {"signature_name": "serving_keyed", "instances": keyed},
            ),
            ("predict", "serving_raw", {"instances": instances[:1]}),
        ],
    )
    write_log(log, [("predict", "serving_raw", {"instances": instances})], status=400)
    got = strategy.log_keys(str(log))
    assert got.keys == [f"id-{n % 2}" for n in range(len(rows))] + [
        strategy.row_key(instances[0], features.raw_feature_keys())
    ]
    assert got.description.startswith(f"the keyed signature's key ({len(rows)} rows)")
    # --key columns replace the keyed signature's key: one column's value is the key itself.
    column = features.raw_feature_keys()[0]
    got = strategy.log_keys(str(log), [column])
    assert got.keys == [str(strategy.normalized(i[column])) for i in instances + instances[:1]]


def test_span_rows_key_like_their_logged_requests(rows, tmp_path, monkeypatch):
    path = sorted((ROOT / "data").glob("span-*/*.csv"))[0]
    csv_rows = read_csv(path)[: len(rows)]
    write_csv(tmp_path / "data" / "span-7" / "data.csv", csv_rows)
    monkeypatch.setenv("PIPELINE_DATA_DIR", str(tmp_path / "data"))
    got = strategy.span_keys(PipelineSettings.load(), 7)
    instances = [json_instance(r) for r in rows]
    assert got.keys == [strategy.row_key(i, features.raw_feature_keys()) for i in instances]


# ---- the command -----------------------------------------------------------------------------


def invoke(*args: str):
    return CliRunner().invoke(app, ["serving-strategy", *args])


def test_command_on_a_peaked_log_prints_the_table_and_json(tmp_path, monkeypatch):
    """A Zipf workload of keyed requests in the server's log format."""
    monkeypatch.delenv("PIPELINE_SERVING_STRATEGY_HEAD_COVERAGE", raising=False)
    keys = zipf_keys(rows=5_000, seed=4)
    log = tmp_path / "requests.jsonl"
    write_log(
        log,
        [
            (
                "predict",
                SERVING_KEYED_SIGNATURE,
                {"signature_name": "serving_keyed", "instances": [{KEY_INPUT: k} for k in part]},
            )
            for part in np.array_split(np.array(keys, dtype=object), 100)
        ],
    )
    counter = Counter(keys)
    head = expected_head(counter, 0.8)
    result = invoke("--log", str(log))
    assert result.exit_code == 0, result.output
    assert f"{len(keys):,} rows from {log}; key: the keyed signature's key" in result.output
    assert f"{len(counter):,} distinct keys" in result.output
    assert f"top 10 keys{'':17}{top_share(counter, 10):.1%} of rows" in result.output
    assert (
        f"recommendation: hybrid: precompute the top {head:,} keys, the model answers the rest"
        in result.output
    )
    assert f"expected hit rate {top_share(counter, head):.1%}" in result.output

    result = invoke("--log", str(log), "--json", "--top-k", "3", "--top-k", "30")
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert figures["rows"] == len(keys) and figures["distinct_keys"] == len(counter)
    assert figures["top_k_share"] == {
        "3": pytest.approx(top_share(counter, 3)),
        "30": pytest.approx(top_share(counter, 30)),
    }
    assert figures["head_for_coverage"] == {
        f"{c:g}": expected_head(counter, c) for c in (0.8, 0.9, 0.95)
    }
    assert figures["top_keys"][0] == {
        "key": counter.most_common(1)[0][0],
        "rows": counter.most_common(1)[0][1],
    }
    assert figures["recommendation"]["strategy"] == "hybrid"
    assert figures["recommendation"]["table_rows"] == head


def test_command_errors_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINE_DATA_DIR", str(tmp_path / "data"))
    missing = invoke("--log", str(tmp_path / "none.jsonl"))
    assert missing.exit_code == 2 and "error: no request log at" in missing.output
    log = tmp_path / "requests.jsonl"
    write_log(log, [("predict", "serving_raw", {"instances": [{"a": 1}]})], status=400)
    empty = invoke("--log", str(log))
    assert empty.exit_code == 2 and "no successful request" in empty.output
    write_log(log, [("predict", "serving_raw", {"instances": [{"a": 1}]})])
    unknown = invoke("--log", str(log), "--key", "no_such_column")
    assert unknown.exit_code == 2
    assert "--key no_such_column: no row of the request log" in unknown.output
    assert "columns there: a" in unknown.output
    both = invoke("--log", str(log), "--span", "1")
    assert both.exit_code == 2 and "not both" in both.output
    nospan = invoke("--span", "99")
    assert nospan.exit_code == 2 and "no input files for span 99" in nospan.output
    bad_k = invoke("--log", str(log), "--top-k", "0")
    assert bad_k.exit_code == 2 and "--top-k" in bad_k.output
