"""The Evaluator's (TFMA) results as tables and matplotlib figures: overall and per-slice
metrics, the thresholds that decided the blessing, candidate vs baseline, ROC/PR and
calibration curves. TFMA's own widgets need a notebook front end and the web; these do not."""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics import metric_specs
from tensorflow_model_analysis.writers import eval_config_writer

from analysis import artifacts
from analysis.stats_views import finished
from pipeline.names import EVALUATOR_ID

MAIN_METRICS = (
    "example_count",
    "auc",
    "binary_accuracy",
    "precision",
    "recall",
    "auc_precision_recall",
    "calibration",
    "mean_label",
    "mean_prediction",
)


@dataclasses.dataclass
class Evaluation:
    uri: str
    config: tfma.EvalConfig
    results: dict[str, tfma.EvalResult]  # by model name: "" alone, or candidate/baseline
    validation: tfma.ValidationResult
    blessed: bool

    @property
    def slice_features(self) -> list[str]:
        """The features the Evaluator sliced by, one at a time (models/features.py's
        EVAL_SLICES when it ran), read from the evaluation's own config."""
        return [
            key
            for spec in self.config.slicing_specs
            if len(spec.feature_keys) == 1
            for key in spec.feature_keys
        ]

    @property
    def candidate_name(self) -> str:
        return next((s.name for s in self.config.model_specs if not s.is_baseline), "")

    @property
    def baseline_name(self) -> Optional[str]:
        return next((s.name for s in self.config.model_specs if s.is_baseline), None)

    @property
    def candidate(self) -> tfma.EvalResult:
        return self.results[self.candidate_name]


def load(run: artifacts.Run) -> Evaluation:
    """The run's evaluation and blessing (raises NoRunError when the run evaluated nothing)."""
    uri = run.require(EVALUATOR_ID, "evaluation").uri
    blessing = run.require(EVALUATOR_ID, "blessing")
    return load_uri(uri, bool(blessing.custom_properties["blessed"].int_value))


def load_uri(uri: str, blessed: bool) -> Evaluation:
    # The config alone first: loading results without a model name, when a baseline was
    # evaluated too, makes TFMA warn that it found no plots.
    config = eval_config_writer.load_eval_run(uri)[0]
    names = [s.name for s in config.model_specs]
    results = {name: tfma.load_eval_result(uri, model_name=name or None) for name in names}
    return Evaluation(uri, config, results, tfma.load_validation_result(uri), blessed)


def _value(raw) -> float:
    value = raw.get("doubleValue", math.nan) if isinstance(raw, dict) else raw
    return float(value) if not isinstance(value, str) else float(value.replace("Infinity", "inf"))


def slice_name(slice_key) -> str:
    return "Overall" if not slice_key else ", ".join(f"{k}={v}" for k, v in slice_key)


def metrics_table(result: tfma.EvalResult, feature: Optional[str] = None) -> pd.DataFrame:
    """Metrics per slice: the overall slice (feature None), or every slice of one feature."""
    rows = []
    for slice_key, by_output in result.slicing_metrics:
        wanted = (
            (slice_key == ())
            if feature is None
            else (len(slice_key) == 1 and slice_key[0][0] == feature)
        )
        if not wanted:
            continue
        metrics = by_output[""][""]
        row = {"slice": slice_name(slice_key) if feature is None else slice_key[0][1]}
        row.update({name: _value(metrics[name]) for name in MAIN_METRICS if name in metrics})
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table = table.set_index("slice")
    table.index.name = feature or "slice"
    return table.sort_index()


def overall(result: tfma.EvalResult) -> dict[str, float]:
    table = metrics_table(result)
    return table.iloc[0].to_dict() if not table.empty else {}


def thresholds_table(evaluation: Evaluation) -> pd.DataFrame:
    """Every threshold of the eval config, the candidate's value (or change against the
    baseline) on its slice, and whether it passed; failures come from TFMA's validation."""
    failures = {}
    for per_slice in evaluation.validation.metric_validations_per_slice:
        for failure in per_slice.failures:
            failures[(failure.metric_key.name, failure.metric_key.is_diff)] = failure
    candidate = overall(evaluation.candidate)
    baseline = (
        overall(evaluation.results[evaluation.baseline_name])
        if evaluation.baseline_name is not None
        else None
    )
    rows = []
    for spec in evaluation.config.metrics_specs:
        for metric in spec.metrics:
            if not metric.per_slice_thresholds:
                continue
            # The metric key's name, as TFMA gives it (custom classes included).
            name = metric_specs.metric_instance(metric).name
            for per_slice in metric.per_slice_thresholds:
                slices = ", ".join(
                    slice_name(tuple((k, "*") for k in s.feature_keys))
                    for s in per_slice.slicing_specs
                )
                threshold = per_slice.threshold
                if threshold.HasField("value_threshold"):
                    bound = threshold.value_threshold
                    limit = (
                        f">= {bound.lower_bound.value:g}"
                        if bound.HasField("lower_bound")
                        else f"<= {bound.upper_bound.value:g}"
                    )
                    rows.append(
                        _threshold_row(
                            name,
                            slices,
                            "value",
                            limit,
                            candidate.get(name),
                            (name, False),
                            failures,
                        )
                    )
                if threshold.HasField("change_threshold"):
                    change = threshold.change_threshold
                    if baseline is None:
                        rows.append(
                            {
                                "metric": name,
                                "slice": slices,
                                "kind": "change",
                                "threshold": "skipped: no baseline (first blessed model)",
                                "value": np.nan,
                                "passed": True,
                            }
                        )
                        continue
                    limit = (
                        f">= {change.absolute.value:+g} vs baseline"
                        if change.HasField("absolute")
                        else f"{change.relative.value:+g}"
                    )
                    diff = candidate.get(name, np.nan) - baseline.get(name, np.nan)
                    rows.append(
                        _threshold_row(name, slices, "change", limit, diff, (name, True), failures)
                    )
    return pd.DataFrame(rows, columns=["metric", "slice", "kind", "threshold", "value", "passed"])


def _threshold_row(name, slices, kind, limit, value, key, failures) -> dict:
    failure = failures.get(key)
    return {
        "metric": name,
        "slice": slices,
        "kind": kind,
        "threshold": limit,
        "value": failure.metric_value.double_value.value if failure else value,
        "passed": failure is None,
    }


def verdict(evaluation: Evaluation) -> str:
    failed = thresholds_table(evaluation).query("not passed")
    if evaluation.blessed:
        return "BLESSED: the candidate cleared every threshold."
    reasons = "; ".join(
        f"{r.metric} {r.value:.4g} (needs {r.threshold})" for r in failed.itertuples()
    )
    return f"NOT blessed: {reasons or 'see the validation result'}"


def candidate_vs_baseline(evaluation: Evaluation) -> Optional[pd.DataFrame]:
    """Overall metrics of both models and their difference; None without a baseline."""
    if evaluation.baseline_name is None:
        return None
    table = pd.DataFrame(
        {
            "candidate": overall(evaluation.candidate),
            "baseline": overall(evaluation.results[evaluation.baseline_name]),
        }
    )
    table["difference"] = table["candidate"] - table["baseline"]
    return table


# ---- Figures ---------------------------------------------------------------------------------


def _overall_plots(result: tfma.EvalResult) -> dict:
    for slice_key, by_output in result.plots:
        if slice_key == ():
            return by_output[""][""]
    return {}


def confusion_curve(result: tfma.EvalResult) -> pd.DataFrame:
    """Per threshold: false positive rate, recall (true positive rate) and precision."""
    matrices = _overall_plots(result).get("confusionMatrixAtThresholds", {}).get("matrices", [])
    rows = []
    for m in matrices:
        tp, fp = m.get("truePositives", 0.0), m.get("falsePositives", 0.0)
        tn, fn = m.get("trueNegatives", 0.0), m.get("falseNegatives", 0.0)
        rows.append(
            {
                "threshold": m.get("threshold", 0.0),
                "fpr": fp / (fp + tn) if fp + tn else 0.0,
                "recall": tp / (tp + fn) if tp + fn else 0.0,
                "precision": tp / (tp + fp) if tp + fp else 1.0,
            }
        )
    return pd.DataFrame(rows, columns=["threshold", "fpr", "recall", "precision"])


def roc_pr_curves(evaluation: Evaluation) -> plt.Figure:
    """ROC and precision-recall curves of the candidate (and the baseline) on the hold-out."""
    fig, (roc, pr) = plt.subplots(1, 2, figsize=(10, 4))
    for name, result in evaluation.results.items():
        curve = confusion_curve(result).sort_values("threshold")
        label = name or "candidate"
        roc.plot(curve["fpr"], curve["recall"], label=label)
        pr.plot(curve["recall"], curve["precision"], label=label)
    roc.plot([0, 1], [0, 1], "k:", linewidth=0.8)
    roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    pr.set(xlabel="recall", ylabel="precision", title="Precision-recall")
    roc.legend()
    return finished(fig)


def calibration_table(result: tfma.EvalResult) -> pd.DataFrame:
    buckets = _overall_plots(result).get("calibrationHistogramBuckets", {}).get("buckets", [])
    rows = [
        {
            "examples": b.get("numWeightedExamples", 0.0),
            "mean_prediction": b.get("totalWeightedRefinedPrediction", 0.0)
            / b["numWeightedExamples"],
            "mean_label": b.get("totalWeightedLabel", 0.0) / b["numWeightedExamples"],
        }
        for b in buckets
        if b.get("numWeightedExamples", 0.0) > 0
    ]
    return pd.DataFrame(rows, columns=["examples", "mean_prediction", "mean_label"])


def calibration_plot(evaluation: Evaluation, bins: int = 10) -> plt.Figure:
    """Mean label against mean prediction, TFMA's fine buckets merged into `bins`."""
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for name, result in evaluation.results.items():
        table = calibration_table(result)
        if table.empty:
            continue
        table["bin"] = np.minimum((table["mean_prediction"] * bins).astype(int), bins - 1)
        weighted = (
            table.assign(
                p=table.mean_prediction * table.examples, y=table.mean_label * table.examples
            )
            .groupby("bin")
            .sum()
        )
        ax.plot(
            weighted.p / weighted.examples,
            weighted.y / weighted.examples,
            "o-",
            label=name or "candidate",
        )
    ax.plot([0, 1], [0, 1], "k:", linewidth=0.8)
    ax.set(xlabel="mean prediction", ylabel="share of big tippers", title="Calibration")
    ax.legend()
    return finished(fig)


def metric_per_slice(evaluation: Evaluation, feature: str, metric: str = "auc") -> plt.Figure:
    """A metric on each slice of one feature, against the overall value; each bar carries its
    slice's example count (small slices are noisy)."""
    table = metrics_table(evaluation.candidate, feature)
    fig, ax = plt.subplots(figsize=(10, 3.2))
    if not table.empty and metric in table:
        try:
            table = table.sort_index(key=lambda index: index.astype(int))
        except (TypeError, ValueError):
            pass
        ax.bar([str(i) for i in table.index], table[metric].fillna(0.0))
        for i, count in enumerate(table.get("example_count", [])):
            ax.annotate(f"{count:.0f}", (i, 0), ha="center", va="bottom", fontsize=7)
        overall_value = overall(evaluation.candidate).get(metric)
        if overall_value is not None:
            ax.axhline(
                overall_value, color="k", linestyle=":", label=f"overall {overall_value:.3f}"
            )
            ax.legend(fontsize=8)
    ax.set(xlabel=feature, ylabel=metric, title=f"{metric} per {feature} (n on the bars)")
    return finished(fig)
