"""FastCsvExecutor writes the Examples CsvExampleGen's own executor writes: the same records
(compared in canonical form: TFX's executor serializes map entries in a varying hash order),
in the same splits, on the shipped data and on CSV files with the awkward cases."""

import glob
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from ml_metadata.metadata_store import metadata_store
from tfx import v1 as tfx
from tfx.components.example_gen import base_example_gen_executor
from tfx.components.example_gen.csv_example_gen import executor as tfx_csv_executor
from tfx.dsl.components.base.base_beam_executor import BaseBeamExecutor
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts, standard_component_specs
from tfx.utils import proto_utils

from pipeline.components.fast_csv_example_gen import (
    FastCsvExecutor,
    partition,
    with_fast_executor,
)

# Every test runs TFX's executor (Beam) beside the fast one.
pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
SPLITS = ("train", "eval")


def _output_config() -> example_gen_pb2.Output:
    return example_gen_pb2.Output(
        split_config=example_gen_pb2.SplitConfig(
            splits=[
                example_gen_pb2.SplitConfig.Split(name="train", hash_buckets=3),
                example_gen_pb2.SplitConfig.Split(name="eval", hash_buckets=1),
            ]
        )
    )


def _records(examples_uri: str, splits=SPLITS) -> dict[str, list[bytes]]:
    """The serialized records of each split, as written."""
    result = {}
    for split in splits:
        files = sorted(glob.glob(os.path.join(examples_uri, f"Split-{split}", "*.gz")))
        dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
        result[split] = [record.numpy() for record in dataset]
    return result


def _canonical(records: list[bytes]) -> list[bytes]:
    return sorted(
        tf.train.Example.FromString(r).SerializeToString(deterministic=True) for r in records
    )


class _BeamFastCsvExecutor(FastCsvExecutor):
    """FastCsvExecutor kept on its Beam path (Beam would run in-process here)."""

    def _needs_beam(self, *args) -> str:
        return "the test asks for Beam"


# The executors compared: TFX's, the fast one through Beam, the fast one without Beam (what
# it does where Beam would run in this process, as in these tests).
EXECUTORS = {
    "tfx": tfx_csv_executor.Executor,
    "fast-beam": _BeamFastCsvExecutor,
    "fast": FastCsvExecutor,
}


def _exec_properties(
    input_base: Path, input_config: example_gen_pb2.Input, output_config: example_gen_pb2.Output
) -> dict:
    return {
        standard_component_specs.INPUT_BASE_KEY: str(input_base),
        standard_component_specs.INPUT_CONFIG_KEY: proto_utils.proto_to_json(input_config),
        standard_component_specs.OUTPUT_CONFIG_KEY: proto_utils.proto_to_json(output_config),
        standard_component_specs.OUTPUT_DATA_FORMAT_KEY: example_gen_pb2.FORMAT_TF_EXAMPLE,
    }


def _execute(executor, exec_properties: dict, out: Path) -> standard_artifacts.Examples:
    examples = standard_artifacts.Examples()
    examples.uri = str(out)
    executor.Do({}, {standard_component_specs.EXAMPLES_KEY: [examples]}, exec_properties)
    return examples


def _files(uri: str) -> list[str]:
    return sorted(str(p.relative_to(uri)) for p in Path(uri).rglob("*"))


def _run_all(input_base: Path, pattern: str, out: Path) -> dict[str, dict]:
    """Every executor's records on the same input (one input split, train/eval 3:1); the
    written files and the artifact's properties are the same for all of them."""
    exec_properties = _exec_properties(
        input_base,
        example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(name="s", pattern=pattern)]),
        _output_config(),
    )
    results, artifacts = {}, {}
    for name, executor_class in EXECUTORS.items():
        artifacts[name] = _execute(executor_class(), dict(exec_properties), out / name)
        assert artifacts[name].split_names == '["train", "eval"]'
        results[name] = _records(str(out / name))
    for name in EXECUTORS:
        assert _files(artifacts[name].uri) == _files(artifacts["tfx"].uri), name
        assert artifacts[name].mlmd_artifact.properties == (
            artifacts["tfx"].mlmd_artifact.properties
        ), name
        assert artifacts[name].mlmd_artifact.custom_properties == (
            artifacts["tfx"].mlmd_artifact.custom_properties
        ), name
    return results


def _run(executor_class: type, input_base: Path, pattern: str, out: Path) -> dict:
    exec_properties = _exec_properties(
        input_base,
        example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(name="s", pattern=pattern)]),
        _output_config(),
    )
    examples = _execute(executor_class(), exec_properties, out)
    assert examples.split_names == '["train", "eval"]'
    return _records(str(out))


def _assert_same_examples(reference: dict, fast: dict) -> None:
    for split in reference:
        assert len(fast[split]) == len(reference[split]), split
        # The fast executor writes the canonical serialization itself...
        assert sorted(fast[split]) == _canonical(fast[split]), split
        # ...of the very Examples TFX's executor writes, split by split.
        assert sorted(fast[split]) == _canonical(reference[split]), split
    assert sum(len(r) for r in fast.values()) > 0


def _assert_all_same(results: dict[str, dict]) -> None:
    for name in EXECUTORS:
        if name != "tfx":
            _assert_same_examples(results["tfx"], results[name])


def _feature_kinds(records: list[bytes]) -> dict[str, set]:
    kinds: dict[str, set] = {}
    for record in records:
        for name, feature in tf.train.Example.FromString(record).features.feature.items():
            kinds.setdefault(name, set()).add(feature.WhichOneof("kind"))
    return kinds


def test_shipped_data_slice_through_the_component(tmp_path):
    """CsvExampleGen with the fast executor, run by TFX's LocalDagRunner beside the stock
    CsvExampleGen on 300 rows of the shipped span 1: same records, splits and span."""
    lines = (REPO / "data" / "span-1" / "data.csv").read_text().splitlines(keepends=True)
    span_dir = tmp_path / "data" / "span-1"
    span_dir.mkdir(parents=True)
    (span_dir / "data.csv").write_text("".join(lines[:301]))

    def example_gen(node_id: str) -> tfx.components.CsvExampleGen:
        return tfx.components.CsvExampleGen(
            input_base=str(tmp_path / "data"),
            input_config=tfx.proto.Input(
                splits=[tfx.proto.Input.Split(name="single_split", pattern="span-{SPAN}/*.csv")]
            ),
            output_config=_output_config(),
        ).with_id(node_id)

    fast = with_fast_executor(example_gen("Fast"))
    assert fast.executor_spec.executor_class is FastCsvExecutor
    assert type(fast) is tfx.components.CsvExampleGen
    nodes = [example_gen("Reference"), fast]
    connection = tfx.orchestration.metadata.sqlite_metadata_connection_config(
        str(tmp_path / "m.db")
    )
    tfx.orchestration.LocalDagRunner().run(
        tfx.dsl.Pipeline(
            pipeline_name="fast-csv",
            pipeline_root=str(tmp_path / "root"),
            components=nodes,
            metadata_connection_config=connection,
        )
    )
    artifacts = metadata_store.MetadataStore(connection).get_artifacts_by_type("Examples")
    by_node = {Path(a.uri).parts[-3]: a for a in artifacts}
    reference, fast = by_node["Reference"], by_node["Fast"]
    for key in ("span", "version", "input_fingerprint", "payload_format"):
        assert fast.custom_properties[key] == reference.custom_properties[key], key
    assert fast.custom_properties["span"].int_value == 1
    _assert_same_examples(_records(reference.uri), _records(fast.uri))
    assert sum(len(r) for r in _records(fast.uri).values()) == 300


# Columns: each named for what it holds. Rows of file a.csv (no quotes: Arrow's reader).
HEADER = "int,int_odd,zero_float,float_odd,numeric_then_text,big_int,empty,spaces,utf8,neg\n"
ROWS_A = [
    "0,007,0,nan,12,1,,a ,ünïcødé,-1",
    "-5, 12,0.0,inf,3.5,9223372036854775807,, b,日本,-2.5",
    ",+3,,-0,,,,  ,,-0",
    "9223372036854775807,1_000,1e5,1e39,7,-9223372036854775808,, ,٣,-.5",
    "-9223372036854775808,1234567890123456789,-.5,3.4028235e38,x,99999999999999999999,,c,e\u0301,-3",
    "",
    "42,-0,1.,1.5e-45,,2,,d,\U0001f600,-7e-3",
    "1,2,.5, 2.5 ,1e2,3,,e,Zoë,-42",
]
# File b.csv: quoted fields (commas, newlines, doubled quotes, CRLF inside quotes, a quoted
# number), read line by line as TFX does.
ROWS_B = [
    '5,6,0.25,1_0.5,"12",4,,"a, b","line1\nline2",-9',
    '7,8,-1E-5,Infinity,"say ""hi""",5,,"",x,"-1"',
    '"9",10,3.14159265358979,-nan,0,6,,"c\r\nd",y,-11',
]


def _tricky_span(input_base: Path) -> Path:
    span = input_base / "span-1"
    span.mkdir(parents=True)
    (span / "a.csv").write_text(HEADER + "\n".join(ROWS_A) + "\n", encoding="utf-8")
    (span / "b.csv").write_bytes((HEADER + "\r\n".join(ROWS_B)).encode("utf-8"))  # no final EOL
    (span / "c.csv").write_text(HEADER, encoding="utf-8")  # header only
    return span


def test_tricky_cases_in_three_files_of_one_span(tmp_path):
    _tricky_span(tmp_path / "in")
    results = _run_all(tmp_path / "in", "span-1/*", tmp_path / "out")
    _assert_all_same(results)
    fast = results["fast"]
    assert sum(len(r) for r in fast.values()) == len(ROWS_A) - 1 + len(ROWS_B)
    # The cases the data is meant to exercise: every type, and the all-empty column.
    kinds = _feature_kinds(fast["train"] + fast["eval"])
    assert kinds["int"] == {"int64_list"} and kinds["int_odd"] == {"int64_list"}
    assert kinds["zero_float"] == kinds["float_odd"] == kinds["neg"] == {"float_list"}
    assert kinds["numeric_then_text"] == kinds["big_int"] == kinds["spaces"] == {"bytes_list"}
    assert kinds["empty"] == {None}


def test_the_shipped_columns_read_by_arrow(tmp_path):
    """Both shipped spans 1 and 2 (a few hundred rows each) as two files of one span."""
    span = tmp_path / "in" / "span-1"
    span.mkdir(parents=True)
    for n in (1, 2):
        lines = (REPO / "data" / f"span-{n}" / "data.csv").read_text().splitlines(keepends=True)
        (span / f"part-{n}.csv").write_text("".join(lines[:251]))
    results = _run_all(tmp_path / "in", "span-1/*", tmp_path / "out")
    _assert_all_same(results)
    assert sum(len(r) for r in results["fast"].values()) == 500


def test_input_splits_and_an_empty_split(tmp_path):
    """No output split config: each input split is an output split; one of them has a header
    and no rows (Beam still writes its one, empty, shard)."""
    span = tmp_path / "in" / "span-1"
    span.mkdir(parents=True)
    (span / "train.csv").write_text(HEADER + "\n".join(ROWS_A) + "\n", encoding="utf-8")
    (span / "eval.csv").write_text(HEADER, encoding="utf-8")
    exec_properties = _exec_properties(
        tmp_path / "in",
        example_gen_pb2.Input(
            splits=[
                example_gen_pb2.Input.Split(name="train", pattern="span-1/train.csv"),
                example_gen_pb2.Input.Split(name="eval", pattern="span-1/eval.csv"),
            ]
        ),
        example_gen_pb2.Output(),
    )
    results, artifacts = {}, {}
    for name, executor_class in EXECUTORS.items():
        artifacts[name] = _execute(executor_class(), dict(exec_properties), tmp_path / name)
        results[name] = _records(artifacts[name].uri)
    for name in EXECUTORS:
        assert _files(artifacts[name].uri) == _files(artifacts["tfx"].uri), name
        assert artifacts[name].mlmd_artifact.properties == (
            artifacts["tfx"].mlmd_artifact.properties
        )
        assert artifacts[name].mlmd_artifact.custom_properties == (
            artifacts["tfx"].mlmd_artifact.custom_properties
        )
    assert len(results["fast"]["train"]) == len(ROWS_A) - 1 and results["fast"]["eval"] == []
    for name in ("fast", "fast-beam"):
        assert sorted(results[name]["train"]) == _canonical(results["tfx"]["train"]), name


def test_one_row_leaves_a_split_empty(tmp_path):
    span = tmp_path / "in" / "span-1"
    span.mkdir(parents=True)
    (span / "data.csv").write_text("a,b\n1,x\n")
    results = _run_all(tmp_path / "in", "span-1/*", tmp_path / "out")
    assert sorted(len(r) for r in results["fast"].values()) == [0, 1]
    for name in EXECUTORS:
        assert {k: _canonical(v) for k, v in results[name].items()} == results["fast"], name


def test_partition_feature_name_goes_through_beam(tmp_path, caplog):
    """Splitting by a feature takes the Beam path, and splits as TFX's executor does."""
    span = tmp_path / "in" / "span-1"
    span.mkdir(parents=True)
    (span / "data.csv").write_text("a,b\n" + "".join(f"{i % 7},{i}\n" for i in range(60)))
    output_config = _output_config()
    output_config.split_config.partition_feature_name = "a"
    exec_properties = _exec_properties(
        tmp_path / "in",
        example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(name="s", pattern="span-1/*")]),
        output_config,
    )
    with caplog.at_level(logging.INFO, logger="absl"):
        fast = _execute(FastCsvExecutor(), dict(exec_properties), tmp_path / "fast")
    assert "writing the splits with Beam: splitting by partition_feature_name" in caplog.text
    reference = _execute(tfx_csv_executor.Executor(), dict(exec_properties), tmp_path / "tfx")
    assert fast.mlmd_artifact.custom_properties == reference.mlmd_artifact.custom_properties
    # The Examples are parsed for the base executor to read the feature, and written by its
    # SerializeToString (hash order): equal once canonical.
    fast_records, reference_records = _records(fast.uri), _records(reference.uri)
    for split in SPLITS:
        assert _canonical(fast_records[split]) == _canonical(reference_records[split]), split
    assert sum(len(r) for r in fast_records.values()) == 60


@pytest.mark.parametrize(
    "buckets", [[3, 4], [1, 2, 3], [10, 50, 80], [7], [2**45, 2**50 + 3]], ids=str
)
def test_partition_is_the_base_executors(buckets):
    """The split of each record, vectorised, against the base executor's own _PartitionFn
    (the last case takes the exact Python branch)."""
    rng = np.random.default_rng(len(buckets))
    records = [rng.bytes(int(n)) for n in rng.integers(0, 300, 2000)]
    config = example_gen_pb2.SplitConfig()
    expected = [
        base_example_gen_executor._PartitionFn(r, len(buckets), buckets, config) for r in records
    ]
    assert partition(records, buckets).tolist() == expected
    assert partition([], buckets).tolist() == []


def test_beam_arguments_choose_the_path(tmp_path, caplog):
    """Beam's DirectRunner, with or without worker flags: no Beam. Another runner: the Beam
    path. The records are the same either way."""
    (tmp_path / "in" / "span-1").mkdir(parents=True)
    (tmp_path / "in" / "span-1" / "data.csv").write_text("a,b\n1,x\n2,y\n3,\n")
    exec_properties = _exec_properties(
        tmp_path / "in",
        example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(name="s", pattern="span-1/*")]),
        _output_config(),
    )

    def executor(args: list[str]) -> FastCsvExecutor:
        return FastCsvExecutor(BaseBeamExecutor.Context(beam_pipeline_args=args))

    input_config = example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(pattern="x")])
    # On the DirectRunner, in any mode: the worker flags the pipeline sets for Transform and
    # the Evaluator are dropped here, and so TFX builds no sdist of itself for this executor.
    for args in (
        [],
        ["--direct_num_workers=1"],
        ["--runner=DirectRunner"],
        ["--direct_running_mode=multi_processing", "--direct_num_workers=2"],
        ["--direct_running_mode", "multi_threading", "--direct_num_workers", "0"],
    ):
        chosen = executor(args)
        assert chosen._needs_beam(input_config, _output_config(), exec_properties) is None
        assert not any("direct_" in arg for arg in chosen._beam_pipeline_args)
    assert executor(["--direct_running_mode=multi_processing"])._beam_pipeline_args == []
    for args in (["--runner=DataflowRunner"], ["--runner=FlinkRunner"]):
        assert executor(args)._needs_beam(input_config, _output_config(), exec_properties)
    by_feature = example_gen_pb2.Output(
        split_config=example_gen_pb2.SplitConfig(
            splits=_output_config().split_config.splits, partition_feature_name="a"
        )
    )
    assert executor([])._needs_beam(input_config, by_feature, exec_properties)

    records = {}
    with caplog.at_level(logging.INFO, logger="absl"):
        for name, args in {
            "direct": [],
            "multi-processing": ["--direct_running_mode=multi_processing"],
            "beam": [],  # kept on its Beam path (_BeamFastCsvExecutor)
        }.items():
            caplog.clear()
            chosen = (
                _BeamFastCsvExecutor(BaseBeamExecutor.Context(beam_pipeline_args=args))
                if name == "beam"
                else executor(args)
            )
            examples = _execute(chosen, dict(exec_properties), tmp_path / name)
            records[name] = {k: sorted(v) for k, v in _records(examples.uri).items()}
            beam = "writing the splits with Beam" in caplog.text
            assert beam == (name == "beam"), caplog.text
            assert ("without Beam" in caplog.text) != beam
    assert records["direct"] == records["multi-processing"] == records["beam"]
    assert sum(len(r) for r in records["direct"].values()) == 3


@pytest.mark.parametrize(
    "rows",
    [
        ["1,2,3", "4,5"],  # too few fields, no quotes (Arrow's reader)
        ['1,"a",3', '4,5,6,"7"'],  # too many, with quotes (the line-by-line reader)
        # A quoted field the record never closes: TFX's executor loops forever on it.
        ['1,"a",3', 'x"y,"z,1'],
    ],
    ids=["ragged-arrow", "ragged-line-by-line", "never-closed-quote"],
)
@pytest.mark.parametrize("executor_class", [FastCsvExecutor, _BeamFastCsvExecutor])
def test_a_bad_row_fails_naming_the_file(tmp_path, rows, executor_class):
    span = tmp_path / "in" / "span-1"
    span.mkdir(parents=True)
    (span / "good.csv").write_text("a,b,c\n7,8,9\n")
    (span / "bad.csv").write_text("a,b,c\n" + "\n".join(rows) + "\n")
    with pytest.raises(Exception, match="bad.csv"):
        _run(executor_class, tmp_path / "in", "span-1/*", tmp_path / "fast")
    # Nothing that looks like a complete split is left behind.
    assert not list((tmp_path / "fast").rglob("*.gz*"))
