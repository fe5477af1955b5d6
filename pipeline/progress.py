"""What a run shows while it works: one line per pipeline component as it starts and as it
ends, and progress bars for the scripts' long loops.

Components. TFX's LocalDagRunner and its launcher log a few fixed messages per node
(tfx/orchestration/local/local_dag_runner.py, tfx/orchestration/portable/launcher.py):
"Component %s is running." and "... is finished." around each node, and in between "A cached
execution %d is used." (a cache hit), "Going to run a new execution %d" (the executor runs)
or "Skipping execution for %s" (its inputs say not to run). `ComponentProgress`, a
logging.Handler on the root logger, turns those records into

      CsvExampleGen .......................... running
      CsvExampleGen .......................... done 3.2 s
      StatisticsGen .......................... cached

(on a terminal, the end line replaces the start line, whose time ticks while it runs). A
node that raises gets no "finished" record: the runner calls `fail_open()` and its line ends
`FAILED`. `step(label)` makes one line of several pipeline runs (an earlier span's ingestion),
whose component lines it keeps to itself.

Bars. `bar()` is tqdm on stderr, off when stderr is not a terminal (so logs and CI output
stay clean), with its elapsed time ticking between updates; `say()` prints a line without
breaking an open bar.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from typing import Iterator, Optional, TextIO

# The records of TFX 1.16's local orchestration that mark a node's progress (record.msg, the
# unformatted message, so formatting changes elsewhere do not matter).
RUNNING = "Component %s is running."
FINISHED = "Component %s is finished."
CACHED = "A cached execution %d is used."
EXECUTING = "Going to run a new execution %d"
SKIPPED = "Skipping execution for %s"
EXECUTION_FAILED = "Execution %d failed."

LABEL_WIDTH = 38  # label and dots: the longest node id (31 characters) still gets dots
TICK_SECONDS = 1.0


def duration(seconds: float) -> str:
    if seconds < 100:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds:02d} s"


def line(label: str, state: str) -> str:
    return f"  {label} {'.' * max(3, LABEL_WIDTH - len(label) - 1)} {state}"


class Console:
    """Lines to one stream. On a terminal (`live`), a status line stays open (no newline):
    its end replaces it in place and any other line first moves below it; elsewhere (a pipe,
    a file, CI) every status is a line of its own."""

    def __init__(self, stream: TextIO, live: Optional[bool] = None):
        self.stream = stream
        self.live = _isatty(stream) if live is None else live
        self.lock = threading.RLock()
        self._open = ""  # the status line being shown, live only

    def print(self, text: str) -> None:
        with self.lock:
            self.interrupt()
            self._write(text + "\n")

    def status(self, text: str) -> None:
        """A line that the next `end()` completes (live: rewrites)."""
        with self.lock:
            self.interrupt()
            if self.live:
                self._open = text
                self._write(text)
            else:
                self._write(text + "\n")

    def update(self, text: str) -> None:
        """Rewrites the open status line (live only; nothing otherwise)."""
        with self.lock:
            if self.live and self._open:
                self._open = text
                self._write(f"\r{text}\033[K")

    def end(self, text: str) -> None:
        with self.lock:
            if self.live and self._open:
                self._open = ""
                self._write(f"\r{text}\033[K\n")
            else:
                self.print(text)

    def interrupt(self) -> None:
        """Ends the open status line as it is, so that other output starts on a line of its
        own (call before writing to the same terminal through another stream)."""
        with self.lock:
            if self._open:
                self._open = ""
                self._write("\n")

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed console must not fail the run
            pass


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class _Node:
    def __init__(self, label: str):
        self.label = label
        self.started = time.monotonic()
        self.outcome = "done"  # "cached", "skipped", "FAILED", "rejected", ...

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def end_state(self) -> str:
        if self.outcome in ("cached", "skipped"):
            return self.outcome
        return f"{self.outcome} {duration(self.elapsed())}"


class Step:
    """One line for a block of work (see `step`); set `outcome` to end it otherwise than
    `done` (e.g. "rejected")."""

    def __init__(self, label: str):
        self._node = _Node(label)

    @property
    def outcome(self) -> str:
        return self._node.outcome

    @outcome.setter
    def outcome(self, value: str) -> None:
        self._node.outcome = value


class ComponentProgress(logging.Handler):
    """Start and end lines of the pipeline's components, from TFX's log records."""

    def __init__(self, console: Console, tick_seconds: float = TICK_SECONDS):
        super().__init__(logging.INFO)
        self.console = console
        self._component: Optional[_Node] = None
        self._step: Optional[_Node] = None
        self._stop = threading.Event()
        self._ticker = None
        if console.live and tick_seconds > 0:
            self._ticker = threading.Thread(
                target=self._tick, args=(tick_seconds,), name="component-progress", daemon=True
            )
            self._ticker.start()

    # logging.Handler
    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._on(record)
        except Exception:  # noqa: BLE001 (progress lines must never break a run)
            self.handleError(record)

    def _on(self, record: logging.LogRecord) -> None:
        message = record.msg
        if message == RUNNING:
            self._start(str(record.args[0]) if record.args else "?")
        elif message == FINISHED:
            self._finish()
        elif self._component is not None:
            if message == CACHED:
                self._component.outcome = "cached"
            elif message == SKIPPED:
                self._component.outcome = "skipped"
            elif message == EXECUTION_FAILED:
                self._component.outcome = "FAILED"

    def _start(self, node_id: str) -> None:
        with self.console.lock:
            if self._component is not None:  # no "finished" for the last one: it raised
                self._finish()
            self._component = _Node(node_id)
            if self._step is None:
                self.console.status(line(node_id, "running"))

    def _finish(self) -> None:
        with self.console.lock:
            node, self._component = self._component, None
            if node is not None and self._step is None:
                self.console.end(line(node.label, node.end_state()))

    def fail_open(self, outcome: str = "FAILED") -> None:
        """Ends the line of the component (or step) that was running when the run stopped."""
        with self.console.lock:
            node = self._step or self._component
            if node is not None:
                node.outcome = outcome
                self.console.end(line(node.label, node.end_state()))
            self._component = self._step = None

    @contextlib.contextmanager
    def step(self, label: str) -> Iterator[Step]:
        step = Step(label)
        with self.console.lock:
            self.fail_open("ended")  # nothing should be open; if it is, close it first
            self._step = step._node
            self.console.status(line(label, "running"))
        try:
            yield step
        except BaseException as error:
            with self.console.lock:
                self._component = None
                if self._step is step._node:
                    self.fail_open(
                        "interrupted" if isinstance(error, KeyboardInterrupt) else "FAILED"
                    )
            raise
        with self.console.lock:
            self._component = self._step = None
            self.console.end(line(label, step._node.end_state()))

    def _tick(self, seconds: float) -> None:
        while not self._stop.wait(seconds):
            with self.console.lock:
                node = self._step or self._component
                if node is not None:
                    self.console.update(line(node.label, f"running {node.elapsed():.0f} s"))

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
        super().close()


_active: Optional[ComponentProgress] = None


@contextlib.contextmanager
def components(console: Console) -> Iterator[ComponentProgress]:
    """Shows component lines on `console` for the block (a handler on the root logger)."""
    global _active
    handler = ComponentProgress(console)
    root = logging.getLogger()
    root.addHandler(handler)
    previous, _active = _active, handler
    try:
        yield handler
    finally:
        _active = previous
        root.removeHandler(handler)
        handler.close()


@contextlib.contextmanager
def step(label: str) -> Iterator[Step]:
    """One line for the block, e.g. `Ingesting earlier span 3 ..... done 8.1 s`, instead of
    its components' lines; without `components()` active, a plain block."""
    if _active is None:
        yield Step(label)
        return
    with _active.step(label) as current:
        yield current


# Scripts' progress bars ---------------------------------------------------------------------


def bar(
    iterable=None,
    *,
    total: Optional[float] = None,
    desc: str = "",
    unit: str = "it",
    tick_seconds: float = TICK_SECONDS,
    **kwargs,
):
    """A tqdm bar on stderr, disabled when stderr is not a terminal. Its elapsed time is
    refreshed every `tick_seconds` even when no update comes (long steps); with neither
    `total` nor a sized `iterable` it shows the elapsed time only. Close it (or use it as a
    context manager / iterate it to the end)."""
    from tqdm import tqdm  # only the scripts need it

    if total is None and iterable is None:
        kwargs.setdefault("bar_format", "{desc}: {elapsed}")
    progress = tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        disable=None,
        dynamic_ncols=True,
        **kwargs,
    )
    if not progress.disable and tick_seconds > 0:
        _tick_bar(progress, tick_seconds)
    return progress


def _tick_bar(progress, seconds: float) -> None:
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(seconds):
            with contextlib.suppress(Exception):
                progress.refresh()

    threading.Thread(target=tick, name="progress-bar", daemon=True).start()
    close = progress.close

    def close_and_stop() -> None:
        stop.set()
        close()

    progress.close = close_and_stop


def say(text: str, file: Optional[TextIO] = None) -> None:
    """Prints a line (stdout by default) without garbling an open bar."""
    from tqdm import tqdm

    tqdm.write(text, file=file or sys.stdout)
    (file or sys.stdout).flush()
