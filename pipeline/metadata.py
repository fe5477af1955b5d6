"""The MLMD store: how to connect to it (SQLite on one machine, MySQL shared by Airflow's
workers), and reading what each pipeline node ran and produced."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2

from pipeline.settings import PipelineSettings
from pipeline.tfx_api import tfx

OUTPUT_EVENTS = (mlmd.proto.Event.OUTPUT, mlmd.proto.Event.DECLARED_OUTPUT)


class MetadataStoreUnavailableError(ConnectionError):
    """The MLMD store did not answer; the message names the store (never its password)."""


def connection_config(settings: PipelineSettings) -> metadata_store_pb2.ConnectionConfig:
    """The store the settings name: the shared MySQL one (PIPELINE_AIRFLOW_MLMD_HOST or
    _SOCKET, with TFX's mysql_metadata_connection_config), else SQLite under the output
    directory. The password is read from its file at each connection, so a rotated secret
    takes effect at the next task."""
    airflow = settings.airflow
    if not airflow.mlmd_on_mysql:
        return tfx.orchestration.metadata.sqlite_metadata_connection_config(settings.metadata_path)
    password = ""
    if airflow.mlmd_password_file:
        try:
            password = Path(airflow.mlmd_password_file).read_text().strip()
        except OSError as error:
            raise MetadataStoreUnavailableError(
                f"PIPELINE_AIRFLOW_MLMD_PASSWORD_FILE={airflow.mlmd_password_file!r} cannot be "
                f"read ({error.strerror}): the MySQL MLMD store's password file"
            ) from None
    config = tfx.orchestration.metadata.mysql_metadata_connection_config(
        host=airflow.mlmd_host or "localhost",
        port=airflow.mlmd_port,
        database=airflow.mlmd_database,
        username=airflow.mlmd_user,
        password=password,
    )
    if airflow.mlmd_socket:  # MLMD takes exactly one of the two (else it aborts the process)
        config.mysql.ClearField("host")
        config.mysql.ClearField("port")
        config.mysql.socket = airflow.mlmd_socket
    return config


def describe_store(settings: PipelineSettings) -> str:
    """The store for messages: its kind and address, no password."""
    airflow = settings.airflow
    if not airflow.mlmd_on_mysql:
        return f"the ML Metadata store (SQLite, {settings.metadata_path})"
    where = airflow.mlmd_socket or f"{airflow.mlmd_host}:{airflow.mlmd_port}"
    return (
        f"the ML Metadata store (MySQL at {where}, database {airflow.mlmd_database!r}, "
        f"user {airflow.mlmd_user!r})"
    )


def check_store(settings: PipelineSettings) -> None:
    """Raises MetadataStoreUnavailableError naming the store when it does not answer (a
    stopped server, a wrong password): a task fails with that, not with a driver error."""
    try:
        mlmd.MetadataStore(connection_config(settings)).get_context_types()
    except MetadataStoreUnavailableError:
        raise
    except (mlmd.errors.StatusError, RuntimeError) as error:  # RuntimeError: no connection
        raise MetadataStoreUnavailableError(
            f"{describe_store(settings)} did not answer: {type(error).__name__}: {error}"
        ) from None


def open_store(settings: PipelineSettings) -> Optional[mlmd.MetadataStore]:
    """The store, or None before the first run (nothing is created; a MySQL store is
    opened as it is)."""
    if not settings.airflow.mlmd_on_mysql and not os.path.exists(settings.metadata_path):
        return None
    return mlmd.MetadataStore(connection_config(settings))


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
