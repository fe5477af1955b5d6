"""Runs a command as a subprocess and measures its wall time and peak memory.

Peak memory is the largest sum of RSS over the process and all its descendants, sampled
every `interval_s` seconds. Summing RSS counts pages shared between processes (forked
workers, shared libraries) once per process, so for multi-process runs it overstates the
true footprint; the pipelines measured here run in a single process.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

try:
    import psutil
except ImportError:  # fall back to reading /proc ourselves
    psutil = None

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
TAIL_LINES = 40


class RunFailed(RuntimeError):
    """A measured command exited with a non-zero status."""


@dataclasses.dataclass(frozen=True)
class Measurement:
    wall_s: float
    peak_rss_bytes: int
    samples: int

    @property
    def peak_rss_mb(self) -> float:
        return self.peak_rss_bytes / 2**20


def _tree_proc(pid: int) -> list[int]:
    """`pid` and its descendants, from /proc (Linux only)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces or parentheses.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(children.get(current, []))
    return found


def _sum_over_tree(pid: int, with_psutil: Callable, from_proc: Callable[[int], float]) -> float:
    """Sum of one figure over `pid` and its descendants: `with_psutil(process)` where psutil is
    installed, else `from_proc(pid)` (Linux only). A process that exits between listing and
    reading counts for nothing."""
    if psutil is not None:
        try:
            root = psutil.Process(pid)
            processes: list = [root] + root.children(recursive=True)
        except psutil.NoSuchProcess:
            return 0
        read, gone = with_psutil, (psutil.NoSuchProcess, psutil.AccessDenied)
    else:
        processes, read, gone = _tree_proc(pid), from_proc, (OSError, ValueError, IndexError)
    total = 0
    for process in processes:
        try:
            total += read(process)
        except gone:
            pass
    return total


def _rss_proc(pid: int) -> int:
    return int(Path("/proc", str(pid), "statm").read_text().split()[1]) * PAGE_SIZE


def _cpu_psutil(process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _cpu_proc(pid: int) -> float:
    fields = Path("/proc", str(pid), "stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_rss_bytes(pid: int) -> int:
    """Current sum of RSS over the process tree rooted at `pid`."""
    return int(_sum_over_tree(pid, lambda process: process.memory_info().rss, _rss_proc))


def tree_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by the process tree rooted at `pid` (its running
    processes)."""
    return float(_sum_over_tree(pid, _cpu_psutil, _cpu_proc))


def sampler_name() -> str:
    return f"psutil {psutil.__version__}" if psutil is not None else "/proc"


def _tail(path: Path, lines: int = TAIL_LINES) -> str:
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def run_measured(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    log_path: Path,
    interval_s: float = 0.2,
    on_sample: Optional[Callable[[int], None]] = None,
) -> Measurement:
    """Runs `argv` to completion (output to `log_path`), sampling its tree's memory;
    `on_sample(pid)`, if given, is called at each sample too (for more per-sample figures).

    Raises RunFailed, with the log's tail, if the command fails. On an exception here
    (Ctrl-C) the command's process group, which this function created, is terminated."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        start = time.monotonic()
        process = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        peak, samples = 0, 0
        try:
            while process.poll() is None:
                peak = max(peak, tree_rss_bytes(process.pid))
                if on_sample is not None:
                    on_sample(process.pid)
                samples += 1
                try:
                    process.wait(timeout=interval_s)
                except subprocess.TimeoutExpired:
                    pass
        except BaseException:
            os.killpg(process.pid, signal.SIGTERM)  # the session this call started
            process.wait()
            raise
        wall = time.monotonic() - start
    if process.returncode != 0:
        raise RunFailed(
            f"{' '.join(argv)} (in {cwd}) exited with {process.returncode}; "
            f"log {log_path}, last lines:\n{_tail(log_path)}"
        )
    return Measurement(wall_s=wall, peak_rss_bytes=peak, samples=samples)
