"""The drift check's reference span (PreviousSpanStrategy), resolved as Airflow resolves it, and
recorded the way TFX's legacy orchestration records an execution's inputs.

AirflowDagRunner's driver registers one INPUT event per input channel and position
(tfx/orchestration/metadata.py, `_artifact_and_event_pairs`), and MLMD keeps at most one
event per artifact, execution and type: an execution given one artifact in two channels
fails with "Given event already exists" and then `assert component_run_context is not None`.
The drift check once got this run's span twice (`examples`, and the training window holding
it), which failed every Airflow run with the drift check on.
"""

from __future__ import annotations

import ml_metadata as mlmd
import pytest
from tfx import v1 as tfx
from tfx.orchestration import data_types
from tfx.orchestration import metadata as legacy_metadata

from pipeline import rejections
from pipeline.names import DRIFT_CHECK_ID, PREVIOUS_SPAN_KEY, SPAN_PROPERTY
from pipeline.resolvers import PreviousSpanStrategy


@pytest.fixture
def store(tmp_path):
    """A real MLMD store (SQLite), through TFX's legacy API as AirflowDagRunner uses it."""
    config = tfx.orchestration.metadata.sqlite_metadata_connection_config(str(tmp_path / "m.db"))
    with legacy_metadata.Metadata(config) as handle:
        yield handle


def ingest(store, *spans: int) -> list[tfx.types.Artifact]:
    """One registered Examples artifact per span, as ExampleGen records them."""
    artifacts = []
    for span in spans:
        artifact = tfx.types.standard_artifacts.Examples()
        artifact.uri = f"/nowhere/examples/{span}"
        artifact.set_int_custom_property(SPAN_PROPERTY, span)
        artifacts.append(artifact)
    store.publish_artifacts(artifacts)
    return artifacts


def strategy(window_spans: int, rejections_dir: str = "") -> PreviousSpanStrategy:
    return PreviousSpanStrategy(
        range_config=tfx.proto.RangeConfig(
            rolling_range=tfx.proto.RollingRange(num_spans=window_spans)
        ),
        rejections_dir=rejections_dir,
    )


def spans_of(artifacts: list[tfx.types.Artifact]) -> list[int]:
    return [a.get_int_custom_property(SPAN_PROPERTY) for a in artifacts]


def test_the_reference_is_the_window_span_before_this_runs_span(store):
    """Airflow's legacy resolver and the local runner both pass every run's ExampleGen output;
    this run's span is the newest."""
    every = ingest(store, 1, 2, 3)
    resolved = strategy(6).resolve_artifacts(store.store, {PREVIOUS_SPAN_KEY: every})
    assert spans_of(resolved[PREVIOUS_SPAN_KEY]) == [2]


def test_a_span_ingested_twice_counts_once_and_its_newest_artifact_is_taken(store):
    every = ingest(store, 1, 2, 2, 3)
    (previous,) = strategy(6).resolve_artifacts(store.store, {PREVIOUS_SPAN_KEY: every})[
        PREVIOUS_SPAN_KEY
    ]
    assert previous.id == every[2].id


def test_no_reference_on_a_first_span_or_in_a_one_span_window(store):
    first = ingest(store, 1)
    assert strategy(6).resolve_artifacts(store.store, {PREVIOUS_SPAN_KEY: first}) == {
        PREVIOUS_SPAN_KEY: []
    }
    every = [*first, *ingest(store, 2)]
    # The reference is the window's: a one-span window holds only this run's span.
    narrow = strategy(1).resolve_artifacts(store.store, {PREVIOUS_SPAN_KEY: every})
    assert narrow == {PREVIOUS_SPAN_KEY: []}


def test_a_rejected_span_is_never_the_reference(store, tmp_path):
    every = ingest(store, 1, 2, 3, 4)
    for span in (2, 4):  # an older span and a newer one (4 drifted: 3 is the newest left)
        rejections.reject(str(tmp_path / "rejected"), span, DRIFT_CHECK_ID, "drifted")
    resolved = strategy(6, str(tmp_path / "rejected")).resolve_artifacts(
        store.store, {PREVIOUS_SPAN_KEY: every}
    )
    assert spans_of(resolved[PREVIOUS_SPAN_KEY]) == [1]


def register(store: legacy_metadata.Metadata, inputs: dict) -> mlmd.proto.Execution:
    """What AirflowDagRunner's driver does before running a component
    (BaseDriver.pre_execution): one execution with an INPUT event per channel and position."""
    info = data_types.PipelineInfo("p", "/nowhere", run_id="run-1")
    return store.register_execution(
        pipeline_info=info,
        component_info=data_types.ComponentInfo(DRIFT_CHECK_ID, DRIFT_CHECK_ID, info),
        contexts=store.register_pipeline_contexts_if_not_exists(info),
        input_artifacts=inputs,
    )


def test_the_drift_checks_inputs_register_as_airflow_records_them(store):
    every = ingest(store, 1, 2)
    new = every[-1]
    resolved = strategy(6).resolve_artifacts(store.store, {PREVIOUS_SPAN_KEY: every})
    inputs = {"examples": [new], PREVIOUS_SPAN_KEY: resolved[PREVIOUS_SPAN_KEY]}
    execution = register(store, inputs)
    events = store.store.get_events_by_execution_ids([execution.id])
    assert sorted((e.path.steps[0].key, e.artifact_id) for e in events) == [
        ("examples", new.id),
        (PREVIOUS_SPAN_KEY, every[0].id),
    ]


def test_one_artifact_in_two_channels_is_what_failed_on_airflow(store):
    """The former wiring, `examples` and the whole window: the error of the issue."""
    every = ingest(store, 1, 2)
    with pytest.raises(AssertionError) as raised:
        register(store, {"examples": [every[-1]], "window": every})
    assert isinstance(raised.value.__context__, mlmd.errors.AlreadyExistsError)
    assert "Given event already exists" in str(raised.value.__context__)
