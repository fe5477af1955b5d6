"""Every setting of the pipeline, in one place, each overridable from the environment.

`Settings.from_env()` reads `PIPELINE_*` variables; nothing here touches the network or
the file system when imported, so runners and tests can build settings freely.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Optional

# The checkout (or installed editable project) that holds pipeline/, models/, data/, schema/.
PROJECT_ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = PROJECT_ROOT / "models"

STRATEGIES = ("default", "mirrored", "multi_worker")


@dataclasses.dataclass(frozen=True)
class Settings:
    pipeline_name: str = "taxi-tips"
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
    # ExampleGen splits every span into train/eval by hash, in this ratio.
    train_hash_buckets: int = 3
    eval_hash_buckets: int = 1

    # Transform's own pre/post-transform statistics (slow; StatisticsGen covers raw data).
    transform_statistics: bool = False

    enable_tuning: bool = True
    tuner_max_trials: int = 6
    # Trials train as long as the Trainer does, so they rank what will be trained.
    tuner_train_steps: int = 1000
    train_steps: int = 1000
    eval_steps: int = 50
    batch_size: int = 128
    distribution_strategy: str = "default"
    # Seeds weight initialisation, shuffling and the tuner, so reruns train the same model.
    seed: int = 42

    # Evaluator: the candidate is blessed only if it clears every bound here.
    min_auc: float = 0.90
    min_binary_accuracy: float = 0.80
    # How much AUC the candidate may lose against the latest blessed model.
    max_auc_drop: float = 0.01

    # Airflow (airflow_runner.py): the DAG's schedule, first date and task retries.
    airflow_schedule: str = "@daily"
    airflow_start_date: str = "2024-01-01"
    airflow_retries: int = 1

    enable_cache: bool = True
    # Beam's DirectRunner: 1 = in-process; 0 = one worker process per core.
    beam_direct_num_workers: int = 1
    extra_beam_args: tuple[str, ...] = ()

    @property
    def pipeline_root(self) -> str:
        return os.path.join(self.output_dir, "tfx", self.pipeline_name)

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.output_dir, "metadata", self.pipeline_name, "metadata.db")

    @property
    def serving_model_dir(self) -> str:
        return os.path.join(self.output_dir, "serving_model", self.pipeline_name)

    @property
    def beam_pipeline_args(self) -> list[str]:
        # Any Beam argument makes TFX package itself into an sdist for remote workers, in
        # every Beam component (seconds each); the in-process DirectRunner needs none.
        if self.beam_direct_num_workers == 1:
            args = []
        else:
            args = ["--direct_running_mode=multi_processing",
                    f"--direct_num_workers={self.beam_direct_num_workers}"]
        return args + list(self.extra_beam_args)

    @classmethod
    def from_env(cls, environ: Optional[dict[str, str]] = None, **overrides) -> "Settings":
        """Defaults, then `PIPELINE_<FIELD>` environment variables, then `overrides`."""
        environ = os.environ if environ is None else environ
        values = {}
        for field in dataclasses.fields(cls):
            raw = environ.get("PIPELINE_" + field.name.upper())
            if raw is not None and raw != "":
                values[field.name] = _parse(field, raw)
        values.update(overrides)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.distribution_strategy not in STRATEGIES:
            raise ValueError(f"PIPELINE_DISTRIBUTION_STRATEGY={self.distribution_strategy!r}: "
                             f"expected one of {', '.join(STRATEGIES)}")
        if self.train_window_spans < 1:
            raise ValueError("PIPELINE_TRAIN_WINDOW_SPANS must be at least 1, "
                             f"got {self.train_window_spans}")
        if "{SPAN}" not in self.span_pattern:
            raise ValueError(f"PIPELINE_SPAN_PATTERN={self.span_pattern!r} must contain {{SPAN}}")


def _parse(field: dataclasses.Field, raw: str):
    name = "PIPELINE_" + field.name.upper()
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


def models_fingerprint() -> str:
    """A hash of the user's code in models/: it goes into the components' custom config,
    so editing the preprocessing or the model invalidates the pipeline cache."""
    digest = hashlib.sha256()
    for path in sorted(MODELS_DIR.rglob("*.py")):
        digest.update(path.relative_to(MODELS_DIR).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
