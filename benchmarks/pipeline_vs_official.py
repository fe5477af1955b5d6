"""This pipeline against TFX's official `taxi` template: cost on this machine, quality on a
shared hold-out.

    .venv/bin/python benchmarks/pipeline_vs_official.py [--keep] [--skip-official] [--cold-runs N]

Each pipeline runs as a subprocess, cold (fresh output directory) and then again with no
new data (warm re-run); wall time and peak memory (sum of RSS over the process tree) are
measured from outside. Ours answers a warm re-run before TFX loads (pipeline/up_to_date.py),
so it runs a third time with --force: the pipeline with every component cached. Ours runs
cold twice: with PIPELINE_ENABLE_TUNING=0 (like for like: the template has no Tuner) and with
tuning on, to price the Tuner separately. Then every pipeline runs cold again (--cold-runs,
2 by default), the pipelines taking turns, each from empty outputs: this machine's speed drifts
over minutes, by as much as a third, so each pipeline's best cold run is the figure compared.
The last lines compare the figures with issue 17's goals.

The hold-out is what our Evaluator evaluates on: the eval split that our CsvExampleGen
hash-split off the newest span (span 6). The official template is fed the shipped
15,002-row sample minus exactly those rows, so neither model trains on it. Both models'
`serving_default` signatures (serialized tf.Example in) score it the same way.

Our pipeline runs from a snapshot of this checkout's pipeline/, models/, schema/, data/
and local_runner.py, taken at start, so edits made while the benchmark runs do not mix
into it. Nothing is written outside a temporary directory (HOME included), which is
removed at the end unless --keep (or a run fails).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import pipeline.runtime  # noqa: F401 (first: Keras 2 before TensorFlow loads)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks import holdout, official_template, process_tree
from scripts import split_data

REPO = Path(__file__).resolve().parents[1]
# Every package the pipeline may import (serving/, streaming/, analysis/ when present).
SNAPSHOT_ITEMS = (
    "pipeline",
    "models",
    "schema",
    "data",
    "local_runner.py",
    "analysis",
    "serving",
    "streaming",
)
OUR_PIPELINE_NAME = "taxi-tips"
OUR_OUTPUT_KEY = "probabilities"
OUR_COMPONENT_DIRS = (
    "CsvExampleGen",
    "ImportSchemaGen",
    "StatisticsGen",
    "ExampleValidator",
    "Transform",
    "Trainer",
    "Evaluator",
    "Pusher",
)


@dataclasses.dataclass(frozen=True)
class PipelineSpec:
    """How to run one pipeline and where it leaves its results."""

    label: str
    slug: str
    argv: tuple[str, ...]
    cwd: Path
    env: Mapping[str, str]
    pipeline_root: Path
    metadata_path: Path
    serving_model_dir: Path
    expected_component_dirs: tuple[str, ...]
    output_key: str
    # Everything a run writes: removed before another cold run.
    output_dir: Path
    # The flag that runs the pipeline even when nothing changed (ours), if any.
    force_flag: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class PipelineRun:
    spec: PipelineSpec
    cold: process_tree.Measurement
    warm: process_tree.Measurement
    model_dir: Path
    pushed: bool
    cached: Optional[process_tree.Measurement] = None  # forced re-run, every component cached
    more_colds: tuple[float, ...] = ()  # wall seconds of the later cold runs

    @property
    def colds(self) -> tuple[float, ...]:
        return (self.cold.wall_s, *self.more_colds)

    @property
    def best_cold_s(self) -> float:
        return min(self.colds)


# The goals of issue 17 ("Faster"), against the official template in the same run.
GOAL_COLD_RATIO = 0.6
GOAL_WARM_SHARE = 0.10
GOAL_PEAK_MB = 1170
GOAL_MIN_AUC = 0.94
GOAL_ACCURACY_OVER_MAJORITY = 0.08


# --- Environment ------------------------------------------------------------------------------


def base_env(home: Path) -> dict[str, str]:
    """This environment minus anything that would steer a pipeline, with a throwaway HOME."""
    home.mkdir(parents=True, exist_ok=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PIPELINE_") and k not in ("TF_CONFIG", "PYTHONPATH")
    }
    env.update(HOME=str(home), TF_USE_LEGACY_KERAS="1", PYTHONUNBUFFERED="1")
    return env


def git_description(repo: Path) -> str:
    """HEAD's short hash, and whether the snapshotted paths differ from it."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False
        ).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", *SNAPSHOT_ITEMS)
    return f"{head}{' + uncommitted changes' if dirty else ''}"


def snapshot_project(repo: Path, destination: Path) -> Path:
    """Copies the files our pipeline runs from, so concurrent edits cannot leak in."""
    destination.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for item in SNAPSHOT_ITEMS:
        source = repo / item
        if not source.exists():
            continue
        if source.is_dir():
            shutil.copytree(source, destination / item, ignore=ignore)
        else:
            shutil.copy2(source, destination / item)
    return destination


# --- The pipelines ---------------------------------------------------------------------------


def our_pipeline_spec(
    project: Path, output_dir: Path, env: Mapping[str, str], *, tuning: bool
) -> PipelineSpec:
    """Our local_runner.py with its output in `output_dir`, tuning on or off."""
    run_env = {
        **env,
        "PIPELINE_OUTPUT_DIR": str(output_dir),
        "PIPELINE_DATA_DIR": str(project / "data"),
        "PIPELINE_ENABLE_TUNING": "1" if tuning else "0",
    }
    return PipelineSpec(
        label=f"this pipeline (tuning {'on' if tuning else 'off'})",
        slug=f"ours-tuning-{'on' if tuning else 'off'}",
        argv=(sys.executable, "local_runner.py"),
        cwd=project,
        env=run_env,
        pipeline_root=output_dir / "tfx" / OUR_PIPELINE_NAME,
        metadata_path=output_dir / "metadata" / OUR_PIPELINE_NAME / "metadata.db",
        serving_model_dir=output_dir / "serving_model" / OUR_PIPELINE_NAME,
        expected_component_dirs=OUR_COMPONENT_DIRS + (("Tuner",) if tuning else ()),
        output_key=OUR_OUTPUT_KEY,
        output_dir=output_dir,
        force_flag="--force",
    )


def official_spec(template_dir: Path, output_dir: Path, env: Mapping[str, str]) -> PipelineSpec:
    """The patched official template's local_runner.py (its paths are patched in)."""
    return PipelineSpec(
        label="official template",
        slug="official",
        argv=(sys.executable, "local_runner.py"),
        cwd=template_dir,
        env=dict(env),
        pipeline_root=official_template.pipeline_root(output_dir),
        metadata_path=official_template.metadata_path(output_dir),
        serving_model_dir=official_template.serving_model_dir(output_dir),
        expected_component_dirs=official_template.EXPECTED_COMPONENT_DIRS,
        output_key=official_template.OUTPUT_KEY,
        output_dir=output_dir,
    )


def newest_model(spec: PipelineSpec) -> tuple[Path, bool]:
    """(SavedModel dir, pushed?): the newest pushed version, else the Trainer's newest model."""
    pushed = sorted(
        (
            p
            for p in spec.serving_model_dir.glob("*")
            if p.name.isdigit() and (p / "saved_model.pb").exists()
        ),
        key=lambda p: int(p.name),
    )
    if pushed:
        return pushed[-1], True
    trained = sorted(
        (
            p
            for p in spec.pipeline_root.glob("Trainer/model/*/Format-Serving")
            if (p / "saved_model.pb").exists()
        ),
        key=lambda p: int(p.parent.name),
    )
    if not trained:
        raise FileNotFoundError(
            f"{spec.label}: no pushed or trained model under "
            f"{spec.serving_model_dir} or {spec.pipeline_root}/Trainer"
        )
    return trained[-1], False


def check_official_ingested(spec: PipelineSpec, expected_rows: int) -> None:
    """The official ExampleGen's first Examples artifact holds exactly our filtered CSV."""
    _, uri = holdout.newest_span_examples(spec.metadata_path, official_template.PIPELINE_NAME)
    ingested = holdout.count_records(os.path.join(uri, "Split-*", "*.gz"))
    if ingested != expected_rows:
        raise RuntimeError(
            f"{spec.label}: its ExampleGen wrote {ingested} examples, "
            f"expected the {expected_rows} rows of its data file"
        )


def check_components_ran(spec: PipelineSpec) -> None:
    missing = [c for c in spec.expected_component_dirs if not (spec.pipeline_root / c).is_dir()]
    if missing:
        raise RuntimeError(
            f"{spec.label}: no output from {', '.join(missing)} under "
            f"{spec.pipeline_root}; the pipeline did not run every component"
        )


def _measured_run(
    spec: PipelineSpec, log_path: Path, interval_s: float, *extra_args: str
) -> process_tree.Measurement:
    return process_tree.run_measured(
        (*spec.argv, *extra_args),
        cwd=spec.cwd,
        env=spec.env,
        log_path=log_path,
        interval_s=interval_s,
    )


def benchmark_pipeline(spec: PipelineSpec, log_dir: Path, interval_s: float) -> PipelineRun:
    """Cold run, then a warm re-run with no new data; the model is the cold run's."""
    print(f"[{spec.label}] cold run (log {log_dir / (spec.slug + '-cold.log')}) ...", flush=True)
    cold = _measured_run(spec, log_dir / f"{spec.slug}-cold.log", interval_s)
    print(f"[{spec.label}] cold: {cold.wall_s:.1f} s, peak {cold.peak_rss_mb:.0f} MB", flush=True)
    check_components_ran(spec)
    model_dir, pushed = newest_model(spec)
    warm = _measured_run(spec, log_dir / f"{spec.slug}-warm.log", interval_s)
    print(
        f"[{spec.label}] warm re-run: {warm.wall_s:.1f} s, peak {warm.peak_rss_mb:.0f} MB",
        flush=True,
    )
    cached = None
    if spec.force_flag:
        cached = _measured_run(
            spec, log_dir / f"{spec.slug}-cached.log", interval_s, spec.force_flag
        )
        print(
            f"[{spec.label}] forced re-run, every component cached: {cached.wall_s:.1f} s, "
            f"peak {cached.peak_rss_mb:.0f} MB",
            flush=True,
        )
    return PipelineRun(
        spec=spec, cold=cold, warm=warm, model_dir=model_dir, pushed=pushed, cached=cached
    )


def more_cold_runs(
    runs: Sequence[PipelineRun], count: int, log_dir: Path, interval_s: float
) -> list[PipelineRun]:
    """`count` more cold runs of each pipeline, the pipelines taking turns, each from empty
    outputs (the first runs' models are scored by then)."""
    walls: dict[str, list[float]] = {run.spec.slug: [] for run in runs}
    for round_ in range(2, count + 2):
        for run in runs:
            spec = run.spec
            shutil.rmtree(spec.output_dir, ignore_errors=True)
            cold = _measured_run(spec, log_dir / f"{spec.slug}-cold-{round_}.log", interval_s)
            check_components_ran(spec)
            print(f"[{spec.label}] cold run {round_}: {cold.wall_s:.1f} s", flush=True)
            walls[spec.slug].append(cold.wall_s)
    return [dataclasses.replace(run, more_colds=tuple(walls[run.spec.slug])) for run in runs]


# --- Report ----------------------------------------------------------------------------------


def print_table(
    runs: Sequence[PipelineRun], scores: Mapping[str, holdout.Score], hold_out: holdout.HoldOut
) -> None:
    header = (
        f"{'pipeline':<30} {'cold s':>8} {'peak MB':>8} {'warm s':>8} {'cached s':>8} "
        f"{'AUC':>7} {'accuracy':>8} {'majority':>8}"
    )
    print("\n" + header)
    print("-" * len(header))
    for run in runs:
        score = scores[run.spec.slug]
        mark = "" if run.pushed else " *"
        print(
            f"{run.spec.label + mark:<30} {run.best_cold_s:>8.1f} {run.cold.peak_rss_mb:>8.0f} "
            f"{run.warm.wall_s:>8.1f} {_seconds(run.cached):>8} {score.auc:>7.4f} "
            f"{score.accuracy:>8.4f} {hold_out.majority_rate:>8.4f}"
        )
    if not all(run.pushed for run in runs):
        print("* not pushed (not blessed): scored the Trainer's model of the cold run")
    if any(run.more_colds for run in runs):
        print("cold s: the best of each pipeline's cold runs, which were (in turn, seconds):")
        for run in runs:
            print(f"  {run.spec.label:<28} " + ", ".join(f"{wall:.1f}" for wall in run.colds))
    by_slug = {run.spec.slug: run for run in runs}
    if "ours-tuning-on" in by_slug and "ours-tuning-off" in by_slug:
        on, off = by_slug["ours-tuning-on"], by_slug["ours-tuning-off"]
        print(
            f"Tuner's extra cost (cold, tuning on - off): "
            f"{on.best_cold_s - off.best_cold_s:+.1f} s wall (best cold runs), "
            f"{on.cold.peak_rss_mb - off.cold.peak_rss_mb:+.0f} MB peak memory"
        )


def _seconds(measurement: Optional[process_tree.Measurement]) -> str:
    return "-" if measurement is None else f"{measurement.wall_s:.1f}"


def print_goals(
    runs: Sequence[PipelineRun], scores: Mapping[str, holdout.Score], hold_out: holdout.HoldOut
) -> None:
    """Our tuning-off run against the goals: each line says the figure, the goal, met or not."""
    by_slug = {run.spec.slug: run for run in runs}
    ours, official = by_slug["ours-tuning-off"], by_slug.get("official")
    score = scores[ours.spec.slug]
    lines = []
    if official is not None:
        ratio = ours.best_cold_s / official.best_cold_s
        lines.append(
            (
                f"cold run {ratio:.2f}x the official template's (best runs)",
                f"<= {GOAL_COLD_RATIO}x",
                ratio <= GOAL_COLD_RATIO,
            )
        )
    share = ours.warm.wall_s / ours.best_cold_s
    lines += [
        (
            f"warm re-run {share:.1%} of the cold run",
            f"< {GOAL_WARM_SHARE:.0%}",
            share < GOAL_WARM_SHARE,
        ),
        (
            f"peak memory {ours.cold.peak_rss_mb:.0f} MB",
            f"<= {GOAL_PEAK_MB} MB",
            ours.cold.peak_rss_mb <= GOAL_PEAK_MB,
        ),
        (f"hold-out AUC {score.auc:.4f}", f">= {GOAL_MIN_AUC}", score.auc >= GOAL_MIN_AUC),
        (
            f"accuracy {score.accuracy:.4f} (majority {hold_out.majority_rate:.4f})",
            f">= majority + {GOAL_ACCURACY_OVER_MAJORITY}",
            score.accuracy >= hold_out.majority_rate + GOAL_ACCURACY_OVER_MAJORITY,
        ),
    ]
    print("\ngoals (this pipeline, tuning off):")
    for figure, goal, met in lines:
        print(f"  {figure:<52} goal {goal:<22} {'met' if met else 'NOT met'}")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary directory (outputs, logs, template copy)",
    )
    parser.add_argument(
        "--skip-official", action="store_true", help="only run this pipeline (tuning off and on)"
    )
    parser.add_argument(
        "--cold-runs",
        type=int,
        default=2,
        metavar="N",
        help="cold runs of each pipeline, the pipelines taking turns (default 2); the best counts",
    )
    parser.add_argument(
        "--sample-interval",
        type=float,
        default=0.2,
        metavar="SECONDS",
        help="memory sampling period (default 0.2)",
    )
    return parser.parse_args(argv)


def run_benchmark(args: argparse.Namespace, workdir: Path) -> None:
    env = base_env(workdir / "home")
    logs = workdir / "logs"
    project = snapshot_project(REPO, workdir / "project")
    print(
        f"work dir {workdir}; our pipeline: {REPO} at {git_description(REPO)} (snapshot); "
        f"memory sampled every {args.sample_interval} s with {process_tree.sampler_name()}; "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )

    ours_off = our_pipeline_spec(project, workdir / "runs" / "ours-tuning-off", env, tuning=False)
    ours_on = our_pipeline_spec(project, workdir / "runs" / "ours-tuning-on", env, tuning=True)
    runs = [benchmark_pipeline(ours_off, logs, args.sample_interval)]

    hold_out = holdout.load_holdout(ours_off.metadata_path, OUR_PIPELINE_NAME)
    print(
        f"hold-out: span {hold_out.span} eval split, {len(hold_out.labels)} examples, "
        f"{int(hold_out.labels.sum())} big tippers ({hold_out.artifact_uri})",
        flush=True,
    )

    runs.append(benchmark_pipeline(ours_on, logs, args.sample_interval))
    if not holdout.same_examples(
        holdout.load_holdout(ours_on.metadata_path, OUR_PIPELINE_NAME).serialized,
        hold_out.serialized,
    ):
        raise RuntimeError("the tuning-on run split span 6 differently from the tuning-off run")

    if not args.skip_official:
        official_out = workdir / "runs" / "official"
        data_csv = workdir / "official-data" / "data.csv"
        kept = holdout.write_csv_without(official_sample_csv(), hold_out.serialized, data_csv)
        edits = official_template.prepare(
            Path(sys.executable).with_name("tfx"),
            workdir / "official",
            data_csv.parent,
            official_out,
            env,
        )
        print(
            f"official template: {kept} training rows (shipped sample minus hold-out); "
            "edits:\n  " + "\n  ".join(edits),
            flush=True,
        )
        official = official_spec(workdir / "official", official_out, env)
        # Official first in the table, as in the brief.
        runs.insert(0, benchmark_pipeline(official, logs, args.sample_interval))
        check_official_ingested(official, kept)

    scores = {}
    for run in runs:
        scores[run.spec.slug] = holdout.score(run.model_dir, hold_out, run.spec.output_key)
        print(
            f"[{run.spec.label}] scored {run.model_dir} "
            f"({'pushed' if run.pushed else 'trainer output'}), "
            f"output {scores[run.spec.slug].output_key!r}",
            flush=True,
        )
    if args.cold_runs > 1:
        runs = more_cold_runs(runs, args.cold_runs - 1, logs, args.sample_interval)
    print_table(runs, scores, hold_out)
    print_goals(runs, scores, hold_out)
    print(
        f"hold-out: {len(hold_out.labels)} examples (span {hold_out.span} eval split); "
        "warm = re-run with no new data (ours: answered before TFX loads); cached = ours "
        "re-run with --force, every component cached; the official template leaves "
        "enable_cache unset (off), so its re-run recomputes everything"
    )


def official_sample_csv() -> Path:
    """The 15,002-row Chicago taxi sample shipped in the tfx wheel."""
    path = split_data.official_sample_path()
    if not path.is_file():
        raise FileNotFoundError(path)
    return path


def run_in_workdir(prefix: str, keep: bool, body: Callable[[Path], None]) -> int:
    """Runs body(a new temporary directory); keeps the directory if asked or on failure."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        body(workdir)
    except BaseException:
        print(f"\nfailed; kept {workdir} (logs in {workdir / 'logs'})", file=sys.stderr)
        raise
    if keep:
        print(f"kept {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    return run_in_workdir(
        "pipeline_vs_official-", args.keep, lambda workdir: run_benchmark(args, workdir)
    )


if __name__ == "__main__":
    sys.exit(main())
