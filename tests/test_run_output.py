"""What `python local_runner.py` (make run) prints: one start and one end line per component
(`cached` when TFX's cache served it), one line per earlier span ingested, the summary and
the log file's path; the TFX/Beam/TensorFlow lines only in that file, or with --verbose on the
console too; a failed run ends with its one message. Real runs on two spans of 300 rows."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.spans import mark_complete
from tests.pipeline_run import ROOT, read_csv, run_env, write_csv, write_data_slice

# Runs a pipeline, a server, a Beam job or a subprocess: `make test-fast` leaves it out.
pytestmark = pytest.mark.integration

ROWS_PER_SPAN = 300
MAX_CONSOLE_BYTES = 6000
# "  <label> ........ <state>": pipeline/progress.py's line.
LINE = re.compile(r"^  (?P<label>\S.*?) \.{3,} (?P<state>\S.*)$")
TFX_RUNNING = re.compile(r"Component (\S+) is running\.")
FAST_ENV = {
    "PIPELINE_ENABLE_TUNING": "0",
    "PIPELINE_TRAIN_STEPS": "50",
    "PIPELINE_TRAIN_WINDOW_SPANS": "2",
}


def _run(env: dict[str, str], *args: str, timeout: float = 1200) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "local_runner.py"), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _lines(result: subprocess.CompletedProcess) -> list[tuple[str, str]]:
    """(label, state) of each progress line on stdout, in order."""
    return [(m["label"], m["state"]) for m in map(LINE.match, result.stdout.splitlines()) if m]


def _component_lines(result) -> list[tuple[str, str]]:
    return [
        (label, state)
        for label, state in _lines(result)
        if not label.startswith("Ingesting earlier span")
    ]


def _log_path(result: subprocess.CompletedProcess, stream: str = "stdout") -> Path:
    last = getattr(result, stream).rstrip().splitlines()[-1]
    assert last.startswith("Full log: "), getattr(result, stream)[-2000:]
    return Path(last.removeprefix("Full log: "))


def _assert_start_and_end_once(lines: list[tuple[str, str]]) -> dict[str, str]:
    """Each label has a `running` line, then its end line right after (components run one at
    a time); returns label -> end state."""
    assert lines and len(lines) % 2 == 0, lines
    ends = {}
    for (label, start), (end_label, end) in zip(lines[::2], lines[1::2]):
        assert (start, end_label) == ("running", label), lines
        assert label not in ends, f"{label} shown twice: {lines}"
        ends[label] = end
    return ends


def _assert_small_and_clean(result: subprocess.CompletedProcess) -> None:
    console = result.stdout + result.stderr
    assert len(console.encode()) < MAX_CONSOLE_BYTES, console
    assert "Traceback" not in console and "INFO:" not in console, console[-3000:]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> dict:
    """Spans 1 and 2 of 300 rows, a window of two: the first run ingests span 1 as an earlier
    span, then runs the whole pipeline on span 2."""
    tmp_path = tmp_path_factory.mktemp("run_output")
    write_data_slice(tmp_path / "data", [1, 2], ROWS_PER_SPAN)
    env = run_env(tmp_path, **FAST_ENV)
    return {"env": env, "tmp_path": tmp_path, "first": _run(env)}


@pytest.mark.slow
def test_first_run_shows_one_start_and_end_line_per_component(pipeline):
    result = pipeline["first"]
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    _assert_small_and_clean(result)
    lines = _lines(result)
    # The earlier span is one line pair, not its components'.
    assert lines[:2] == [
        ("Ingesting earlier span 1", "running"),
        ("Ingesting earlier span 1", lines[1][1]),
    ]
    assert re.fullmatch(r"done \d+\.\d s", lines[1][1]), lines[1]
    ends = _assert_start_and_end_once(_component_lines(result))

    # Every component TFX ran (in the log) has its lines, in the same order: the log's list
    # is the earlier span's ExampleGen run, then the console's.
    log = _log_path(result)
    shown = [label for label, _ in _component_lines(result)[::2]]
    ran = TFX_RUNNING.findall(log.read_text())
    assert shown[0] == ran[0] == "CsvExampleGen"
    assert ran[len(ran) - len(shown) :] == shown and len(ran) > len(shown), (ran, shown)
    for component in (
        "CsvExampleGen",
        "StatisticsGen",
        "Transform",
        "Trainer",
        "Evaluator",
        "Pusher",
    ):
        assert re.fullmatch(r"done \d+\.\d s", ends[component]), (component, ends)


@pytest.mark.slow
def test_summary_names_the_log_which_has_what_the_console_has_not(pipeline):
    result = pipeline["first"]
    log = _log_path(result)
    assert log.parent == pipeline["tmp_path"] / "outputs" / "logs" and log.is_file()
    assert f"(full log: {log})" in result.stdout.splitlines()[0]
    assert "Latest evaluation (newest span's hold-out): auc " in result.stdout
    text = log.read_text()
    # The lines the console leaves out: TFX's INFO lines, and TensorFlow's loading lines
    # (written before the log file was opened).
    assert text.count("INFO:absl:") > 100
    assert "INFO:absl:Component Trainer is running." in text
    assert "INFO:absl:Training window: spans [1, 2]" in text


@pytest.mark.slow
def test_a_run_with_nothing_changed_says_so_at_once(pipeline):
    logs = _log_path(pipeline["first"]).parent
    before = sorted(logs.iterdir())
    result = _run(pipeline["env"])
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    first = result.stdout.splitlines()[0]
    assert " is up to date: the data, code and settings are those of the run that" in first
    assert "--force" in first
    named = Path(first.split("(its log: ", 1)[1].split(")", 1)[0])
    assert named in before
    # The last run's summary, as it printed it.
    summary = pipeline["first"].stdout.split("Latest evaluation", 1)[1].split("Full log: ")[0]
    assert result.stdout.split("Latest evaluation", 1)[1].strip() == summary.strip()
    assert not result.stderr.strip(), result.stderr  # TensorFlow never loaded
    assert sorted(logs.iterdir()) == before  # nothing ran, nothing was logged


@pytest.mark.slow
def test_second_run_says_cached(pipeline):
    result = _run(pipeline["env"], "--force")
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    _assert_small_and_clean(result)
    assert "Ingesting earlier span" not in result.stdout
    ends = _assert_start_and_end_once(_component_lines(result))
    first = _assert_start_and_end_once(_component_lines(pipeline["first"]))
    assert ends.keys() == first.keys()
    for component, state in ends.items():
        # Resolvers run every time (they have no executor to cache); the rest is cached.
        expected = "done" if component.endswith("_resolver") else "cached"
        assert state.split()[0] == expected, (component, state)
    assert _log_path(result) != _log_path(pipeline["first"])


@pytest.mark.slow
def test_verbose_streams_the_whole_log_to_the_console(pipeline):
    result = _run(pipeline["env"], "--verbose", "--force")
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    console = result.stdout + result.stderr
    assert "INFO:absl:Component Trainer is running." in console
    assert console.count("INFO:absl:") > 100
    # ... and to the file, as without --verbose; the path is still the last line.
    log = _log_path(result)
    assert "INFO:absl:Component Trainer is running." in log.read_text()
    assert "cached" in dict(_component_lines(result)).values()


def test_help_exits_at_once_without_running(tmp_path):
    env = run_env(tmp_path)
    started = time.monotonic()
    result = _run(env, "--help", timeout=60)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 10  # before TensorFlow loads
    assert "--verbose" in result.stdout and "PIPELINE_" in result.stdout
    assert not (tmp_path / "outputs").exists()


def test_a_malformed_span_ends_with_the_one_message(tmp_path):
    """Rejected by the file check before any component runs: no component line, the
    message and the log's path are the last lines, nothing else of the run's logs."""
    write_data_slice(tmp_path / "data", [1], ROWS_PER_SPAN)
    path = tmp_path / "data" / "span-1" / "data.csv"
    lines = path.read_text().splitlines(keepends=True)
    lines[100] = '"' + lines[100]  # a quote that never closes
    path.write_text("".join(lines))
    result = _run(run_env(tmp_path, **FAST_ENV))
    assert result.returncode == 1
    _assert_small_and_clean(result)
    assert _lines(result) == []
    last = result.stderr.rstrip().splitlines()
    assert last[-3].startswith("error: span 1 was rejected by SpanFilesCheck: "), last
    assert last[-2].startswith("Span 1 is recorded as rejected (")
    log = _log_path(result, "stderr")
    assert "Traceback" in log.read_text() and last[-3] in log.read_text()


def test_a_component_that_fails_ends_its_line_with_failed(tmp_path):
    """60 copies of one row: the gate rejects the span (one split is empty) after ExampleGen
    and StatisticsGen ran; its line says FAILED, then comes the message."""
    row = read_csv(ROOT / "data" / "span-2" / "data.csv")[0]
    write_csv(tmp_path / "data" / "span-1" / "data.csv", [row] * 60)
    mark_complete(str(tmp_path / "data" / "span-1"))
    result = _run(run_env(tmp_path, **FAST_ENV, PIPELINE_CHECK_DRIFT="0"))
    assert result.returncode == 1
    _assert_small_and_clean(result)
    lines = _component_lines(result)
    assert lines[-2:] == [("AnomaliesGate", "running"), ("AnomaliesGate", lines[-1][1])]
    assert lines[-1][1].startswith("FAILED"), lines
    assert ("CsvExampleGen", "running") in lines and "Trainer" not in dict(lines)
    last = result.stderr.rstrip().splitlines()
    assert last[-3].startswith("error: span 1 was rejected by AnomaliesGate: "), last
    _log_path(result, "stderr")
