"""The Beam arguments of the data components for a Beam preset (PIPELINE_BEAM_PRESET)."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Optional, Sequence

if TYPE_CHECKING:
    from pipeline.settings import BeamSettings, CloudSettings


def beam_preset_args(
    beam: BeamSettings, cloud: CloudSettings, temp_dir: str, reads_bigquery: bool = False
) -> list[str]:
    """Beam arguments of the data components (ExampleGen, StatisticsGen, Transform, Evaluator)
    for `beam.preset`; PIPELINE_EXTRA_BEAM_ARGS follow them and win on conflicts.

    direct    Beam's DirectRunner inside the component's own process (the default).
    dataflow  Google Cloud Dataflow in gcp_project/gcp_region, temp files in temp_dir.
    flink     an Apache Flink cluster: FlinkRunner submits an uber jar to the JobManager's REST
              address (beam.cluster_address, host:8081); no job server to run.
    spark     an Apache Spark cluster: SparkRunner submits an uber jar to the master's REST
              URL (beam.cluster_address, http://host:6066).

    Remote workers run cloud.container_image (it has TFX and this project installed and Beam's
    boot entrypoint), so TFX stages no sdist of itself. Flink and Spark start it with Docker on
    each worker; for a worker-pool sidecar instead, add
    `--environment_type=EXTERNAL --environment_config=localhost:50000`.
    """
    gcp = [
        f"--project={cloud.gcp_project}",
        f"--region={cloud.gcp_region}",
        f"--temp_location={temp_dir}",
    ]
    if beam.preset == "direct":
        # Any Beam argument makes TFX package itself into an sdist for remote workers, in
        # every Beam component (seconds each); the in-process DirectRunner needs none.
        # "auto" is resolved against the data when the pipeline is built
        # (spans.with_beam_workers); unresolved (e.g. the batch job) it means in-process.
        workers = beam.direct_num_workers
        args = (
            []
            if workers in ("auto", "1")
            else ["--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"]
        )
        # BigQuery reads export through the project's jobs and a gs:// temp location.
        return args + (gcp if reads_bigquery else [])
    image = cloud.container_image
    if beam.preset == "dataflow":
        # Custom containers need Dataflow Runner v2.
        return [
            "--runner=DataflowRunner",
            *gcp,
            f"--sdk_container_image={image}",
            "--experiments=use_runner_v2",
        ]
    portable = [
        "--environment_type=DOCKER",
        f"--environment_config={image}",
        # Tells TFX and Beam the workers' image has every dependency: nothing staged.
        f"--sdk_container_image={image}",
    ]
    if beam.preset == "flink":
        return [
            "--runner=FlinkRunner",
            f"--flink_master={beam.cluster_address}",
            "--flink_submit_uber_jar",
            *portable,
        ]
    if beam.preset == "spark":
        return [
            "--runner=SparkRunner",
            f"--spark_rest_url={beam.cluster_address}",
            "--spark_submit_uber_jar",
            *portable,
        ]
    raise ValueError(
        f"PIPELINE_BEAM_PRESET={beam.preset!r}: expected direct, dataflow, flink or spark"
    )


def beam_runs_in_process(beam_pipeline_args: Sequence[str]) -> bool:
    """Whether these Beam arguments run the DirectRunner in this process (one worker), so a
    split computed here uses what Beam would use, minus its start-up."""
    # Beam's options module is light; Beam itself is already imported wherever this is asked.
    from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions

    options = PipelineOptions(list(beam_pipeline_args))
    direct = options.view_as(DirectOptions)
    return (
        _runs_direct(beam_pipeline_args)
        and direct.direct_running_mode in (None, "in_memory")
        and (direct.direct_num_workers or 1) == 1
    )


# The DirectRunner's choice of worker threads or processes; every other argument is kept.
_DIRECT_WORKER_FLAGS = ("--direct_running_mode", "--direct_num_workers")


def without_direct_workers(beam_pipeline_args: Sequence[Any]) -> list[Any]:
    """The arguments minus the DirectRunner's worker flags (`--flag=value` or `--flag value`)
    when they run the DirectRunner; unchanged for any other runner."""
    args = list(beam_pipeline_args)
    if not all(isinstance(arg, str) for arg in args) or not _runs_direct(args):
        return args
    kept, skip_value = [], False
    for arg in args:
        if skip_value:
            skip_value = False
            continue
        if arg in _DIRECT_WORKER_FLAGS:
            skip_value = True  # its value is the next argument
        elif arg.split("=", 1)[0] not in _DIRECT_WORKER_FLAGS:
            kept.append(arg)
    return kept


def in_process_context(context: Optional[Any]) -> Optional[Any]:
    """A Beam executor's context for ingestion and statistics: the DirectRunner's worker flags
    dropped, so they run in this process whatever the pipeline gives Transform and the
    Evaluator. Worker processes do not pay for them on this machine (each imports TensorFlow;
    measured in docs/performance.md: in-process CSV ingestion of 1.5M rows took 24 s, through
    Beam with one worker per core 82 s), and without the flags TFX builds no sdist of itself
    for workers (about 2 s per component run)."""
    if context is None or not getattr(context, "beam_pipeline_args", None):
        return context
    context = copy.copy(context)
    context.beam_pipeline_args = without_direct_workers(context.beam_pipeline_args)
    return context


def _runs_direct(beam_pipeline_args: Sequence[str]) -> bool:
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    runner = PipelineOptions(list(beam_pipeline_args)).view_as(StandardOptions).runner
    return runner in (None, "DirectRunner", "direct")
