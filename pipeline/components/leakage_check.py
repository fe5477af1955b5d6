"""LeakageCheck: the data-leakage step after ExampleValidator (the checks themselves are in
pipeline/leakage.py). No `from __future__ import annotations`: TFX reads the type hints."""

from pipeline.leakage import DISTRIBUTION_DISTANCE, MIN_SERVING_ROWS, PRESENCE_GAP, run_check
from pipeline.tfx_api import tfx


class DataLeakageReport(tfx.dsl.Artifact):
    """The leakage check's findings: leakage.json (pipeline/names.py) in its directory."""

    # "<namespace>.<Name>": the form Kubeflow v2 compilation requires of custom types.
    TYPE_NAME = "analysis.DataLeakageReport"


@tfx.dsl.components.component
def LeakageCheck(
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    schema: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Schema],
    statistics: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleStatistics],
    report: tfx.dsl.components.OutputArtifact[DataLeakageReport],
    auc_threshold: tfx.dsl.components.Parameter[float],
    sample_rows: tfx.dsl.components.Parameter[int],
    fail_on_leak: tfx.dsl.components.Parameter[int],
    serving_log: tfx.dsl.components.Parameter[str] = "",
    min_serving_rows: tfx.dsl.components.Parameter[int] = MIN_SERVING_ROWS,
    presence_gap: tfx.dsl.components.Parameter[float] = PRESENCE_GAP,
    distribution_distance: tfx.dsl.components.Parameter[float] = DISTRIBUTION_DISTANCE,
) -> None:
    """Reports (or with fail_on_leak, fails the run on) features that leak the label;
    `serving_log` ("" = skip) is the model server's request log to compare with."""
    result = run_check(
        examples.uri,
        schema.uri,
        statistics.uri,
        report.uri,
        auc_threshold,
        sample_rows,
        bool(fail_on_leak),
        serving_log,
        min_serving_rows,
        presence_gap,
        distribution_distance,
    )
    report.set_int_custom_property("findings", len(result.findings))
    report.set_int_custom_property("leaks", len(result.leaks()))
