"""A local run with nothing to do is answered before TFX loads (pipeline/up_to_date.py): the
record a successful run leaves, and each change that must make the next run a real one.
The runner's own use of it: tests/test_run_output.py and tests/example/test_end_to_end.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import up_to_date
from pipeline.settings import PROJECT_ROOT, PipelineSettings

SUMMARY = "Latest evaluation (newest span's hold-out): auc 0.95\nServing: /somewhere/1"


def _settings(tmp_path: Path, **overrides) -> PipelineSettings:
    return PipelineSettings.load(
        {},
        data_dir=str(tmp_path / "data"),
        output_dir=str(tmp_path / "outputs"),
        orchestrator="local",
        **overrides,
    )


@pytest.fixture
def recorded(tmp_path) -> PipelineSettings:
    """A pipeline whose last run succeeded: two spans of data, an MLMD file, a pushed model."""
    settings = _settings(tmp_path)
    for span in (1, 2):
        folder = tmp_path / "data" / f"span-{span}"
        folder.mkdir(parents=True)
        (folder / "data.csv").write_text("a,b\n1,2\n")
        (folder / "_COMPLETE").write_text("")
    os.makedirs(os.path.dirname(settings.metadata_path))
    Path(settings.metadata_path).write_bytes(b"sqlite")
    os.makedirs(os.path.join(settings.serving_model_dir, "1700000000"))
    inputs = up_to_date.inputs_fingerprint(settings)
    up_to_date.record(settings, inputs, SUMMARY, "/logs/run.log")
    return settings


def test_nothing_changed_gives_the_last_runs_summary(recorded):
    message = up_to_date.unchanged_since_last_run(recorded)
    assert message is not None
    first, *rest = message.splitlines()
    assert first.startswith(f"{recorded.name} is up to date: the data, code and settings")
    assert "(its log: /logs/run.log)" in first
    assert "\n".join(rest) == SUMMARY


def _touch_later(path: Path) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


@pytest.mark.parametrize(
    "change",
    [
        "a new span",
        "a span's file rewritten",
        "a span's file touched",
        "another setting",
        "a new pushed version",
        "a rejection record",
        "the metadata store written",
        "no record",
    ],
)
def test_any_change_means_a_real_run(recorded, tmp_path, change):
    data = tmp_path / "data"
    if change == "a new span":
        (data / "span-3").mkdir()
        (data / "span-3" / "data.csv").write_text("a,b\n3,4\n")
    elif change == "a span's file rewritten":
        (data / "span-2" / "data.csv").write_text("a,b\n1,3\n")
    elif change == "a span's file touched":
        _touch_later(data / "span-2" / "data.csv")
    elif change == "another setting":
        recorded = recorded.with_overrides(train_steps=recorded.training.train_steps + 1)
    elif change == "a new pushed version":
        os.makedirs(os.path.join(recorded.serving_model_dir, "1700000001"))
    elif change == "a rejection record":
        records = Path(recorded.pipeline_root) / "rejected_spans"
        records.mkdir()
        (records / "span-3.json").write_text("{}")
    elif change == "the metadata store written":
        Path(recorded.metadata_path).write_bytes(b"sqlite, one more row")
    elif change == "no record":
        up_to_date.forget(recorded)
        assert not os.path.exists(up_to_date.record_path(recorded))
    assert up_to_date.unchanged_since_last_run(recorded) is None


def test_the_code_is_compared_by_content(tmp_path):
    project = tmp_path / "project"
    for name in up_to_date.CODE_PATHS:
        source = PROJECT_ROOT / name
        if source.is_dir():
            shutil.copytree(source, project / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, project / name)
    settings = _settings(tmp_path)
    before = up_to_date.inputs_fingerprint(settings, project)
    assert up_to_date.inputs_fingerprint(settings, project) == before
    assert before == up_to_date.inputs_fingerprint(settings, PROJECT_ROOT)
    # Touched only (same content): the same; one character of the model's code: another.
    model = project / "models" / "model.py"
    _touch_later(model)
    assert up_to_date.inputs_fingerprint(settings, project) == before
    model.write_text(model.read_text() + "\n")
    assert up_to_date.inputs_fingerprint(settings, project) != before


@pytest.mark.parametrize(
    "overrides", [{"data_dir": "gs://bucket/data"}, {"enable_cache": False}], ids=str
)
def test_remote_data_or_no_cache_always_runs(recorded, overrides):
    other = recorded.with_overrides(**overrides)
    up_to_date.record(other, up_to_date.inputs_fingerprint(other), SUMMARY, "log")
    assert up_to_date.unchanged_since_last_run(other) is None


def test_the_answer_comes_before_tensorflow_loads(recorded, tmp_path):
    """The runner's check imports no heavy module: a fresh interpreter answers in well under
    the seconds TensorFlow takes to import, and never imports it."""
    code = (
        "import sys, time; started = time.monotonic()\n"
        "from pipeline import up_to_date\n"
        "message = up_to_date.nothing_to_run_message()\n"
        "heavy = [m for m in ('tensorflow', 'tfx', 'ml_metadata', 'apache_beam')\n"
        "         if m in sys.modules]\n"
        "print(repr(message is not None), heavy, round(time.monotonic() - started, 2))\n"
    )
    env = {
        **os.environ,
        "PIPELINE_DATA_DIR": str(tmp_path / "data"),
        "PIPELINE_OUTPUT_DIR": str(tmp_path / "outputs"),
    }
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    found, heavy, _ = result.stdout.split(maxsplit=2)
    assert (found, heavy) == ("True", "[]"), result.stdout
    print(f"answered in {time.monotonic() - started:.2f} s, interpreter start included")
