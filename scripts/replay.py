"""Replays the shipped chronological spans one at a time through the trigger, as a stand-in
for months of production, and reports per span: the served model's progressive-validation AUC
on the new span, the candidate's AUC, blessed or not, the pushed version, and the Trainer's
time with and without warm start.

    make replay    # tfx-template replay [--rows-per-span 0] [--spans 6] [--out outputs/replay]

Two pipelines get the same spans in the same order, each in its own data and output
directory under --out: one with warm start (the default settings), one without
(PIPELINE_WARM_START=0); every other setting comes from the environment (the Tuner is off
unless PIPELINE_ENABLE_TUNING is set, so training times compare). Each span is copied in
(data.csv, then the `_COMPLETE` marker) and `tfx-template watch --once` runs. The table
is printed and written with a plot to <out>/report.md and <out>/replay.png.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

from pipeline import metadata, progress
from pipeline.names import AUC_PROPERTY, PROGRESSIVE_VALIDATION_ID
from pipeline.settings import PipelineSettings
from pipeline.spans import mark_complete

ROOT = Path(__file__).resolve().parents[1]

VARIANTS = {"warm": {"PIPELINE_WARM_START": "1"}, "cold": {"PIPELINE_WARM_START": "0"}}


@dataclasses.dataclass
class SpanResult:
    """What one run on one span recorded in MLMD (None where that step did not run)."""

    span: int
    ok: bool
    progressive_auc: Optional[float] = None
    candidate_auc: Optional[float] = None
    blessed: Optional[bool] = None
    pushed_version: Optional[str] = None
    train_seconds: Optional[float] = None
    warm_started: Optional[bool] = None


def copy_span(source: Path, data_dir: Path, span: int, rows: int) -> None:
    """The span's CSV (its first `rows` rows if rows > 0), then its completion marker."""
    folder = data_dir / f"span-{span}"
    folder.mkdir(parents=True, exist_ok=True)
    with open(source / f"span-{span}" / "data.csv") as f:
        lines = f.readlines()
    (folder / "data.csv").write_text("".join(lines if rows <= 0 else lines[: rows + 1]))
    mark_complete(str(folder))


def _duration_seconds(execution) -> float:
    return (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000


def run_result(settings: PipelineSettings, span: int, ok: bool, log: str) -> SpanResult:
    """This span's figures from MLMD: the newest outputs, if they belong to this run."""
    from pipeline.evaluation import overall_metrics  # TFMA: imported only when needed

    result = SpanResult(span=span, ok=ok)
    store = metadata.open_store(settings)
    name = settings.name
    validations = metadata.node_outputs(store, name, PROGRESSIVE_VALIDATION_ID, "ModelEvaluation")
    if validations and validations[-1].custom_properties["span"].int_value == span:
        properties = validations[-1].custom_properties
        if AUC_PROPERTY in properties:
            result.progressive_auc = properties[AUC_PROPERTY].double_value
    if not ok:
        return result
    trainer = metadata.node_executions(store, name, "Trainer")[-1]
    result.train_seconds = _duration_seconds(trainer)
    result.warm_started = "Warm start: starting from the weights of" in log
    evaluation = metadata.node_outputs(store, name, "Evaluator", "ModelEvaluation")[-1]
    result.candidate_auc = overall_metrics(evaluation.uri)["auc"]
    blessing = metadata.node_outputs(store, name, "Evaluator", "ModelBlessing")[-1]
    result.blessed = blessing.custom_properties["blessed"].int_value == 1
    pushed = metadata.node_outputs(store, name, "Pusher", "PushedModel")[-1]
    if pushed.custom_properties["pushed"].int_value == 1:
        result.pushed_version = pushed.custom_properties["pushed_version"].string_value
    return result


def trigger(env: dict[str, str]) -> subprocess.CompletedProcess:
    """One look of the trigger, as `make watch ARGS=--once` runs it."""
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "watch", "--once"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )


def run_log_text(completed: subprocess.CompletedProcess) -> str:
    """The run's full log (the runner's console names it last: `Full log: <path>`), where
    the Trainer's lines are; the console output itself if there is none."""
    output = completed.stdout + completed.stderr
    paths = re.findall(r"^Full log: (.+)$", output, re.MULTILINE)
    if paths and os.path.isfile(paths[-1]):
        with open(paths[-1], errors="replace") as f:
            return f.read()
    return output


def _fmt(value, pattern: str = "{:.3f}") -> str:
    return "—" if value is None else pattern.format(value)


def table(warm: list[SpanResult], cold: list[SpanResult]) -> str:
    lines = [
        "| span | served model AUC on the new span | candidate AUC | blessed | pushed "
        "version | train s, warm start | train s, fresh start | candidate AUC, fresh |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for w, c in zip(warm, cold):
        blessed = "rejected span" if not w.ok else ("yes" if w.blessed else "no")
        warm_time = _fmt(w.train_seconds, "{:.1f}") + (
            "" if w.warm_started or not w.ok else " (fresh)"
        )
        lines.append(
            f"| {w.span} | {_fmt(w.progressive_auc)} | {_fmt(w.candidate_auc)} | "
            f"{blessed} | {w.pushed_version or '—'} | {warm_time} | "
            f"{_fmt(c.train_seconds, '{:.1f}')} | {_fmt(c.candidate_auc)} |"
        )
    return "\n".join(lines)


def plot(warm: list[SpanResult], cold: list[SpanResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spans = [r.span for r in warm]
    fig, (auc_axes, time_axes) = plt.subplots(1, 2, figsize=(11, 4))
    for values, label, marker in (
        ([r.progressive_auc for r in warm], "served model on the new span", "o"),
        ([r.candidate_auc for r in warm], "candidate (warm start)", "s"),
        ([r.candidate_auc for r in cold], "candidate (fresh start)", "^"),
    ):
        auc_axes.plot(
            spans, [float("nan") if v is None else v for v in values], marker=marker, label=label
        )
    auc_axes.set(title="AUC on the newest span's hold-out", xlabel="span", ylabel="AUC")
    auc_axes.legend()
    for values, label, marker in (
        ([r.train_seconds for r in warm], "warm start", "s"),
        ([r.train_seconds for r in cold], "fresh start", "^"),
    ):
        time_axes.plot(
            spans, [float("nan") if v is None else v for v in values], marker=marker, label=label
        )
    time_axes.set(title="Trainer time per span", xlabel="span", ylabel="seconds")
    time_axes.legend()
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)


def replay(
    source: Path = ROOT / "data",
    spans: int = 6,
    rows_per_span: int = 0,
    out: Path = ROOT / "outputs" / "replay",
) -> Path:
    """`tfx-template replay`: spans 1..`spans` of `source` (their first `rows_per_span` rows;
    0: every row) through both variants under `out` (emptied first); returns the report."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)  # a replay starts from nothing
    results: dict[str, list[SpanResult]] = {variant: [] for variant in VARIANTS}
    bar = progress.bar(total=spans * len(VARIANTS), desc="replay", unit="run")
    for span in range(1, spans + 1):
        for variant, overrides in VARIANTS.items():
            bar.set_postfix_str(f"span {span}, {variant} start")
            work = out / variant
            copy_span(Path(source), work / "data", span, rows_per_span)
            env = {
                "PIPELINE_ENABLE_TUNING": "0",
                **os.environ,
                **overrides,
                "PIPELINE_DATA_DIR": str(work / "data"),
                "PIPELINE_OUTPUT_DIR": str(work / "outputs"),
                "TF_USE_LEGACY_KERAS": "1",
            }
            completed = trigger(env)
            settings = PipelineSettings.load(
                {k: v for k, v in env.items() if k.startswith("PIPELINE_")}
            )
            result = run_result(settings, span, completed.returncode == 0, run_log_text(completed))
            results[variant].append(result)
            progress.say(
                f"span {span} ({variant} start): "
                f"{'ok' if result.ok else 'run failed, see ' + str(work)}, "
                f"served AUC {_fmt(result.progressive_auc)}, candidate AUC "
                f"{_fmt(result.candidate_auc)}, "
                f"train {_fmt(result.train_seconds, '{:.1f}')} s"
            )
            bar.update()
    bar.close()
    report = table(results["warm"], results["cold"])
    print("\n" + report)
    plot(results["warm"], results["cold"], out / "replay.png")
    text = (
        f"# Replay of spans 1..{spans}"
        f"{'' if rows_per_span <= 0 else f' ({rows_per_span} rows each)'}\n\n"
        f"{report}\n\n![AUC and training time per span](replay.png)\n"
    )
    (out / "report.md.tmp").write_text(text)
    os.replace(out / "report.md.tmp", out / "report.md")
    print(f"\nreport: {out / 'report.md'}, plot: {out / 'replay.png'}")
    return out / "report.md"
