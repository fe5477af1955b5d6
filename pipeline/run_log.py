"""A run's console and its log file: TFX, Beam and TensorFlow log thousands of lines per run
(and a 20-frame traceback on failure); they go to `<output dir>/logs/<pipeline>-<time>.log`
in full, and the console gets the project's own log lines, and on failure one paragraph: what
failed, on which span, what to do, and where the log is.

    with run_log.to_file(settings) as log:
        ...                               # run; stdout and stderr go to the log file
        log.print("summary")              # to the console's stdout
    except Exception as error:
        log.fail(run_log.failure_message(...))
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
import sys
import traceback
from typing import Iterator, Optional, TextIO

from pipeline import rejections
from pipeline.settings import PROJECT_ROOT, PipelineSettings

# Log files kept per pipeline; older ones are deleted when a run starts.
KEEP_LOGS = 30
# The project's own code: its log lines also go to the console.
PROJECT_PACKAGES = ("pipeline", "models", "analysis")
# TFX's line per component (tfx/orchestration/local/local_dag_runner.py): the run's progress.
PROGRESS_MESSAGES = ("Component %s is running.",)
# Longest root-error text shown on the console (the full one is in the log).
MAX_ERROR_CHARS = 1500


class _ConsoleFilter(logging.Filter):
    """The project's own lines and TFX's per-component progress line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg in PROGRESS_MESSAGES:
            return True
        try:
            relative = os.path.relpath(os.path.realpath(record.pathname), PROJECT_ROOT)
        except ValueError:
            return False
        top = relative.split(os.sep)[0]
        return top in PROJECT_PACKAGES or relative in ("local_runner.py", "airflow_runner.py")


class _NoTracebackFormatter(logging.Formatter):
    """Tracebacks stay in the log file."""

    def formatException(self, ei) -> str:  # noqa: N802 (logging's name)
        return ""

    def formatStack(self, stack_info) -> str:  # noqa: N802
        return ""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).rstrip()


@dataclasses.dataclass
class RunLog:
    path: str
    stdout: TextIO
    stderr: TextIO

    def print(self, text: str) -> None:
        print(text, file=self.stdout, flush=True)

    def fail(self, message: str) -> None:
        """The run's last output: the message, then where the full log is."""
        traceback.print_exc(file=sys.stderr)  # the full traceback, into the log file
        sys.stderr.flush()
        print(f"{message}\nFull log: {self.path}", file=self.stderr, flush=True)


def log_path(settings: PipelineSettings) -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return os.path.join(settings.data.output_dir, "logs", f"{settings.name}-{stamp}.log")


def _prune(folder: str, pipeline_name: str) -> None:
    logs = sorted(name for name in os.listdir(folder)
                  if name.startswith(f"{pipeline_name}-") and name.endswith(".log"))
    for name in logs[:-KEEP_LOGS]:
        with contextlib.suppress(OSError):
            os.remove(os.path.join(folder, name))


@contextlib.contextmanager
def to_file(settings: PipelineSettings) -> Iterator[RunLog]:
    """Sends file descriptors 1 and 2 (Python, absl, Beam workers, TensorFlow's C++ logging)
    to a new log file for the block; the console keeps the project's log lines."""
    path = log_path(settings)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _prune(os.path.dirname(path), settings.name)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    console = RunLog(path, os.fdopen(os.dup(saved[0]), "w", buffering=1),
                     os.fdopen(os.dup(saved[1]), "w", buffering=1))
    handler = logging.StreamHandler(console.stderr)
    handler.addFilter(_ConsoleFilter())
    handler.setFormatter(_NoTracebackFormatter("%(levelname)s:%(name)s:%(message)s"))
    root = logging.getLogger()
    with open(path, "a", buffering=1) as log_file:
        os.dup2(log_file.fileno(), 1)
        os.dup2(log_file.fileno(), 2)
        root.addHandler(handler)
        logging.captureWarnings(True)
        console.print(f"Logs: {path}")
        try:
            yield console
        finally:
            root.removeHandler(handler)
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def failed_node(error: BaseException) -> Optional[str]:
    """The pipeline node that raised: TFX's LocalDagRunner runs the nodes one by one in its
    `run_with_ir` loop, whose `node_id` names the one running (None if not from there)."""
    tb = error.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name == "run_with_ir" and "node_id" in frame.f_locals:
            return str(frame.f_locals["node_id"])
        tb = tb.tb_next
    return None


def root_error(error: BaseException) -> BaseException:
    """The rejection in the chain if there is one, else the first cause (orchestrators and
    Beam wrap errors; the innermost one says what went wrong)."""
    chain = rejections.error_chain(error)
    return rejections.rejection_in(error) or chain[-1]


def _error_text(error: BaseException) -> str:
    text = f"{type(error).__name__}: {str(error).strip()}"
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + " […]"


def rejection_message(rejection: rejections.Rejection, settings: PipelineSettings) -> str:
    return (f"error: span {rejection.span} was rejected by {rejection.check}: "
            f"{rejection.reason.strip()}\n"
            f"Span {rejection.span} is recorded as rejected ({rejection.path}; delete it to "
            f"retry the span): later runs skip it and train on the newest "
            f"{settings.data.train_window_spans} accepted spans. Nothing was trained or pushed.")


def crash_message(error: BaseException, node: Optional[str], span: Optional[int]) -> str:
    """A crash (not a finding about the data): the span stays acceptable."""
    what = (f"the check {node}" if node in rejections.CHECKS
            else f"the step {node}" if node else "the run")
    on_span = f" on span {span}" if span is not None else ""
    kept = f"; span {span} is not rejected" if span is not None else ""
    return (f"error: {what} crashed{on_span}: {_error_text(root_error(error))}\n"
            f"This is a failure of the code or its environment, not a finding about the "
            f"data{kept}: fix the cause (the full traceback is in the log) and rerun.")
