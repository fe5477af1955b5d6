"""`make schema`: a starting schema from a real SchemaGen run, with environments."""

import subprocess
import sys

import pytest
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx import v1 as tfx
from tfx.orchestration import pipeline as pipeline_lib

from pipeline.pipeline import create_pipeline
from tests.pipeline_run import ROOT, new_run, write_data_slice

# Runs a pipeline, a server, a Beam job or a subprocess: `make test-fast` leaves it out.
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def inferred_run(tmp_path_factory):
    """ExampleGen -> StatisticsGen -> SchemaGen only (a partial run), on one small span."""
    tmp_path = tmp_path_factory.mktemp("infer")
    write_data_slice(tmp_path / "data", [2], 300)
    run = new_run(tmp_path, PIPELINE_INFER_SCHEMA="1")
    tfx.orchestration.LocalDagRunner().run(
        create_pipeline(
            run.settings,
            metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
                run.settings.metadata_path
            ),
        ),
        run_options=pipeline_lib.RunOptions(to_nodes=["SchemaGen"]),
    )
    return run


def _export(run, *args):
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "schema", *args],
        cwd=ROOT,
        env=run.env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_exported_schema_has_the_data_types_and_serving_environment(inferred_run, tmp_path):
    out = tmp_path / "schema.pbtxt"
    result = _export(inferred_run, "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    schema = tfdv.load_schema_text(str(out))
    types = {f.name: f.type for f in schema.feature}
    assert types["fare"] == schema_pb2.FLOAT and types["trip_start_hour"] == schema_pb2.INT
    assert types["payment_type"] == schema_pb2.BYTES
    assert list(schema.default_environment) == ["TRAINING", "SERVING"]
    assert list(tfdv.get_feature(schema, "tips").not_in_environment) == ["SERVING"]
    assert not tfdv.get_feature(schema, "fare").not_in_environment


def test_an_existing_schema_is_kept_unless_forced(inferred_run, tmp_path):
    out = tmp_path / "schema.pbtxt"
    out.write_text("# curated\n")
    refused = _export(inferred_run, "--out", str(out))
    assert refused.returncode != 0 and "pass --force" in refused.stderr
    assert out.read_text() == "# curated\n"
    forced = _export(inferred_run, "--out", str(out), "--force")
    assert forced.returncode == 0 and 'name: "fare"' in out.read_text()


def test_without_a_schemagen_run_it_says_what_to_run(tmp_path):
    result = _export(new_run(tmp_path), "--out", str(tmp_path / "schema.pbtxt"))
    assert result.returncode != 0 and "PIPELINE_INFER_SCHEMA=1 make run" in result.stderr
