"""A DAG run's parameters: what a person who triggers a training run may change for that run.

Each is an Airflow Param of the DAG, so the UI's "Trigger DAG w/ config" form shows it with
its setting's value as the default, and a run's conf ({"train_steps": 2000}, from the form, the
REST API or `tfx-template airflow-trigger`) overrides it; Airflow checks the values (type and
bounds) before the run is created. A task reads them from its context's `params`: the
pipeline is built again with those settings, and the task runs its own component of that
pipeline (AirflowDagRunner builds each task's component once, when the DAG file is parsed).

Only settings that leave the DAG's tasks as they are can be run parameters: switching the
Tuner on or off adds or removes tasks, so it is the deployment's PIPELINE_ENABLE_TUNING.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from absl import logging
from airflow.models.param import Param

from pipeline import airflow_tasks, metadata
from pipeline.settings import PipelineSettings

FORCE = "force"
# Run parameter -> (settings group, field): the settings `with_overrides` changes.
RUN_SETTINGS = {
    "train_steps": ("training", "train_steps"),
    "eval_steps": ("training", "eval_steps"),
    "tuner_max_trials": ("training", "tuner_max_trials"),
    "tuner_train_steps": ("training", "tuner_train_steps"),
}
TUNER_ONLY = ("tuner_max_trials", "tuner_train_steps")


def run_parameter_names(settings: PipelineSettings) -> list[str]:
    """The run parameters this DAG has: the Tuner's only when the DAG has a Tuner."""
    tuning = settings.training.enable_tuning
    return [name for name in RUN_SETTINGS if tuning or name not in TUNER_ONLY]


def dag_params(settings: PipelineSettings) -> dict[str, Param]:
    """The DAG's Params: each run parameter with its setting's value as default, and
    `force` (run even when no new span arrived)."""
    params = {
        FORCE: Param(
            False,
            type="boolean",
            title="Force a run",
            description="Run even when no new span arrived (what is unchanged is cached).",
        )
    }
    for name in run_parameter_names(settings):
        group, field = RUN_SETTINGS[name]
        info = type(getattr(settings, group)).model_fields[field]
        params[name] = Param(
            getattr(getattr(settings, group), field),
            type="integer",
            minimum=1,
            title=name.replace("_", " ").capitalize(),
            description=f"{info.description} (PIPELINE_{name.upper()} for scheduled runs)",
        )
    return params


def run_overrides(settings: PipelineSettings, params: dict[str, Any]) -> dict[str, Any]:
    """The run parameters whose values differ from the settings', as `with_overrides` keys."""
    overrides = {}
    for name in run_parameter_names(settings):
        group, field = RUN_SETTINGS[name]
        if name in params and params[name] != getattr(getattr(settings, group), field):
            overrides[name] = params[name]
    return overrides


def with_run_parameters(
    launch: Callable, settings: PipelineSettings, build_component: Callable[[PipelineSettings], Any]
) -> Callable:
    """A TFX task's callable that first checks the MLMD store (a task fails with a message
    naming it, and its retry runs once the store is back), then launches the component of
    the pipeline built with this run's parameters, when they change any setting. A retried
    try first retires the earlier try's execution (airflow_tasks.retire_earlier_try)."""

    @functools.wraps(launch)
    def launch_with_params(*args, **kwargs):
        metadata.check_store(settings)
        overrides = run_overrides(settings, kwargs.get("params") or {})
        if overrides:
            logging.info("this run's parameters: %s", overrides)
            component = build_component(settings.with_overrides(**overrides))
            kwargs.update(component=component, exec_properties=component.exec_properties)
        # `launch` is TFX's launcher with the component's arguments bound (functools.partial).
        launch_args = {**getattr(launch, "keywords", {}), **kwargs}
        pipeline_info = launch_args["pipeline_info"]
        # As TFX's launcher does next: the Airflow run's id names the execution's context.
        pipeline_info.run_id = kwargs["ti"].get_dagrun().run_id
        component = launch_args["component"]
        if airflow_tasks.retire_earlier_try(
            launch_args["metadata_connection_config"], pipeline_info, component
        ):
            # This task's process built its own component: changing it touches no other task.
            component.driver_class = airflow_tasks.driver_naming_outputs_for_try(
                component.driver_class, kwargs["ti"].try_number
            )
        return launch(*args, **kwargs)

    return launch_with_params


def with_store_check(task_callable: Callable, settings: PipelineSettings) -> Callable:
    """The DAG's own tasks: the MLMD store checked first, as for the components."""

    @functools.wraps(task_callable)
    def checked(*args, **kwargs):
        metadata.check_store(settings)
        return task_callable(*args, **kwargs)

    return checked
