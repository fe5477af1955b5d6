"""Settings of the model server and of batch predictions, each read from a `PIPELINE_*`
variable (PIPELINE_SERVING_*, PIPELINE_BATCH_PREDICT_*). Paths they leave empty default to
places under the pipeline's output directory (serving/paths.py), so serving code takes these
settings next to the pipeline's (pipeline/settings.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.settings import PipelineSettings
from pipeline.settings_model import SettingsError, SettingsModel, env_config

WAREHOUSES = ("sqlite", "bigquery")


class ServingSettings(SettingsModel):
    """The local model server (serving/server.py, `make serve`)."""

    model_config = env_config("SERVING_")

    host: str = Field(
        "127.0.0.1",
        description="Address the server listens on. Loopback by default: exposing "
        "the server is a deliberate choice (0.0.0.0 in a container).",
    )
    port: int = Field(8501, description="TF Serving's REST port, so clients work against both.")
    grpc_port: int = Field(
        8500,
        ge=0,
        le=65535,
        description="TF Serving's gRPC port (PredictionService, ModelService), served by the "
        "same process on the same host; 0 = no gRPC.",
    )
    auth_token: str = Field(
        "",
        repr=False,
        description="A bearer token every request but the /healthz probe must carry (REST: "
        "`Authorization: Bearer <token>`, gRPC: `authorization` metadata); empty = none. "
        "Required to listen on a non-loopback host unless PIPELINE_SERVING_ALLOW_INSECURE=1.",
    )
    auth_token_file: str = Field(
        "",
        description="A file holding that token (a mounted secret), instead of "
        "PIPELINE_SERVING_AUTH_TOKEN.",
    )
    allow_insecure: bool = Field(
        False,
        description="Listen on a non-loopback host without a token: only behind something "
        "that authenticates (an ingress, a private network).",
    )
    model_name: str = Field(
        "", description="Model name in the URLs (/v1/models/<name>); empty = the pipeline name."
    )
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Server processes sharing the REST and gRPC ports, each with its own "
        "loaded versions and micro-batching; one process uses about one core. Metrics are "
        "summed over them; if one exits, the server stops (serving/workers.py).",
    )
    max_body_bytes: int = Field(
        4 * 1024 * 1024,
        ge=1,
        description="Larger request bodies get 413 before anything is parsed.",
    )
    max_batch_size: int = Field(
        256,
        ge=1,
        description="Micro-batching: concurrent requests merge into one model call "
        "of at most this many rows.",
    )
    max_batch_wait_ms: float = Field(
        2.0,
        description="Under concurrent load a batch waits for others to join until this "
        "long after its first request arrived (a lone client never waits).",
    )
    poll_seconds: float = Field(
        2.0, description="How often the server looks for newly pushed versions."
    )
    keep_versions: int = Field(
        2,
        ge=1,
        description="How many of the newest versions it keeps loaded (TF Serving's "
        "latest {num_versions}), unless a model config file sets the policy.",
    )
    model_config_file: str = Field(
        "",
        description="A TF Serving model config file (--model_config_file's text proto, e.g. "
        "deploy/kubernetes/models.config): the served model's entry gives the version "
        "policy (latest, specific or all; unset = latest 1) and the version_labels for "
        "/labels/<label> URLs, re-read when it changes. Empty = no labels, the newest "
        "PIPELINE_SERVING_KEEP_VERSIONS versions.",
    )
    log_sampling_rate: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share of requests written to the request/response log (JSON lines) for "
        "monitoring and skew detection; 0 = off.",
    )
    log_path: str = Field(
        "",
        description="The request log; empty = <output_dir>/serving_logs/requests.jsonl. "
        "The pipeline's leakage check reads it too.",
    )
    hybrid: bool = Field(
        False,
        description="Hybrid serving: answer keyed requests from the batch predictions "
        "table when it has the key.",
    )


class BatchPredictSettings(SettingsModel):
    """Batch predictions of a span into the warehouse table (serving/batch_predict.py)."""

    model_config = env_config("BATCH_PREDICT_", title="Batch predictions")

    warehouse: Literal[WAREHOUSES] = Field(
        "sqlite", description="sqlite (a local file) or bigquery (needs PIPELINE_GCP_PROJECT)."
    )
    sqlite_path: str = Field(
        "", description="The SQLite file; empty = <output_dir>/warehouse/predictions.db."
    )
    table: str = Field("predictions", description="SQLite table, or BigQuery dataset.table.")
    span: int = Field(
        0, description="The span to predict; 0 = the newest complete span in PIPELINE_DATA_DIR."
    )

    def check_warehouse(self, pipeline: PipelineSettings) -> None:
        """BigQuery needs the pipeline's project (PIPELINE_GCP_PROJECT) and a dataset.table."""
        if self.warehouse == "bigquery" and not (pipeline.cloud.gcp_project and "." in self.table):
            raise SettingsError(
                "PIPELINE_BATCH_PREDICT_WAREHOUSE=bigquery needs "
                "PIPELINE_GCP_PROJECT and PIPELINE_BATCH_PREDICT_TABLE as "
                f"dataset.table (got {self.table!r})"
            )
