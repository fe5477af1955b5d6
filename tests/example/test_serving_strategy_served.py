"""The serving-strategy command on request logs written by the real server: rows sent in every
format (JSON rows, columnar, b64 tf.Examples) key alike, so the figures equal those counted here;
a peaked keyed workload gets hybrid with a head, and a hybrid server holding exactly that head
in its table, replayed the same workload, measures the hit rate the command predicted."""

from __future__ import annotations

import base64
import json
import os
import random
from collections import Counter
from pathlib import Path

import pytest
import tensorflow_data_validation as tfdv
from typer.testing import CliRunner

from analysis import serving_strategy as strategy
from analysis import skew
from cli.main import app
from models import features
from pipeline.settings import PipelineSettings
from serving import process, warehouse
from serving.batch_predict import json_instance, raw_values
from tests.pipeline_run import read_csv

pytestmark = pytest.mark.integration

ROWS = 40
HEAVY = 5  # rows 0..4 come 30 times each (10 per format), the other 35 once


def head_for(counter: Counter, coverage: float) -> int:
    total, covered = sum(counter.values()), 0
    for size, (_, count) in enumerate(counter.most_common(), start=1):
        covered += count
        if covered >= coverage * total:
            return size
    raise AssertionError("unreachable")


def keyed_workload() -> list[str]:
    """A peaked workload of keys: a few keys often, a long tail once, shuffled."""
    keys = [f"k{n}" for n, count in enumerate([120, 60, 30, 20, 15]) for _ in range(count)]
    keys += [f"tail{n}" for n in range(60)]
    random.Random(0).shuffle(keys)
    return keys


def strategy_json(log: Path) -> dict:
    result = CliRunner().invoke(app, ["serving-strategy", "--log", str(log), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.fixture(scope="module")
def setup(finished_run, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("strategy")
    csv_rows = read_csv(Path(finished_run.settings.data.data_dir) / "span-2" / "data.csv")
    rows = [raw_values(r, f"row {i}") for i, r in enumerate(csv_rows[:ROWS])]
    env = {
        **finished_run.env,
        "PIPELINE_SERVING_LOG_SAMPLING_RATE": "1",
        "PIPELINE_SERVING_LOG_PATH": str(tmp / "requests.jsonl"),
    }
    return {"tmp": tmp, "rows": rows, "env": env}


def send_keyed(url: str, keys: list[str], row: dict) -> list[dict]:
    instances = [{**json_instance(row), "key": k} for k in keys]
    predictions = []
    for start in range(0, len(instances), 20):
        status, body, _ = process.call(
            f"{url}/v1/models/taxi-tips:predict",
            {"signature_name": "serving_keyed", "instances": instances[start : start + 20]},
        )
        assert status == 200, body
        predictions += body["predictions"]
    return predictions


def test_logs_of_the_real_server_give_the_expected_figures_and_hit_rate(setup, monkeypatch):
    for key in list(os.environ):
        if key.startswith("PIPELINE_SERVING_STRATEGY_"):
            monkeypatch.delenv(key)
    rows, tmp, env = setup["rows"], setup["tmp"], setup["env"]
    schema = tfdv.load_schema_text(PipelineSettings.load({}).data.schema_path)
    log = tmp / "requests.jsonl"
    with process.running_server(env, str(tmp / "server.log")) as url:
        predict = f"{url}/v1/models/taxi-tips:predict"
        for row in rows[:HEAVY]:
            instance = json_instance(row)
            b64 = base64.b64encode(skew.to_example(row, schema).SerializeToString()).decode()
            for body in (
                {"signature_name": "serving_raw", "instances": [instance] * 10},
                {
                    "signature_name": "serving_raw",
                    "inputs": {k: [v] * 10 for k, v in instance.items()},
                },
                {"instances": [{"b64": b64}] * 10},
            ):
                status, answer, _ = process.call(predict, body)
                assert status == 200, answer
        status, answer, _ = process.call(
            predict,
            {
                "signature_name": "serving_raw",
                "instances": [json_instance(r) for r in rows[HEAVY:]],
            },
        )
        assert status == 200, answer
        status, _, _ = process.call(predict, {"instances": [{"no_such_input": 1}]})
        assert status == 400  # logged, but no part of the workload
        unkeyed_lines = len(log.read_text().splitlines())

        keys = keyed_workload()
        send_keyed(url, keys, rows[0])

    # 1. Unkeyed rows in three formats: one key per row, counted here by row number.
    lines = log.read_text().splitlines()
    unkeyed = tmp / "unkeyed.jsonl"
    unkeyed.write_text("\n".join(lines[:unkeyed_lines]) + "\n")
    counter = Counter([n for n in range(HEAVY) for _ in range(30)] + list(range(HEAVY, ROWS)))
    figures = strategy_json(unkeyed)
    assert figures["key"] == f"a hash of the {len(features.raw_feature_keys())} model inputs"
    assert (figures["rows"], figures["distinct_keys"]) == (185, ROWS)
    assert figures["keys_seen_once"] == ROWS - HEAVY
    assert figures["top_k_share"]["1"] == pytest.approx(30 / 185)
    assert figures["top_k_share"]["10"] == pytest.approx((5 * 30 + 5) / 185)
    assert figures["head_for_coverage"]["0.8"] == head_for(counter, 0.8) == HEAVY
    assert [t["rows"] for t in figures["top_keys"][:HEAVY]] == [30] * HEAVY
    assert {t["key"] for t in figures["top_keys"][:HEAVY]} == {
        strategy.row_key(json_instance(r), features.raw_feature_keys()) for r in rows[:HEAVY]
    }
    # 40 keys but 19% of rows seen once: not static; 5 of 40 keys answer 81%: hybrid.
    assert figures["recommendation"]["strategy"] == "hybrid"
    assert figures["recommendation"]["hit_rate"] == pytest.approx(150 / 185)

    # 2. A keyed workload (5 keys answer 80%, 60 keys once): hybrid with those 5 keys...
    keyed = tmp / "keyed.jsonl"
    keyed.write_text("\n".join(lines[unkeyed_lines:]) + "\n")
    figures = strategy_json(keyed)
    counter = Counter(keys)
    head = head_for(counter, 0.8)
    assert head == 5
    assert figures["key"] == "the keyed signature's key"
    assert (figures["rows"], figures["distinct_keys"]) == (len(keys), len(counter))
    advice = figures["recommendation"]
    assert (advice["strategy"], advice["table_rows"]) == ("hybrid", head)
    expected_hit_rate = sum(c for _, c in counter.most_common(head)) / len(keys)
    assert advice["hit_rate"] == pytest.approx(expected_hit_rate)

    # ...and a hybrid server whose table holds that head answers that share from the table.
    db = str(tmp / "head.db")
    table = "predictions"
    with warehouse.connect(db) as connection:
        warehouse.create_table(connection, table)
        warehouse.insert(
            connection, table, [(t["key"], 0.5, "1", 2) for t in figures["top_keys"][:head]]
        )
    hybrid_env = {
        **env,
        "PIPELINE_SERVING_HYBRID": "1",
        "PIPELINE_BATCH_PREDICT_SQLITE_PATH": db,
        "PIPELINE_BATCH_PREDICT_TABLE": table,
        "PIPELINE_SERVING_LOG_SAMPLING_RATE": "0",
    }
    with process.running_server(hybrid_env, str(tmp / "hybrid.log")) as url:
        predictions = send_keyed(url, keys, rows[0])
        status, stats, _ = process.call(f"{url}/monitoring/hybrid")
    assert status == 200, stats
    assert stats["keys_in_table"] == head
    assert stats["hit_rate"] == pytest.approx(advice["hit_rate"])
    assert sum(p["source"] == "table" for p in predictions) / len(keys) == pytest.approx(
        expected_hit_rate
    )
