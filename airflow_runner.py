"""Runs the pipeline on Apache Airflow with TFX's AirflowDagRunner, one DAG run per schedule.

    cp airflow_runner.py $AIRFLOW_HOME/dags/       # or, with the TFX CLI:
    tfx pipeline create --engine airflow --pipeline_path airflow_runner.py
    tfx run create --engine airflow --pipeline_name taxi-tips
    python airflow_runner.py          # builds the DAG once: a check that it imports
    python airflow_runner.py --help   # this text

Airflow imports this file from its own dags/ folder, under a module name of its own, in the
scheduler and in every task: the DAG is built at module level, and `pipeline` and `models`
come from this project installed in Airflow's environment (`pip install -e .`). Settings come
from the `PIPELINE_*` variables of that environment, as for local_runner.py.

TFX 1.16 has no AirflowDagRunner under `tfx.v1`; tfx.orchestration.airflow still ships it.
It orchestrates the legacy (pre-IR) way: each node is a PythonOperator that runs its driver,
executor and publisher against MLMD, and a resolver's channels hold every run's artifacts.
For the same pipeline as the other runners: the first task ingests the older spans of the
training window on a new pipeline (as local_runner.py does), and the Evaluator's baseline
strategy picks this run's model out of all of them (pipeline/resolvers.py).
"""

import sys

if __name__ == "__main__" and {"-h", "--help"} & set(sys.argv[1:]):
    print(__doc__.strip())  # before the imports below take their 10 s
    sys.exit(0)

from pipeline import runtime  # noqa: F401 (first: Keras 2 before TensorFlow loads)

import datetime
import functools

from airflow import models as airflow_models
from airflow.operators.python import PythonOperator, ShortCircuitOperator
from tfx.orchestration.airflow.airflow_dag_runner import (
    AirflowDagRunner,
    AirflowPipelineConfig,
)

from pipeline import airflow_params, rejections, spans
from pipeline.airflow_tasks import (
    check_new_span,
    ingest_earlier_spans,
    metadata_config,
    record_rejection,
)
from pipeline.names import EXAMPLE_GEN_ID
from pipeline.pipeline import create_pipeline
from pipeline.settings import PipelineSettings

INGEST_TASK_ID = "ingest_earlier_spans"
CHECK_TASK_ID = "check_new_span"


def airflow_settings() -> PipelineSettings:
    """Settings from the environment, with the orchestrator this runner is."""
    return PipelineSettings.load(orchestrator="airflow")


def dag_config(settings: PipelineSettings) -> AirflowPipelineConfig:
    """Schedule, first date, task retries and the run parameters from the settings.

    No catch-up: every run ingests the newest span there is, so replaying missed intervals
    would only repeat the same run. One active run at a time: each run's training window and
    baseline build on what the previous run recorded. One task at a time: the SQLite MLMD
    store takes one writer, and the DAG is nearly a chain anyway. Schedule `none`: only
    triggered runs (pipeline/airflow_params.py: what a person may change for one)."""
    airflow = settings.airflow
    start = datetime.datetime.fromisoformat(airflow.start_date)
    return AirflowPipelineConfig(
        airflow_dag_config={
            "schedule": None if airflow.schedule.lower() == "none" else airflow.schedule,
            "start_date": start if start.tzinfo else start.replace(tzinfo=datetime.timezone.utc),
            "catchup": False,
            "max_active_runs": 1,
            "max_active_tasks": 1,
            "default_args": {
                "retries": airflow.retries,
                "retry_delay": datetime.timedelta(seconds=airflow.retry_delay_seconds),
            },
            "params": airflow_params.dag_params(settings),
        }
    )


def build_dag(settings: PipelineSettings) -> airflow_models.DAG:
    """The pipeline's DAG. Unless ExampleGen reads the whole window every run (as for a
    BigQuery query), it starts with a check for a new complete span that skips the run when
    there is none, then the ingestion of earlier spans; ExampleGen reads the newest complete
    span no check rejected (Airflow imports this file again for every task, so that is the
    span at run time). A task that fails on a rejection records it (pipeline/rejections.py)."""
    reads_window = settings.example_gen_reads_window
    accepted = (
        [] if reads_window else spans.accepted_spans(settings, rejections.of_pipeline(settings))
    )
    span = accepted[-1] if accepted else None

    def build(run_settings: PipelineSettings):
        return create_pipeline(
            run_settings, metadata_connection_config=metadata_config(run_settings), span=span
        )

    dag = AirflowDagRunner(dag_config(settings)).run(build(settings))
    components = {task.task_id for task in dag.tasks}
    if not reads_window:
        check = ShortCircuitOperator(
            task_id=CHECK_TASK_ID,
            dag=dag,
            python_callable=functools.partial(check_new_span, settings),
        )
        ingest = PythonOperator(
            task_id=INGEST_TASK_ID,
            dag=dag,
            python_callable=functools.partial(ingest_earlier_spans, settings),
        )
        roots = [task for task in dag.roots if task.task_id != CHECK_TASK_ID]
        check >> ingest >> dag.get_task(EXAMPLE_GEN_ID)
        # Every other first task too (ImportSchemaGen, resolvers): a skipped run runs nothing.
        check >> [task for task in roots if task.task_id not in (INGEST_TASK_ID, EXAMPLE_GEN_ID)]
    for task in dag.tasks:
        task.on_failure_callback = functools.partial(record_rejection, settings, span)
        if task.task_id in components:  # the pipeline's nodes: the run's parameters apply
            task.python_callable = airflow_params.with_run_parameters(
                task.python_callable,
                settings,
                functools.partial(_component, build, task.task_id),
            )
        else:
            task.python_callable = airflow_params.with_store_check(task.python_callable, settings)
    return dag


def _component(build, node_id: str, run_settings: PipelineSettings):
    """The node `node_id` of the pipeline built with `run_settings`."""
    (component,) = [c for c in build(run_settings).components if c.id == node_id]
    return component


DAG = build_dag(airflow_settings())
