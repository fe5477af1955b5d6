"""A pipeline run's artifacts, found through MLMD (never by guessing paths): the pipeline
name and the store come from the project settings (pipeline/settings.py)."""

from __future__ import annotations

import dataclasses
import datetime
import os
from typing import Optional

import ml_metadata as mlmd

from pipeline import metadata
from pipeline.names import BIGQUERY_EXAMPLE_GEN_ID, EXAMPLE_GEN_ID, STATISTICS_FILE, split_dir_name
from pipeline.settings import PipelineSettings

INPUT_EVENTS = (mlmd.proto.Event.INPUT, mlmd.proto.Event.DECLARED_INPUT)
# What marks a full run (an ingest-only run has ExampleGen alone).
FULL_RUN_NODE = "StatisticsGen"


class NoRunError(LookupError):
    """No (suitable) pipeline run in the MLMD store; the message says where it looked."""


@dataclasses.dataclass
class Run:
    """One pipeline run: what each node executed, and the artifacts it read and wrote."""

    store: mlmd.MetadataStore
    settings: PipelineSettings
    run_id: str
    started: datetime.datetime
    executions: dict[str, mlmd.proto.Execution]
    inputs: dict[str, dict[str, list[mlmd.proto.Artifact]]]
    outputs: dict[str, dict[str, list[mlmd.proto.Artifact]]]

    def output(self, node_id: str, key: str) -> Optional[mlmd.proto.Artifact]:
        """The node's first output under `key` in this run, or None."""
        artifacts = self.outputs.get(node_id, {}).get(key, [])
        return artifacts[0] if artifacts else None

    def input(self, node_id: str, key: str) -> list[mlmd.proto.Artifact]:
        return self.inputs.get(node_id, {}).get(key, [])

    def require(self, node_id: str, key: str) -> mlmd.proto.Artifact:
        artifact = self.output(node_id, key)
        if artifact is None:
            raise NoRunError(
                f"run {self.run_id} of '{self.settings.name}' has no "
                f"'{key}' output of {node_id} (did that step run? store: "
                f"{self.settings.metadata_path})"
            )
        return artifact

    @property
    def example_gen_id(self) -> str:
        return next((node for node in self.outputs if node.endswith("ExampleGen")), EXAMPLE_GEN_ID)

    @property
    def examples(self) -> mlmd.proto.Artifact:
        """The span this run ingested."""
        return self.require(self.example_gen_id, "examples")

    @property
    def span(self) -> int:
        return metadata.span_of(self.examples)

    @property
    def started_text(self) -> str:
        return self.started.strftime("%Y-%m-%d %H:%M:%S UTC")


def _time(ms: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)


def open_store(settings: PipelineSettings) -> mlmd.MetadataStore:
    store = metadata.open_store(settings)
    if store is None:
        raise NoRunError(
            f"no MLMD store at {settings.metadata_path}: run the pipeline first "
            "(make run), or set PIPELINE_OUTPUT_DIR to the outputs of a run"
        )
    return store


def node_ids_by_execution(store: mlmd.MetadataStore, pipeline_name: str) -> dict[int, str]:
    """Execution id -> the pipeline node (component id) that ran it."""
    prefix = f"{pipeline_name}."
    node_of = {}
    for context in store.get_contexts_by_type("node"):
        if context.name.startswith(prefix):
            for execution in store.get_executions_by_context(context.id):
                node_of[execution.id] = context.name[len(prefix) :]
    return node_of


def run_ids(
    store: mlmd.MetadataStore, pipeline_name: str, with_node: str = FULL_RUN_NODE
) -> list[str]:
    """This pipeline's runs that executed `with_node`, oldest first."""
    node_context = store.get_context_by_type_and_name("node", f"{pipeline_name}.{with_node}")
    if node_context is None:
        return []
    run_type = store.get_context_type("pipeline_run").id
    runs = {}
    for execution in store.get_executions_by_context(node_context.id):
        for context in store.get_contexts_by_execution(execution.id):
            if context.type_id == run_type:
                runs[context.name] = context.create_time_since_epoch
    return sorted(runs, key=lambda name: (runs[name], name))


def load_run(
    settings: PipelineSettings, run_id: str, store: Optional[mlmd.MetadataStore] = None
) -> Run:
    store = store or open_store(settings)
    context = store.get_context_by_type_and_name("pipeline_run", run_id)
    if context is None:
        raise NoRunError(f"no run '{run_id}' in {settings.metadata_path}")
    node_of = node_ids_by_execution(store, settings.name)
    executions = {
        node_of[e.id]: e
        for e in sorted(store.get_executions_by_context(context.id), key=lambda e: e.id)
        if e.id in node_of
    }
    events = store.get_events_by_execution_ids([e.id for e in executions.values()])
    by_id = {a.id: a for a in store.get_artifacts_by_id(list({ev.artifact_id for ev in events}))}
    inputs: dict = {}
    outputs: dict = {}
    for event in sorted(events, key=lambda ev: ev.artifact_id):
        side = (
            inputs
            if event.type in INPUT_EVENTS
            else outputs
            if event.type in metadata.OUTPUT_EVENTS
            else None
        )
        if side is None or not event.path.steps:
            continue
        side.setdefault(node_of[event.execution_id], {}).setdefault(
            event.path.steps[0].key, []
        ).append(by_id[event.artifact_id])
    started = min(
        (e.create_time_since_epoch for e in executions.values()),
        default=context.create_time_since_epoch,
    )
    return Run(store, settings, run_id, _time(started), executions, inputs, outputs)


def latest_run(settings: Optional[PipelineSettings] = None, with_node: str = FULL_RUN_NODE) -> Run:
    """The newest run that executed `with_node` (by default the newest full run; pass
    "Evaluator" for the newest run that evaluated a model)."""
    settings = settings or PipelineSettings.load()
    store = open_store(settings)
    runs = run_ids(store, settings.name, with_node)
    if not runs:
        raise NoRunError(
            f"no run of '{settings.name}' with {with_node} in {settings.metadata_path}"
        )
    return load_run(settings, runs[-1], store)


def statistics_of_examples(
    store: mlmd.MetadataStore, pipeline_name: str, examples_id: int
) -> Optional[mlmd.proto.Artifact]:
    """The newest StatisticsGen output computed from this Examples artifact, if any."""
    found = None
    for artifact in metadata.node_outputs(
        store, pipeline_name, "StatisticsGen", "ExampleStatistics"
    ):
        producers = [
            ev.execution_id
            for ev in store.get_events_by_artifact_ids([artifact.id])
            if ev.type in metadata.OUTPUT_EVENTS
        ]
        read = {
            ev.artifact_id
            for ev in store.get_events_by_execution_ids(producers)
            if ev.type in INPUT_EVENTS
        }
        if examples_id in read:
            found = artifact
    return found


def ingested_examples(
    settings: PipelineSettings, store: mlmd.MetadataStore
) -> list[mlmd.proto.Artifact]:
    """Every span ExampleGen ingested, newest last (one artifact per span: the newest)."""
    by_span = {}
    for node in (EXAMPLE_GEN_ID, BIGQUERY_EXAMPLE_GEN_ID):
        for artifact in metadata.node_outputs(store, settings.name, node, "Examples"):
            by_span[metadata.span_of(artifact)] = artifact
    return [by_span[span] for span in sorted(by_span)]


def split_uri(artifact: mlmd.proto.Artifact, split: str) -> str:
    return os.path.join(artifact.uri, split_dir_name(split))


def load_statistics(statistics_uri: str, split: str):
    """One split of a StatisticsGen output (a DatasetFeatureStatisticsList)."""
    import tensorflow_data_validation as tfdv  # heavy: only where statistics are read

    return tfdv.load_stats_binary(
        os.path.join(statistics_uri, split_dir_name(split), STATISTICS_FILE)
    )
