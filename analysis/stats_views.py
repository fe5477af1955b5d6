"""Tables (pandas) and figures (matplotlib) made from TFDV statistics, schema and anomaly
protos. They render offline, unlike TFDV's Facets views, which load scripts from the web."""

from __future__ import annotations

import os
from typing import Optional

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import (
    anomalies_pb2,
    schema_pb2,
    statistics_pb2,
)

from analysis import artifacts
from pipeline import metadata, serving_log
from pipeline.components import anomalies_gate, drift_check
from pipeline.names import LEAKAGE_CHECK_ID

Statistics = statistics_pb2.DatasetFeatureStatisticsList
SPLITS = ("train", "eval")
TOP_VALUES = 8


# ---- Loading ---------------------------------------------------------------------------------


def load_schema(run: artifacts.Run) -> schema_pb2.Schema:
    node = "SchemaGen" if "SchemaGen" in run.outputs else "ImportSchemaGen"
    return tfdv.load_schema_text(os.path.join(run.require(node, "schema").uri, "schema.pbtxt"))


def run_statistics(run: artifacts.Run) -> dict[str, Statistics]:
    """The run's StatisticsGen output per split (its new span)."""
    uri = run.require("StatisticsGen", "statistics").uri
    return {split: artifacts.load_statistics(uri, split) for split in SPLITS}


def run_anomalies(run: artifacts.Run) -> dict[str, anomalies_pb2.Anomalies]:
    return anomalies_gate.load_anomalies(
        run.require("ExampleValidator", "anomalies").uri, list(SPLITS)
    )


def span_statistics(
    run: artifacts.Run, examples, schema: schema_pb2.Schema, split: str = "train"
) -> Statistics:
    """Statistics of one span's split: StatisticsGen's if a run computed them, else computed
    here with TFDV (spans ingested before the pipeline's first full run have none)."""
    stats = artifacts.statistics_of_examples(run.store, run.settings.name, examples.id)
    if stats is not None:
        return artifacts.load_statistics(stats.uri, split)
    return drift_check.statistics_of(examples, split, schema)


# ---- Tables ----------------------------------------------------------------------------------


def _features(stats: Statistics) -> dict[str, statistics_pb2.FeatureNameStatistics]:
    return {(f.path.step[0] if f.path.step else f.name): f for f in stats.datasets[0].features}


def _common(feature: statistics_pb2.FeatureNameStatistics):
    return getattr(feature, feature.WhichOneof("stats")).common_stats


def missing_rate(feature: statistics_pb2.FeatureNameStatistics, num_examples: int) -> float:
    """Share of examples without a value (CsvExampleGen writes an empty cell as an empty list)."""
    common = _common(feature)
    with_value = min(common.num_non_missing, common.tot_num_values)
    return 1 - with_value / num_examples if num_examples else float("nan")


def schema_table(schema: schema_pb2.Schema) -> pd.DataFrame:
    """One row per feature: type, presence, values per example, domain, environments."""
    from pipeline.leakage import environments

    rows = []
    for f in schema.feature:
        domain = f.WhichOneof("domain_info")
        if domain == "int_domain":
            d = f.int_domain
            domain = f"int {d.min}..{d.max}" + (" categorical" if d.is_categorical else "")
        elif domain == "float_domain":
            d = f.float_domain
            domain = (f"float {d.min:g}.." if d.HasField("min") else "float ..") + (
                f"{d.max:g}" if d.HasField("max") else ""
            )
        elif domain == "domain":
            values = next((d.value for d in schema.string_domain if d.name == f.domain), [])
            domain = f"{f.domain}: {', '.join(values)}"
        rows.append(
            {
                "feature": f.name,
                "type": schema_pb2.FeatureType.Name(f.type),
                "presence": f.presence.min_fraction,
                "values": f"{f.value_count.min}..{f.value_count.max}",
                "domain": domain or "",
                "environments": ", ".join(sorted(environments(f, schema))),
            }
        )
    return pd.DataFrame(rows).set_index("feature")


def feature_table(stats_by_name: dict[str, Statistics]) -> pd.DataFrame:
    """Per feature and dataset (split or span): count, missing rate, numeric summary or top
    value, side by side."""
    rows = []
    for name, stats in stats_by_name.items():
        num_examples = stats.datasets[0].num_examples
        for feature_name, f in sorted(_features(stats).items()):
            row = {
                "feature": feature_name,
                "data": name,
                "examples": num_examples,
                "missing": round(missing_rate(f, num_examples), 4),
            }
            if f.HasField("num_stats"):
                n = f.num_stats
                row.update(mean=n.mean, std=n.std_dev, min=n.min, median=n.median, max=n.max)
            else:
                s = f.string_stats
                top = s.top_values[0] if s.top_values else None
                row.update(
                    unique=s.unique,
                    top=top.value if top else "",
                    top_share=round(top.frequency / num_examples, 4) if top else np.nan,
                )
            rows.append(row)
    return pd.DataFrame(rows).set_index(["feature", "data"])


def anomalies_table(anomalies_by_split: dict[str, anomalies_pb2.Anomalies]) -> pd.DataFrame:
    """One row per anomaly (empty when the data matched the schema)."""
    rows = []
    for split, anomalies in sorted(anomalies_by_split.items()):
        for feature, info in sorted(anomalies.anomaly_info.items()):
            for reason in info.reason or [info]:
                rows.append(
                    {
                        "split": split,
                        "feature": feature,
                        "anomaly": reason.short_description,
                        "description": reason.description,
                    }
                )
    return pd.DataFrame(rows, columns=["split", "feature", "anomaly", "description"])


def anomalies_summary(anomalies_by_split: dict[str, anomalies_pb2.Anomalies]) -> str:
    lines = anomalies_gate.describe_anomalies(anomalies_by_split)
    return f"{len(lines)} anomalies" if lines else "No anomalies: every split matches the schema."


def drift_table(new: Statistics, old: Statistics, schema: schema_pb2.Schema) -> pd.DataFrame:
    """TFDV's drift check of the newest span against the one before, with the schema's
    drift comparators: the measured distance and threshold per feature."""
    anomalies = tfdv.validate_statistics(new, schema, previous_statistics=old)
    rows = []
    for info in anomalies.drift_skew_info:
        for m in info.drift_measurements:
            rows.append(
                {
                    "feature": info.path.step[0],
                    "measure": anomalies_pb2.DriftSkewInfo.Measurement.Type.Name(m.type),
                    "value": round(m.value, 4),
                    "threshold": m.threshold,
                    "drifted": m.value > m.threshold,
                }
            )
    return pd.DataFrame(rows, columns=["feature", "measure", "value", "threshold", "drifted"])


# ---- Figures ---------------------------------------------------------------------------------


def finished(fig: plt.Figure) -> plt.Figure:
    """Laid out and closed in pyplot: a notebook shows the returned figure once (an open one
    would be shown again by the inline backend), and a long report does not pile them up."""
    fig.tight_layout()
    plt.close(fig)
    return fig


def _grid(count: int, columns: int = 4) -> tuple[plt.Figure, list]:
    rows = max(1, -(-count // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 2.6 * rows), squeeze=False)
    axes = list(axes.flat)
    for ax in axes[count:]:
        ax.set_visible(False)
    return fig, axes


def _quantile_density(feature: statistics_pb2.FeatureNameStatistics):
    """(bucket edges, density) from the quantile histogram: equal-count buckets, so single
    outliers (one huge value) do not squash the plot as equal-width buckets do."""
    hist = next(
        (h for h in feature.num_stats.histograms if h.type == statistics_pb2.Histogram.QUANTILES),
        None,
    )
    if hist is None or not hist.buckets:
        return None
    low = np.array([b.low_value for b in hist.buckets])
    high = np.array([b.high_value for b in hist.buckets])
    counts = np.array([b.sample_count for b in hist.buckets])
    width = np.maximum(high - low, 1e-9)
    density = counts / counts.sum() / width
    return np.append(low, high[-1]), density


def numeric_distributions(
    stats_by_name: dict[str, Statistics], title: str = "Numeric distributions"
) -> Optional[plt.Figure]:
    """One panel per numeric feature, one line per dataset (split or span)."""
    names = sorted(
        {
            n
            for s in stats_by_name.values()
            for n, f in _features(s).items()
            if f.HasField("num_stats") and f.num_stats.histograms
        }
    )
    if not names:
        return None
    fig, axes = _grid(len(names))
    for ax, feature_name in zip(axes, names):
        for label, stats in stats_by_name.items():
            f = _features(stats).get(feature_name)
            curve = _quantile_density(f) if f is not None else None
            if curve is None:
                continue
            edges, density = curve
            # Central 80% of the mass: the tails' buckets are wide and flat.
            ax.stairs(density[1:-1], edges[1:-1], label=label)
        ax.set_title(feature_name, fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=7)
    fig.suptitle(title)
    return finished(fig)


def missing_rates(stats_by_name: dict[str, Statistics]) -> plt.Figure:
    """Share of examples without a value, per feature and dataset."""
    table = feature_table(stats_by_name)["missing"].unstack("data")
    fig, ax = plt.subplots(figsize=(10, 3.5))
    table.plot.bar(ax=ax)
    ax.set_ylabel("missing rate")
    ax.set_title("Missing values per feature")
    return finished(fig)


def top_categorical_values(
    stats_by_name: dict[str, Statistics], top: int = TOP_VALUES
) -> Optional[plt.Figure]:
    """The most frequent values of each categorical feature, as shares, per dataset."""
    names = sorted(
        {
            n
            for s in stats_by_name.values()
            for n, f in _features(s).items()
            if f.HasField("string_stats") and f.string_stats.top_values
        }
    )
    if not names:
        return None
    fig, axes = _grid(len(names), columns=3)
    for ax, feature_name in zip(axes, names):
        shares = {}
        for label, stats in stats_by_name.items():
            f = _features(stats).get(feature_name)
            if f is None:
                continue
            total = stats.datasets[0].num_examples or 1
            shares[label] = {
                v.value[:24]: v.frequency / total for v in f.string_stats.top_values[:top]
            }
        frame = pd.DataFrame(shares).fillna(0.0)
        frame = frame.loc[frame.max(axis=1).sort_values(ascending=False).index[:top]]
        frame.iloc[::-1].plot.barh(ax=ax, legend=False)
        ax.set_title(feature_name, fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=7)
    fig.suptitle("Top categorical values (share of examples)")
    return finished(fig)


def newest_two_spans(
    run: artifacts.Run, schema: schema_pb2.Schema
) -> Optional[dict[str, Statistics]]:
    """Train-split statistics of the newest two ingested spans, older first ({"span 1": …,
    "span 2": …}); None with fewer than two spans."""
    examples = artifacts.ingested_examples(run.settings, run.store)
    examples = [e for e in examples if metadata.span_of(e) <= run.span][-2:]
    if len(examples) < 2:
        return None
    return {f"span {metadata.span_of(e)}": span_statistics(run, e, schema) for e in examples}


def leakage_report(run: artifacts.Run):
    """The run's LeakageCheck report (pipeline/leakage.py), or None if the step did not run."""
    from pipeline import leakage

    artifact = run.output(LEAKAGE_CHECK_ID, "report")
    return leakage.load_report(artifact.uri) if artifact is not None else None


def leakage_tables(report) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(findings with their severity, evidence and measures, leaks first; single-feature AUC
    per feature, strongest first)."""
    measures = sorted({k for f in report.findings for k in getattr(f, "measures", {})})
    rows = [
        {
            "feature": f.feature,
            "severity": getattr(f, "severity", "leak"),
            "kind": f.kind,
            **{k: getattr(f, "measures", {}).get(k) for k in measures},
            "evidence": f.evidence,
        }
        for f in report.findings
    ]
    findings = pd.DataFrame(rows, columns=["feature", "severity", "kind", *measures, "evidence"])
    findings = findings.sort_values("severity", key=lambda s: s != "leak", kind="stable")
    findings = findings.reset_index(drop=True)
    aucs = (
        pd.Series(report.auc_by_feature, name="single-feature AUC", dtype=float)
        .sort_values(ascending=False)
        .to_frame()
    )
    aucs.index.name = "feature"
    return findings, aucs


def leakage_serving_table(report) -> Optional[pd.DataFrame]:
    """Per model input, the new span's training sample against the logged serving requests:
    presence rates, distribution distance (and share outside the training range for numbers);
    None when the check compared no requests."""
    by_feature = getattr(report, "serving_by_feature", None)
    if not by_feature:
        return None
    table = pd.DataFrame.from_dict(by_feature, orient="index")
    table.index.name = "feature"
    order = ["training_presence", "serving_presence", "distance", "outside_training_range"]
    return table[[c for c in order if c in table.columns]]


def leakage_summary(report) -> str:
    """One line: leaks and warnings, or that nothing was found."""
    leaks = [f for f in report.findings if getattr(f, "severity", "leak") == "leak"]
    warnings = len(report.findings) - len(leaks)
    if not report.findings:
        return "No leakage found."
    if not leaks:
        return (
            f"No leak found; {warnings} warning(s) to check (a strong feature is a leak "
            "only if its value is not known when a prediction is made)."
        )
    return f"{len(leaks)} leak(s)" + (f" and {warnings} warning(s)." if warnings else ".")


def serving_skew(
    run: artifacts.Run, schema: schema_pb2.Schema, training: Statistics
) -> Optional[pd.DataFrame]:
    """Skew of the logged serving requests (analysis/skew.py) against the run's training
    statistics, one row per finding; None when no request log exists."""
    from analysis import skew

    log = run.settings.request_log_path
    if not os.path.exists(log):
        return None
    rows = list(serving_log.logged_rows(serving_log.read(log)))
    found = skew.find_skew(rows, schema, training) if rows else {}
    return pd.DataFrame(
        [
            {"feature": feature, "finding": reason}
            for feature, reasons in sorted(found.items())
            for reason in reasons
        ],
        columns=["feature", "finding"],
    )
