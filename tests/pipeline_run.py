"""Helpers for tests that run the real pipeline: small data slices, the local runner as a
subprocess, and reading what happened from MLMD."""
from __future__ import annotations

import csv
import dataclasses
import glob
import os
import subprocess
import sys
from pathlib import Path

import ml_metadata as mlmd
import tensorflow as tf
from tfx import v1 as tfx

from pipeline import configs

ROOT = Path(__file__).resolve().parents[1]

# A small, fast pipeline: thresholds are lowered because a ~100-row hold-out is noisy.
SMALL_RUN_ENV = {
    "PIPELINE_TRAIN_STEPS": "300",
    "PIPELINE_EVAL_STEPS": "3",
    "PIPELINE_TUNER_MAX_TRIALS": "2",
    "PIPELINE_TUNER_TRAIN_STEPS": "40",
    "PIPELINE_MIN_AUC": "0.75",
    "PIPELINE_MIN_BINARY_ACCURACY": "0.75",
}


def write_data_slice(data_dir: Path, spans: list[int], rows_per_span: int) -> None:
    """The first rows of each shipped span, in the same folder layout."""
    for span in spans:
        rows = read_csv(ROOT / "data" / f"span-{span}" / "data.csv")[:rows_per_span]
        write_csv(data_dir / f"span-{span}" / "data.csv", rows)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


@dataclasses.dataclass
class PipelineRun:
    settings: configs.Settings
    env: dict[str, str]

    def run(self) -> subprocess.CompletedProcess:
        """`python local_runner.py`, as `make run` does, with this run's environment."""
        return subprocess.run([sys.executable, str(ROOT / "local_runner.py")], env=self.env,
                              capture_output=True, text=True, timeout=1200)

    def store(self) -> mlmd.MetadataStore:
        return mlmd.MetadataStore(tfx.orchestration.metadata.sqlite_metadata_connection_config(
            self.settings.metadata_path))

    def executions(self, node_id: str) -> list[mlmd.proto.Execution]:
        """The node's executions, oldest first."""
        store = self.store()
        context = store.get_context_by_type_and_name(
            "node", f"{self.settings.pipeline_name}.{node_id}")
        if context is None:
            return []
        return sorted(store.get_executions_by_context(context.id), key=lambda e: e.id)

    def outputs(self, node_id: str, type_name: str) -> list[mlmd.proto.Artifact]:
        """Artifacts of a type that the node produced, oldest first."""
        store = self.store()
        output_events = (mlmd.proto.Event.OUTPUT, mlmd.proto.Event.DECLARED_OUTPUT)
        ids = {event.artifact_id for execution in self.executions(node_id)
               for event in store.get_events_by_execution_ids([execution.id])
               if event.type in output_events}
        return sorted((a for a in store.get_artifacts_by_id(list(ids)) if a.type == type_name),
                      key=lambda a: a.id)

    def pushed_versions(self) -> list[str]:
        base = self.settings.serving_model_dir
        return sorted(os.listdir(base)) if os.path.isdir(base) else []


def new_run(tmp_path: Path, **env_overrides: str) -> PipelineRun:
    env = {**os.environ, **SMALL_RUN_ENV,
           "PIPELINE_DATA_DIR": str(tmp_path / "data"),
           "PIPELINE_OUTPUT_DIR": str(tmp_path / "outputs"),
           "TF_USE_LEGACY_KERAS": "1", **env_overrides}
    settings = configs.Settings.from_env({k: v for k, v in env.items()
                                          if k.startswith("PIPELINE_")})
    return PipelineRun(settings, env)


def span_of(artifact: mlmd.proto.Artifact) -> int:
    return artifact.custom_properties["span"].int_value


def read_records(pattern: str) -> list[bytes]:
    files = sorted(glob.glob(pattern))
    assert files, f"no files match {pattern}"
    return [record.numpy() for record in tf.data.TFRecordDataset(files, compression_type="GZIP")]
