"""The whole pipeline on growing data: wall time, peak memory and CPU use per component.

    TF_USE_LEGACY_KERAS=1 .venv/bin/python benchmarks/growth.py \
        [--rows 15000 150000 1500000] [--workers 1 0] [--files-per-span F]
        [--data-root DIR] [--keep] [--json FILE]

For each size, `tfx-template generate-data` resamples the shipped spans into six spans of that
many rows in total (seeded; kept under --data-root and reused when present). For each size
and each Beam DirectRunner mode (`--workers`: 1 = in-process, 0 = one worker process per
core, i.e. PIPELINE_BEAM_DIRECT_NUM_WORKERS) the local runner runs cold with the Tuner off
from a snapshot of this checkout (as benchmarks/pipeline_vs_official.py does), while its
process tree is sampled every --sample-interval seconds:

- memory: the sum over the tree of PSS (proportional set size: pages shared between Beam's
  worker processes are split among them, so they are not counted twice as RSS would be);
- CPU: the tree's CPU seconds (user + system, exited children included), whose rate is the
  number of cores busy.

Each component's wall time comes from its MLMD executions (registration to publication,
summed over executions: ExampleGen runs once per span); its peak memory and average cores
busy come from the samples taken within those times. The goals printed at the end are the
issue's: 1.5M rows under 8 GB peak, wall time from 150k to 1.5M rows growing no faster than
the data (x10), and the data components keeping both cores busy; and the "Faster" issue's:
1.5M rows cold in under 240 s at under 6 GB.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import pipeline.runtime  # noqa: F401 (first: Keras 2 before TensorFlow loads)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import psutil

from benchmarks import pipeline_vs_official as reference  # snapshot, environment
from benchmarks import process_tree
from pipeline import progress

REPO = reference.REPO
PIPELINE_NAME = reference.OUR_PIPELINE_NAME
DATA_COMPONENTS = ("CsvExampleGen", "StatisticsGen", "Transform", "Evaluator")
SHOWN_COMPONENTS = DATA_COMPONENTS[:3] + ("Trainer", "Evaluator")
NUM_SPANS = 6
MEMORY_GOAL_GB = 8.0
WALL_GOAL_S = 240.0  # the "Faster" issue: 1.5M rows, Tuner off, cold
FAST_MEMORY_GOAL_GB = 6.0
BUSY_CORES_GOAL = 1.5  # of 2: "both cores used" on average over the data components
MODE_NAMES = {1: "in-process", 0: "multi-processing"}


@dataclasses.dataclass
class Sample:
    time_s: float  # time.time()
    pss_bytes: int
    cpu_s: float  # cumulative CPU seconds of the tree


class TreeSampler:
    """Called by process_tree.run_measured at each sample: PSS and CPU of the process tree."""

    def __init__(self) -> None:
        self.samples: list[Sample] = []
        self._processes: dict[int, psutil.Process] = {}

    def __call__(self, pid: int) -> None:
        try:
            root = psutil.Process(pid)
            tree = [root] + root.children(recursive=True)
        except psutil.NoSuchProcess:
            return
        pss, cpu = 0, 0.0
        for process in tree:
            # Reuse Process objects so psutil keeps their identity (pid reuse) straight.
            process = self._processes.setdefault(process.pid, process)
            try:
                with process.oneshot():
                    times = process.cpu_times()
                    pss += process.memory_full_info().pss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            # children_*: children that exited and were waited for.
            cpu += times.user + times.system + times.children_user + times.children_system
        self.samples.append(Sample(time.time(), pss, cpu))

    def within(self, start_s: float, end_s: float) -> list[Sample]:
        return [s for s in self.samples if start_s <= s.time_s <= end_s]


@dataclasses.dataclass
class ComponentFigures:
    wall_s: float
    peak_gb: float
    busy_cores: float  # average over its executions


@dataclasses.dataclass
class RunResult:
    rows: int
    workers: int
    wall_s: float
    peak_gb: float
    busy_cores: float
    components: dict[str, ComponentFigures]

    @property
    def mode(self) -> str:
        return MODE_NAMES.get(self.workers, f"{self.workers} workers")


def execution_windows(metadata_path: Path) -> dict[str, list[tuple[float, float]]]:
    """Node id -> [(start, end)] in epoch seconds, from the MLMD executions' registration and
    last update (publication) times."""
    import ml_metadata as mlmd  # heavy; only after the run
    from tfx.orchestration import metadata

    store = mlmd.MetadataStore(metadata.sqlite_metadata_connection_config(str(metadata_path)))
    windows: dict[str, list[tuple[float, float]]] = {}
    prefix = PIPELINE_NAME + "."
    for context in store.get_contexts_by_type("node"):
        if not context.name.startswith(prefix):
            continue
        node = context.name[len(prefix) :]
        for execution in store.get_executions_by_context(context.id):
            windows.setdefault(node, []).append(
                (
                    execution.create_time_since_epoch / 1000,
                    execution.last_update_time_since_epoch / 1000,
                )
            )
    return windows


def cores_busy(samples: Sequence[Sample]) -> float:
    """CPU seconds per wall second between the first and last sample (0 if too few)."""
    if len(samples) < 2 or samples[-1].time_s <= samples[0].time_s:
        return 0.0
    return max(
        0.0, (samples[-1].cpu_s - samples[0].cpu_s) / (samples[-1].time_s - samples[0].time_s)
    )


def component_figures(
    sampler: TreeSampler, windows: Sequence[tuple[float, float]]
) -> ComponentFigures:
    wall = sum(end - start for start, end in windows)
    peak, cpu_s, busy_wall = 0, 0.0, 0.0
    for start, end in windows:
        inside = sampler.within(start, end)
        peak = max([peak] + [s.pss_bytes for s in inside])
        if len(inside) >= 2:
            cpu_s += inside[-1].cpu_s - inside[0].cpu_s
            busy_wall += inside[-1].time_s - inside[0].time_s
    return ComponentFigures(
        wall_s=wall, peak_gb=peak / 2**30, busy_cores=cpu_s / busy_wall if busy_wall else 0.0
    )


def ensure_data(data_root: Path, rows: int, files_per_span: int = 1) -> Path:
    """data_root/rows-N (…-files-F when a span is cut into F files), generated (seeded)
    unless a complete copy is there."""
    suffix = "" if files_per_span == 1 else f"-files-{files_per_span}"
    data_dir = data_root / f"rows-{rows}{suffix}"
    manifest = data_dir / "spans.json"
    if manifest.is_file() and json.loads(manifest.read_text()).get("rows") == rows:
        return data_dir
    progress.say(f"generating {rows} rows into {data_dir} ...")
    # Its own bar would fight with the benchmark's on the same terminal line.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "generate-data",
            str(data_dir),
            "--rows",
            str(rows),
            "--spans",
            str(NUM_SPANS),
            "--files-per-span",
            str(files_per_span),
        ],
        cwd=REPO,
        check=True,
        env={**os.environ, "TQDM_DISABLE": "1"},
    )
    return data_dir


def run_once(
    project: Path,
    data_dir: Path,
    rows: int,
    workers: int,
    workdir: Path,
    env: dict[str, str],
    interval_s: float,
) -> RunResult:
    slug = f"rows-{rows}-workers-{workers}"
    output_dir = workdir / "runs" / slug
    run_env = {
        **env,
        "PIPELINE_OUTPUT_DIR": str(output_dir),
        "PIPELINE_DATA_DIR": str(data_dir),
        "PIPELINE_ENABLE_TUNING": "0",
        "PIPELINE_BEAM_DIRECT_NUM_WORKERS": str(workers),
    }
    log = workdir / "logs" / f"{slug}.log"
    progress.say(f"[{rows} rows, {MODE_NAMES.get(workers, workers)}] running (log {log}) ...")
    sampler = TreeSampler()
    measured = process_tree.run_measured(
        (sys.executable, "local_runner.py"),
        cwd=project,
        env=run_env,
        log_path=log,
        interval_s=interval_s,
        on_sample=sampler,
    )
    windows = execution_windows(output_dir / "metadata" / PIPELINE_NAME / "metadata.db")
    components = {
        node: component_figures(sampler, node_windows) for node, node_windows in windows.items()
    }
    result = RunResult(
        rows=rows,
        workers=workers,
        wall_s=measured.wall_s,
        peak_gb=max([0] + [s.pss_bytes for s in sampler.samples]) / 2**30,
        busy_cores=cores_busy(sampler.samples),
        components=components,
    )
    progress.say(
        f"[{rows} rows, {result.mode}] {result.wall_s:.0f} s, peak {result.peak_gb:.2f} "
        "GB PSS, "
        + ", ".join(
            f"{n} {c.wall_s:.0f} s/{c.peak_gb:.1f} GB/{c.busy_cores:.2f} cores"
            for n, c in components.items()
            if n in SHOWN_COMPONENTS
        )
    )
    if not (output_dir / "serving_model" / PIPELINE_NAME).is_dir():
        progress.say(f"  note: no model pushed (see {log})")
    return result


def data_busy_cores(result: RunResult) -> float:
    """Average cores busy over the data components, weighted by their wall time."""
    parts = [result.components[c] for c in DATA_COMPONENTS if c in result.components]
    wall = sum(p.wall_s for p in parts)
    return sum(p.busy_cores * p.wall_s for p in parts) / wall if wall else 0.0


def print_report(results: Sequence[RunResult], load: str) -> None:
    header = (
        f"{'rows':>9} {'Beam':<16} {'total s':>8} {'peak GB':>8} "
        + " ".join(f"{c[:11]:>15}" for c in SHOWN_COMPONENTS)
        + f" {'data cores':>10}"
    )
    print("\nwall seconds / peak GB (PSS) / cores busy per component")
    print(header)
    print("-" * len(header))
    for r in results:
        cells = []
        for name in SHOWN_COMPONENTS:
            c = r.components.get(name)
            cells.append(f"{c.wall_s:.0f}/{c.peak_gb:.1f}/{c.busy_cores:.1f}" if c else "-")
        print(
            f"{r.rows:>9} {r.mode:<16} {r.wall_s:>8.0f} {r.peak_gb:>8.2f} "
            + " ".join(f"{cell:>15}" for cell in cells)
            + f" {data_busy_cores(r):>10.2f}"
        )
    print(f"load: {load}")

    print("\ngoals")
    by_key = {(r.rows, r.workers): r for r in results}
    for workers in sorted({r.workers for r in results}, reverse=True):
        mode = MODE_NAMES.get(workers, str(workers))
        big, mid = by_key.get((1_500_000, workers)), by_key.get((150_000, workers))
        if big:
            print(
                f"  [{mode}] 1.5M rows peak memory < {MEMORY_GOAL_GB:.0f} GB: "
                f"{big.peak_gb:.2f} GB -> {'met' if big.peak_gb < MEMORY_GOAL_GB else 'NOT met'}"
            )
            fast = big.wall_s < WALL_GOAL_S and big.peak_gb < FAST_MEMORY_GOAL_GB
            print(
                f"  [{mode}] 1.5M rows cold in < {WALL_GOAL_S:.0f} s at < "
                f"{FAST_MEMORY_GOAL_GB:.0f} GB (the 'Faster' issue): {big.wall_s:.0f} s, "
                f"{big.peak_gb:.2f} GB -> {'met' if fast else 'NOT met'}"
            )
        if big and mid:
            ratio = big.wall_s / mid.wall_s
            print(
                f"  [{mode}] wall time 150k -> 1.5M rows at most x10 (linear): x{ratio:.1f} "
                f"-> {'met' if ratio <= 10 else 'NOT met'}"
            )
        for r in results:
            if r.workers == workers and r.rows >= 150_000:
                busy = data_busy_cores(r)
                print(
                    f"  [{mode}] {r.rows} rows: data components busy >= {BUSY_CORES_GOAL} of "
                    f"{os.cpu_count()} cores: {busy:.2f} -> "
                    f"{'met' if busy >= BUSY_CORES_GOAL else 'NOT met'}"
                )


def machine_load() -> str:
    one, five, fifteen = os.getloadavg()
    return (
        f"{os.cpu_count()} CPUs, load average {one:.1f}/{five:.1f}/{fifteen:.1f} "
        f"(other processes on the machine share the cores)"
    )


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[15_000, 150_000, 1_500_000])
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1, 0],
        help="PIPELINE_BEAM_DIRECT_NUM_WORKERS values (1 in-process, 0 all cores)",
    )
    parser.add_argument(
        "--files-per-span",
        type=int,
        default=1,
        help="CSV files per generated span (CsvExampleGen reads a file in one "
        "piece: several files spread it over the Beam workers)",
    )
    parser.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="where generated data is kept and reused (default: in the work dir)",
    )
    parser.add_argument("--sample-interval", type=float, default=0.5, metavar="SECONDS")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (runs, logs)")
    return parser.parse_args(argv)


def run_benchmark(args: argparse.Namespace, workdir: Path) -> None:
    env = reference.base_env(workdir / "home")
    project = reference.snapshot_project(REPO, workdir / "project")
    print(
        f"work dir {workdir}; {REPO} at {reference.git_description(REPO)} (snapshot); "
        f"{machine_load()}",
        flush=True,
    )
    results = []
    bar = progress.bar(total=len(args.rows) * len(args.workers), desc="growth", unit="run")
    for rows in args.rows:
        bar.set_postfix_str(f"generating {rows} rows")
        data_dir = ensure_data(args.data_root or workdir / "data", rows, args.files_per_span)
        for workers in args.workers:
            bar.set_postfix_str(f"{rows} rows, {MODE_NAMES.get(workers, workers)}")
            results.append(
                run_once(project, data_dir, rows, workers, workdir, env, args.sample_interval)
            )
            bar.update()
            if args.json:
                args.json.write_text(json.dumps([dataclasses.asdict(r) for r in results], indent=1))
    bar.close()
    print_report(results, machine_load())


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    return reference.run_in_workdir(
        "growth-", args.keep, lambda workdir: run_benchmark(args, workdir)
    )


if __name__ == "__main__":
    sys.exit(main())
