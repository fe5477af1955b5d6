"""kubeflow_runner.py: the KFP v2 specs it compiles, read with the kfp SDK's own protos and
loader, against the pipeline `create_pipeline` builds for the same settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import kfp.components
import pytest
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2
from tfx import v1 as tfx
from tfx.dsl.components.base import executor_spec
from tfx.orchestration.kubeflow.v2.kubeflow_v2_dag_runner import KUBEFLOW_TFX_CMD
from tfx.utils import import_utils, name_utils

import kubeflow_runner
from models import features
from pipeline.pipeline import (
    BASELINE_RESOLVER_ID,
    EXAMPLE_GEN_ID,
    SPAN_WINDOW_RESOLVER_ID,
    create_pipeline,
)
from pipeline.names import WINDOW_EXAMPLES_ID
from pipeline.settings import PipelineSettings, validate_kubeflow_name

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "europe-west4-docker.pkg.dev/test-project/pipelines/taxi-tips:test"
OUTPUT_DIR = "gs://test-bucket/taxi"
NAME = features.PIPELINE_NAME  # the active dataset's pipeline
PROJECT, REGION = "test-project", "europe-west4"
DATAFLOW_ARGS = [
    "--runner=DataflowRunner",
    f"--project={PROJECT}",
    f"--region={REGION}",
    f"--temp_location={OUTPUT_DIR}/beam-temp",
    f"--sdk_container_image={IMAGE}",
]
# TFX splits a LatestBlessedModelStrategy resolver into two query tasks with these suffixes.
RESOLVER_TASK_SUFFIXES = ("-model-blessing-resolver", "-model-resolver")
VERTEX = tfx.extensions.google_cloud_ai_platform
ContainerSpec = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec


def kubeflow_environ(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Dataflow for the data components, Vertex training on two replicas with a GPU each,
    pushing to a Vertex endpoint."""
    return {
        "PIPELINE_CONTAINER_IMAGE": IMAGE,
        "PIPELINE_KUBEFLOW_OUTPUT_DIR": OUTPUT_DIR,
        "PIPELINE_OUTPUT_DIR": str(tmp_path / "outputs"),
        "PIPELINE_GCP_PROJECT": PROJECT,
        "PIPELINE_GCP_REGION": REGION,
        "PIPELINE_BEAM_PRESET": "dataflow",
        "PIPELINE_VERTEX_TRAINING_REPLICAS": "2",
        "PIPELINE_DISTRIBUTION_STRATEGY": "multi_worker",
        "PIPELINE_VERTEX_ACCELERATOR_TYPE": "NVIDIA_TESLA_T4",
        "PIPELINE_VERTEX_ACCELERATOR_COUNT": "1",
        "PIPELINE_VERTEX_ENDPOINT": "taxi-tips",
        **extra,
    }


class Compiled:
    """A compiled spec, parsed strictly into the kfp-pipeline-spec protos (unknown fields
    fail), with the settings and the TFX pipeline it came from."""

    def __init__(self, environ: dict[str, str]):
        self.settings = kubeflow_runner.kubeflow_settings(environ)
        self.pipeline = create_pipeline(self.settings)
        self.path = kubeflow_runner.compile_pipeline(self.settings)
        with open(self.path) as f:
            document = f.read()
        if self.path.endswith(".json"):
            self.job = json_format.Parse(document, pipeline_spec_pb2.PipelineJob())
            self.spec = json_format.ParseDict(
                json_format.MessageToDict(self.job.pipeline_spec), pipeline_spec_pb2.PipelineSpec()
            )
        else:  # the self-hosted YAML: kfp's own loader, as kfp.Client reads it
            self.job = None
            self.spec = kfp.components.load_component_from_file(self.path).pipeline_spec
        self.deployment = json_format.ParseDict(
            json_format.MessageToDict(self.spec.deployment_spec),
            pipeline_spec_pb2.PipelineDeploymentConfig(),
        )

    @property
    def tasks(self) -> dict[str, pipeline_spec_pb2.PipelineTaskSpec]:
        return dict(self.spec.root.dag.tasks)

    def container(self, task: str) -> ContainerSpec:
        label = self.spec.components[self.tasks[task].component_ref.name].executor_label
        return self.deployment.executors[label].container

    def parameter(self, task: str, name: str) -> str:
        value = self.tasks[task].inputs.parameters[name].runtime_value
        if value.HasField("constant_value"):  # schema 2.0.0
            return value.constant_value.string_value
        return value.constant.string_value  # schema 2.1.0


@pytest.fixture(scope="module")
def vertex(tmp_path_factory) -> Compiled:
    return Compiled(kubeflow_environ(tmp_path_factory.mktemp("vertex")))


@pytest.fixture(scope="module")
def self_hosted(tmp_path_factory) -> Compiled:
    return Compiled(
        kubeflow_environ(tmp_path_factory.mktemp("kubeflow"), PIPELINE_ORCHESTRATOR="kubeflow")
    )


@pytest.fixture(params=["vertex", "self_hosted"])
def compiled(request) -> Compiled:
    return request.getfixturevalue(request.param)


def node_of(task: str) -> str:
    """The TFX node id a KFP task was compiled from."""
    for suffix in RESOLVER_TASK_SUFFIXES:
        if task.endswith(suffix):
            return task[: -len(suffix)]
    return task


def spec_edges(compiled: Compiled) -> set[tuple[str, str]]:
    """(upstream, downstream) node ids: KFP orders a task after its dependent tasks and after
    the producers of its input artifacts."""
    edges = set()
    for name, task in compiled.tasks.items():
        producers = set(task.dependent_tasks) | {
            spec.task_output_artifact.producer_task for spec in task.inputs.artifacts.values()
        }
        edges |= {(node_of(producer), node_of(name)) for producer in producers}
    return {(a, b) for a, b in edges if a != b}


def pipeline_edges(pipeline: tfx.dsl.Pipeline) -> set[tuple[str, str]]:
    return {
        (upstream.id, node.id) for node in pipeline.components for upstream in node.upstream_nodes
    }


def contract(edges: set[tuple[str, str]], node: str) -> set[tuple[str, str]]:
    """The edges with `node` removed and its inputs wired to its outputs."""
    inputs = {a for a, b in edges if b == node}
    outputs = {b for a, b in edges if a == node}
    return {e for e in edges if node not in e} | {(a, b) for a in inputs for b in outputs}


def test_every_component_is_a_task(compiled):
    assert {node_of(task) for task in compiled.tasks} == {
        node.id for node in compiled.pipeline.components
    }


def test_the_dag_is_the_pipelines(compiled):
    assert spec_edges(compiled) == pipeline_edges(compiled.pipeline)


def test_the_dag_is_the_local_one_but_for_the_resolvers_kubeflow_cannot_run(compiled, tmp_path):
    # Continuous training's nodes (warm start, progressive validation, drift) need custom
    # resolvers and exist only locally and on Airflow.
    local = create_pipeline(
        PipelineSettings.load(
            kubeflow_environ(tmp_path),
            orchestrator="local",
            warm_start=False,
            progressive_validation=False,
            check_drift=False,
        )
    )
    # ExampleGen reads the whole window itself: no span window resolver, nothing to gather.
    expected = contract(
        contract(pipeline_edges(local), SPAN_WINDOW_RESOLVER_ID), WINDOW_EXAMPLES_ID
    )
    if compiled.settings.orchestrator == "vertex":
        # The stock baseline strategy takes no candidate, so it waits for no Trainer.
        expected -= {("Trainer", BASELINE_RESOLVER_ID)}
    else:
        # No resolver at all: the Evaluator has no baseline.
        expected = {edge for edge in expected if BASELINE_RESOLVER_ID not in edge}
    assert spec_edges(compiled) == expected


def test_only_stock_resolvers_on_vertex_and_none_self_hosted(vertex, self_hosted):
    resolvers = {task for task in vertex.tasks if not vertex.container(task).image}
    assert resolvers == {BASELINE_RESOLVER_ID + suffix for suffix in RESOLVER_TASK_SUFFIXES}
    assert all(self_hosted.container(task).image for task in self_hosted.tasks)


def test_each_step_runs_its_executor_in_the_image(compiled):
    for node in compiled.pipeline.components:
        if isinstance(node, tfx.dsl.Resolver):
            continue
        container = compiled.container(node.id)
        assert container.image == IMAGE
        assert list(container.command) == list(KUBEFLOW_TFX_CMD)
        args = list(container.args)
        class_path = args[args.index("--executor_class_path") + 1]
        assert class_path == name_utils.get_full_name(node.executor_spec.executor_class)
        # The entrypoint imports it by path, as here: e.g.
        # pipeline.components.anomalies_gate.AnomaliesGate_Executor.
        assert import_utils.import_class_by_path(class_path) is node.executor_spec.executor_class


def test_beam_args_reach_the_data_components(vertex):
    beam_nodes = [
        node.id
        for node in vertex.pipeline.components
        if isinstance(node.executor_spec, executor_spec.BeamExecutorSpec)
    ]
    assert {EXAMPLE_GEN_ID, "StatisticsGen", "Transform", "Evaluator"} <= set(beam_nodes)
    for node_id in beam_nodes:
        args = list(vertex.container(node_id).args)
        assert all(arg in args for arg in DATAFLOW_ARGS), (node_id, args)


def test_vertex_training_reaches_the_trainer(vertex):
    args = list(vertex.container("Trainer").args)
    assert args[args.index("--executor_class_path") + 1] == (
        "tfx.extensions.google_cloud_ai_platform.trainer.executor.GenericExecutor"
    )
    config = json.loads(vertex.parameter("Trainer", "custom_config"))
    assert config[VERTEX.ENABLE_VERTEX_KEY] is True
    assert config[VERTEX.VERTEX_REGION_KEY] == REGION
    assert config["distribution_strategy"] == "multi_worker"
    job = config[VERTEX.TRAINING_ARGS_KEY]
    assert job["project"] == PROJECT
    pools = job["job_spec"]["worker_pool_specs"]
    assert [pool["replica_count"] for pool in pools] == [1, 1]  # a chief and one worker
    for pool in pools:
        assert pool["container_spec"]["image_uri"] == IMAGE
        assert pool["machine_spec"] == {
            "machine_type": "n1-standard-4",
            "accelerator_type": "NVIDIA_TESLA_T4",
            "accelerator_count": 1,
        }


def test_parameter_server_training_has_chief_worker_and_ps_pools(tmp_path):
    """parameter_server on Vertex: pool 0 the chief (the coordinator), pool 1 the workers,
    pool 2 the ps tasks (CPU only: they hold variables), which Vertex turns into TF_CONFIG's
    chief, worker and ps; the Trainer gets the sharding settings."""
    compiled = Compiled(
        kubeflow_environ(
            tmp_path,
            PIPELINE_DISTRIBUTION_STRATEGY="parameter_server",
            PIPELINE_VERTEX_TRAINING_REPLICAS="1",
            PIPELINE_PS_WORKERS="3",
            PIPELINE_PS_TASKS="2",
            PIPELINE_PS_MIN_SHARD_BYTES="65536",
            PIPELINE_CROSSED_EMBEDDING_BUCKETS="200000",
        )
    )
    args = list(compiled.container("Trainer").args)
    assert args[args.index("--executor_class_path") + 1] == (
        "tfx.extensions.google_cloud_ai_platform.trainer.executor.GenericExecutor"
    )
    config = json.loads(compiled.parameter("Trainer", "custom_config"))
    assert config["distribution_strategy"] == "parameter_server"
    assert (
        config["ps_workers"],
        config["ps_tasks"],
        config["ps_min_shard_bytes"],
        config["ps_max_shards"],
        config["crossed_embedding_buckets"],
    ) == (3, 2, 65536, 0, 200000)
    pools = config[VERTEX.TRAINING_ARGS_KEY]["job_spec"]["worker_pool_specs"]
    assert [pool["replica_count"] for pool in pools] == [1, 3, 2]  # chief, workers, ps
    gpu = {
        "machine_type": "n1-standard-4",
        "accelerator_type": "NVIDIA_TESLA_T4",
        "accelerator_count": 1,
    }
    assert [pool["machine_spec"] for pool in pools] == [gpu, gpu, {"machine_type": "n1-standard-4"}]
    assert all(pool["container_spec"]["image_uri"] == IMAGE for pool in pools)


@pytest.mark.parametrize(
    "environ, message",
    [
        ({"PIPELINE_PS_WORKERS": "0"}, "PIPELINE_PS_WORKERS must be at least 1"),
        ({"PIPELINE_PS_TASKS": "0"}, "PIPELINE_PS_TASKS must be at least 1"),
        ({"PIPELINE_PS_MAX_SHARDS": "-1"}, "PIPELINE_PS_MAX_SHARDS must be 0 or more"),
        (
            {"PIPELINE_CROSSED_EMBEDDING_BUCKETS": "1"},
            "PIPELINE_CROSSED_EMBEDDING_BUCKETS must be 0",
        ),
        (
            {
                "PIPELINE_DISTRIBUTION_STRATEGY": "mirrored",
                "PIPELINE_VERTEX_TRAINING_REPLICAS": "2",
            },
            "needs PIPELINE_DISTRIBUTION_STRATEGY=multi_worker",
        ),
    ],
)
def test_parameter_server_settings_are_validated(tmp_path, environ, message):
    with pytest.raises(ValueError, match=message):
        PipelineSettings.load({**kubeflow_environ(tmp_path), **environ})


def test_blessed_models_go_to_the_vertex_endpoint(vertex):
    config = json.loads(vertex.parameter("Pusher", "custom_config"))
    assert config[VERTEX.ENABLE_VERTEX_KEY] is True
    assert config[VERTEX.SERVING_ARGS_KEY] == {
        "project_id": PROJECT,
        "endpoint_name": "taxi-tips",
        "machine_type": "n1-standard-2",
    }


def test_outputs_go_to_the_gs_root_and_checkout_files_come_from_the_image(vertex):
    assert vertex.job.runtime_config.gcs_output_directory == f"{OUTPUT_DIR}/tfx/{NAME}"
    assert vertex.parameter(EXAMPLE_GEN_ID, "input_base") == "/pipeline/data"
    assert vertex.parameter("ImportSchemaGen", "schema_file") == "/pipeline/schema/schema.pbtxt"
    # No span placeholder: every span in the data location is the window.
    input_config = json.loads(vertex.parameter(EXAMPLE_GEN_ID, "input_config"))
    assert input_config["splits"][0]["pattern"] == "span-*/*.csv"


def test_self_hosted_spec_is_what_its_api_server_takes(self_hosted):
    assert self_hosted.path.endswith(".yaml")
    assert self_hosted.spec.schema_version == "2.1.0"
    # Its backend skips ExampleGen's driver, so nothing would tell a cached ExampleGen that
    # the data changed: no task is cached.
    assert not any(task.caching_options.enable_cache for task in self_hosted.tasks.values())


def test_a_query_reads_bigquery_uncached(tmp_path):
    query = "SELECT * FROM `test-project.taxi.trips`"
    compiled = Compiled(kubeflow_environ(tmp_path, PIPELINE_BIGQUERY_QUERY=query))
    args = list(compiled.container("BigQueryExampleGen").args)
    assert args[args.index("--executor_class_path") + 1] == (
        "tfx.extensions.google_cloud_big_query.example_gen.executor.Executor"
    )
    input_config = json.loads(compiled.parameter("BigQueryExampleGen", "input_config"))
    assert input_config["splits"][0]["pattern"] == query
    # Nothing fingerprints a query's result: a cached ExampleGen would never see new rows.
    assert not any(task.caching_options.enable_cache for task in compiled.tasks.values())


@pytest.mark.parametrize(
    "preset, expected",
    [
        ("direct", []),  # the default: Beam runs in the component's process, with no arguments
        (
            "flink",
            [
                "--runner=FlinkRunner",
                "--flink_master=flink-jobmanager:8081",
                "--flink_submit_uber_jar",
                "--environment_type=DOCKER",
                f"--environment_config={IMAGE}",
                f"--sdk_container_image={IMAGE}",
            ],
        ),
        (
            "spark",
            [
                "--runner=SparkRunner",
                "--spark_rest_url=http://spark-master:6066",
                "--spark_submit_uber_jar",
                "--environment_type=DOCKER",
                f"--environment_config={IMAGE}",
                f"--sdk_container_image={IMAGE}",
            ],
        ),
    ],
)
def test_beam_presets(preset, expected):
    address = {"flink": "flink-jobmanager:8081", "spark": "http://spark-master:6066"}
    settings = PipelineSettings.load(
        {},
        beam_preset=preset,
        container_image=IMAGE,
        beam_cluster_address=address.get(preset, ""),
        extra_beam_args=("--parallelism=4",),
    )
    assert settings.beam_pipeline_args == expected + ["--parallelism=4"]


@pytest.mark.parametrize("orchestrator", ["vertex", "kubeflow"])
def test_without_tuning_it_still_compiles(tmp_path, orchestrator):
    compiled = Compiled(
        kubeflow_environ(tmp_path, PIPELINE_ENABLE_TUNING="0", PIPELINE_ORCHESTRATOR=orchestrator)
    )
    # Vertex resolves the last tuning result (LatestArtifactStrategy); self-hosted, none.
    assert ("latest_hyperparameters_resolver" in compiled.tasks) == (orchestrator == "vertex")


def test_invalid_name_fails_fast(tmp_path):
    with pytest.raises(ValueError, match="PIPELINE_NAME='Taxi_Tips': use lowercase letters"):
        kubeflow_runner.kubeflow_settings(kubeflow_environ(tmp_path, PIPELINE_NAME="Taxi_Tips"))
    with pytest.raises(ValueError, match="PIPELINE_NAME='Taxi_Tips'"):
        validate_kubeflow_name("Taxi_Tips")


def _tfx_cli(tmp_path: Path, *args: str, **environ: str) -> subprocess.CompletedProcess:
    """The TFX CLI with a temp HOME (it keeps pipelines under $HOME/tfx) and the venv first on
    PATH (it runs `pip freeze` to find kfp)."""
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        **kubeflow_environ(tmp_path),
        **environ,
        "HOME": str(tmp_path / "home"),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    return subprocess.run(
        [
            str(bin_dir / "tfx"),
            *args,
            "--engine",
            "vertex",
            "--pipeline_path",
            str(ROOT / "kubeflow_runner.py"),
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.integration  # runs the TFX CLI in a subprocess
@pytest.mark.parametrize(
    "command, written",
    [
        ("compile", "spec.json"),  # where the settings say
        ("create", f"home/tfx/vertex/{NAME}/pipeline.json"),  # the CLI's own registry
    ],
)
def test_tfx_cli(tmp_path, command, written):
    result = _tfx_cli(
        tmp_path, "pipeline", command, PIPELINE_KUBEFLOW_SPEC_PATH=str(tmp_path / "spec.json")
    )
    assert result.returncode == 0, result.stderr[-3000:]
    job = json_format.Parse((tmp_path / written).read_text(), pipeline_spec_pb2.PipelineJob())
    assert job.runtime_config.gcs_output_directory == f"{OUTPUT_DIR}/tfx/{NAME}"


@pytest.mark.integration
def test_tfx_cli_stops_on_an_invalid_name(tmp_path):
    result = _tfx_cli(tmp_path, "pipeline", "compile", PIPELINE_NAME="Taxi_Tips")
    assert result.returncode != 0
    assert "PIPELINE_NAME='Taxi_Tips': use lowercase letters" in result.stderr
    assert not (tmp_path / "outputs").exists()
