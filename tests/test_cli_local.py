"""The TFX CLI's local flow: `tfx pipeline create`, then `tfx run create`, from the README."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.metadata import span_of
from tests.pipeline_run import ROOT, new_run, write_data_slice

# Runs the pipeline several times: the slow tier (`make test-fast` leaves it out).
pytestmark = pytest.mark.slow

TFX_CLI = str(Path(sys.executable).with_name("tfx"))


def _tfx(env, *args):
    return subprocess.run(
        [TFX_CLI, *args, "--engine", "local"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )


def test_pipeline_create_then_run_create(tmp_path):
    write_data_slice(tmp_path / "data", [1, 2], 300)
    run = new_run(tmp_path, PIPELINE_ENABLE_TUNING="0")
    # The CLI keeps its registry under $HOME/tfx: a temp HOME keeps it out of the user's.
    env = {**run.env, "HOME": str(tmp_path / "home")}
    name = run.settings.name

    created = _tfx(env, "pipeline", "create", "--pipeline_path", "local_runner.py")
    assert created.returncode == 0, created.stderr[-3000:]
    assert f'Pipeline "{name}" created successfully.' in created.stdout
    assert os.path.isdir(tmp_path / "home" / "tfx" / "local" / name)
    # Creating only records the pipeline: nothing is ingested or trained.
    assert not os.path.exists(run.settings.metadata_path)

    listed = _tfx(env, "pipeline", "list")
    assert name in listed.stdout

    ran = _tfx(env, "run", "create", "--pipeline_name", name)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert len(run.pushed_versions()) == 1
    assert [span_of(a) for a in run.outputs("CsvExampleGen", "Examples")] == [1, 2]
