"""A runner given a bad setting stops before any work and names the setting to change."""

import pytest

from tests.pipeline_run import run_env, run_local_runner, write_data_slice

# Runs a pipeline, a server, a Beam job or a subprocess: `make test-fast` leaves it out.
pytestmark = pytest.mark.integration


@pytest.fixture
def run_with(tmp_path):
    write_data_slice(tmp_path / "data", [1], 50)
    return lambda **env: run_local_runner(run_env(tmp_path, **env))


@pytest.mark.parametrize(
    "env, message",
    [
        (
            {"PIPELINE_DATA_DIR": "/nonexistent/taxi"},
            "PIPELINE_DATA_DIR='/nonexistent/taxi' is not a directory",
        ),
        (
            {"PIPELINE_SPAN_PATTERN": "day-{SPAN}/*.csv"},
            "has no files matching PIPELINE_SPAN_PATTERN='day-{SPAN}/*.csv'",
        ),
        (
            {"PIPELINE_NAME": "Taxi_Tips"},
            "PIPELINE_NAME='Taxi_Tips': use lowercase letters, digits and hyphens",
        ),
        ({"PIPELINE_TRAIN_STEPS": "lots"}, "PIPELINE_TRAIN_STEPS='lots': expected int"),
    ],
)
def test_bad_setting_fails_before_any_work(run_with, env, message, tmp_path):
    result = run_with(**env)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "outputs" / "metadata").exists()


def test_unwritable_output_dir_is_named(run_with, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run_with(PIPELINE_OUTPUT_DIR=str(blocker / "outputs"))
    assert result.returncode != 0
    assert f"PIPELINE_OUTPUT_DIR='{blocker / 'outputs'}' is not writable" in result.stderr
