"""Reading the local MLMD store: what each pipeline node ran and produced."""

from __future__ import annotations

import os
from typing import Optional

import ml_metadata as mlmd
from tfx import v1 as tfx

from pipeline.settings import PipelineSettings

OUTPUT_EVENTS = (mlmd.proto.Event.OUTPUT, mlmd.proto.Event.DECLARED_OUTPUT)


def open_store(settings: PipelineSettings) -> Optional[mlmd.MetadataStore]:
    """The local SQLite store, or None before the first run (nothing is created)."""
    if not os.path.exists(settings.metadata_path):
        return None
    return mlmd.MetadataStore(
        tfx.orchestration.metadata.sqlite_metadata_connection_config(settings.metadata_path)
    )


def node_executions(
    store: mlmd.MetadataStore, pipeline_name: str, node_id: str
) -> list[mlmd.proto.Execution]:
    """The node's executions, oldest first."""
    context = store.get_context_by_type_and_name("node", f"{pipeline_name}.{node_id}")
    if context is None:
        return []
    return sorted(store.get_executions_by_context(context.id), key=lambda e: e.id)


def node_outputs(
    store: mlmd.MetadataStore, pipeline_name: str, node_id: str, type_name: str
) -> list[mlmd.proto.Artifact]:
    """Live artifacts of `type_name` that the node produced, oldest first."""
    executions = node_executions(store, pipeline_name, node_id)
    events = store.get_events_by_execution_ids([e.id for e in executions]) if executions else []
    ids = {event.artifact_id for event in events if event.type in OUTPUT_EVENTS}
    artifacts = store.get_artifacts_by_id(list(ids)) if ids else []
    return sorted(
        (a for a in artifacts if a.type == type_name and a.state == mlmd.proto.Artifact.LIVE),
        key=lambda a: a.id,
    )


def span_of(artifact: mlmd.proto.Artifact) -> int:
    """The span ExampleGen recorded on an Examples artifact."""
    # TFX 1.16 writes `span` as a custom property; older releases as a property.
    for properties in (artifact.custom_properties, artifact.properties):
        if "span" in properties:
            return properties["span"].int_value
    raise ValueError(f"Examples artifact {artifact.id} ({artifact.uri}) has no span")
