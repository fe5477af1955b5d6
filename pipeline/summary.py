"""A few lines on the latest run for the console: blessing, hold-out metrics, pushed model."""
from __future__ import annotations

import os

import tensorflow_model_analysis as tfma

from pipeline import metadata, rejections
from pipeline.settings import PipelineSettings

EVALUATOR_ID, PUSHER_ID = "Evaluator", "Pusher"
CANDIDATE = "candidate"  # TFX Evaluator's name for the model it judges against a baseline
SHOWN_METRICS = ("auc", "binary_accuracy", "mean_label", "example_count")


def overall_metrics(evaluation_uri: str) -> dict[str, float]:
    """The overall slice's metrics of the evaluated model (TFX names it `candidate` when a
    baseline was evaluated too, else leaves it unnamed). Reads the metrics alone: plots are
    not needed here."""
    for per_slice in tfma.load_metrics(evaluation_uri):
        if per_slice.slice_key.single_slice_keys:
            continue
        return {item.key.name: item.value.double_value.value
                for item in per_slice.metric_keys_and_values
                if item.key.model_name in ("", CANDIDATE) and not item.key.is_diff
                and item.value.HasField("double_value")}
    raise ValueError(f"no overall slice in {evaluation_uri}")


def latest_run_summary(settings: PipelineSettings) -> str:
    store = metadata.open_store(settings)
    evaluations = metadata.node_outputs(store, settings.name, EVALUATOR_ID,
                                        "ModelEvaluation") if store else []
    if not evaluations:
        return "No evaluation yet."
    latest = evaluations[-1].uri
    metrics = overall_metrics(latest)
    blessed = tfma.load_validation_result(latest).validation_ok
    shown = ", ".join(f"{name} {metrics[name]:.4g}" for name in SHOWN_METRICS if name in metrics)
    lines = [f"Latest evaluation (newest span's hold-out): {shown}",
             f"  {'BLESSED' if blessed else 'NOT blessed'} ({latest})"]
    versions = sorted(os.listdir(settings.serving_model_dir)) \
        if os.path.isdir(settings.serving_model_dir) else []
    lines.append(f"Serving: {os.path.join(settings.serving_model_dir, versions[-1])}"
                 if versions else "Serving: no model pushed yet")
    return "\n".join(lines + rejected_lines(settings))


def rejected_lines(settings: PipelineSettings) -> list[str]:
    """The spans runs skip because a check rejected them (pipeline/rejections.py)."""
    rejected = rejections.of_pipeline(settings)
    if not rejected:
        return []
    return ["Rejected spans (skipped): " + "; ".join(
        f"{span} by {r.check} at {r.time}" for span, r in sorted(rejected.items())),
        f"  records: {rejections.records_dir(settings)}"]
