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


def pytest_collection_modifyitems(config, items):
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
def finished_run(tmp_path_factory):
    """A complete local run (two spans of 400 rows, Tuner off) with a pushed model.

    Shared by the whole session: treat its outputs as read-only (copy the serving
    directory or the data before changing them)."""
    from tests.pipeline_run import new_run, write_data_slice

    tmp_path = tmp_path_factory.mktemp("finished_run")
    write_data_slice(tmp_path / "data", [1, 2], 400)
    run = new_run(tmp_path, PIPELINE_ENABLE_TUNING="0")
    result = run.run()
    assert result.returncode == 0, result.stderr[-5000:]
    assert run.pushed_versions(), "the shared run pushed no model"
    return run
