"""Every setting of the pipeline, as one typed tree, each read from a `PIPELINE_*` variable.

    settings = PipelineSettings.load()                     # the process environment
    settings = PipelineSettings.load({"PIPELINE_TRAIN_STEPS": "5"}, output_dir="/tmp/out")
    settings.training.train_steps, settings.beam.preset, settings.pipeline_root

The pipeline's settings come in groups (`settings.data`, `settings.training`, ...), each a
frozen pydantic model whose fields' aliases are their variables, read with pydantic-settings'
environment source: `PIPELINE_` + the setting's name in capitals (`PIPELINE_TRAIN_STEPS`,
`PIPELINE_BEAM_PRESET`, `PIPELINE_NAME`). The model server, batch predictions, the streaming job
and the report own their settings (serving/settings.py, streaming/settings.py,
analysis/settings.py); cli/settings.py puts them all in one tree and generates the settings
reference (docs/settings.md) from the field descriptions.

An empty variable counts as unset. A bad value raises SettingsError (a ValueError) naming the
variable, the value and what was expected. Nothing here touches the network or the file
system when imported or loaded, so runners and tests can build settings freely.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from models import features
from pipeline.beam_args import beam_preset_args
from pipeline.settings_model import SettingsModel, SettingsTree, env_config

# The checkout (or installed editable project) that holds pipeline/, models/, data/, schema/.
PROJECT_ROOT = Path(__file__).resolve().parents[1]

STRATEGIES = ("default", "mirrored", "multi_worker", "parameter_server")
TRANSFORM_MATERIALIZE = ("auto", "true", "false")
# PIPELINE_TRANSFORM_MATERIALIZE takes the words the boolean settings take.
BOOLEAN_WORDS = {
    **dict.fromkeys(("1", "yes", "on"), "true"),
    **dict.fromkeys(("0", "no", "off"), "false"),
}
TFLITE_QUANTIZATIONS = ("dynamic", "int8")  # see pipeline/components/tflite_exporter.py
# The names Kubeflow Pipelines v2 / Vertex accept; every runner uses them, so pipelines port.
PIPELINE_NAME_PATTERN = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")

# vertex: Vertex AI Pipelines; kubeflow: a self-hosted Kubeflow Pipelines v2 backend. Both run
# kubeflow_runner.py's spec, every step in the pipeline image.
ORCHESTRATORS = ("local", "airflow", "vertex", "kubeflow")
KUBEFLOW_ORCHESTRATORS = ("vertex", "kubeflow")
BEAM_PRESETS = ("direct", "dataflow", "flink", "spark")
# Where the Dockerfile puts this project in the pipeline image.
IMAGE_PROJECT_ROOT = Path("/pipeline")


def features_default(name: str) -> dict:
    """`json_schema_extra` of a field whose default is `name` in models/features.py: the
    settings reference names it instead of its value (`make new-dataset` rewrites the file)."""
    return {"shown_default": f"`{name}` in `models/features.py`"}


# ---- the groups ------------------------------------------------------------------------------


class DataSettings(SettingsModel):
    """Where the data is and how it is read: spans, the training window, the schema."""

    model_config = env_config()

    data_dir: str = Field(str(PROJECT_ROOT / "data"), description="Where the spans are.")
    output_dir: str = Field(
        str(PROJECT_ROOT / "outputs"),
        description="All local state (pipeline root, MLMD store, pushed models, logs) lives "
        "under this directory.",
    )
    schema_path: str = Field(
        str(PROJECT_ROOT / "schema" / "schema.pbtxt"),
        description="The curated schema ExampleValidator checks every span against.",
    )
    infer_schema: bool = Field(
        False,
        description="Infer the schema with SchemaGen instead of importing the curated "
        "one (for new data).",
    )
    span_pattern: str = Field(
        "span-{SPAN}/*.csv",
        description="Input files of one span: `{SPAN}` is replaced by the span number.",
    )
    train_window_spans: int = Field(
        6, ge=1, description="How many of the newest spans the Transform and Trainer see."
    )
    fast_csv_reader: bool = Field(
        True,
        description="CsvExampleGen runs pipeline/components/fast_csv_example_gen.py's "
        "executor: the same Examples as TFX's, read with pyarrow, written without Beam where "
        "Beam would run in-process; off = TFX's own executor.",
    )
    bigquery_query: str = Field(
        "",
        description="A BigQuery query instead of files (BigQueryExampleGen). Its result is "
        "the whole training window, so ExampleGen reads the window every run.",
    )
    train_hash_buckets: int = Field(
        3,
        description="ExampleGen splits every span into train/eval by hash, in the "
        "ratio train_hash_buckets:eval_hash_buckets.",
    )
    eval_hash_buckets: int = Field(1, description="See PIPELINE_TRAIN_HASH_BUCKETS.")
    span_complete_marker: str = Field(
        "_COMPLETE",
        description="A span folder counts as complete (ingestible) once this file is in it, so "
        "a half-copied span is never read; empty = every span folder counts as "
        "complete.",
    )
    min_span_rows: int = Field(
        50,
        ge=1,
        description="A span with fewer rows is rejected before training (too few to "
        "train and evaluate on).",
    )

    @field_validator("span_pattern")
    @classmethod
    def _has_span(cls, pattern: str) -> str:
        if "{SPAN}" not in pattern:
            raise ValueError(f"PIPELINE_SPAN_PATTERN={pattern!r} must contain {{SPAN}}")
        return pattern

    @field_validator("span_complete_marker")
    @classmethod
    def _is_file_name(cls, marker: str) -> str:
        if "/" in marker:
            raise ValueError(f"PIPELINE_SPAN_COMPLETE_MARKER must be a file name, got {marker!r}")
        return marker


class TransformSettings(SettingsModel):
    """Transform: how it traces preprocessing_fn, its own statistics, and whether it writes
    the transformed examples."""

    model_config = env_config("TRANSFORM_")

    statistics: bool = Field(
        False,
        description="Transform's own pre/post-transform statistics (slow; StatisticsGen "
        "covers raw data).",
    )
    tf1_graph: bool = Field(
        True,
        description="Transform traces preprocessing_fn as one TF1 graph instead of "
        "several tf.functions: 3.5 s less per Transform run on the shipped "
        "data, same outputs. Switch it off for a preprocessing_fn that needs "
        "TF2-only features (e.g. tf.function-decorated helpers).",
    )
    materialize: Literal[TRANSFORM_MATERIALIZE] = Field(
        "auto",
        description="Transform writes the transformed examples, which the Tuner and the "
        "Trainer read; false = it writes only the transform graph, and they read the raw "
        "window and apply the graph to each batch (the model sees the same inputs). "
        "auto = false once the training window's input files reach "
        "PIPELINE_TRANSFORM_MATERIALIZE_MIN_MB (writing every transformed row then costs "
        "more than transforming the rows training reads), else true (small data is read "
        "many times over). Always true with a distribution strategy other than default, "
        "the TF Lite export or Vertex training, and for auto on Vertex/Kubeflow.",
    )
    materialize_min_mb: int = Field(
        120,
        ge=0,
        description="The training window's input size (MB) from which auto stops "
        "materializing the transformed examples.",
    )

    @field_validator("materialize", mode="before")
    @classmethod
    def _boolean_words(cls, value: Any) -> Any:
        """1/0, yes/no, on/off as the boolean settings take them."""
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, str):
            return BOOLEAN_WORDS.get(value.strip().lower(), value.strip().lower())
        return value


class TrainingSettings(SettingsModel):
    """The Tuner and the Trainer: budget, distribution, the model-parallel variant, the seed."""

    model_config = env_config()

    enable_tuning: bool = Field(
        True,
        description="Run the Tuner; when off, the Trainer uses the last tuning result, "
        "else the defaults in models/hyperparameters.py.",
    )
    tuner_max_trials: int = Field(
        2,
        description="The Tuner's number of trials: the first trains the defaults of "
        "models/hyperparameters.py, the others must beat them. Raise it on your data.",
    )
    tuner_train_steps: int = Field(
        1000,
        description="Training steps of each trial; trials train as long as the "
        "Trainer does, so they rank what will be trained.",
    )
    train_steps: int = Field(1000, description="The Trainer's training steps.")
    eval_steps: int = Field(50, description="Evaluation steps of the Tuner and Trainer.")
    batch_size: int = Field(128, description="Training batch size.")
    distribution_strategy: Literal[STRATEGIES] = Field(
        "default", description="How the Trainer distributes training (README, Scale)."
    )
    ps_workers: int = Field(
        2,
        ge=1,
        description="parameter_server: workers of the cluster the Trainer starts "
        "locally (loopback processes), or the worker pool on Vertex.",
    )
    ps_tasks: int = Field(
        2, ge=1, description="parameter_server: ps tasks of that cluster, or the ps pool on Vertex."
    )
    ps_min_shard_bytes: int = Field(
        256 * 1024,
        ge=1,
        description="parameter_server: variables of at least twice this size are split by "
        "rows into shards of at least this size, at most PIPELINE_PS_MAX_SHARDS of "
        "them; smaller ones stay whole.",
    )
    ps_max_shards: int = Field(
        0, ge=0, description="parameter_server: most shards of one variable (0 = one per ps task)."
    )
    crossed_embedding_buckets: int = Field(
        0,
        description="The model-parallel variant: > 0 adds an embedding of two categorical "
        "inputs crossed and hashed into this many buckets (CROSSED_FEATURES in "
        "models/features.py, else the two with the most ids); 0 = off.",
        json_schema_extra={"shown_bounds": "0 (off) or at least 2"},
    )
    seed: int = Field(
        42,
        description="Seeds weight initialisation, shuffling and the tuner, so reruns train "
        "the same model.",
    )

    @field_validator("crossed_embedding_buckets")
    @classmethod
    def _off_or_two(cls, buckets: int) -> int:
        if buckets < 0 or buckets == 1:
            raise ValueError(
                f"PIPELINE_CROSSED_EMBEDDING_BUCKETS must be 0 (off) or at least 2, got {buckets}"
            )
        return buckets


class EvaluationSettings(SettingsModel):
    """The Evaluator: the candidate is blessed only if it clears every bound here."""

    model_config = env_config()

    min_auc: float = Field(
        features.MIN_AUC,
        description="Lowest AUC on the hold-out (overall slice).",
        json_schema_extra=features_default("MIN_AUC"),
    )
    min_binary_accuracy: float = Field(
        features.MIN_BINARY_ACCURACY,
        description="Lowest binary accuracy on the hold-out (overall slice).",
        json_schema_extra=features_default("MIN_BINARY_ACCURACY"),
    )
    max_auc_drop: float = Field(
        features.MAX_AUC_DROP,
        description="How much AUC the candidate may lose against the latest blessed model.",
        json_schema_extra=features_default("MAX_AUC_DROP"),
    )


class ContinuousSettings(SettingsModel):
    """Continuous training: warm start, progressive validation, the drift check, `make watch`."""

    model_config = env_config()

    warm_start: bool = Field(
        True,
        description="The Trainer starts from the latest blessed model's weights when the "
        "model's inputs match.",
    )
    warm_start_steps_fraction: float = Field(
        0.3,
        gt=0,
        le=1,
        description="A warm-started retrain runs this fraction of "
        "PIPELINE_TRAIN_STEPS (it starts near a good model).",
    )
    progressive_validation: bool = Field(
        True,
        description="The blessed model is evaluated on each new span before that span is "
        "trained on.",
    )
    check_drift: bool = Field(
        True,
        description="Drift of the new span against the previous accepted span of the "
        "training window (the schema's drift comparators); a drifted span "
        "stops the run before Transform.",
    )
    watch_interval_seconds: float = Field(
        30.0, description="`make watch`: seconds between two looks at the data location."
    )


class LeakageSettings(SettingsModel):
    """The LeakageCheck step after ExampleValidator (analysis/leakage.py)."""

    model_config = env_config("LEAKAGE_")

    check: bool = Field(True, description="Run the step; off = no such step.")
    fails_run: bool = Field(
        False,
        description="A leak fails the run before Transform (nothing trained or "
        "pushed); off = a warning only.",
    )
    auc_threshold: float = Field(
        0.98,
        ge=0.5,
        le=1,
        description="A feature whose single-feature AUC for the label exceeds this is reported "
        "as a warning (never fails the run: a strong legitimate feature may score "
        "0.9-0.95).",
    )
    sample_rows: int = Field(
        5000,
        ge=100,
        description="Rows of the new span's train split the checks use (bounds "
        "the step's time); also the most logged serving requests "
        "read (the newest).",
    )
    serving_log: bool = Field(
        True,
        description="Compare the new span's training rows with the model server's "
        "request log (if the file exists where the step runs): a model input "
        "present far more often, or distributed very differently, in training "
        "than in requests is a leak.",
    )
    serving_log_path: str = Field(
        "",
        alias="PIPELINE_SERVING_LOG_PATH",
        description="The request log that comparison reads: the model server's "
        "PIPELINE_SERVING_LOG_PATH (the same variable, read here too, as the "
        "pipeline never imports serving/); empty = "
        "<output_dir>/serving_logs/requests.jsonl.",
    )
    min_serving_rows: int = Field(
        200,
        ge=1,
        description="A serving leak is judged only with at least this many logged "
        "rows (and values, for a distribution).",
    )
    presence_gap: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="A leak when the share of rows with a value differs by "
        "more than this between training and requests...",
    )
    distribution_distance: float = Field(
        0.25,
        gt=0,
        lt=1,
        description="...or the L-infinity distance of value (category, or training-decile "
        "bin) frequencies exceeds this.",
    )


class BeamSettings(SettingsModel):
    """Where and how the data components' Beam pipelines run."""

    model_config = env_config("BEAM_")

    preset: Literal[BEAM_PRESETS] = Field(
        "direct",
        description="Where the data components' Beam pipelines run (see "
        "beam_preset_args): Beam's DirectRunner in the component's "
        "process, Google Cloud Dataflow, or a Flink or Spark cluster.",
    )
    direct_num_workers: str = Field(
        "auto",
        description="Beam's DirectRunner for Transform and the Evaluator (ingestion and "
        "statistics always run in-process on the DirectRunner, where worker processes "
        "cost more than they save): auto = one worker process per core once the "
        "training window's input files reach PIPELINE_BEAM_MULTIPROCESSING_"
        "MIN_MB, else in-process (on small data starting the worker "
        "processes costs more than the second core saves); 1 = in-process; "
        "0 = one worker process per core; N = N processes.",
        json_schema_extra={"shown_type": "auto or a number"},
    )
    multiprocessing_min_mb: int = Field(
        120,
        description="The training window's input size (MB) from which auto runs one "
        "worker process per core.",
    )
    cluster_address: str = Field(
        "",
        description="flink: the JobManager's REST address (host:8081); spark: the "
        "master's REST URL (http://host:6066).",
    )
    temp_location: str = Field(
        "",
        description="Beam's temp files (gs:// for Dataflow and BigQuery); empty = "
        "<storage dir>/beam-temp.",
    )
    extra_args: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        alias="PIPELINE_EXTRA_BEAM_ARGS",
        description="More Beam arguments, space separated, after the preset's: they add to "
        "them or override them.",
    )

    @field_validator("direct_num_workers")
    @classmethod
    def _workers(cls, workers: str) -> str:
        if workers != "auto" and not workers.isdigit():
            raise ValueError(
                f"PIPELINE_BEAM_DIRECT_NUM_WORKERS={workers!r}: expected auto, 1 "
                "(in-process), 0 (one process per core) or a number of processes"
            )
        return workers

    @field_validator("extra_args", mode="before")
    @classmethod
    def _split(cls, args: Any) -> Any:
        return tuple(args.split()) if isinstance(args, str) else args


class CloudSettings(SettingsModel):
    """Vertex AI / Kubeflow Pipelines, Google Cloud and Vertex training and serving."""

    model_config = env_config()

    container_image: str = Field(
        "",
        description="The image every step runs on Vertex/Kubeflow (Dockerfile); Dataflow, "
        "Flink and Spark workers and Vertex training replicas run it too.",
    )
    kubeflow_output_dir: str = Field(
        "",
        description="The gs:// counterpart of PIPELINE_OUTPUT_DIR on Vertex/Kubeflow: "
        "pipeline root <dir>/tfx/<name>, models pushed to files "
        "<dir>/serving_model/<name>, Beam temp files <dir>/beam-temp.",
    )
    kubeflow_spec_path: str = Field(
        "",
        description="Where kubeflow_runner.py writes the compiled spec; empty = "
        "<output_dir>/kubeflow/<pipeline name>.json (Vertex) or .yaml "
        "(self-hosted Kubeflow, whose client takes only YAML).",
    )
    gcp_project: str = Field(
        "",
        description="Google Cloud project of Dataflow, BigQuery, Vertex training and the "
        "Vertex endpoint.",
    )
    gcp_region: str = Field("", description="Google Cloud region of the same.")
    vertex_training_replicas: int = Field(
        0,
        description="Vertex AI training: with N > 0 replicas the Trainer runs as a "
        "Vertex custom job of one chief and N-1 workers (N > 1 needs "
        "PIPELINE_DISTRIBUTION_STRATEGY multi_worker); 0 = in the step. "
        "With parameter_server: one chief (the coordinator), "
        "PIPELINE_PS_WORKERS workers, PIPELINE_PS_TASKS ps.",
    )
    vertex_machine_type: str = Field(
        "n1-standard-4", description="Machine type of each training replica."
    )
    vertex_accelerator_type: str = Field(
        "",
        description="Accelerator of each training replica, e.g. NVIDIA_TESLA_T4; empty = CPU only.",
    )
    vertex_accelerator_count: int = Field(0, description="Accelerators per training replica.")
    vertex_endpoint: str = Field(
        "",
        description="Vertex AI endpoint the Pusher deploys blessed models to; empty = push "
        "to files.",
    )
    vertex_serving_image: str = Field(
        "us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15:latest",
        description="TF Serving build of the endpoint; 2.15 is the newest prebuilt one "
        "aiplatform lists.",
    )
    vertex_serving_machine_type: str = Field(
        "n1-standard-2", description="Machine type of the endpoint."
    )


class AirflowSettings(SettingsModel):
    """The Airflow DAG (airflow_runner.py) and its ML Metadata store."""

    model_config = env_config("AIRFLOW_")

    schedule: str = Field(
        "@daily",
        description="The DAG's schedule (a cron expression or preset); `none`: only runs "
        "that someone triggers (the UI, `tfx-template airflow-trigger`).",
    )
    start_date: str = Field("2024-01-01", description="The DAG's first date (ISO 8601).")
    retries: int = Field(1, ge=0, description="Retries of each task.")
    retry_delay_seconds: int = Field(
        300, ge=0, description="Seconds between a task's failure and its retry."
    )
    output_dir: str = Field(
        "",
        description="Shared storage (gs:// in production) for the pipeline root and pushed "
        "models of Airflow runs, which every worker reads; empty = "
        "PIPELINE_OUTPUT_DIR. The SQLite MLMD store stays under "
        "PIPELINE_OUTPUT_DIR: SQLite cannot live on gs://.",
    )
    mlmd_host: str = Field(
        "",
        description="The shared ML Metadata store: a MySQL (or MariaDB) server every worker "
        "reaches, e.g. a Cloud SQL instance's address. Empty (and no "
        "PIPELINE_AIRFLOW_MLMD_SOCKET) = SQLite under PIPELINE_OUTPUT_DIR, for one "
        "machine.",
    )
    mlmd_port: int = Field(3306, ge=1, le=65535, description="The MySQL server's port.")
    mlmd_socket: str = Field(
        "",
        description="The MySQL server's unix socket instead of host and port (e.g. the Cloud "
        "SQL Auth Proxy's).",
    )
    mlmd_database: str = Field("mlmd", description="The MySQL database of the MLMD store.")
    mlmd_user: str = Field("", description="The MySQL user.")
    mlmd_password_file: str = Field(
        "",
        description="A file holding the MySQL user's password (a mounted secret); the "
        "password itself is never a setting.",
    )

    api_url: str = Field(
        "http://127.0.0.1:8080",
        description="Airflow's webserver, whose stable REST API (basic auth) "
        "`tfx-template airflow-trigger` calls.",
    )
    api_user: str = Field("admin", description="The Airflow user that triggers runs.")
    api_password_file: str = Field(
        str(PROJECT_ROOT / "outputs" / "airflow" / "admin-password"),
        description="A file holding that user's password (`make airflow-up` writes this one).",
        json_schema_extra={"shown_default": "`outputs/airflow/admin-password`"},
    )

    @property
    def mlmd_on_mysql(self) -> bool:
        return bool(self.mlmd_host or self.mlmd_socket)

    @model_validator(mode="after")
    def _mysql_complete(self) -> AirflowSettings:
        if self.mlmd_on_mysql and not self.mlmd_user:
            raise ValueError(
                "PIPELINE_AIRFLOW_MLMD_USER is not set: the MySQL MLMD store "
                "(PIPELINE_AIRFLOW_MLMD_HOST or _SOCKET) needs a user"
            )
        if self.mlmd_host and self.mlmd_socket:
            raise ValueError(
                "PIPELINE_AIRFLOW_MLMD_HOST and PIPELINE_AIRFLOW_MLMD_SOCKET are both set: "
                "the MySQL MLMD store is reached through one of them"
            )
        return self


class TfliteSettings(SettingsModel):
    """TF Lite export of pushed models (pipeline/tflite.py)."""

    model_config = env_config("TFLITE_", title="TF Lite")

    export: bool = Field(
        False, description="After the Pusher, also export each pushed model as TF Lite."
    )
    quantization: Literal[TFLITE_QUANTIZATIONS] = Field(
        "dynamic",
        description="dynamic: int8 weights (no data needed); int8: full-integer, "
        "calibrated on transformed data.",
    )
    representative_examples: int = Field(
        200,
        ge=1,
        description="How many transformed training examples calibrate full-integer quantization.",
    )


class PipelineSettings(SettingsTree):
    """The pipeline: its name, who runs it, caching, and every group of its settings.

    `PipelineSettings.load(environ, **overrides)` takes overrides by variable name without
    `PIPELINE_`, lower-cased (`train_steps=5`, `beam_preset="flink"`, `name="my-pipeline"`),
    as does `with_overrides`."""

    # No alias generator here: the groups are no variables of their own.
    name: str = Field(
        features.PIPELINE_NAME,
        alias="PIPELINE_NAME",
        description="The pipeline's name: lowercase letters, digits and hyphens, starting with "
        "a letter, at most 63 characters (what Kubeflow Pipelines v2 and Vertex AI "
        "accept).",
        json_schema_extra=features_default("PIPELINE_NAME"),
    )
    orchestrator: Literal[ORCHESTRATORS] = Field(
        "local",
        alias="PIPELINE_ORCHESTRATOR",
        description="Who runs the pipeline (the runners set it). Vertex and self-hosted "
        "Kubeflow run fewer resolvers than TFX itself, which changes the pipeline "
        "(see PipelineSettings.resolvers).",
    )
    enable_cache: bool = Field(
        True, alias="PIPELINE_ENABLE_CACHE", description="TFX pipeline caching."
    )

    data: DataSettings = Field(default_factory=DataSettings)
    transform: TransformSettings = Field(default_factory=TransformSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)
    continuous: ContinuousSettings = Field(default_factory=ContinuousSettings)
    leakage: LeakageSettings = Field(default_factory=LeakageSettings)
    beam: BeamSettings = Field(default_factory=BeamSettings)
    cloud: CloudSettings = Field(default_factory=CloudSettings)
    airflow: AirflowSettings = Field(default_factory=AirflowSettings)
    tflite: TfliteSettings = Field(default_factory=TfliteSettings)

    @field_validator("name")
    @classmethod
    def _kubeflow_name(cls, name: str) -> str:
        validate_kubeflow_name(name)
        return name

    @model_validator(mode="after")
    def _consistent(self) -> PipelineSettings:
        cloud, strategy = self.cloud, self.training.distribution_strategy
        needs_image = (
            self.on_kubeflow or self.beam.preset != "direct" or cloud.vertex_training_replicas > 0
        )
        if needs_image and not cloud.container_image:
            raise ValueError(
                "PIPELINE_CONTAINER_IMAGE is not set: on Vertex/Kubeflow, cluster Beam presets "
                "and Vertex training every step runs in the pipeline image; build and push it "
                "(see Dockerfile), e.g. PIPELINE_CONTAINER_IMAGE=europe-west4-docker.pkg.dev/"
                f"PROJECT/pipelines/{self.name}:TAG"
            )
        if self.on_kubeflow and not cloud.kubeflow_output_dir.startswith("gs://"):
            raise ValueError(
                f"PIPELINE_KUBEFLOW_OUTPUT_DIR={cloud.kubeflow_output_dir!r}: set a gs:// "
                "directory (pipeline root, pushed models, Beam temp files); steps run in "
                "containers and write it with tf.io.gfile"
            )
        if cloud.vertex_training_replicas > 1 and strategy not in (
            "multi_worker",
            "parameter_server",
        ):
            raise ValueError(
                f"PIPELINE_VERTEX_TRAINING_REPLICAS={cloud.vertex_training_replicas} needs "
                "PIPELINE_DISTRIBUTION_STRATEGY=multi_worker (each replica is a worker) or "
                "parameter_server (PIPELINE_PS_WORKERS and PIPELINE_PS_TASKS size its pools)"
            )
        cloud_uses = [
            use
            for use, wanted in (
                ("PIPELINE_BEAM_PRESET=dataflow", self.beam.preset == "dataflow"),
                ("PIPELINE_BIGQUERY_QUERY", bool(self.data.bigquery_query)),
                ("PIPELINE_VERTEX_TRAINING_REPLICAS", cloud.vertex_training_replicas > 0),
                ("PIPELINE_VERTEX_ENDPOINT", bool(cloud.vertex_endpoint)),
            )
            if wanted
        ]
        if cloud_uses and not (cloud.gcp_project and cloud.gcp_region):
            raise ValueError(
                f"{', '.join(cloud_uses)} needs PIPELINE_GCP_PROJECT and PIPELINE_GCP_REGION"
            )
        return self

    @property
    def on_kubeflow(self) -> bool:
        """Steps run in the container image from a KFP v2 spec (Vertex AI or self-hosted)."""
        return self.orchestrator in KUBEFLOW_ORCHESTRATORS

    @property
    def storage_dir(self) -> str:
        """Where runs write: output_dir, or kubeflow_output_dir when steps run in containers
        (the Airflow output dir, if set, on Airflow)."""
        if self.orchestrator == "airflow" and self.airflow.output_dir:
            return self.airflow.output_dir
        return self.cloud.kubeflow_output_dir if self.on_kubeflow else self.data.output_dir

    @property
    def pipeline_root(self) -> str:
        return os.path.join(self.storage_dir, "tfx", self.name)

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.data.output_dir, "metadata", self.name, "metadata.db")

    @property
    def serving_model_dir(self) -> str:
        return os.path.join(self.storage_dir, "serving_model", self.name)

    @property
    def request_log_path(self) -> str:
        """The model server's request log (PIPELINE_SERVING_LOG_PATH, else under output_dir)."""
        return self.leakage.serving_log_path or os.path.join(
            self.data.output_dir, "serving_logs", "requests.jsonl"
        )

    @property
    def beam_temp_dir(self) -> str:
        return self.beam.temp_location or os.path.join(self.storage_dir, "beam-temp")

    @property
    def resolvers(self) -> str:
        """Which resolver nodes the orchestrator runs:
        "any"    TFX resolves inputs from MLMD itself, with any strategy (local, Airflow);
        "stock"  Vertex runs the artifact queries TFX compiles from LatestArtifactStrategy
                 and LatestBlessedModelStrategy, and no other strategy compiles
                 (tfx/orchestration/kubeflow/v2/step_builder.py, _build_resolver_spec);
        "none"   the self-hosted KFP v2 backend rejects any resolver ("resolver not
                 implemented yet", backend/src/v2/compiler/argocompiler/argo.go, 2.0-2.16).
        """
        return {"vertex": "stock", "kubeflow": "none"}.get(self.orchestrator, "any")

    @property
    def example_gen_reads_window(self) -> bool:
        """ExampleGen reads the whole training window every run, instead of one new span
        that the span window resolver adds to the spans of earlier runs: where that resolver
        cannot run, and for a query, whose result has no spans."""
        return self.resolvers != "any" or bool(self.data.bigquery_query)

    @property
    def pipeline_caching(self) -> bool:
        """enable_cache, unless nothing fingerprints ExampleGen's input, so a cached ExampleGen
        would never see new data: a query's result, or files on self-hosted KFP v2, whose
        backend skips ExampleGen's driver (the preCacheCheck hook only Vertex runs)."""
        return (
            self.enable_cache and not self.data.bigquery_query and self.orchestrator != "kubeflow"
        )

    @property
    def beam_pipeline_args(self) -> list[str]:
        return beam_preset_args(
            self.beam, self.cloud, self.beam_temp_dir, reads_bigquery=bool(self.data.bigquery_query)
        ) + list(self.beam.extra_args)

    def runtime_path(self, path: str) -> str:
        """`path` as the pipeline's steps see it. On Vertex/Kubeflow they run in the image,
        which holds this project at IMAGE_PROJECT_ROOT, so a path inside the checkout moves
        there (the shipped schema, or data baked into the image); URIs and other paths stay."""
        if not self.on_kubeflow or "://" in path:
            return path
        try:
            relative = Path(os.path.abspath(path)).relative_to(PROJECT_ROOT)
        except ValueError:
            return path
        return str(IMAGE_PROJECT_ROOT / relative)


def validate_kubeflow_name(name: str) -> None:
    """KFP v2 and Vertex accept only these names; TFX's compiler would otherwise fail deep
    inside with a garbled message ("User provided pipeline name % is illegal")."""
    if not PIPELINE_NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"PIPELINE_NAME={name!r}: use lowercase letters, digits and hyphens, starting with "
            "a letter and at most 63 characters (Kubeflow Pipelines v2 and Vertex AI accept "
            "nothing else), e.g. 'my-pipeline'"
        )
