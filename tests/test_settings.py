"""The settings tree: the same PIPELINE_* variables as ever, read from the environment or a
mapping, bad values named, every variable the project mentions defined, the reference current."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest

from analysis.settings import ReportSettings
from cli.settings import Settings, reference_markdown
from pipeline.settings import PipelineSettings, TrainingSettings
from pipeline.settings_model import SettingsError, env_fields
from serving.settings import BatchPredictSettings, ServingSettings
from streaming.settings import StreamingSettings

ROOT = Path(__file__).resolve().parents[1]
# PIPELINE_* names that are no settings: a constant, and deploy/vertex_trigger's own variables.
NOT_SETTINGS = {"PIPELINE_NAME_PATTERN", "PIPELINE_ROOT", "PIPELINE_SPEC"}


def tree_variables() -> set[str]:
    return {field.alias for _, _, field in env_fields(Settings)}


@pytest.mark.parametrize(
    "variable, raw, read, expected",
    [
        ("PIPELINE_NAME", "my-pipeline", lambda s: s.pipeline.name, "my-pipeline"),
        ("PIPELINE_TRAIN_STEPS", "5", lambda s: s.pipeline.training.train_steps, 5),
        ("PIPELINE_DATA_DIR", "/data", lambda s: s.pipeline.data.data_dir, "/data"),
        ("PIPELINE_ENABLE_CACHE", "off", lambda s: s.pipeline.enable_cache, False),
        ("PIPELINE_TRANSFORM_TF1_GRAPH", "no", lambda s: s.pipeline.transform.tf1_graph, False),
        ("PIPELINE_LEAKAGE_AUC_THRESHOLD", "0.9", lambda s: s.pipeline.leakage.auc_threshold, 0.9),
        (
            "PIPELINE_BEAM_DIRECT_NUM_WORKERS",
            "0",
            lambda s: s.pipeline.beam.direct_num_workers,
            "0",
        ),
        (
            "PIPELINE_EXTRA_BEAM_ARGS",
            " --a=1  --b ",
            lambda s: s.pipeline.beam.extra_args,
            ("--a=1", "--b"),
        ),
        ("PIPELINE_GCP_PROJECT", "p", lambda s: s.pipeline.cloud.gcp_project, "p"),
        ("PIPELINE_AIRFLOW_SCHEDULE", "@hourly", lambda s: s.pipeline.airflow.schedule, "@hourly"),
        ("PIPELINE_TFLITE_QUANTIZATION", "int8", lambda s: s.pipeline.tflite.quantization, "int8"),
        ("PIPELINE_SERVING_PORT", "8502", lambda s: s.serving.port, 8502),
        ("PIPELINE_SERVING_HYBRID", "yes", lambda s: s.serving.hybrid, True),
        ("PIPELINE_BATCH_PREDICT_TABLE", "scores", lambda s: s.batch_predict.table, "scores"),
        ("PIPELINE_STREAMING_WINDOW_SECONDS", "3600", lambda s: s.streaming.window_seconds, 3600),
        ("PIPELINE_REPORT_PATH", "/r.html", lambda s: s.report.path, "/r.html"),
        (
            "PIPELINE_SERVING_STRATEGY_HEAD_COVERAGE",
            "0.9",
            lambda s: s.serving_strategy.head_coverage,
            0.9,
        ),
    ],
)
def test_variables_keep_their_names(variable, raw, read, expected):
    assert read(Settings.load({variable: raw})) == expected


def test_each_group_loads_on_its_own():
    environ = {
        "PIPELINE_TRAIN_STEPS": "5",
        "PIPELINE_SERVING_PORT": "8502",
        "PIPELINE_BATCH_PREDICT_TABLE": "t",
        "PIPELINE_STREAMING_WINDOW_SECONDS": "60",
        "PIPELINE_REPORT_PATH": "/r.html",
    }
    assert PipelineSettings.load(environ).training.train_steps == 5
    assert TrainingSettings.load(environ).train_steps == 5
    assert ServingSettings.load(environ).port == 8502
    assert BatchPredictSettings.load(environ).table == "t"
    assert StreamingSettings.load(environ).window_seconds == 60
    assert ReportSettings.load(environ).path == "/r.html"
    # Overrides by field name in a group, by variable name (without PIPELINE_) in a tree.
    assert ServingSettings.load(environ, port=9000).port == 9000
    assert Settings.load(environ, serving_port=9000, train_steps=7).serving.port == 9000


def test_a_mapping_is_read_instead_of_the_environment(monkeypatch):
    monkeypatch.setenv("PIPELINE_TRAIN_STEPS", "9")
    monkeypatch.setenv("PIPELINE_SERVING_PORT", "9")
    assert PipelineSettings.load({}).training.train_steps == 1000
    assert PipelineSettings.load().training.train_steps == 9
    assert ServingSettings.load({}).port == 8501
    assert ServingSettings.load().port == 9
    # Overrides win over the mapping; an empty variable counts as unset.
    settings = PipelineSettings.load(
        {"PIPELINE_TRAIN_STEPS": "3", "PIPELINE_BATCH_SIZE": ""},
        train_steps=4,
        output_dir="/out",
        name="other",
    )
    assert (settings.training.train_steps, settings.training.batch_size) == (4, 128)
    assert settings.pipeline_root == "/out/tfx/other"


@pytest.mark.parametrize(
    "raw, value",
    [
        ("1", True),
        ("true", True),
        ("Yes", True),
        ("on", True),
        ("0", False),
        ("false", False),
        ("NO", False),
        ("off", False),
    ],
)
def test_bools_take_the_usual_words(raw, value):
    assert PipelineSettings.load({"PIPELINE_ENABLE_TUNING": raw}).training.enable_tuning is value


@pytest.mark.parametrize(
    "load, environ, message",
    [
        (
            PipelineSettings.load,
            {"PIPELINE_TRAIN_STEPS": "x"},
            "PIPELINE_TRAIN_STEPS='x': expected int",
        ),
        (PipelineSettings.load, {"PIPELINE_MIN_AUC": "high"}, "PIPELINE_MIN_AUC='high': expected"),
        (
            PipelineSettings.load,
            {"PIPELINE_WARM_START": "maybe"},
            "PIPELINE_WARM_START='maybe': expected bool",
        ),
        (
            PipelineSettings.load,
            {"PIPELINE_BEAM_PRESET": "local"},
            "PIPELINE_BEAM_PRESET='local': expected one of direct, dataflow, flink, spark",
        ),
        (
            PipelineSettings.load,
            {"PIPELINE_PS_TASKS": "0"},
            "PIPELINE_PS_TASKS must be at least 1, got 0",
        ),
        (
            PipelineSettings.load,
            {"PIPELINE_LEAKAGE_PRESENCE_GAP": "1.5"},
            "PIPELINE_LEAKAGE_PRESENCE_GAP must be between 0 and 1",
        ),
        (PipelineSettings.load, {"PIPELINE_NAME": "My_Pipeline"}, "PIPELINE_NAME='My_Pipeline'"),
        (PipelineSettings.load, {"PIPELINE_ORCHESTRATOR": "vertex"}, "PIPELINE_CONTAINER_IMAGE"),
        (ServingSettings.load, {"PIPELINE_SERVING_PORT": "http"}, "PIPELINE_SERVING_PORT='http'"),
        (
            ServingSettings.load,
            {"PIPELINE_SERVING_LOG_SAMPLING_RATE": "2"},
            "PIPELINE_SERVING_LOG_SAMPLING_RATE must be between 0 and 1, got 2",
        ),
        (
            BatchPredictSettings.load,
            {"PIPELINE_BATCH_PREDICT_WAREHOUSE": "csv"},
            "PIPELINE_BATCH_PREDICT_WAREHOUSE='csv': expected one of sqlite, bigquery",
        ),
        (
            StreamingSettings.load,
            {"PIPELINE_STREAMING_WINDOW_SECONDS": "0"},
            "PIPELINE_STREAMING_WINDOW_SECONDS must be at least 1, got 0",
        ),
        (
            Settings.load,
            {"PIPELINE_BATCH_PREDICT_WAREHOUSE": "bigquery"},
            "PIPELINE_BATCH_PREDICT_WAREHOUSE=bigquery needs PIPELINE_GCP_PROJECT",
        ),
    ],
)
def test_a_bad_value_names_its_variable(load, environ, message):
    with pytest.raises(SettingsError) as error:
        load(environ)
    assert isinstance(error.value, ValueError)
    assert str(error.value).startswith(message), str(error.value)
    # One line per problem, not pydantic's report.
    assert "\n" not in str(error.value) and "errors.pydantic.dev" not in str(error.value)


def test_every_problem_is_named():
    with pytest.raises(SettingsError) as error:
        PipelineSettings.load(
            {"PIPELINE_TRAIN_STEPS": "x", "PIPELINE_TFLITE_QUANTIZATION": "float16"}
        )
    assert str(error.value).splitlines() == [
        "PIPELINE_TRAIN_STEPS='x': expected integer",
        "PIPELINE_TFLITE_QUANTIZATION='float16': expected one of dynamic, int8",
    ]


def test_overrides_are_validated_and_settings_are_frozen():
    settings = PipelineSettings.load({})
    changed = settings.with_overrides(train_steps=5, beam_direct_num_workers="0")
    assert (changed.training.train_steps, changed.beam.direct_num_workers) == (5, "0")
    assert settings.training.train_steps == 1000
    with pytest.raises(SettingsError, match="PIPELINE_MIN_SPAN_ROWS must be at least 1"):
        settings.with_overrides(min_span_rows=0)
    with pytest.raises(TypeError, match="no setting 'pipeline_name'"):
        PipelineSettings.load({}, pipeline_name="x")
    with pytest.raises(ValueError):
        settings.training.train_steps = 5


def test_every_variable_the_project_mentions_is_a_setting():
    mentioned: dict[str, str] = {}
    pattern = re.compile(r"\bPIPELINE_[A-Z0-9_]*[A-Z0-9]\b")
    for directory, subdirectories, files in os.walk(ROOT):
        subdirectories[:] = [
            d for d in subdirectories if not d.startswith(".") and d not in ("outputs", "data")
        ]
        for name in files:
            if name.endswith(".py") or name == "Makefile":
                path = Path(directory) / name
                for variable in pattern.findall(path.read_text(encoding="utf-8")):
                    mentioned.setdefault(variable, str(path.relative_to(ROOT)))
    unknown = {
        v: where
        for v, where in mentioned.items()
        if v not in tree_variables() and v not in NOT_SETTINGS
    }
    assert not unknown, f"PIPELINE_* variables no setting reads (variable: a file): {unknown}"


def test_the_pipeline_settings_import_no_serving_analysis_or_streaming():
    tree = ast.parse((ROOT / "pipeline" / "settings.py").read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert not {
        m for m in imported if m.split(".")[0] in ("serving", "analysis", "streaming", "cli")
    }


def test_reference_has_one_table_per_group_with_every_variable():
    text = reference_markdown()
    for variable in tree_variables():
        assert f"| `{variable}` |" in text
    groups = re.findall(r"^## [^(\n]+ \(`settings\.([\w.]+)`\)$", text, re.M)
    assert groups[:3] == ["pipeline", "pipeline.data", "pipeline.transform"]
    assert groups[-5:] == ["serving", "batch_predict", "streaming", "report", "serving_strategy"]
    assert text.count("| variable | type | default | description |") == len(groups)
    assert text == reference_markdown()  # stable


def test_docs_reference_is_current():
    docs = ROOT / "docs" / "settings.md"
    if not docs.exists():
        pytest.skip("no docs/settings.md")
    assert docs.read_text(encoding="utf-8") == reference_markdown(), (
        "docs/settings.md is stale: python -m cli.settings > docs/settings.md"
    )
