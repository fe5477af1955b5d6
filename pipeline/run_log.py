"""A run's console and its log file: TFX, Beam and TensorFlow log thousands of lines per run
(and a 20-frame traceback on failure); they go to `<output dir>/logs/<pipeline>-<time>.log`
in full. The console gets one line per component as it starts and ends (pipeline/progress.py),
the project's own warnings and a few of its facts (CONSOLE_INFO), then the summary and the
log's path, or on failure one paragraph: what failed, on which span, what to do, and where
the log is. With `verbose`, everything is streamed to the console as well as to the file.

    early = run_log.capture_early()       # first thing: even TensorFlow's import lines
    ...                                   #   go to the log file
    with run_log.to_file(settings, early=early) as log:
        ...                               # run; stdout and stderr go to the log file
        log.print("summary")              # to the console's stdout
    except Exception as error:
        log.fail(run_log.failure_message(...))
                                          # on leaving: "Full log: <path>" (after the
                                          # failure message, if any), the last line
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
import subprocess
import sys
import tempfile
import traceback
from typing import TYPE_CHECKING, Iterator, Optional, TextIO

from pipeline import progress
from pipeline.settings import PROJECT_ROOT, PipelineSettings

if TYPE_CHECKING:
    from pipeline import rejections

# Log files kept per pipeline; older ones are deleted when a run starts.
KEEP_LOGS = 30
# The project's own code: its warnings and errors also go to the console.
PROJECT_PACKAGES = ("pipeline", "models", "analysis")
# The project's INFO lines the console shows too (how their format strings start): facts of
# this run that change what it costs or where things are; every other INFO line is in the
# log file only.
CONSOLE_INFO = ("Warm start:", "Parameter-server cluster", "Sharded variable")
# Console lines of the project are details of the component (or step) running: indented.
DETAIL_INDENT = "    "
# Longest root-error text shown on the console (the full one is in the log).
MAX_ERROR_CHARS = 1500
# How long the verbose mode's `tee` may take to pass on the last lines (a child process that
# outlives the run may hold the pipe open; it is not waited for).
TEE_WAIT_SECONDS = 10


class _ConsoleFilter(logging.Filter):
    """The project's own warnings and errors, and its CONSOLE_INFO lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING and not (
            isinstance(record.msg, str) and record.msg.startswith(CONSOLE_INFO)
        ):
            return False
        try:
            relative = os.path.relpath(os.path.realpath(record.pathname), PROJECT_ROOT)
        except ValueError:
            return False
        top = relative.split(os.sep)[0]
        return top in PROJECT_PACKAGES or relative in ("local_runner.py", "airflow_runner.py")


class _NoTracebackFormatter(logging.Formatter):
    """Tracebacks stay in the log file; a line is a detail of the component running."""

    def formatException(self, ei) -> str:  # logging's name
        return ""

    def formatStack(self, stack_info) -> str:
        return ""

    def format(self, record: logging.LogRecord) -> str:
        level = f"{record.levelname}: " if record.levelno >= logging.WARNING else ""
        return DETAIL_INDENT + level + super().format(record).rstrip()


class _ConsoleHandler(logging.StreamHandler):
    """The project's console lines, below the open component line."""

    def __init__(self, stream: TextIO, console: progress.Console):
        super().__init__(stream)
        self.console = console
        self.addFilter(_ConsoleFilter())
        self.setFormatter(_NoTracebackFormatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        with self.console.lock:
            self.console.interrupt()
            super().emit(record)


class EarlyOutput:
    """File descriptors 1 and 2 into an anonymous file from the process's start (TensorFlow
    writes its import-time lines to them) until the run's log file takes over and starts with
    them (`to_file(early=...)`); `release()` gives them back to the console instead."""

    def __init__(self) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        self._buffer = tempfile.TemporaryFile()
        self._saved: Optional[tuple[int, int]] = (os.dup(1), os.dup(2))
        os.dup2(self._buffer.fileno(), 1)
        os.dup2(self._buffer.fileno(), 2)

    def release(self, replay: bool = True) -> bytes:
        """Restores the console's descriptors; what was captured, also written to the console
        unless `replay` is false. Does nothing the second time."""
        if self._saved is None:
            return b""
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved in zip((1, 2), self._saved):
            os.dup2(saved, fd)
            os.close(saved)
        self._saved = None
        self._buffer.seek(0)
        captured = self._buffer.read()
        self._buffer.close()
        if replay and captured:
            with os.fdopen(os.dup(2), "wb") as console:
                console.write(captured)
        return captured


def capture_early() -> EarlyOutput:
    return EarlyOutput()


@dataclasses.dataclass
class RunLog:
    path: str
    stdout: TextIO  # the console's
    stderr: TextIO
    console: progress.Console  # component lines and the summary (the console's stdout)
    components: Optional[progress.ComponentProgress] = None
    failure: Optional[str] = None

    def print(self, text: str) -> None:
        self.console.print(text)

    def fail(self, message: str) -> None:
        """Ends the failed component's line; the message and the log's path are the run's
        last output (printed when the block ends)."""
        if self.components is not None:
            self.components.fail_open()
        traceback.print_exc(file=sys.stderr)  # the full traceback, into the log file
        sys.stderr.flush()
        self.failure = message


def log_path(settings: PipelineSettings) -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return os.path.join(settings.data.output_dir, "logs", f"{settings.name}-{stamp}.log")


def _prune(folder: str, pipeline_name: str) -> None:
    logs = sorted(
        name
        for name in os.listdir(folder)
        if name.startswith(f"{pipeline_name}-") and name.endswith(".log")
    )
    for name in logs[:-KEEP_LOGS]:
        with contextlib.suppress(OSError):
            os.remove(os.path.join(folder, name))


@contextlib.contextmanager
def to_file(
    settings: PipelineSettings, verbose: bool = False, early: Optional[EarlyOutput] = None
) -> Iterator[RunLog]:
    """Sends file descriptors 1 and 2 (Python, absl, Beam workers, TensorFlow's C++ logging)
    to a new log file for the block (`early`'s capture first); the console gets component
    lines and the project's warnings, or with `verbose` everything (through `tee`)."""
    path = log_path(settings)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _prune(os.path.dirname(path), settings.name)
    captured = early.release(replay=False) if early is not None else b""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    tee = None
    with open(path, "ab", buffering=0) as log_file:
        log_file.write(captured)
        if verbose:
            os.write(saved[1], captured)
            tee = subprocess.Popen(["tee", "-a", path], stdin=subprocess.PIPE, stdout=saved[0])
            target = tee.stdin.fileno()
        else:
            target = log_file.fileno()
        console_out = os.fdopen(os.dup(saved[0]), "w", buffering=1)
        console_err = os.fdopen(os.dup(saved[1]), "w", buffering=1)
        # Verbose: component lines and the summary go through tee like everything else.
        console = (
            progress.Console(sys.stdout, live=False) if verbose else progress.Console(console_out)
        )
        log = RunLog(path, console_out, console_err, console)
        root = logging.getLogger()
        handler = None if verbose else _ConsoleHandler(console_err, console)
        os.dup2(target, 1)
        os.dup2(target, 2)
        if tee is not None:
            tee.stdin.close()  # fds 1 and 2 hold the pipe now
        if handler is not None:
            root.addHandler(handler)
        logging.captureWarnings(True)
        try:
            with progress.components(console) as components:
                log.components = components
                try:
                    yield log
                except BaseException as error:
                    components.fail_open(
                        "interrupted" if isinstance(error, KeyboardInterrupt) else "FAILED"
                    )
                    raise
        finally:
            if handler is not None:
                root.removeHandler(handler)
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            if tee is not None:
                try:
                    tee.wait(timeout=TEE_WAIT_SECONDS)
                except subprocess.TimeoutExpired:
                    tee.kill()
            if log.failure is not None:
                log_file.write(f"{log.failure}\n".encode())
                print(f"{log.failure}\nFull log: {path}", file=console_err, flush=True)
            else:
                print(f"Full log: {path}", file=console_out, flush=True)
            console_out.close()
            console_err.close()


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
    from pipeline import rejections  # TensorFlow: this module loads first

    chain = rejections.error_chain(error)
    return rejections.rejection_in(error) or chain[-1]


def _error_text(error: BaseException) -> str:
    text = f"{type(error).__name__}: {str(error).strip()}"
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + " […]"


def rejection_message(rejection: rejections.Rejection, settings: PipelineSettings) -> str:
    return (
        f"error: span {rejection.span} was rejected by {rejection.check}: "
        f"{rejection.reason.strip()}\n"
        f"Span {rejection.span} is recorded as rejected ({rejection.path}; delete it to "
        f"retry the span): later runs skip it and train on the newest "
        f"{settings.data.train_window_spans} accepted spans. Nothing was trained or pushed."
    )


def crash_message(error: BaseException, node: Optional[str], span: Optional[int]) -> str:
    """A crash (not a finding about the data): the span stays acceptable."""
    from pipeline import rejections

    what = (
        f"the check {node}"
        if node in rejections.CHECKS
        else f"the step {node}"
        if node
        else "the run"
    )
    on_span = f" on span {span}" if span is not None else ""
    kept = f"; span {span} is not rejected" if span is not None else ""
    return (
        f"error: {what} crashed{on_span}: {_error_text(root_error(error))}\n"
        f"This is a failure of the code or its environment, not a finding about the "
        f"data{kept}: fix the cause (the full traceback is in the log) and rerun."
    )
