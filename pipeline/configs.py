"""Every setting of the pipeline, in one place, each overridable from the environment.

`Settings.from_env()` reads `PIPELINE_*` variables; nothing here touches the network or
the file system when imported, so runners and tests can build settings freely.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from pathlib import Path
from typing import Optional

from models import features

# The checkout (or installed editable project) that holds pipeline/, models/, data/, schema/.
PROJECT_ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = PROJECT_ROOT / "models"

STRATEGIES = ("default", "mirrored", "multi_worker", "parameter_server")
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


@dataclasses.dataclass(frozen=True)
class Settings:
    # Dataset facts (name, blessing thresholds, event time) default to models/features.py.
    pipeline_name: str = features.PIPELINE_NAME
    data_dir: str = str(PROJECT_ROOT / "data")
    # All local state (pipeline root, MLMD store, pushed models) lives under this directory.
    output_dir: str = str(PROJECT_ROOT / "outputs")
    schema_path: str = str(PROJECT_ROOT / "schema" / "schema.pbtxt")
    # Infer the schema with SchemaGen instead of importing the curated one (for new data).
    infer_schema: bool = False
    # Input files of one span: `{SPAN}` is replaced by the span number.
    span_pattern: str = "span-{SPAN}/*.csv"
    # How many of the newest spans the Transform and Trainer see.
    train_window_spans: int = 6
    # A BigQuery query instead of files (BigQueryExampleGen). Its result is the whole training
    # window, so ExampleGen reads the window every run (see example_gen_reads_window).
    bigquery_query: str = ""
    # ExampleGen splits every span into train/eval by hash, in this ratio.
    train_hash_buckets: int = 3
    eval_hash_buckets: int = 1

    # Transform's own pre/post-transform statistics (slow; StatisticsGen covers raw data).
    transform_statistics: bool = False
    # Transform traces preprocessing_fn as one TF1 graph instead of several tf.functions:
    # 3.5 s less per Transform run on the shipped data, same outputs. Switch it off for a
    # preprocessing_fn that needs TF2-only features (e.g. tf.function-decorated helpers).
    transform_tf1_graph: bool = True

    enable_tuning: bool = True
    tuner_max_trials: int = 6
    # Trials train as long as the Trainer does, so they rank what will be trained.
    tuner_train_steps: int = 1000
    train_steps: int = 1000
    eval_steps: int = 50
    batch_size: int = 128
    distribution_strategy: str = "default"
    # parameter_server (README, Parameter-server training): workers and ps tasks of the cluster
    # the Trainer starts locally (loopback processes), or the worker and ps pools on Vertex.
    ps_workers: int = 2
    ps_tasks: int = 2
    # Variables of at least twice this size are split by rows into shards of at least this
    # size, at most ps_max_shards of them (0 = one per ps task); smaller ones stay whole.
    ps_min_shard_bytes: int = 256 * 1024
    ps_max_shards: int = 0
    # The model-parallel variant: > 0 adds an embedding of two categorical inputs crossed and
    # hashed into this many buckets (CROSSED_FEATURES in models/features.py, else the two
    # with the most ids); 0 = off.
    crossed_embedding_buckets: int = 0
    # Seeds weight initialisation, shuffling and the tuner, so reruns train the same model.
    seed: int = 42

    # Evaluator: the candidate is blessed only if it clears every bound here.
    min_auc: float = features.MIN_AUC
    min_binary_accuracy: float = features.MIN_BINARY_ACCURACY
    # How much AUC the candidate may lose against the latest blessed model.
    max_auc_drop: float = features.MAX_AUC_DROP

    # Airflow (airflow_runner.py): the DAG's schedule, first date and task retries.
    airflow_schedule: str = "@daily"
    airflow_start_date: str = "2024-01-01"
    airflow_retries: int = 1
    # Shared storage (gs:// in production) for the pipeline root and pushed models of Airflow
    # runs, which every worker reads; empty = output_dir. The SQLite MLMD store stays under
    # output_dir: SQLite cannot live on gs://.
    airflow_output_dir: str = ""

    # Who runs the pipeline (one of ORCHESTRATORS; the runners set it). Vertex and self-hosted
    # Kubeflow run fewer resolvers than TFX itself, which changes the pipeline (see resolvers).
    orchestrator: str = "local"
    # Vertex/Kubeflow (kubeflow_runner.py). The image every step runs (Dockerfile); Dataflow,
    # Flink and Spark workers and Vertex training replicas run it too.
    container_image: str = ""
    # The gs:// counterpart of output_dir there: pipeline root <dir>/tfx/<name>, models pushed
    # to files <dir>/serving_model/<name>, Beam temp files <dir>/beam-temp.
    kubeflow_output_dir: str = ""
    # Where kubeflow_runner.py writes the compiled spec; empty = <output_dir>/kubeflow/
    # <pipeline name>.json (Vertex) or .yaml (self-hosted Kubeflow, whose client takes only YAML).
    kubeflow_spec_path: str = ""
    # Google Cloud project and region of Dataflow, Vertex training and the Vertex endpoint.
    gcp_project: str = ""
    gcp_region: str = ""
    # Vertex AI training: with N > 0 replicas the Trainer runs as a Vertex custom job of one
    # chief and N-1 workers (N > 1 needs distribution_strategy multi_worker); 0 = in the step.
    # With parameter_server: one chief (the coordinator), ps_workers workers, ps_tasks ps.
    vertex_training_replicas: int = 0
    vertex_machine_type: str = "n1-standard-4"
    vertex_accelerator_type: str = ""  # e.g. NVIDIA_TESLA_T4; empty = CPU only
    vertex_accelerator_count: int = 0
    # Vertex AI endpoint the Pusher deploys blessed models to; empty = push to files.
    vertex_endpoint: str = ""
    # TF Serving build of the endpoint; 2.15 is the newest prebuilt one aiplatform lists.
    vertex_serving_image: str = "us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15:latest"
    vertex_serving_machine_type: str = "n1-standard-2"

    enable_cache: bool = True
    # Where the data components' Beam pipelines run: direct, dataflow, flink or spark (see
    # beam_preset_args).
    beam_preset: str = "direct"
    # Beam's DirectRunner: "auto" = one worker process per core once the training window's
    # input files reach beam_multiprocessing_min_mb, else in-process (on small data starting
    # the worker processes costs more than the second core saves: README, Growth);
    # 1 = in-process; 0 = one worker process per core; N = N processes.
    beam_direct_num_workers: str = "auto"
    beam_multiprocessing_min_mb: int = 120
    # flink: the JobManager's REST address (host:8081); spark: the master's REST URL
    # (http://host:6066).
    beam_cluster_address: str = ""
    # Beam's temp files (gs:// for Dataflow and BigQuery); empty = <output dir>/beam-temp.
    beam_temp_location: str = ""
    # Appended to the preset's arguments, so they add to them or override them.
    extra_beam_args: tuple[str, ...] = ()

    # --- Serving (serving/): the local model server, batch predictions, skew detection.
    # Loopback by default: exposing the server is a deliberate choice (0.0.0.0 in a container).
    serving_host: str = "127.0.0.1"
    serving_port: int = 8501  # TF Serving's REST port, so clients work against both
    # Model name in the URLs (/v1/models/<name>); empty = the pipeline name.
    serving_model_name: str = ""
    # Larger request bodies get 413 before anything is parsed.
    serving_max_body_bytes: int = 4 * 1024 * 1024
    # Micro-batching: concurrent requests merge into one model call of at most this many rows;
    # under concurrent load a batch waits at most this long for others to join (a lone client never).
    serving_max_batch_size: int = 256
    serving_max_batch_wait_ms: float = 2.0
    # How often the server looks for newly pushed versions, and how many newest it keeps loaded.
    serving_poll_seconds: float = 2.0
    serving_keep_versions: int = 2
    # Request/response log (JSON lines) for monitoring and skew detection; rate 0 = off.
    serving_log_sampling_rate: float = 0.0
    serving_log_path: str = ""  # empty = <output_dir>/serving_logs/requests.jsonl
    # Hybrid serving: answer keyed requests from the batch predictions table when it has the key.
    serving_hybrid: bool = False
    # Batch predictions: "sqlite" (a local file) or "bigquery" (needs GCP settings).
    batch_predict_warehouse: str = "sqlite"
    batch_predict_sqlite_path: str = ""  # empty = <output_dir>/warehouse/predictions.db
    batch_predict_table: str = "predictions"  # SQLite table, or BigQuery dataset.table
    batch_predict_span: int = 0  # 0 = the newest span in data_dir

    # --- Continuous training: triggers, warm start, progressive validation, streaming.
    # A span folder counts as complete (ingestible) once this file is in it, so a half-copied
    # span is never read; empty = every span folder counts as complete.
    span_complete_marker: str = "_COMPLETE"
    # A span with fewer rows is rejected before training (too few to train and evaluate on).
    min_span_rows: int = 50
    # The Trainer starts from the latest blessed model's weights when the model's inputs match.
    warm_start: bool = True
    # A warm-started retrain runs this fraction of train_steps (it starts near a good model).
    warm_start_steps_fraction: float = 0.3
    # The blessed model is evaluated on each new span before that span is trained on.
    progressive_validation: bool = True
    # Drift of the new span against the previous accepted span of the training window (the
    # schema's drift comparators); a drifted span stops the run before Transform.
    check_drift: bool = True
    # `make watch`: seconds between two looks at the data location.
    watch_interval_seconds: float = 30.0
    # Streaming ingestion (streaming/): event-time window of one span, and how long after a
    # window closed a late event is still caught (and dead-lettered as late, not dropped).
    streaming_window_seconds: int = 86400
    streaming_allowed_lateness_seconds: int = 7 * 86400
    # The event field that holds the event time (Unix seconds).
    streaming_event_time_field: str = features.TIME_COLUMN

    # --- Exploring results: report, lineage, leakage check.
    # The LeakageCheck step after ExampleValidator (pipeline/leakage.py); off = no such step.
    leakage_check: bool = True
    # A leak fails the run before Transform (nothing trained or pushed); off = a warning only.
    leakage_fails_run: bool = False
    # A feature whose single-feature AUC for the label exceeds this is reported as a warning
    # (never fails the run: a strong legitimate feature may score 0.9-0.95).
    leakage_auc_threshold: float = 0.98
    # Rows of the new span's train split the checks use (bounds the step's time); also the
    # most logged serving requests read (the newest).
    leakage_sample_rows: int = 5000
    # Compare the new span's training rows with the model server's request log
    # (serving_log_path, if the file exists where the step runs): a model input present far
    # more often, or distributed very differently, in training than in requests is a leak.
    leakage_serving_log: bool = True
    # ...judged only with at least this many logged rows (and values, for a distribution);
    leakage_min_serving_rows: int = 200
    # ...a leak when the share of rows with a value differs by more than this;
    leakage_presence_gap: float = 0.2
    # ...or the L-infinity distance of value (category, or training-decile bin) frequencies
    # exceeds this.
    leakage_distribution_distance: float = 0.25
    # Where `make report` writes its HTML file; empty = <output_dir>/report/<pipeline name>.html.
    report_path: str = ""

    # --- Scale: growth data, TF Lite export.
    # After the Pusher, also export each pushed model as TF Lite (pipeline/components/tflite_exporter.py).
    tflite_export: bool = False
    # dynamic: int8 weights (no data needed); int8: full-integer, calibrated on transformed data.
    tflite_quantization: str = "dynamic"
    # How many transformed training examples calibrate full-integer quantization.
    tflite_representative_examples: int = 200

    @property
    def on_kubeflow(self) -> bool:
        """Steps run in container_image from a KFP v2 spec (Vertex AI or self-hosted)."""
        return self.orchestrator in KUBEFLOW_ORCHESTRATORS

    @property
    def storage_dir(self) -> str:
        """Where runs write: output_dir, or kubeflow_output_dir when steps run in containers
        (airflow_output_dir, if set, on Airflow)."""
        if self.orchestrator == "airflow" and self.airflow_output_dir:
            return self.airflow_output_dir
        return self.kubeflow_output_dir if self.on_kubeflow else self.output_dir

    @property
    def pipeline_root(self) -> str:
        return os.path.join(self.storage_dir, "tfx", self.pipeline_name)

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.output_dir, "metadata", self.pipeline_name, "metadata.db")

    @property
    def serving_model_dir(self) -> str:
        return os.path.join(self.storage_dir, "serving_model", self.pipeline_name)

    @property
    def request_log_path(self) -> str:
        """The model server's request log (serving/ writes it, the leakage check reads it)."""
        return self.serving_log_path or os.path.join(self.output_dir, "serving_logs",
                                                     "requests.jsonl")

    @property
    def beam_temp_dir(self) -> str:
        return self.beam_temp_location or os.path.join(self.storage_dir, "beam-temp")

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
        return self.resolvers != "any" or bool(self.bigquery_query)

    @property
    def pipeline_caching(self) -> bool:
        """enable_cache, unless nothing fingerprints ExampleGen's input, so a cached ExampleGen
        would never see new data: a query's result, or files on self-hosted KFP v2, whose
        backend skips ExampleGen's driver (the preCacheCheck hook only Vertex runs)."""
        return (self.enable_cache and not self.bigquery_query
                and self.orchestrator != "kubeflow")

    @property
    def beam_pipeline_args(self) -> list[str]:
        return beam_preset_args(self) + list(self.extra_beam_args)

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

    @classmethod
    def from_env(cls, environ: Optional[dict[str, str]] = None, **overrides) -> "Settings":
        """Defaults, then `PIPELINE_<FIELD>` environment variables (see env_name), then
        `overrides`."""
        environ = os.environ if environ is None else environ
        values = {}
        for field in dataclasses.fields(cls):
            raw = environ.get(env_name(field.name))
            if raw is not None and raw != "":
                values[field.name] = _parse(field, raw)
        values.update(overrides)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        _check_choice("distribution_strategy", self.distribution_strategy, STRATEGIES)
        for name in ("ps_workers", "ps_tasks", "ps_min_shard_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{env_name(name)} must be at least 1, got {getattr(self, name)}")
        for name in ("ps_max_shards", "crossed_embedding_buckets"):
            if getattr(self, name) < 0:
                raise ValueError(f"{env_name(name)} must be 0 or more, got {getattr(self, name)}")
        if 0 < self.crossed_embedding_buckets < 2:
            raise ValueError("PIPELINE_CROSSED_EMBEDDING_BUCKETS must be 0 (off) or at least 2, "
                             f"got {self.crossed_embedding_buckets}")
        _check_choice("tflite_quantization", self.tflite_quantization, TFLITE_QUANTIZATIONS)
        if self.tflite_representative_examples < 1:
            raise ValueError("PIPELINE_TFLITE_REPRESENTATIVE_EXAMPLES must be at least 1, "
                             f"got {self.tflite_representative_examples}")
        if self.train_window_spans < 1:
            raise ValueError("PIPELINE_TRAIN_WINDOW_SPANS must be at least 1, "
                             f"got {self.train_window_spans}")
        if "{SPAN}" not in self.span_pattern:
            raise ValueError(f"PIPELINE_SPAN_PATTERN={self.span_pattern!r} must contain {{SPAN}}")
        validate_kubeflow_name(self.pipeline_name)
        if not 0 < self.warm_start_steps_fraction <= 1:
            raise ValueError("PIPELINE_WARM_START_STEPS_FRACTION must be in (0, 1], "
                             f"got {self.warm_start_steps_fraction}")
        if "/" in self.span_complete_marker:
            raise ValueError("PIPELINE_SPAN_COMPLETE_MARKER must be a file name, "
                             f"got {self.span_complete_marker!r}")
        if self.min_span_rows < 1:
            raise ValueError(f"PIPELINE_MIN_SPAN_ROWS must be at least 1, got {self.min_span_rows}")
        if self.streaming_window_seconds < 1:
            raise ValueError("PIPELINE_STREAMING_WINDOW_SECONDS must be at least 1, "
                             f"got {self.streaming_window_seconds}")
        _check_choice("orchestrator", self.orchestrator, ORCHESTRATORS)
        _check_choice("beam_preset", self.beam_preset, BEAM_PRESETS)
        if self.beam_direct_num_workers != "auto" and not self.beam_direct_num_workers.isdigit():
            raise ValueError(f"PIPELINE_BEAM_DIRECT_NUM_WORKERS={self.beam_direct_num_workers!r}:"
                             " expected auto, 1 (in-process), 0 (one process per core) or a "
                             "number of processes")
        needs_image = (self.on_kubeflow or self.beam_preset != "direct"
                       or self.vertex_training_replicas > 0)
        if needs_image and not self.container_image:
            raise ValueError(
                "PIPELINE_CONTAINER_IMAGE is not set: on Vertex/Kubeflow, cluster Beam presets "
                "and Vertex training every step runs in the pipeline image; build and push it "
                "(see Dockerfile), e.g. PIPELINE_CONTAINER_IMAGE=europe-west4-docker.pkg.dev/"
                f"PROJECT/pipelines/{self.pipeline_name}:TAG")
        if self.on_kubeflow and not self.kubeflow_output_dir.startswith("gs://"):
            raise ValueError(
                f"PIPELINE_KUBEFLOW_OUTPUT_DIR={self.kubeflow_output_dir!r}: set a gs:// "
                "directory (pipeline root, pushed models, Beam temp files); steps run in "
                "containers and write it with tf.io.gfile")
        if self.vertex_training_replicas > 1 and self.distribution_strategy not in (
                "multi_worker", "parameter_server"):
            raise ValueError(
                f"PIPELINE_VERTEX_TRAINING_REPLICAS={self.vertex_training_replicas} needs "
                "PIPELINE_DISTRIBUTION_STRATEGY=multi_worker (each replica is a worker) or "
                "parameter_server (PIPELINE_PS_WORKERS and PIPELINE_PS_TASKS size its pools)")
        cloud_uses = [use for use, wanted in (
            ("PIPELINE_BEAM_PRESET=dataflow", self.beam_preset == "dataflow"),
            ("PIPELINE_BIGQUERY_QUERY", bool(self.bigquery_query)),
            ("PIPELINE_VERTEX_TRAINING_REPLICAS", self.vertex_training_replicas > 0),
            ("PIPELINE_VERTEX_ENDPOINT", bool(self.vertex_endpoint))) if wanted]
        if cloud_uses and not (self.gcp_project and self.gcp_region):
            raise ValueError(f"{', '.join(cloud_uses)} needs PIPELINE_GCP_PROJECT and "
                             "PIPELINE_GCP_REGION")
        # Exploring results
        if not 0.5 <= self.leakage_auc_threshold <= 1.0:
            raise ValueError("PIPELINE_LEAKAGE_AUC_THRESHOLD must be between 0.5 and 1, "
                             f"got {self.leakage_auc_threshold}")
        if self.leakage_sample_rows < 100:
            raise ValueError("PIPELINE_LEAKAGE_SAMPLE_ROWS must be at least 100, "
                             f"got {self.leakage_sample_rows}")
        if self.leakage_min_serving_rows < 1:
            raise ValueError("PIPELINE_LEAKAGE_MIN_SERVING_ROWS must be at least 1, "
                             f"got {self.leakage_min_serving_rows}")
        for name in ("leakage_presence_gap", "leakage_distribution_distance"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{env_name(name)} must be between 0 and 1, "
                                 f"got {getattr(self, name)}")
        # Serving
        if not 0.0 <= self.serving_log_sampling_rate <= 1.0:
            raise ValueError("PIPELINE_SERVING_LOG_SAMPLING_RATE must be between 0 and 1, "
                             f"got {self.serving_log_sampling_rate}")
        for name in ("serving_max_body_bytes", "serving_max_batch_size", "serving_keep_versions"):
            if getattr(self, name) < 1:
                raise ValueError(f"{env_name(name)} must be at least 1, got {getattr(self, name)}")
        _check_choice("batch_predict_warehouse", self.batch_predict_warehouse, ("sqlite", "bigquery"))
        if self.batch_predict_warehouse == "bigquery" and not (
                self.gcp_project and "." in self.batch_predict_table):
            raise ValueError("PIPELINE_BATCH_PREDICT_WAREHOUSE=bigquery needs PIPELINE_GCP_PROJECT "
                             "and PIPELINE_BATCH_PREDICT_TABLE as dataset.table")


def _check_choice(field_name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{env_name(field_name)}={value!r}: expected one of {', '.join(choices)}")


def env_name(field_name: str) -> str:
    """The environment variable of a setting: PIPELINE_ + its name (pipeline_name: PIPELINE_NAME)."""
    return "PIPELINE_" + field_name.removeprefix("pipeline_").upper()


def _parse(field: dataclasses.Field, raw: str):
    name = env_name(field.name)
    kind = field.type
    try:
        if kind == "bool":
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind.startswith("tuple"):
            return tuple(raw.split())
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected {kind}") from None
    return raw


def validate_kubeflow_name(name: str) -> None:
    """KFP v2 and Vertex accept only these names; TFX's compiler would otherwise fail deep
    inside with a garbled message ("User provided pipeline name % is illegal")."""
    if not PIPELINE_NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"PIPELINE_NAME={name!r}: use lowercase letters, digits and hyphens, starting with "
            "a letter and at most 63 characters (Kubeflow Pipelines v2 and Vertex AI accept "
            "nothing else), e.g. 'my-pipeline'")


def beam_preset_args(settings: Settings) -> list[str]:
    """Beam arguments of the data components (ExampleGen, StatisticsGen, Transform, Evaluator)
    for `settings.beam_preset`; PIPELINE_EXTRA_BEAM_ARGS follow them and win on conflicts.

    direct    Beam's DirectRunner inside the component's own process (the default).
    dataflow  Google Cloud Dataflow in gcp_project/gcp_region, temp files in beam_temp_dir.
    flink     an Apache Flink cluster: FlinkRunner submits an uber jar to the JobManager's REST
              address (beam_cluster_address, host:8081); no job server to run.
    spark     an Apache Spark cluster: SparkRunner submits an uber jar to the master's REST
              URL (beam_cluster_address, http://host:6066).

    Remote workers run container_image (it has TFX and this project installed and Beam's boot
    entrypoint), so TFX stages no sdist of itself. Flink and Spark start it with Docker on each
    worker; for a worker-pool sidecar instead, add
    `--environment_type=EXTERNAL --environment_config=localhost:50000`.
    """
    if settings.beam_preset == "direct":
        # Any Beam argument makes TFX package itself into an sdist for remote workers, in
        # every Beam component (seconds each); the in-process DirectRunner needs none.
        # "auto" is resolved against the data when the pipeline is built
        # (spans.with_beam_workers); unresolved (e.g. the batch job) it means in-process.
        workers = settings.beam_direct_num_workers
        args = [] if workers in ("auto", "1") else [
            "--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"]
        # BigQuery reads export through the project's jobs and a gs:// temp location.
        return args + (_gcp_beam_args(settings) if settings.bigquery_query else [])
    image = settings.container_image
    if settings.beam_preset == "dataflow":
        # Custom containers need Dataflow Runner v2.
        return ["--runner=DataflowRunner", *_gcp_beam_args(settings),
                f"--sdk_container_image={image}", "--experiments=use_runner_v2"]
    portable = ["--environment_type=DOCKER", f"--environment_config={image}",
                # Tells TFX and Beam the workers' image has every dependency: nothing staged.
                f"--sdk_container_image={image}"]
    if settings.beam_preset == "flink":
        return ["--runner=FlinkRunner", f"--flink_master={settings.beam_cluster_address}",
                "--flink_submit_uber_jar", *portable]
    if settings.beam_preset == "spark":
        return ["--runner=SparkRunner", f"--spark_rest_url={settings.beam_cluster_address}",
                "--spark_submit_uber_jar", *portable]
    raise ValueError(f"PIPELINE_BEAM_PRESET={settings.beam_preset!r}: "
                     f"expected one of {', '.join(BEAM_PRESETS)}")


def _gcp_beam_args(settings: Settings) -> list[str]:
    return [f"--project={settings.gcp_project}", f"--region={settings.gcp_region}",
            f"--temp_location={settings.beam_temp_dir}"]


def models_fingerprint() -> str:
    """A hash of the user's code in models/: it goes into the components' custom config,
    so editing the preprocessing or the model invalidates the pipeline cache."""
    digest = hashlib.sha256()
    for path in sorted(MODELS_DIR.rglob("*.py")):
        digest.update(path.relative_to(MODELS_DIR).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
