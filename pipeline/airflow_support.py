"""What AirflowDagRunner (TFX 1.16's legacy, pre-IR orchestration) needs to run the same
pipeline as the other runners: the check for a new span and the ingestion of a new pipeline's
earlier spans. airflow_runner.py uses it; nothing else does."""
import os

from absl import logging
from tfx import v1 as tfx
from tfx.orchestration import data_types
from tfx.orchestration import metadata as legacy_metadata
from tfx.orchestration.airflow.airflow_dag_runner import AirflowPipelineConfig
from tfx.orchestration.config import config_utils
from tfx.types.standard_component_specs import EXAMPLES_KEY

from pipeline import configs, metadata, preflight, spans
from pipeline.pipeline import EXAMPLE_GEN_ID, create_pipeline


def metadata_config(settings: configs.Settings):
    """The MLMD store: SQLite under the output directory, as for the local runner."""
    return tfx.orchestration.metadata.sqlite_metadata_connection_config(settings.metadata_path)


def ingested_spans(settings: configs.Settings) -> set[int]:
    """Spans ExampleGen has ingested in this pipeline's Airflow runs.

    The legacy orchestration records executions under other contexts (pipeline, run,
    component_run) than the IR one pipeline/spans.py reads, so this asks the legacy API."""
    if not os.path.exists(settings.metadata_path):
        return set()
    info = data_types.PipelineInfo(settings.pipeline_name, settings.pipeline_root)
    with legacy_metadata.Metadata(metadata_config(settings)) as store:
        context = store.get_pipeline_context(info)
        if context is None:
            return set()
        artifacts = store.get_qualified_artifacts(
            contexts=[context], type_name=tfx.types.standard_artifacts.Examples.TYPE_NAME,
            producer_component_id=EXAMPLE_GEN_ID, output_key=EXAMPLES_KEY)
    return {metadata.span_of(artifact.mlmd_artifact) for artifact in artifacts}


def ingest_span(settings: configs.Settings, span: int, run_id: str) -> None:
    """Runs ExampleGen for one span as AirflowDagRunner runs a node, under a run id of its
    own: the span window resolver reads every run, while StatisticsGen and the Evaluator
    read this DAG run's ExampleGen output, the newest span."""
    ingest = create_pipeline(settings, metadata_connection_config=metadata_config(settings),
                             ingest_only_span=span)
    (example_gen,) = ingest.components
    launcher_class, component_config = config_utils.find_component_launch_info(
        AirflowPipelineConfig(), example_gen)
    launcher_class.create(
        component=example_gen,
        pipeline_info=data_types.PipelineInfo(settings.pipeline_name, settings.pipeline_root,
                                              run_id=f"{run_id}.span-{span}"),
        driver_args=data_types.DriverArgs(enable_cache=ingest.enable_cache),
        metadata_connection=legacy_metadata.Metadata(ingest.metadata_connection_config),
        beam_pipeline_args=ingest.beam_pipeline_args,
        additional_pipeline_args={"tmp_dir": os.path.join(settings.pipeline_root, ".temp", "")},
        component_config=component_config,
    ).launch()


def check_new_span(settings: configs.Settings, dag_run=None) -> bool:
    """The first task of every run (a ShortCircuitOperator): True when a new complete span
    waits to be ingested; else it logs that there is nothing new and the rest of the run is
    skipped. A run triggered with the conf {"force": true} goes ahead regardless (a rerun)."""
    span = spans.new_span(settings, ingested_spans(settings))
    if span is not None:
        logging.info("new span %d: running the pipeline", span)
        return True
    if dag_run is not None and (dag_run.conf or {}).get("force"):
        logging.info("no new span, but the run was forced (conf force=true)")
        return True
    complete = spans.complete_spans(settings)
    logging.info("nothing new: %s; skipping the run", f"span {complete[-1]} was already ingested"
                 if complete else f"no complete span in {settings.data_dir}")
    return False


def ingest_earlier_spans(settings: configs.Settings, run_id: str) -> list[int]:
    """The first task of every run. A new pipeline (or one whose window grew) ingests the
    older spans of its training window one at a time, as local_runner.py does, so its first
    run trains on the whole window; later runs find nothing to do. `run_id` is the DAG run's
    (Airflow passes it by name); returns the spans ingested (the task's XCom)."""
    preflight.check_local_paths(settings)
    missing = spans.earlier_spans_to_ingest(settings, ingested_spans(settings))
    for span in missing:
        ingest_span(settings, span, run_id)
    return missing
