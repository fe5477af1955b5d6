"""What AirflowDagRunner (TFX 1.16's legacy, pre-IR orchestration) needs to run the same
pipeline as the other runners: the check for a new span, the ingestion of a new pipeline's
earlier spans, and the record of a rejected span when a task fails on one.
airflow_runner.py uses it; nothing else does."""

import os
from typing import Optional

from absl import logging
from ml_metadata.proto import Event
from tfx.orchestration import data_types
from tfx.orchestration import metadata as legacy_metadata
from tfx.orchestration.airflow.airflow_dag_runner import AirflowPipelineConfig
from tfx.orchestration.config import config_utils
from tfx.types.standard_component_specs import EXAMPLES_KEY

from pipeline import input_check, metadata, preflight, rejections, spans
from pipeline.names import EXAMPLE_GEN_ID
from pipeline.pipeline import create_pipeline
from pipeline.settings import PipelineSettings
from pipeline.tfx_api import tfx


def metadata_config(settings: PipelineSettings):
    """The MLMD store: SQLite under the output directory on one machine, as for the local
    runner; the shared MySQL store when the settings name one (pipeline/metadata.py)."""
    return metadata.connection_config(settings)


def ingested_spans(settings: PipelineSettings) -> set[int]:
    """Spans ExampleGen has ingested in this pipeline's Airflow runs.

    The legacy orchestration records executions under other contexts (pipeline, run,
    component_run) than the IR one pipeline/spans.py reads, so this asks the legacy API."""
    if not settings.airflow.mlmd_on_mysql and not os.path.exists(settings.metadata_path):
        return set()
    info = data_types.PipelineInfo(settings.name, settings.pipeline_root)
    with legacy_metadata.Metadata(metadata_config(settings)) as store:
        context = store.get_pipeline_context(info)
        if context is None:
            return set()
        artifacts = store.get_qualified_artifacts(
            contexts=[context],
            type_name=tfx.types.standard_artifacts.Examples.TYPE_NAME,
            producer_component_id=EXAMPLE_GEN_ID,
            output_key=EXAMPLES_KEY,
        )
    return {metadata.span_of(artifact.mlmd_artifact) for artifact in artifacts}


def ingest_span(settings: PipelineSettings, span: int, run_id: str) -> None:
    """Runs ExampleGen for one span, and the checks of its data (StatisticsGen, schema,
    ExampleValidator, the gate), as AirflowDagRunner runs nodes, under a run id of its own:
    the span window resolver reads every run, while StatisticsGen and the Evaluator read this
    DAG run's ExampleGen output, the newest span. The gate raises on a bad span."""
    ingest = create_pipeline(
        settings, metadata_connection_config=metadata_config(settings), ingest_only_span=span
    )
    for component in ingest.components:  # in topological order
        launcher_class, component_config = config_utils.find_component_launch_info(
            AirflowPipelineConfig(), component
        )
        launcher_class.create(
            component=component,
            pipeline_info=data_types.PipelineInfo(
                settings.name, settings.pipeline_root, run_id=f"{run_id}.span-{span}"
            ),
            driver_args=data_types.DriverArgs(enable_cache=ingest.enable_cache),
            metadata_connection=legacy_metadata.Metadata(ingest.metadata_connection_config),
            beam_pipeline_args=ingest.beam_pipeline_args,
            additional_pipeline_args={"tmp_dir": os.path.join(settings.pipeline_root, ".temp", "")},
            component_config=component_config,
        ).launch()


def check_new_span(settings: PipelineSettings, dag_run=None) -> bool:
    """The first task of every run (a ShortCircuitOperator): True when a new complete span
    waits to be ingested; else it logs that there is nothing new and the rest of the run is
    skipped. A run triggered with the conf {"force": true} goes ahead regardless (a rerun).
    The new span's files are parsed first: a bad one fails the task with SpanRejectedError,
    which the failure callback records, so later runs skip the span."""
    span = spans.new_span(settings, ingested_spans(settings), rejections.of_pipeline(settings))
    if span is not None:
        input_check.check_span_files(settings, span)
        logging.info("new span %d: running the pipeline", span)
        return True
    if dag_run is not None and (dag_run.conf or {}).get("force"):
        logging.info("no new span, but the run was forced (conf force=true)")
        return True
    accepted = spans.accepted_spans(settings, rejections.of_pipeline(settings))
    logging.info(
        "nothing new: %s; skipping the run",
        f"span {accepted[-1]} was already ingested"
        if accepted
        else f"no complete span in {settings.data.data_dir}",
    )
    return False


def ingest_earlier_spans(settings: PipelineSettings, run_id: str) -> list[int]:
    """The first task of every run. A new pipeline (or one whose window grew) ingests the
    older spans of its training window one at a time, as local_runner.py does, so its first
    run trains on the whole window; later runs find nothing to do. A span whose files do not
    parse is recorded as rejected and skipped; the window reaches back past it. `run_id` is
    the DAG run's (Airflow passes it by name); returns the spans ingested (the task's XCom)."""
    preflight.check_local_paths(settings)
    ingested, done = ingested_spans(settings), []
    while todo := spans.earlier_spans_to_ingest(
        settings, ingested, rejections.of_pipeline(settings)
    ):
        span = todo[0]
        if input_check.ingest_earlier_span(
            settings,
            span,
            lambda: ingest_span(settings, span, run_id),  # noqa: B023 (called at once)
        ):
            done.append(span)
        ingested.add(span)
    return done


def record_rejection(settings: PipelineSettings, span: Optional[int], context: dict) -> None:
    """Every task's on_failure_callback: a deliberate rejection (the gate, the drift or
    leakage check, the new span's files) is recorded against the span this DAG run ingests;
    any other exception is a crash and leaves the span acceptable for the next run."""
    error = context.get("exception")
    task_id = context["task_instance"].task_id
    if not isinstance(error, BaseException):
        return
    rejection = rejections.record_failure(settings, span, task_id, error)
    if rejection is not None:
        logging.error(
            "span %d was rejected by %s (record: %s): %s",
            rejection.span,
            rejection.check,
            rejection.path,
            rejection.reason,
        )
    else:
        logging.error(
            "the %s %s crashed%s: %s: %s; the span is not rejected: fix the cause and rerun",
            "check" if task_id in rejections.CHECKS else "task",
            task_id,
            "" if span is None else f" on span {span}",
            type(error).__name__,
            error,
        )


# TFX 1.16's legacy driver: an execution's run context is named after the Airflow run and the
# component; its execution state and component id are string properties.
_COMPONENT_RUN_CONTEXT = "component_run"
_STATE_PROPERTY = "state"
_COMPONENT_ID_PROPERTY = "component_id"
_FINAL_STATES = ("complete", "cached")


def retire_earlier_try(connection_config, pipeline_info: data_types.PipelineInfo, component) -> str:
    """Lets a retried (or cleared) task register its execution afresh.

    TFX 1.16's legacy driver registers an execution under a context named after the Airflow
    run and the component, with output artifacts named `<output key>:<run id>`. When an
    earlier try already did (a worker killed mid-task), a retry fails in MLMD: the driver
    reuses that execution and records its INPUT events again, and its outputs' names are
    taken (MLMD cannot rename or delete an artifact). And a downstream task takes its inputs
    from the first execution of the producer its run's context lists, whose order is the
    store's. So the earlier try's context is renamed out of the way (`<name>.try-<execution id>`),
    and its unfinished executions are marked failed and their component id given the same
    suffix (no lookup finds them), their outputs marked ABANDONED. The retry names its own
    outputs apart (`driver_naming_outputs_for_try`). Returns what it did, or "" when there
    was no earlier try."""
    info = data_types.ComponentInfo(component.type, component.id, pipeline_info)
    name = info.component_run_context_name
    with legacy_metadata.Metadata(connection_config) as handle:
        store = handle.store
        context = store.get_context_by_type_and_name(_COMPONENT_RUN_CONTEXT, name)
        if context is None:
            return ""
        executions = store.get_executions_by_context(context.id)
        unfinished = [
            e for e in executions if e.properties[_STATE_PROPERTY].string_value not in _FINAL_STATES
        ]
        for execution in unfinished:
            execution.properties[_STATE_PROPERTY].string_value = "failed"
            execution.properties[
                _COMPONENT_ID_PROPERTY
            ].string_value = f"{component.id}.try-{execution.id}"
            execution.last_known_state = execution.FAILED
        if unfinished:
            store.put_executions(unfinished)
        outputs = _abandon_outputs(store, unfinished)
        suffix = executions[-1].id if executions else context.id
        context.name = f"{name}.try-{suffix}"
        store.put_contexts([context])
    message = (
        f"an earlier try of {component.id} in this run registered execution(s) "
        f"{[e.id for e in executions]}: marked {len(unfinished)} unfinished one(s) failed, "
        f"abandoned {len(outputs)} output artifact(s) and renamed its context to "
        f"{context.name}, so this try registers afresh"
    )
    logging.warning(message)
    return message


def _abandon_outputs(store, executions: list) -> list[int]:
    """The unfinished executions' output artifacts, marked ABANDONED (nothing was published).
    Returns their ids."""
    if not executions:
        return []
    events = store.get_events_by_execution_ids([e.id for e in executions])
    ids = sorted(
        {
            e.artifact_id
            for e in events
            if e.type in (Event.OUTPUT, Event.PENDING_OUTPUT, Event.DECLARED_OUTPUT)
        }
    )
    artifacts = store.get_artifacts_by_id(ids) if ids else []
    for artifact in artifacts:
        artifact.state = artifact.ABANDONED
    if artifacts:
        store.put_artifacts(artifacts)
    return ids


def driver_naming_outputs_for_try(driver_class: type, try_number: int) -> type:
    """`driver_class` whose output artifacts are named `<output key>:<run id>.try-<n>`: an
    earlier try's outputs keep the plain names (MLMD's artifact names are unique per type and
    cannot change). Nothing looks a legacy artifact up by its name."""

    class DriverNamingOutputsForTry(driver_class):
        def _prepare_output_artifacts(self, *args, **kwargs):
            outputs = super()._prepare_output_artifacts(*args, **kwargs)
            for artifacts in outputs.values():
                for artifact in artifacts:
                    artifact.name = f"{artifact.name}.try-{try_number}"
            return outputs

    return DriverNamingOutputsForTry
