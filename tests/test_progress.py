"""pipeline/progress.py without a pipeline: TFX's records in, console lines out."""

import io
import logging

import pytest

from pipeline import progress

LOGGER = logging.getLogger("absl")


def _tfx(message: str, *args) -> None:
    LOGGER.info(message, *args)


@pytest.fixture
def shown():
    """The console's text; component records logged under `progress.components`."""
    stream = io.StringIO()
    level = LOGGER.level
    LOGGER.setLevel(logging.INFO)
    with progress.components(progress.Console(stream, live=False)) as handler:
        yield stream, handler
    LOGGER.setLevel(level)


def _run_component(node: str, between: str, execution: int = 1) -> None:
    _tfx(progress.RUNNING, node)
    _tfx(between, execution)
    _tfx(progress.FINISHED, node)


def test_executed_cached_skipped_and_system_nodes(shown):
    stream, _ = shown
    _run_component("CsvExampleGen", progress.EXECUTING)
    _run_component("Transform", progress.CACHED)
    _tfx(progress.RUNNING, "Pusher")
    _tfx(progress.SKIPPED, "Pusher")
    _tfx(progress.FINISHED, "Pusher")
    _tfx(progress.RUNNING, "latest_blessed_model_resolver")  # no executor: no record between
    _tfx(progress.FINISHED, "latest_blessed_model_resolver")
    lines = [line.split() for line in stream.getvalue().splitlines()]
    assert [(words[0], words[2:]) for words in lines] == [
        ("CsvExampleGen", ["running"]),
        ("CsvExampleGen", ["done", "0.0", "s"]),
        ("Transform", ["running"]),
        ("Transform", ["cached"]),
        ("Pusher", ["running"]),
        ("Pusher", ["skipped"]),
        ("latest_blessed_model_resolver", ["running"]),
        ("latest_blessed_model_resolver", ["done", "0.0", "s"]),
    ]
    assert all(set(words[1]) == {"."} for words in lines)


def test_a_component_that_raises_ends_failed(shown):
    stream, handler = shown
    _tfx(progress.RUNNING, "Trainer")
    _tfx(progress.EXECUTING, 7)
    handler.fail_open()
    assert stream.getvalue().splitlines()[-1].split()[::2] == ["Trainer", "FAILED", "s"]
    handler.fail_open()  # nothing open any more: nothing printed
    assert len(stream.getvalue().splitlines()) == 2


def test_a_step_is_one_line_for_its_components(shown):
    stream, _ = shown
    with progress.step("Ingesting earlier span 3"):
        _run_component("CsvExampleGen", progress.EXECUTING)
        _run_component("StatisticsGen", progress.EXECUTING, 2)
    with progress.step("Ingesting earlier span 4") as step:
        _tfx(progress.RUNNING, "AnomaliesGate")
        step.outcome = "rejected"  # what the runner does when the span was rejected
    with pytest.raises(RuntimeError), progress.step("Ingesting earlier span 5"):
        _tfx(progress.RUNNING, "CsvExampleGen")
        raise RuntimeError("crash")
    _run_component("CsvExampleGen", progress.CACHED)
    states = [
        (line.split(" .")[0].strip(), line.rsplit(". ", 1)[1].split()[0])
        for line in stream.getvalue().splitlines()
    ]
    assert states == [
        ("Ingesting earlier span 3", "running"),
        ("Ingesting earlier span 3", "done"),
        ("Ingesting earlier span 4", "running"),
        ("Ingesting earlier span 4", "rejected"),
        ("Ingesting earlier span 5", "running"),
        ("Ingesting earlier span 5", "FAILED"),
        ("CsvExampleGen", "running"),
        ("CsvExampleGen", "cached"),
    ]


def test_on_a_terminal_the_end_replaces_the_start_line():
    stream = io.StringIO()
    console = progress.Console(stream, live=True)
    console.status(progress.line("Trainer", "running"))
    console.update(progress.line("Trainer", "running 3 s"))
    console.end(progress.line("Trainer", "done 3.2 s"))
    console.status(progress.line("Evaluator", "running"))
    console.print("WARNING: something")  # moves below the open line
    text = stream.getvalue()
    assert text.count("\n") == 3 and text.endswith("running\nWARNING: something\n")
    assert "\r  Trainer " in text and text.split("\n")[0].endswith("done 3.2 s\033[K")


def test_bars_are_off_when_stderr_is_not_a_terminal(capsys):
    bar = progress.bar(total=3, desc="work")
    assert bar.disable
    bar.update(3)
    bar.close()
    progress.say("a line")
    assert capsys.readouterr().out == "a line\n"


def test_durations_read_well():
    assert progress.duration(12.34) == "12.3 s"
    assert progress.duration(125) == "2 min 05 s"
