"""The run report: one self-contained HTML file for the latest run (images inlined as
base64 PNG; no scripts, fonts or style sheets from elsewhere), with the same tables and plots
as the notebooks.

    make report    # tfx-template report [--out report.html]
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import os
import sys
from typing import Callable, Optional

import matplotlib

matplotlib.use("Agg")  # files only, whatever display the machine has

import matplotlib.pyplot as plt
import pandas as pd

from analysis import artifacts, evaluation, lineage, stats_views
from analysis.settings import ReportSettings
from pipeline.settings import PipelineSettings

STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-top: 0.5em; }
table { border-collapse: collapse; font-size: 12px; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; } pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; }
.ok { color: #17692f; font-weight: bold; } .bad { color: #a31515; font-weight: bold; }
.note { color: #666; }
"""


def figure_html(fig: Optional[plt.Figure], alt: str) -> str:
    """A figure as an inline PNG."""
    if fig is None:
        return ""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def table_html(table: Optional[pd.DataFrame], empty: str = "none") -> str:
    if table is None or table.empty:
        return f'<p class="note">{html.escape(empty)}</p>'
    return table.to_html(float_format=lambda v: f"{v:.4g}", na_rep="", border=0)


def _p(text: str, css: str = "") -> str:
    return f'<p class="{css}">{html.escape(text)}</p>' if css else f"<p>{html.escape(text)}</p>"


def _section(section_id: str, title: str, build: Callable[[], str]) -> str:
    """A section; an error while building it is shown in it instead of failing the report."""
    try:
        body = build()
    except (artifacts.NoRunError, LookupError, FileNotFoundError, ValueError) as error:
        body = _p(f"Not available: {error}", "note")
    return f'<section id="{section_id}"><h2>{html.escape(title)}</h2>{body}</section>'


def data_section(run: artifacts.Run) -> str:
    stats = stats_views.run_statistics(run)
    return "".join(
        [
            _p(
                f"Span {run.span}, as ExampleGen split it: "
                + ", ".join(
                    f"{split} {s.datasets[0].num_examples} examples" for split, s in stats.items()
                )
            ),
            table_html(stats_views.feature_table(stats)),
            figure_html(
                stats_views.numeric_distributions(stats, "Numeric distributions, train vs eval"),
                "numeric distributions",
            ),
            figure_html(stats_views.missing_rates(stats), "missing rates"),
            figure_html(stats_views.top_categorical_values(stats), "top categorical values"),
            "<h3>Schema</h3>",
            table_html(stats_views.schema_table(stats_views.load_schema(run))),
        ]
    )


def anomalies_section(run: artifacts.Run) -> str:
    anomalies = stats_views.run_anomalies(run)
    table = stats_views.anomalies_table(anomalies)
    css = "ok" if table.empty else "bad"
    return _p(stats_views.anomalies_summary(anomalies), css) + (
        "" if table.empty else table_html(table)
    )


def leakage_section(run: artifacts.Run) -> str:
    report = stats_views.leakage_report(run)
    if report is None:
        return _p(
            "The leakage check did not run in this run (PIPELINE_LEAKAGE_CHECK off, or "
            "the run stopped before it).",
            "note",
        )
    findings, aucs = stats_views.leakage_tables(report)
    leaks = (findings["severity"] == "leak").any() if not findings.empty else False
    label_rate = "" if report.label_rate is None else f" (label rate {report.label_rate:.3f})"
    parts = [
        _p(stats_views.leakage_summary(report), "bad" if leaks else "ok"),
        table_html(findings, "no findings"),
    ]
    for note in getattr(report, "notes", []):
        parts.append(_p(note, "note"))
    serving = stats_views.leakage_serving_table(report)
    if serving is not None:
        thresholds = report.serving_thresholds
        parts += [
            _p(
                f"The training sample against {report.serving_rows} logged serving rows "
                f"({report.serving_log}): a leak when the presence rates differ by more "
                f"than {thresholds.get('presence_gap')} or the distance exceeds "
                f"{thresholds.get('distribution_distance')}.",
                "note",
            ),
            table_html(serving),
        ]
    parts += [
        _p(
            f"Single-feature AUC on {report.sample_rows} rows of the {report.split} split"
            f"{label_rate}; above {report.auc_threshold} is a warning.",
            "note",
        ),
        table_html(aucs, "no single-feature AUC"),
    ]
    return "".join(parts)


def drift_section(run: artifacts.Run) -> str:
    schema = stats_views.load_schema(run)
    spans = stats_views.newest_two_spans(run, schema)
    if spans is None:
        return _p("Only one span ingested so far: nothing to compare.", "note")
    (old_name, old), (new_name, new) = spans.items()
    table = stats_views.drift_table(new, old, schema)
    drifted = table[table["drifted"]] if not table.empty else table
    return "".join(
        [
            _p(
                f"{new_name} against {old_name} (train splits), with the schema's drift "
                f"comparators: {len(drifted)} of {len(table)} compared features drifted.",
                "bad" if len(drifted) else "ok",
            ),
            table_html(table, "the schema defines no drift comparators"),
            figure_html(
                stats_views.numeric_distributions(spans, f"{old_name} vs {new_name}"),
                "drift distributions",
            ),
            figure_html(stats_views.top_categorical_values(spans), "drift categorical values"),
        ]
    )


def evaluation_section(run: artifacts.Run) -> str:
    evaluated = run
    if "Evaluator" not in run.outputs:
        evaluated = artifacts.latest_run(run.settings, with_node="Evaluator")
    result = evaluation.load(evaluated)
    parts = []
    if evaluated is not run:
        parts.append(
            _p(
                f"This run evaluated no model; the latest evaluation is from run "
                f"{evaluated.run_id}.",
                "note",
            )
        )
    comparison = evaluation.candidate_vs_baseline(result)
    parts += [
        _p(evaluation.verdict(result), "ok" if result.blessed else "bad"),
        "<h3>Thresholds</h3>",
        table_html(evaluation.thresholds_table(result)),
        "<h3>Overall</h3>",
        table_html(evaluation.metrics_table(result.candidate)),
        "<h3>Candidate vs baseline</h3>",
        table_html(comparison, "no baseline: no model had been blessed before"),
        figure_html(evaluation.roc_pr_curves(result), "ROC and PR curves"),
        figure_html(evaluation.calibration_plot(result), "calibration"),
    ]
    for feature in result.slice_features:
        parts += [
            f"<h3>Per {html.escape(feature)}</h3>",
            table_html(evaluation.metrics_table(result.candidate, feature)),
            figure_html(evaluation.metric_per_slice(result, feature), f"auc per {feature}"),
        ]
    return "".join(parts)


def lineage_section(settings: PipelineSettings) -> str:
    return "<pre>" + html.escape("\n".join(lineage.lineage(settings).lines())) + "</pre>"


def render(settings: PipelineSettings) -> str:
    run = artifacts.latest_run(settings)
    generated = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    sections = [
        _section("data-summary", "Data summary per split", lambda: data_section(run)),
        _section("anomalies", "Anomalies", lambda: anomalies_section(run)),
        _section("leakage", "Data leakage", lambda: leakage_section(run)),
        _section("drift", "Drift between the newest two spans", lambda: drift_section(run)),
        _section("evaluation", "Evaluation", lambda: evaluation_section(run)),
        _section("lineage", "Lineage of the served model", lambda: lineage_section(settings)),
    ]
    title = f"Run report: {settings.name}"
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f'<p id="run">Run <b id="run-id">{html.escape(run.run_id)}</b>, started '
        f"{run.started_text}, span {run.span}. Report generated {generated}.</p>"
        + "".join(sections)
        + "</body></html>"
    )


def report_path(settings: PipelineSettings, report: Optional[ReportSettings] = None) -> str:
    """PIPELINE_REPORT_PATH, else <output dir>/report/<pipeline>.html."""
    return (report and report.path) or os.path.join(
        settings.data.output_dir, "report", f"{settings.name}.html"
    )


def write(
    settings: PipelineSettings, path: Optional[str] = None, report: Optional[ReportSettings] = None
) -> str:
    """Renders the report and writes it (temp file, then rename: never half a report) to
    `path`, else where `report` (PIPELINE_REPORT_PATH) or the default puts it."""
    path = path or report_path(settings, report)
    text = render(settings)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(path + ".tmp", path)
    return path


def write_report(out: Optional[str] = None) -> int:
    """`tfx-template report`: writes the report to `out` (default PIPELINE_REPORT_PATH, else
    <output dir>/report/<pipeline>.html) and says where (0), or one `error: ...` line (1)."""
    try:
        path = write(PipelineSettings.load(), out, ReportSettings.load())
    except (ValueError, artifacts.NoRunError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"Report written to {path}")
    return 0
