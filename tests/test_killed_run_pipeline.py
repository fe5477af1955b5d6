"""A real local run killed with kill -9 while its Trainer runs, then a second run: the killed
run's Trainer execution, left RUNNING in MLMD, is marked FAILED when the second run starts, its
orphaned output folders are removed, the console line names it, and the second run completes
(its Trainer and Pusher COMPLETE)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import ml_metadata as mlmd
import pytest

from pipeline import metadata
from pipeline.names import PUSHER_ID
from tests.pipeline_run import ROOT, new_run, write_data_slice

pytestmark = pytest.mark.integration

TRAINER_ID = "Trainer"
# How long the first run may take to reach its Trainer before the test gives up (a guard
# against a hang, not an assertion on time).
REACH_TRAINER_SECONDS = 1800


def _trainer_started(pipeline_root: str) -> int | None:
    """The id of the Trainer execution whose output folder exists (TFX makes it right after
    registering the execution as RUNNING, before the executor starts); found on disk, so the
    run's SQLite store is not read while the run writes it."""
    folder = Path(pipeline_root, TRAINER_ID, "model")
    ids = [int(p.name) for p in folder.iterdir() if p.name.isdigit()] if folder.is_dir() else []
    return max(ids) if ids else None


def test_a_run_killed_with_kill_9_is_cleaned_up_by_the_next(tmp_path):
    write_data_slice(tmp_path / "data", [1, 2], 400)
    # A Trainer that would train for hours: the run is surely killed in it.
    killed = new_run(tmp_path, PIPELINE_ENABLE_TUNING="0", PIPELINE_TRAIN_STEPS="100000000")
    root = killed.settings.pipeline_root
    with open(tmp_path / "killed-run.out", "w") as out:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "local_runner.py")],
            env=killed.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the kill reaches every child
        )
        try:
            deadline = time.monotonic() + REACH_TRAINER_SECONDS
            while (execution_id := _trainer_started(root)) is None:
                if process.poll() is not None:
                    pytest.fail(
                        "the first run ended before its Trainer started:\n"
                        + (tmp_path / "killed-run.out").read_text()[-5000:]
                    )
                if time.monotonic() > deadline:
                    pytest.fail("the first run did not reach its Trainer")
                time.sleep(1)
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == -signal.SIGKILL

    [trainer] = [e for e in killed.executions(TRAINER_ID) if e.id == execution_id]
    assert trainer.last_known_state == mlmd.proto.Execution.RUNNING
    assert [e.id for e in _unfinished(killed.settings)] == [execution_id]
    orphans = [
        Path(root, TRAINER_ID, "model", str(execution_id)),
        Path(root, TRAINER_ID, "model_run", str(execution_id)),
        Path(root, TRAINER_ID, ".system", "executor_execution", str(execution_id)),
    ]
    assert all(folder.is_dir() for folder in orphans)
    transform_outputs = sorted(Path(root, "Transform").glob("transform_graph/*"))
    assert transform_outputs

    second = new_run(tmp_path, PIPELINE_ENABLE_TUNING="0")
    result = second.run()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("Metadata:")]
    assert lines == [
        f"Metadata: 1 execution left RUNNING by a killed run marked FAILED: Trainer "
        f"(execution {execution_id}); orphaned output folders removed: "
        f"Trainer/model/{execution_id}, Trainer/model_run/{execution_id}, "
        f"Trainer/.system/executor_execution/{execution_id}"
    ]
    # The killed execution is FAILED with the reason, the folders are gone, the completed
    # steps' outputs are untouched, and the second run trained and pushed.
    [trainer] = [e for e in second.executions(TRAINER_ID) if e.id == execution_id]
    assert trainer.last_known_state == mlmd.proto.Execution.FAILED
    assert "killed" in trainer.custom_properties["__execution_result__"].string_value
    assert not any(folder.exists() for folder in orphans)
    assert all(folder.exists() for folder in transform_outputs)
    for node in (TRAINER_ID, PUSHER_ID):
        assert second.executions(node)[-1].last_known_state == mlmd.proto.Execution.COMPLETE
    assert _unfinished(second.settings) == []


def _unfinished(settings) -> list[mlmd.proto.Execution]:
    """Every execution in the store (this test's pipeline alone) still NEW or RUNNING."""
    store = metadata.open_store(settings)
    return [
        e
        for e in store.get_executions()
        if e.last_known_state in (mlmd.proto.Execution.RUNNING, mlmd.proto.Execution.NEW)
    ]
