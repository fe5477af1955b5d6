"""A retried Airflow task registers its execution afresh: TFX 1.16's legacy driver, run twice
for one component in one Airflow run (a worker killed mid-task, then the retry), fails the
retry on MLMD's duplicate INPUT events and output artifact names unless the earlier try is
retired first."""

from __future__ import annotations

import types

import ml_metadata as mlmd
import pytest
from tfx import v1 as tfx
from tfx.dsl.components.base import base_driver
from tfx.orchestration import data_types
from tfx.orchestration import metadata as legacy_metadata
from tfx.types import channel

from pipeline import airflow_tasks

RUN_ID = "manual__2026-12-02T09:41:22+00:00"
TRAINER = types.SimpleNamespace(type="tfx.components.trainer.component.Trainer", id="Trainer")


@pytest.fixture
def config(tmp_path):
    return tfx.orchestration.metadata.sqlite_metadata_connection_config(str(tmp_path / "m.db"))


def pipeline_info() -> data_types.PipelineInfo:
    return data_types.PipelineInfo("p", "/nowhere", run_id=RUN_ID)


def examples(handle: legacy_metadata.Metadata) -> tfx.types.Artifact:
    artifact = tfx.types.standard_artifacts.Examples()
    artifact.uri = "/nowhere/examples/1"
    handle.publish_artifacts([artifact])
    return artifact


def register(
    handle: legacy_metadata.Metadata, artifact, driver_class=base_driver.BaseDriver
) -> mlmd.proto.Execution:
    """What the legacy driver does before running a component (BaseDriver.pre_execution):
    the execution with its inputs, then the outputs the driver prepares for it."""
    info = pipeline_info()
    component_info = data_types.ComponentInfo(TRAINER.type, TRAINER.id, info)
    contexts = handle.register_pipeline_contexts_if_not_exists(info)
    execution = handle.register_execution(
        pipeline_info=info,
        component_info=component_info,
        contexts=contexts,
        input_artifacts={"examples": [artifact]},
    )
    outputs = driver_class(metadata_handle=handle)._prepare_output_artifacts(
        input_artifacts={"examples": [artifact]},
        output_dict={"model": channel.Channel(type=tfx.types.standard_artifacts.Model)},
        exec_properties={},
        execution_id=execution.id,
        pipeline_info=info,
        component_info=component_info,
    )
    handle.update_execution(
        execution=execution,
        component_info=component_info,
        output_artifacts=outputs,
        exec_properties={},
        contexts=contexts,
    )
    return execution


def test_a_retry_without_retiring_the_killed_try_fails_as_in_tfx(config):
    with legacy_metadata.Metadata(config) as handle:
        artifact = examples(handle)
        register(handle, artifact)
        with pytest.raises(mlmd.errors.AlreadyExistsError, match="already exists"):
            register(handle, artifact)


def test_a_retry_after_retiring_the_killed_try_registers_a_new_execution(config):
    with legacy_metadata.Metadata(config) as handle:
        artifact = examples(handle)
        killed = register(handle, artifact)
    message = airflow_tasks.retire_earlier_try(config, pipeline_info(), TRAINER)
    assert f"registered execution(s) [{killed.id}]" in message
    with legacy_metadata.Metadata(config) as handle:
        driver = airflow_tasks.driver_naming_outputs_for_try(base_driver.BaseDriver, 2)
        retry = register(handle, artifact, driver)
        assert retry.id != killed.id
        store = handle.store
        (old,) = store.get_executions_by_id([killed.id])
        assert old.properties["state"].string_value == "failed"
        assert old.properties["component_id"].string_value == f"Trainer.try-{killed.id}"
        assert old.last_known_state == mlmd.proto.Execution.FAILED
        name = f"p.{RUN_ID}.Trainer"
        current = store.get_context_by_type_and_name("component_run", name)
        retired = store.get_context_by_type_and_name("component_run", f"{name}.try-{killed.id}")
        assert [e.id for e in store.get_executions_by_context(current.id)] == [retry.id]
        assert [e.id for e in store.get_executions_by_context(retired.id)] == [killed.id]
        (abandoned,) = outputs_of(store, killed.id)
        assert abandoned.name == f"model:{RUN_ID}"
        assert abandoned.state == mlmd.proto.Artifact.ABANDONED
        (fresh,) = outputs_of(store, retry.id)
        assert fresh.name == f"model:{RUN_ID}.try-2"
        assert fresh.uri == f"/nowhere/Trainer/model/{retry.id}"
        # What a downstream task of this run resolves (the Evaluator's model): the retry's.
        (found,) = handle.search_artifacts("model", pipeline_info(), "Trainer")
        assert found.id == fresh.id


def outputs_of(store, execution_id: int) -> list[mlmd.proto.Artifact]:
    events = store.get_events_by_execution_ids([execution_id])
    return store.get_artifacts_by_id(
        [e.artifact_id for e in events if e.type == mlmd.proto.Event.OUTPUT]
    )


def test_a_first_try_has_nothing_to_retire(config):
    assert airflow_tasks.retire_earlier_try(config, pipeline_info(), TRAINER) == ""
