"""What AirflowDagRunner (TFX 1.16's legacy, pre-IR orchestration) needs to run the same
pipeline as the other runners: ingesting a new pipeline's earlier spans, and three fixes for
Transform's one-output-per-span artifacts. airflow_runner.py uses it; nothing else does."""
import collections
import functools
import os

import ml_metadata as mlmd
from absl import logging
from tfx import v1 as tfx
from tfx.dsl.components.base import base_driver
from tfx.orchestration import data_types
from tfx.orchestration import metadata as legacy_metadata
from tfx.orchestration.airflow.airflow_dag_runner import AirflowPipelineConfig
from tfx.orchestration.config import config_utils
from tfx.types import artifact_utils
from tfx.types.standard_component_specs import EXAMPLES_KEY, TRANSFORMED_EXAMPLES_KEY

from pipeline import configs, metadata, preflight, spans
from pipeline.pipeline import EXAMPLE_GEN_ID, create_pipeline


def metadata_config(settings: configs.Settings):
    """The MLMD store: SQLite under the output directory, as for the local runner."""
    return tfx.orchestration.metadata.sqlite_metadata_connection_config(settings.metadata_path)


class OnePerInputDriver(base_driver.BaseDriver):
    """The legacy driver, fixed for an output with one artifact per input artifact.

    TFX 1.16's legacy code assumes one artifact per output in two places: it names every
    output artifact `<output>:<run id>`, and MLMD wants names unique per type, so the second
    artifact could not be recorded; and its cache lookup pairs the earlier execution's output
    events, sorted by index, with the artifacts in id order, so a cached Transform handed
    its outputs on under the wrong keys (the Trainer got the analyzer cache as examples)."""

    def __init__(self, metadata_handle: legacy_metadata.Metadata):
        super().__init__(metadata_handle)
        # This handle only: the rest of the run keeps TFX's own lookup.
        metadata_handle._get_outputs_of_events = functools.partial(  # noqa: SLF001
            outputs_by_key, metadata_handle.store)

    def _prepare_output_artifacts(self, *args, **kwargs) -> dict[str, list[tfx.dsl.Artifact]]:
        result = super()._prepare_output_artifacts(*args, **kwargs)
        for artifacts in result.values():
            if len(artifacts) > 1:
                for index, artifact in enumerate(artifacts):
                    artifact.name = f"{artifact.name}:{index}"
        return result


def outputs_by_key(store: mlmd.MetadataStore,
                   events: list[mlmd.proto.Event]) -> dict[str, list[tfx.dsl.Artifact]]:
    """An execution's output artifacts by output key, each list in output order."""
    outputs = sorted((event for event in events if event.type == mlmd.proto.Event.OUTPUT),
                     key=lambda event: (event.path.steps[0].key, event.path.steps[1].index))
    artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in outputs])}
    types = {t.id: t for t in store.get_artifact_types_by_id(
        list({artifact.type_id for artifact in artifacts.values()}))}
    result = collections.defaultdict(list)
    for event in outputs:
        artifact = artifacts[event.artifact_id]
        result[event.path.steps[0].key].append(
            artifact_utils.deserialize_artifact(types[artifact.type_id], artifact))
    return result


def transform_per_span_outputs(tfx_pipeline: tfx.dsl.Pipeline) -> tfx.dsl.Pipeline:
    """Makes the legacy driver prepare one `transformed_examples` artifact per window span.

    Transform asks for that with `matching_channel_name`, but TFX 1.16 drops it when it turns
    the channel into an OutputChannel (the IR runners do not read it). The legacy driver then
    prepares one artifact, the executor replicates it per span, the publisher records the
    placeholder too, and the Tuner and Trainer fail with "Split does not exist over all
    example artifacts: train". With it, the driver needs OnePerInputDriver's fixes."""
    for component in tfx_pipeline.components:
        if isinstance(component, tfx.components.Transform):
            outputs = component.outputs.get(TRANSFORMED_EXAMPLES_KEY)
            if outputs is not None:
                outputs.matching_channel_name = EXAMPLES_KEY
                component.driver_class = OnePerInputDriver
    return tfx_pipeline


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
