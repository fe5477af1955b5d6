"""A few lines on the latest run for the console: blessing, hold-out metrics, pushed model."""

from __future__ import annotations

import os

import tensorflow_model_analysis as tfma

from pipeline import metadata, rejections
from pipeline.evaluation import overall_metrics
from pipeline.names import EVALUATOR_ID
from pipeline.settings import PipelineSettings

SHOWN_METRICS = ("auc", "binary_accuracy", "mean_label", "example_count")


def latest_run_summary(settings: PipelineSettings) -> str:
    store = metadata.open_store(settings)
    evaluations = (
        metadata.node_outputs(store, settings.name, EVALUATOR_ID, "ModelEvaluation")
        if store
        else []
    )
    if not evaluations:
        return "No evaluation yet."
    latest = evaluations[-1].uri
    metrics = overall_metrics(latest)
    blessed = tfma.load_validation_result(latest).validation_ok
    shown = ", ".join(f"{name} {metrics[name]:.4g}" for name in SHOWN_METRICS if name in metrics)
    lines = [
        f"Latest evaluation (newest span's hold-out): {shown}",
        f"  {'BLESSED' if blessed else 'NOT blessed'} ({latest})",
    ]
    versions = (
        sorted(os.listdir(settings.serving_model_dir))
        if os.path.isdir(settings.serving_model_dir)
        else []
    )
    lines.append(
        f"Serving: {os.path.join(settings.serving_model_dir, versions[-1])}"
        if versions
        else "Serving: no model pushed yet"
    )
    return "\n".join(lines + rejected_lines(settings))


def rejected_lines(settings: PipelineSettings) -> list[str]:
    """The spans runs skip because a check rejected them (pipeline/rejections.py)."""
    rejected = rejections.of_pipeline(settings)
    if not rejected:
        return []
    return [
        "Rejected spans (skipped): "
        + "; ".join(f"{span} by {r.check} at {r.time}" for span, r in sorted(rejected.items())),
        f"  records: {rejections.records_dir(settings)}",
    ]
