"""StatisticsGen's executor computing small splits in memory writes the statistics TFX's Beam
executor writes on the same examples: same features, counts and values, floats equal up to
round-off, top-k lists equal up to the order of equal counts."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd
import pytest
from google.protobuf import json_format
from tensorflow_data_validation import StatsOptions
from tfx.components.example_gen.csv_example_gen import executor as csv_executor
from tfx.components.statistics_gen import executor as tfx_statistics_executor
from tfx.components.statistics_gen import stats_artifact_utils
from tfx.dsl.components.base import base_beam_executor
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_artifacts
from tfx.utils import proto_utils
from tfx_bsl.tfxio import tf_example_record

from pipeline import in_memory_statistics
from pipeline.beam_args import beam_runs_in_process
from pipeline.components import statistics_gen_executor
from pipeline.settings import PROJECT_ROOT
from tests import synthetic

pytestmark = pytest.mark.integration


def examples_of(csv: Path, out: Path) -> standard_artifacts.Examples:
    """The Examples CsvExampleGen writes from `csv`, split train/eval 2:1."""
    examples = standard_artifacts.Examples()
    examples.uri = str(out)
    splits = [
        example_gen_pb2.SplitConfig.Split(name="train", hash_buckets=2),
        example_gen_pb2.SplitConfig.Split(name="eval", hash_buckets=1),
    ]
    csv_executor.Executor().Do(
        {},
        {"examples": [examples]},
        {
            "input_base": str(csv.parent),
            "input_config": proto_utils.proto_to_json(
                example_gen_pb2.Input(
                    splits=[example_gen_pb2.Input.Split(name="all", pattern=csv.name)]
                )
            ),
            "output_config": proto_utils.proto_to_json(
                example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(splits=splits))
            ),
            "output_data_format": example_gen_pb2.FORMAT_TF_EXAMPLE,
            "output_file_format": example_gen_pb2.FORMAT_TFRECORDS_GZIP,
        },
    )
    examples.split_names = '["train", "eval"]'
    examples.span = 3
    return examples


def statistics_by(executor_class, examples, out: Path, beam_args=()):
    statistics = standard_artifacts.ExampleStatistics()
    statistics.uri = str(out)
    context = base_beam_executor.BaseBeamExecutor.Context(beam_pipeline_args=list(beam_args))
    executor_class(context).Do({"examples": [examples]}, {"statistics": [statistics]}, {})
    return statistics


def assert_same_statistics(ours, theirs, where: str = "") -> None:
    """Equal, up to float round-off and the order of equal counts in top-k lists (where a
    tie straddles the list's cut, which of the tied values made it in is arbitrary too)."""
    if isinstance(theirs, dict):
        assert ours.keys() == theirs.keys(), where
        for key in theirs:
            assert_same_statistics(ours[key], theirs[key], f"{where}.{key}")
    elif isinstance(theirs, list):
        assert len(ours) == len(theirs), where
        if (
            theirs
            and isinstance(theirs[0], dict)
            and ("frequency" in theirs[0] or "label" in theirs[0])
        ):
            count = "frequency" if "frequency" in theirs[0] else "sampleCount"
            value = "value" if "value" in theirs[0] else "label"
            assert [x[count] for x in ours] == [x[count] for x in theirs], where
            cut = min(x[count] for x in theirs)
            above = lambda items: sorted(x[value] for x in items if x[count] > cut)  # noqa: E731
            assert above(ours) == above(theirs), where
        else:
            for index, (a, b) in enumerate(zip(ours, theirs)):
                assert_same_statistics(a, b, f"{where}[{index}]")
    elif isinstance(theirs, float):
        assert math.isclose(ours, theirs, rel_tol=1e-9, abs_tol=1e-12), where
    else:
        assert ours == theirs, where


def split_statistics(artifact, split: str) -> dict:
    proto = stats_artifact_utils.load_statistics(artifact, split).proto()
    return json_format.MessageToDict(proto)


@pytest.fixture(scope="module")
def shipped_and_synthetic(tmp_path_factory):
    """Examples of a slice of the shipped span 1 and of synthetic deliveries (strings with NA
    tokens, ints, floats, another label)."""
    root = tmp_path_factory.mktemp("examples")
    shipped = root / "shipped" / "data.csv"
    shipped.parent.mkdir()
    pd.read_csv(PROJECT_ROOT / "data" / "span-1" / "data.csv", nrows=1200, dtype=str).to_csv(
        shipped, index=False
    )
    deliveries = synthetic.write_csv(synthetic.deliveries(rows=900), root / "other" / "data.csv")
    return {
        "shipped": examples_of(shipped, root / "shipped-examples"),
        "deliveries": examples_of(deliveries, root / "deliveries-examples"),
    }


@pytest.mark.parametrize("data", ["shipped", "deliveries"])
def test_in_memory_statistics_equal_tfx_beam_statistics(shipped_and_synthetic, tmp_path, data):
    examples = shipped_and_synthetic[data]
    assert statistics_gen_executor.Executor().in_memory(
        examples, ["train", "eval"], StatsOptions(), {}
    )
    theirs = statistics_by(tfx_statistics_executor.Executor, examples, tmp_path / "theirs")
    ours = statistics_by(statistics_gen_executor.Executor, examples, tmp_path / "ours")
    for split in ("train", "eval"):
        expected = split_statistics(theirs, split)
        assert int(expected["datasets"][0]["numExamples"]) > 200
        assert_same_statistics(split_statistics(ours, split), expected, f"{data}/{split}")
    assert ours.split_names == theirs.split_names == '["train", "eval"]'
    assert ours.span == theirs.span == 3
    assert ours.mlmd_artifact.custom_properties == theirs.mlmd_artifact.custom_properties


@pytest.mark.parametrize("data", ["shipped", "deliveries"])
def test_records_decoded_on_threads_in_many_batches_give_tfxios_statistics(
    shipped_and_synthetic, monkeypatch, data
):
    """compute_examples (files read in turn, batches decoded on threads) against compute over
    TFX's own reader of the same files, in batches of 64 rows: the threads' batches must be
    joined back in order (top-k ties and quantiles depend on it)."""
    pattern = os.path.join(
        artifact_utils.get_split_uri([shipped_and_synthetic[data]], "train"), "*"
    )
    expected = json_format.MessageToDict(
        in_memory_statistics.compute(tf_example_record.TFExampleRecord(pattern))
    )
    monkeypatch.setattr(in_memory_statistics, "_BATCH_ROWS", 64)
    batched = json_format.MessageToDict(in_memory_statistics.compute_examples([pattern]))
    assert int(batched["datasets"][0]["numExamples"]) > 400
    assert_same_statistics(batched, expected, f"{data}/train in batches of 64")


def test_the_in_memory_path_is_taken_only_where_beam_would_run_in_this_process(
    shipped_and_synthetic,
):
    assert beam_runs_in_process([])
    assert beam_runs_in_process(["--direct_num_workers=1"])
    assert not beam_runs_in_process(
        ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    )
    assert not beam_runs_in_process(["--runner=DataflowRunner"])
    pattern = str(Path(shipped_and_synthetic["shipped"].uri) / "Split-train" / "*")
    size = in_memory_statistics.files_bytes(pattern)
    assert 0 < size < in_memory_statistics.IN_MEMORY_MAX_BYTES
    assert in_memory_statistics.fits_in_memory(pattern)
    assert not in_memory_statistics.fits_in_memory(pattern, ["--runner=FlinkRunner"])


def test_direct_runner_worker_flags_are_dropped_and_other_runners_keep_tfx_executor(
    shipped_and_synthetic, tmp_path
):
    examples = shipped_and_synthetic["deliveries"]

    def executor(args: list[str]) -> statistics_gen_executor.Executor:
        context = base_beam_executor.BaseBeamExecutor.Context(beam_pipeline_args=args)
        return statistics_gen_executor.Executor(context)

    # The DirectRunner's worker flags (set by the pipeline for Transform and the Evaluator
    # on large data) do not reach StatisticsGen: in memory, and no sdist built for workers.
    multi = executor(["--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    assert multi._beam_pipeline_args == []
    assert multi.in_memory(examples, ["train", "eval"], StatsOptions(), {})
    # Another runner keeps TFX's Beam path (given --setup_file, TFX builds no sdist).
    flink = executor(["--runner=FlinkRunner", "--setup_file=setup.py"])
    assert not flink.in_memory(examples, ["train", "eval"], StatsOptions(), {})
    # Sampling needs TFX's Beam path even in-process.
    assert not statistics_gen_executor.Executor().in_memory(
        examples, ["train"], StatsOptions(sample_rate=0.5), {}
    )
    args = ["--direct_running_mode=multi_threading", "--direct_num_workers=2"]
    with_flags = statistics_by(statistics_gen_executor.Executor, examples, tmp_path / "a", args)
    without = statistics_by(statistics_gen_executor.Executor, examples, tmp_path / "b")
    train = split_statistics(with_flags, "train")
    assert int(train["datasets"][0]["numExamples"]) > 400
    assert train == split_statistics(without, "train")
