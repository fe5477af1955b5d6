"""Shared test setup: Keras 2 before TensorFlow loads, quiet logs, the example's tests marked
(and skipped on another dataset), and one small finished pipeline run that tests which only
read a run's outputs share."""

import os

import pipeline.runtime  # noqa: F401 (first: Keras 2 before TensorFlow loads)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path

import pytest

EXAMPLE_DIR = Path(__file__).parent / "example"
# The shipped example's label: its tests assert values of that dataset alone.
EXAMPLE_LABEL = "tips > 0.2 * fare"


def example_is_active() -> bool:
    """models/features.py still describes the shipped taxi example (not a `make new-dataset`)."""
    from models import features

    return features.LABEL == EXAMPLE_LABEL and "payment_type" in features.raw_feature_keys()


# The longest files (minutes each), started first when `make test` runs files on two processes
# (pytest-xdist, --no-loadscope-reorder), so that no process is left with one at the end.
LONGEST_FILES = (
    "test_airflow_stack.py",
    "test_airflow_runner.py",
    "test_new_dataset.py",
    "test_bad_data.py",
    "test_continuous_training.py",
)


def _longest_first(item) -> int:
    name = Path(str(item.fspath)).name
    return LONGEST_FILES.index(name) if name in LONGEST_FILES else len(LONGEST_FILES)


def pytest_collection_modifyitems(config, items):
    items.sort(key=_longest_first)  # stable: every other file keeps its order
    skip = (
        None
        if example_is_active()
        else pytest.mark.skip(
            reason="the shipped example's test: models/features.py describes another dataset"
        )
    )
    for item in items:
        # A test on the shared finished run needs that run first.
        if "finished_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)
        if EXAMPLE_DIR in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.example)
            if skip:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, worker_id):
    """A complete local run (two spans of 400 rows, Tuner off) with a pushed model.

    Shared by the whole session, and by every pytest-xdist worker (`make test` runs two):
    the first to need it runs it under a file lock, the others wait and read it. Treat its
    outputs as read-only (copy the serving directory or the data before changing them)."""
    import shutil

    from filelock import FileLock

    from tests.pipeline_run import new_run, write_data_slice

    base = tmp_path_factory.getbasetemp()
    tmp_path = (base if worker_id == "master" else base.parent) / "finished_run"
    with FileLock(f"{tmp_path}.lock"):
        run = new_run(tmp_path, PIPELINE_ENABLE_TUNING="0")
        done = tmp_path / "run-succeeded"
        if not done.exists():
            shutil.rmtree(tmp_path, ignore_errors=True)  # what a failed attempt left
            write_data_slice(tmp_path / "data", [1, 2], 400)
            result = run.run()
            assert result.returncode == 0, result.stderr[-5000:]
            assert run.pushed_versions(), "the shared run pushed no model"
            done.touch()
    return run
