"""The pipeline on Apache Airflow, for real: airflow_runner.py imported by Airflow from its own
dags/ folder and run with `airflow dags test`, and the TFX CLI's Airflow flow.

Airflow keeps everything (config, SQLite database, logs, dags/) under AIRFLOW_HOME, and the
TFX CLI writes there too; both, and HOME, point into temp dirs, so nothing reaches ~/airflow.
The DAG tests run in file order on one pipeline: a first run on a new pipeline, a rerun with
no new data, a run with a new span, then a rejected span and a good one after it.
"""

from __future__ import annotations

import dataclasses
import datetime
import glob
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import ml_metadata as mlmd
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from models import features, model
from pipeline import metadata, rejections
from pipeline.settings import PipelineSettings
from pipeline.metadata import span_of
from pipeline.names import PREVIOUS_SPAN_RESOLVER_ID
from pipeline.pipeline import EXAMPLE_GEN_ID
from pipeline.spans import mark_complete
from tests.pipeline_run import (
    ROOT,
    PipelineRun,
    new_run,
    read_csv,
    read_records,
    write_csv,
    write_data_slice,
)

# Runs the pipeline several times: the slow tier (`make test-fast` leaves it out).
pytestmark = pytest.mark.slow

AIRFLOW = Path(sys.executable).with_name("airflow")
TFX_CLI = Path(sys.executable).with_name("tfx")
SPANS, NEW_SPAN, ROWS_PER_SPAN = [1, 2, 3], 4, 400
# Not to the last digit: Beam's combiners add Transform's statistics in no fixed order, so a
# z-score may differ in its last float32 bit. Training's content order rounds the floats
# (models/model.py) and every Tuner trial starts from the seed (models/tuner.py), so such a
# difference rarely changes anything; measured: the same predictions to 4 decimals (before,
# correlations from 0.955 to 0.9992, when the order or the Tuner's pick differed).
MIN_PREDICTION_CORRELATION, MAX_MEAN_PREDICTION_DIFFERENCE, MIN_DECISION_AGREEMENT = (
    0.999,
    0.005,
    0.99,
)
# Three spans, so the run with the new span shows the window sliding past span 1.
WINDOW_SPANS = 3
# Nodes with an execution of their own (resolvers record one too, always "cached").
TFX_NODES = [
    "CsvExampleGen",
    "ImportSchemaGen",
    "StatisticsGen",
    "ExampleValidator",
    "LeakageCheck",
    "AnomaliesGate",
    "ProgressiveValidation",
    "WindowExamples",
    "Transform",
    "Tuner",
    "Trainer",
    "Evaluator",
    "Pusher",
]
TASKS = {
    *TFX_NODES,
    "check_new_span",
    "ingest_earlier_spans",
    "span_window_resolver",
    "current_model_resolver",
    "latest_blessed_model_resolver",
}
UNTUNED_TASKS = (TASKS - {"Tuner"}) | {"latest_hyperparameters_resolver"}


def airflow_env(tmp_path: Path, env: dict[str, str]) -> dict[str, str]:
    """`env` with an Airflow of its own under tmp_path (and none of the caller's settings)."""
    airflow_home = tmp_path / "airflow"
    return {
        **{key: value for key, value in env.items() if not key.startswith("AIRFLOW")},
        "HOME": str(tmp_path / "home"),
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(airflow_home / "dags"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # Importing TensorFlow and TFX takes 10 s or more: the default limit is 30 s.
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "300",
        # Airflow logs INFO lines to stdout, ahead of the JSON that `-o json` prints (and that
        # `tfx run list` parses).
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        # A failing task fails the test at once instead of waiting for its retry.
        "PIPELINE_AIRFLOW_RETRIES": "0",
        # The TFX CLI runs `airflow` from PATH.
        "PATH": f"{AIRFLOW.parent}{os.pathsep}{env.get('PATH', '')}",
    }


@dataclasses.dataclass
class Airflow:
    """One Airflow installation, driven through its CLI."""

    env: dict[str, str]

    @property
    def dags_folder(self) -> Path:
        return Path(self.env["AIRFLOW__CORE__DAGS_FOLDER"])

    def cli(
        self, *args: str, env: dict[str, str] | None = None, timeout: int = 1200
    ) -> subprocess.CompletedProcess:
        return _run([str(AIRFLOW), *args], env or self.env, timeout)

    def json(self, *args: str) -> list[dict]:
        result = self.cli(*args, "-o", "json")
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(result.stdout)

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        return {
            row["task_id"]: row["state"]
            for row in self.json("tasks", "states-for-dag-run", dag_id, run_id)
        }


def new_airflow(tmp_path: Path, env: dict[str, str]) -> Airflow:
    """A fresh Airflow with its database created, as `airflow db migrate` does on install."""
    airflow = Airflow(airflow_env(tmp_path, env))
    Path(airflow.env["HOME"]).mkdir(exist_ok=True)
    migrated = airflow.cli("db", "migrate")
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    return airflow


def _run(
    command: list[str], env: dict[str, str], timeout: int = 1200
) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


@dataclasses.dataclass
class AirflowPipeline:
    """The pipeline installed in an Airflow, run with `airflow dags test` (each date once)."""

    airflow: Airflow
    run: PipelineRun

    @property
    def dag_id(self) -> str:
        return self.run.settings.name

    def test_dag(
        self, date: str, conf: dict | None = None, timeout: int = 1200, **env_overrides: str
    ) -> dict[str, str]:
        """Runs the DAG once for `date` inside the `airflow` process (no scheduler needed);
        returns its tasks' states."""
        result = self.airflow.cli(
            "dags",
            "test",
            self.dag_id,
            date,
            *(["--conf", json.dumps(conf)] if conf else []),
            env={**self.airflow.env, **env_overrides},
            timeout=timeout,
        )
        assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
        return self.airflow.task_states(self.dag_id, f"manual__{date}T00:00:00+00:00")

    def executions(self, node_id: str) -> list[mlmd.proto.Execution]:
        """The node's executions, oldest first. AirflowDagRunner records them the legacy way
        (a component_id property), not under the IR contexts pipeline/metadata.py reads."""
        store = metadata.open_store(self.run.settings)
        return sorted(
            (
                e
                for e in store.get_executions()
                if e.properties["component_id"].string_value == node_id
            ),
            key=lambda e: e.id,
        )

    def artifacts(
        self, execution: mlmd.proto.Execution, key: str, event_type: int = mlmd.proto.Event.INPUT
    ) -> list[mlmd.proto.Artifact]:
        """What `execution` read (or wrote) under `key`, in id order."""
        store = metadata.open_store(self.run.settings)
        return sorted(
            store.get_artifacts_by_id(self.artifact_ids(execution, key, event_type)),
            key=lambda a: a.id,
        )

    def artifact_ids(
        self, execution: mlmd.proto.Execution, key: str, event_type: int = mlmd.proto.Event.INPUT
    ) -> list[int]:
        store = metadata.open_store(self.run.settings)
        return sorted(
            event.artifact_id
            for event in store.get_events_by_execution_ids([execution.id])
            if event.type == event_type and event.path.steps[0].key == key
        )

    def ingested(self) -> dict[int, mlmd.proto.Artifact]:
        """ExampleGen's Examples by span, from every run (the earlier spans' own included)."""
        return {
            span_of(artifact): artifact
            for execution in self.executions(EXAMPLE_GEN_ID)
            for artifact in self.artifacts(execution, "examples", mlmd.proto.Event.OUTPUT)
        }


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> AirflowPipeline:
    """airflow_runner.py alone in a fresh Airflow's dags/ folder, as Airflow deployments and
    the TFX CLI install it; data and outputs in temp dirs."""
    tmp_path = tmp_path_factory.mktemp("airflow")
    write_data_slice(tmp_path / "data", SPANS, ROWS_PER_SPAN)
    run = new_run(tmp_path, PIPELINE_TRAIN_WINDOW_SPANS=str(WINDOW_SPANS))
    airflow = new_airflow(tmp_path, run.env)
    airflow.dags_folder.mkdir(parents=True)
    shutil.copy(ROOT / "airflow_runner.py", airflow.dags_folder)
    return AirflowPipeline(airflow, run)


@pytest.fixture(scope="module")
def first_run(pipeline) -> dict[str, str]:
    return pipeline.test_dag("2024-01-02")


def test_airflow_imports_the_dag_file(pipeline):
    assert pipeline.airflow.json("dags", "list-import-errors") == []


def test_first_run_ingests_earlier_spans_and_pushes_a_model(pipeline, first_run):
    assert first_run == {task: "success" for task in TASKS}
    # The first task ingested the earlier spans; the run's ExampleGen the newest.
    assert sorted(pipeline.ingested()) == SPANS
    # The window resolver read the spans of every run; Transform got them as one artifact.
    (merge,) = pipeline.executions("WindowExamples")
    assert sorted(span_of(a) for a in pipeline.artifacts(merge, "window")) == SPANS
    (transform,) = pipeline.executions("Transform")
    transformed = pipeline.artifacts(transform, "transformed_examples", mlmd.proto.Event.OUTPUT)
    assert len(transformed) == 1
    assert os.path.isdir(os.path.join(transformed[0].uri, "Split-train"))
    assert len(pipeline.run.pushed_versions()) == 1


def test_pushed_model_predicts_examples_of_the_run(pipeline, first_run):
    serialized = read_records(
        os.path.join(pipeline.ingested()[SPANS[-1]].uri, "Split-eval", "*.gz")
    )[:20]
    (version,) = pipeline.run.pushed_versions()
    loaded = tf.saved_model.load(os.path.join(pipeline.run.settings.serving_model_dir, version))
    scores = loaded.signatures["serving_default"](examples=tf.constant(serialized))
    probabilities = scores[model.PREDICTION_KEY].numpy().ravel()
    assert len(probabilities) == len(serialized) == 20
    assert ((probabilities >= 0) & (probabilities <= 1)).all()


def test_scheduled_run_with_no_new_span_skips_everything_after_the_check(pipeline, first_run):
    executions = len(metadata.open_store(pipeline.run.settings).get_executions())
    states = pipeline.test_dag("2024-01-05")
    assert states == {task: "success" if task == "check_new_span" else "skipped" for task in TASKS}
    assert len(metadata.open_store(pipeline.run.settings).get_executions()) == executions


def test_rerun_with_no_new_data_is_cached_and_pushes_nothing(pipeline, first_run):
    """Forced (conf force=true) past the new-span check, every node is cached."""
    versions = pipeline.run.pushed_versions()
    assert pipeline.test_dag("2024-01-03", conf={"force": True}) == {
        task: "success" for task in TASKS
    }
    for node in TFX_NODES:
        runs = pipeline.executions(node)
        assert [e.properties["state"].string_value for e in runs[-1:]] == ["cached"], node
    # The cached Transform handed the Trainer the same artifacts.
    first, cached = pipeline.executions("Trainer")
    assert pipeline.artifact_ids(cached, "examples") == pipeline.artifact_ids(first, "examples")
    assert pipeline.run.pushed_versions() == versions


def _only(pattern: str) -> str:
    (path,) = glob.glob(pattern)
    return path


def test_local_and_airflow_runs_of_the_same_slice_agree(pipeline, first_run, tmp_path):
    """The same slice through local_runner.py: same schema, same Transform analysis
    (vocabularies, z-score statistics), and, with the seeds fixed, the same model."""
    write_data_slice(tmp_path / "data", SPANS, ROWS_PER_SPAN)
    local = new_run(tmp_path, PIPELINE_TRAIN_WINDOW_SPANS=str(WINDOW_SPANS))
    result = local.run()
    assert result.returncode == 0, result.stderr[-3000:]
    roots = {"local": local.settings.pipeline_root, "airflow": pipeline.run.settings.pipeline_root}

    schemas = {
        name: open(_only(f"{root}/ImportSchemaGen/schema/*/schema.pbtxt")).read()
        for name, root in roots.items()
    }
    assert schemas["local"] == schemas["airflow"]

    outputs = {
        name: tft.TFTransformOutput(_only(f"{root}/Transform/transform_graph/*"))
        for name, root in roots.items()
    }
    for key in features.VOCAB_FEATURES:
        assert outputs["local"].vocabulary_by_name(key) == outputs["airflow"].vocabulary_by_name(
            key
        ), key
    (newest,) = [a for a in local.outputs(EXAMPLE_GEN_ID, "Examples") if span_of(a) == SPANS[-1]]
    serialized = read_records(os.path.join(newest.uri, "Split-eval", "*.gz"))
    raw_spec = {
        k: v
        for k, v in outputs["local"].raw_feature_spec().items()
        if k not in features.label_columns()
    }
    transformed = {
        name: output.transform_features_layer()(
            tf.io.parse_example(tf.constant(serialized), raw_spec)
        )
        for name, output in outputs.items()
    }
    for key in features.NUMERIC_FEATURES:  # z-scores: the same means and variances
        name = features.transformed_name(key)
        np.testing.assert_allclose(
            transformed["local"][name], transformed["airflow"][name], atol=1e-6
        )

    predictions = {}
    for name, run in (("local", local), ("airflow", pipeline.run)):
        (version,) = run.pushed_versions()
        loaded = tf.saved_model.load(os.path.join(run.settings.serving_model_dir, version))
        predictions[name] = (
            loaded.signatures["serving_default"](examples=tf.constant(serialized))[
                model.PREDICTION_KEY
            ]
            .numpy()
            .ravel()
        )
    # Same data, seeds and search space, and training reads the records in content order
    # (models/model.py), so the two trainings nearly repeat each other (see the tolerances).
    local, airflow = predictions["local"], predictions["airflow"]
    difference = np.abs(local - airflow)
    print(
        f"local vs Airflow predictions: largest difference {difference.max():.4f}, mean "
        f"{difference.mean():.4f}, correlation {np.corrcoef(local, airflow)[0, 1]:.5f}"
    )
    assert np.corrcoef(local, airflow)[0, 1] > MIN_PREDICTION_CORRELATION
    assert difference.mean() < MAX_MEAN_PREDICTION_DIFFERENCE
    assert np.mean((local > 0.5) == (airflow > 0.5)) >= MIN_DECISION_AGREEMENT


def test_new_span_slides_the_window_and_is_compared_with_the_blessed_model(pipeline, first_run):
    """Airflow's resolvers read every run: the baseline must still be the model the first
    run blessed, not nothing (pipeline/resolvers.py), and without tuning the Trainer takes
    the first run's tuning result."""
    write_data_slice(Path(pipeline.run.settings.data.data_dir), [NEW_SPAN], ROWS_PER_SPAN)
    states = pipeline.test_dag("2024-01-04", PIPELINE_ENABLE_TUNING="0")
    assert states == {task: "success" for task in UNTUNED_TASKS}

    merge = pipeline.executions("WindowExamples")[-1]
    assert (
        sorted(span_of(a) for a in pipeline.artifacts(merge, "window"))
        == [*SPANS, NEW_SPAN][-WINDOW_SPANS:]
    )
    first_trainer, *_, trainer = pipeline.executions("Trainer")
    tuner = pipeline.executions("Tuner")[0]
    assert pipeline.artifact_ids(trainer, "hyperparameters") == pipeline.artifact_ids(
        tuner, "best_hyperparameters", mlmd.proto.Event.OUTPUT
    )
    evaluator = pipeline.executions("Evaluator")[-1]
    assert pipeline.artifact_ids(evaluator, "model") == pipeline.artifact_ids(
        trainer, "model", mlmd.proto.Event.OUTPUT
    )
    assert pipeline.artifact_ids(evaluator, "baseline_model") == pipeline.artifact_ids(
        first_trainer, "model", mlmd.proto.Event.OUTPUT
    )


def test_a_rejected_span_is_recorded_and_the_next_window_reaches_back_past_it(pipeline, first_run):
    """The gate fails the task; its failure callback records the rejection (Airflow's legacy
    orchestration records no failed execution in MLMD), so the next run, with a good span,
    trains on the newest WINDOW_SPANS accepted spans."""
    data_dir = Path(pipeline.run.settings.data.data_dir)
    rows = [dict(row) for row in read_csv(ROOT / "data" / "span-5" / "data.csv")[:ROWS_PER_SPAN]]
    rows[0]["payment_type"] = "Bitcoin"  # a category the schema does not know
    write_csv(data_dir / "span-5" / "data.csv", rows)
    mark_complete(str(data_dir / "span-5"))
    versions = pipeline.run.pushed_versions()
    date = "2024-01-06"
    failed = pipeline.airflow.cli(
        "dags",
        "test",
        pipeline.dag_id,
        date,
        env={**pipeline.airflow.env, "PIPELINE_ENABLE_TUNING": "0"},
    )
    assert failed.returncode != 0
    states = pipeline.airflow.task_states(pipeline.dag_id, f"manual__{date}T00:00:00+00:00")
    assert states["AnomaliesGate"] == "failed" and states["Transform"] == "upstream_failed"
    rejected = rejections.of_pipeline(pipeline.run.settings)
    assert list(rejected) == [5] and rejected[5].check == "AnomaliesGate"
    assert "DataAnomaliesError" in rejected[5].reason
    assert pipeline.run.pushed_versions() == versions

    write_data_slice(data_dir, [6], ROWS_PER_SPAN)
    states = pipeline.test_dag("2024-01-07", PIPELINE_ENABLE_TUNING="0")
    assert states == {task: "success" for task in UNTUNED_TASKS}
    merge = pipeline.executions("WindowExamples")[-1]
    assert sorted(span_of(a) for a in pipeline.artifacts(merge, "window")) == [3, NEW_SPAN, 6]


def _tfx(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    result = _run([str(TFX_CLI), *args, "--engine", "airflow"], env)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return result


def test_tfx_cli_creates_the_pipeline_and_a_run(tmp_path):
    """`tfx run create` only triggers a DAG run in Airflow's database (the scheduler would
    execute it), so registering it is what there is to check."""
    run = new_run(
        tmp_path, PIPELINE_AIRFLOW_SCHEDULE="@weekly", PIPELINE_AIRFLOW_START_DATE="2024-01-01"
    )
    airflow = new_airflow(tmp_path, run.env)
    name = run.settings.name

    created = _tfx(airflow.env, "pipeline", "create", "--pipeline_path", "airflow_runner.py")
    assert f'Pipeline "{name}" created successfully.' in created.stdout
    assert (airflow.dags_folder / name / "airflow_runner.py").is_file()
    # Building the DAG ingests and trains nothing.
    assert not os.path.exists(run.settings.metadata_path)

    # What the scheduler does when it finds a new file in dags/: `tfx run create` needs it.
    reserialized = airflow.cli("dags", "reserialize")
    assert reserialized.returncode == 0, reserialized.stderr[-3000:]
    (details,) = airflow.json("dags", "details", name)
    assert details["schedule_interval"]["value"] == "@weekly"
    assert details["max_active_runs"] == details["max_active_tasks"] == "1"
    # No catch-up: the first scheduled run is the latest week, not the start date's.
    first_scheduled = datetime.datetime.fromisoformat(details["next_dagrun"])
    assert datetime.datetime.now(datetime.timezone.utc) - first_scheduled < datetime.timedelta(
        days=15
    )
    created_run = _tfx(airflow.env, "run", "create", "--pipeline_name", name)
    assert f"Run created for pipeline: {name}" in created_run.stdout

    (dag_run,) = airflow.json("dags", "list-runs", "-d", name)
    assert dag_run["state"] == "queued" and dag_run["run_id"].startswith("manual__")
    listed = _tfx(airflow.env, "run", "list", "--pipeline_name", name)
    assert dag_run["run_id"] in listed.stdout


def test_airflow_output_dir_moves_artifacts_and_models_but_not_the_metadata_store():
    """Workers share the pipeline root (gs:// in production); SQLite cannot live there."""
    settings = PipelineSettings.load(
        {
            "PIPELINE_OUTPUT_DIR": "/var/tfx",
            "PIPELINE_AIRFLOW_OUTPUT_DIR": "gs://bucket/taxi",
            "PIPELINE_NAME": "taxi-tips",
        },  # named here: the active dataset may name another
        orchestrator="airflow",
    )
    assert settings.pipeline_root == "gs://bucket/taxi/tfx/taxi-tips"
    assert settings.serving_model_dir == "gs://bucket/taxi/serving_model/taxi-tips"
    assert settings.metadata_path == "/var/tfx/metadata/taxi-tips/metadata.db"
    # Other runners ignore it.
    local = settings.with_overrides(orchestrator="local")
    assert local.pipeline_root == "/var/tfx/tfx/taxi-tips"


# ---- The shipped data with default settings, as the README tells a user --------------------


@pytest.mark.integration
def test_shipped_data_with_default_settings_runs_every_task_and_pushes_a_model(tmp_path):
    """A fresh AIRFLOW_HOME, the DAG file copied to dags/, `airflow db migrate`, then
    `airflow dags test` on the shipped spans with every pipeline setting at its default:
    the drift check (on by default, off in the slices above) compares span 6 with span 5,
    the Tuner runs, and the model is pushed. Task retries are 0 so a failure shows at once."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIPELINE_")}
    env |= {"PIPELINE_OUTPUT_DIR": str(tmp_path / "outputs"), "TF_USE_LEGACY_KERAS": "1"}
    run = PipelineRun(
        PipelineSettings.load({"PIPELINE_OUTPUT_DIR": env["PIPELINE_OUTPUT_DIR"]}), env
    )
    shipped = sorted(int(path.name.split("-")[1]) for path in (ROOT / "data").glob("span-*"))
    assert Path(run.settings.data.data_dir) == ROOT / "data"
    airflow = new_airflow(tmp_path, run.env)
    airflow.dags_folder.mkdir(parents=True)
    shutil.copy(ROOT / "airflow_runner.py", airflow.dags_folder)
    pipeline = AirflowPipeline(airflow, run)

    started = time.monotonic()
    # Six spans, the Tuner and training at full size on a shared machine: give it time.
    states = pipeline.test_dag("2024-01-02", timeout=3600)
    print(f"airflow dags test on the shipped data: {time.monotonic() - started:.0f} s")

    assert states == {task: "success" for task in states}
    assert {"DriftCheck", PREVIOUS_SPAN_RESOLVER_ID, "Tuner", "Pusher"} <= set(states)
    assert len(run.pushed_versions()) == 1
    (drift,) = pipeline.executions("DriftCheck")
    assert [span_of(a) for a in pipeline.artifacts(drift, "examples")] == shipped[-1:]
    assert [span_of(a) for a in pipeline.artifacts(drift, "previous_span")] == shipped[-2:-1]
    store = metadata.open_store(run.settings)
    assert {e.properties["state"].string_value for e in store.get_executions()} <= {
        "complete",
        "cached",
    }
    events = store.get_events_by_execution_ids([e.id for e in store.get_executions()])
    keys = [(e.execution_id, e.artifact_id, e.type) for e in events]
    assert len(keys) == len(set(keys))
