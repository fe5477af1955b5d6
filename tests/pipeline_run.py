"""Helpers for tests that run the real pipeline: small data slices, the local runner as a
subprocess, and reading what happened from MLMD."""

from __future__ import annotations

import dataclasses
import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import ml_metadata as mlmd
import tensorflow as tf

from pipeline import metadata
from pipeline.settings import PipelineSettings
from pipeline.spans import mark_complete, read_csv, write_csv

ROOT = Path(__file__).resolve().parents[1]

# A small, fast pipeline: thresholds are lowered because a ~100-row hold-out is noisy.
SMALL_RUN_ENV = {
    "PIPELINE_TRAIN_STEPS": "300",
    "PIPELINE_EVAL_STEPS": "3",
    "PIPELINE_TUNER_MAX_TRIALS": "2",
    "PIPELINE_TUNER_TRAIN_STEPS": "40",
    "PIPELINE_MIN_AUC": "0.75",
    "PIPELINE_MIN_BINARY_ACCURACY": "0.75",
    # The schema's drift thresholds fit whole spans; 300-400-row slices drift by sampling alone.
    "PIPELINE_CHECK_DRIFT": "0",
}


def write_data_slice(
    data_dir: Path, spans: list[int], rows_per_span: int, complete: bool = True
) -> None:
    """The first rows of each shipped span, in the same folder layout, each span marked
    complete (its `_COMPLETE` marker written last) unless `complete` is false."""
    for span in spans:
        rows = read_csv(ROOT / "data" / f"span-{span}" / "data.csv")[:rows_per_span]
        write_csv(data_dir / f"span-{span}" / "data.csv", rows)
        if complete:
            mark_complete(str(data_dir / f"span-{span}"))


@dataclasses.dataclass
class PipelineRun:
    settings: PipelineSettings
    env: dict[str, str]

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return run_local_runner(self.env, *args)

    def trigger_once(self) -> subprocess.CompletedProcess:
        """One look of the trigger (`tfx-template watch --once`, as `make watch`)."""
        return subprocess.run(
            [sys.executable, "-m", "cli.main", "watch", "--once"],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=1200,
        )

    def serving_copy(self, tmp: Path) -> tuple[Path, dict[str, str]]:
        """A copy of the pushed model versions under `tmp/outputs` (a server's tests may add
        or break versions there), and the run's environment pointed at it."""
        base = tmp / "outputs" / "serving_model" / self.settings.name
        shutil.copytree(self.settings.serving_model_dir, base)
        return base, {**self.env, "PIPELINE_OUTPUT_DIR": str(tmp / "outputs")}

    def ingested_spans(self) -> list[int]:
        """The spans ExampleGen has ingested, whatever happened to them afterwards."""
        from pipeline.pipeline import EXAMPLE_GEN_ID

        return sorted(metadata.span_of(a) for a in self.outputs(EXAMPLE_GEN_ID, "Examples"))

    def executions(self, node_id: str) -> list[mlmd.proto.Execution]:
        return metadata.node_executions(self._store(), self.settings.name, node_id)

    def outputs(self, node_id: str, type_name: str) -> list[mlmd.proto.Artifact]:
        return metadata.node_outputs(self._store(), self.settings.name, node_id, type_name)

    def _store(self) -> mlmd.MetadataStore:
        store = metadata.open_store(self.settings)
        assert store is not None, f"no MLMD store at {self.settings.metadata_path}"
        return store

    def pushed_versions(self) -> list[str]:
        base = self.settings.serving_model_dir
        return sorted(os.listdir(base)) if os.path.isdir(base) else []


def run_env(tmp_path: Path, **env_overrides: str) -> dict[str, str]:
    """The environment of a small run with data in tmp_path/data, outputs in tmp_path/outputs."""
    return {
        **os.environ,
        **SMALL_RUN_ENV,
        "PIPELINE_DATA_DIR": str(tmp_path / "data"),
        "PIPELINE_OUTPUT_DIR": str(tmp_path / "outputs"),
        "TF_USE_LEGACY_KERAS": "1",
        **env_overrides,
    }


def run_local_runner(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """`python local_runner.py [args]`, as `make run` does, with this environment."""
    return subprocess.run(
        [sys.executable, str(ROOT / "local_runner.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )


def new_run(tmp_path: Path, **env_overrides: str) -> PipelineRun:
    env = run_env(tmp_path, **env_overrides)
    settings = PipelineSettings.load({k: v for k, v in env.items() if k.startswith("PIPELINE_")})
    return PipelineRun(settings, env)


def read_records(pattern: str) -> list[bytes]:
    files = sorted(glob.glob(pattern))
    assert files, f"no files match {pattern}"
    return [record.numpy() for record in tf.data.TFRecordDataset(files, compression_type="GZIP")]
