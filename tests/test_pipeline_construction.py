"""create_pipeline: which components run, and how they are wired."""

import json

import pytest

from pipeline.names import PREVIOUS_SPAN_RESOLVER_ID, WINDOW_EXAMPLES_ID
from pipeline.pipeline import EXAMPLE_GEN_ID, SPAN_WINDOW_RESOLVER_ID, create_pipeline
from pipeline.settings import PipelineSettings


@pytest.fixture
def settings(tmp_path):
    return PipelineSettings.load({}, output_dir=str(tmp_path / "out"))


def _by_id(pipeline):
    return {component.id: component for component in pipeline.components}


def _producer(component, input_key):
    return component.inputs[input_key].producer_component_id


def test_all_components_are_on_by_default(settings):
    assert set(_by_id(create_pipeline(settings))) == {
        EXAMPLE_GEN_ID,
        "StatisticsGen",
        "ImportSchemaGen",
        "ExampleValidator",
        "AnomaliesGate",
        SPAN_WINDOW_RESOLVER_ID,
        WINDOW_EXAMPLES_ID,
        "Transform",
        "Tuner",
        "Trainer",
        "latest_blessed_model_resolver",
        "Evaluator",
        "Pusher",
        "LeakageCheck",
        # continuous training (pipeline/resolvers.py, pipeline/components/)
        "current_model_resolver",
        "ProgressiveValidation",
        PREVIOUS_SPAN_RESOLVER_ID,
        "DriftCheck",
    }


def test_drift_check_compares_the_new_span_with_the_previous_span(settings):
    c = _by_id(create_pipeline(settings))
    assert _producer(c["DriftCheck"], "statistics") == "StatisticsGen"
    assert _producer(c["DriftCheck"], "examples") == EXAMPLE_GEN_ID
    # Not the whole window, which holds `examples` too (tests/test_resolvers.py).
    assert _producer(c["DriftCheck"], "previous_span") == PREVIOUS_SPAN_RESOLVER_ID
    assert "window" not in c["DriftCheck"].inputs
    assert c["AnomaliesGate"] in c["DriftCheck"].upstream_nodes
    assert c["DriftCheck"] in c["Transform"].upstream_nodes


# Nodes with two input channels of one type, and what keeps the two apart. AirflowDagRunner
# fails a node given one artifact in two channels (tests/test_resolvers.py); a resolver's
# outputs are recorded the same way.
SAME_TYPED_INPUTS = {
    # PreviousSpanStrategy: only spans older than the new one.
    "DriftCheck": {"examples", "previous_span"},
    # LatestBlessedBaselineStrategy: never the candidate.
    "Evaluator": {"model", "baseline_model"},
    "latest_blessed_model_resolver": {"model", "candidate"},
}


@pytest.mark.parametrize("orchestrator", ["local", "airflow"])
def test_no_node_takes_one_type_in_two_channels_unless_a_strategy_keeps_them_apart(
    settings, orchestrator
):
    pipeline = create_pipeline(settings.with_overrides(orchestrator=orchestrator), span=6)
    same_typed = {}
    for node in pipeline.components:
        by_type = {}
        for key, channel in node.inputs.items():
            by_type.setdefault(channel.type_name, set()).add(key)
        keys = set().union(*(k for k in by_type.values() if len(k) > 1))
        if keys:
            same_typed[node.id] = keys
    assert same_typed == SAME_TYPED_INPUTS


def test_leakage_check_runs_before_transform_and_can_be_switched_off(settings):
    c = _by_id(create_pipeline(settings))
    assert _producer(c["LeakageCheck"], "statistics") == "StatisticsGen"
    assert _producer(c["LeakageCheck"], "examples") == EXAMPLE_GEN_ID
    assert c["LeakageCheck"] in c["Transform"].upstream_nodes
    assert c["LeakageCheck"].exec_properties["fail_on_leak"] == 0
    off = _by_id(
        create_pipeline(
            PipelineSettings.load(
                {"PIPELINE_LEAKAGE_CHECK": "0"}, output_dir=settings.data.output_dir
            )
        )
    )
    assert "LeakageCheck" not in off


def test_wiring(settings):
    c = _by_id(create_pipeline(settings))
    assert _producer(c["StatisticsGen"], "examples") == EXAMPLE_GEN_ID
    assert _producer(c["StatisticsGen"], "schema") == "ImportSchemaGen"
    assert _producer(c["ExampleValidator"], "schema") == "ImportSchemaGen"
    assert _producer(c["AnomaliesGate"], "anomalies") == "ExampleValidator"
    # Transform runs only after the gate passed, on the window of spans gathered into one
    # artifact.
    assert c["AnomaliesGate"] in c["Transform"].upstream_nodes
    assert _producer(c["Transform"], "examples") == WINDOW_EXAMPLES_ID
    assert _producer(c[WINDOW_EXAMPLES_ID], "window") == SPAN_WINDOW_RESOLVER_ID
    assert c[EXAMPLE_GEN_ID] in c[SPAN_WINDOW_RESOLVER_ID].upstream_nodes
    for consumer in ("Tuner", "Trainer"):
        assert _producer(c[consumer], "examples") == "Transform"
        assert _producer(c[consumer], "transform_graph") == "Transform"
    assert _producer(c["Trainer"], "hyperparameters") == "Tuner"
    # The Evaluator judges the trained model on this run's (newest) span against the baseline.
    assert _producer(c["Evaluator"], "examples") == EXAMPLE_GEN_ID
    assert _producer(c["Evaluator"], "model") == "Trainer"
    assert _producer(c["Evaluator"], "baseline_model") == "latest_blessed_model_resolver"
    # The baseline is resolved after training, so it can leave out the candidate itself.
    assert c["Trainer"] in c["latest_blessed_model_resolver"].upstream_nodes
    assert _producer(c["Pusher"], "model_blessing") == "Evaluator"
    assert _producer(c["Pusher"], "model") == "Trainer"


def test_without_tuning_the_trainer_takes_the_last_tuning_result(settings):
    c = _by_id(
        create_pipeline(
            PipelineSettings.load(
                {"PIPELINE_ENABLE_TUNING": "false"}, output_dir=settings.data.output_dir
            )
        )
    )
    assert "Tuner" not in c
    assert _producer(c["Trainer"], "hyperparameters") == "latest_hyperparameters_resolver"


def test_schema_is_inferred_when_asked(settings):
    c = _by_id(
        create_pipeline(
            PipelineSettings.load(
                {"PIPELINE_INFER_SCHEMA": "1"}, output_dir=settings.data.output_dir
            )
        )
    )
    assert "ImportSchemaGen" not in c
    assert _producer(c["ExampleValidator"], "schema") == "SchemaGen"


def test_ingest_only_pipeline_reads_exactly_one_span_and_validates_it(settings):
    c = _by_id(create_pipeline(settings, ingest_only_span=3))
    assert set(c) == {
        EXAMPLE_GEN_ID,
        "StatisticsGen",
        "ImportSchemaGen",
        "ExampleValidator",
        "AnomaliesGate",
    }
    example_gen = c[EXAMPLE_GEN_ID]
    static_range = json.loads(example_gen.exec_properties["range_config"])["static_range"]
    assert static_range == {"start_span_number": 3, "end_span_number": 3}


def test_settings_come_from_the_environment(tmp_path):
    settings = PipelineSettings.load(
        {
            "PIPELINE_OUTPUT_DIR": str(tmp_path),
            "PIPELINE_TRAIN_STEPS": "7",
            "PIPELINE_DISTRIBUTION_STRATEGY": "mirrored",
        }
    )
    assert (
        settings.training.train_steps == 7 and settings.training.distribution_strategy == "mirrored"
    )
    assert settings.metadata_path.startswith(str(tmp_path))
    assert settings.serving_model_dir.startswith(str(tmp_path))


@pytest.mark.parametrize(
    "variable, value, message",
    [
        ("PIPELINE_TRAIN_STEPS", "many", "PIPELINE_TRAIN_STEPS='many': expected int"),
        (
            "PIPELINE_DISTRIBUTION_STRATEGY",
            "tpu",
            "expected one of default, mirrored, multi_worker",
        ),
        ("PIPELINE_ENABLE_TUNING", "perhaps", "PIPELINE_ENABLE_TUNING='perhaps': expected bool"),
    ],
)
def test_bad_settings_name_the_variable(variable, value, message):
    with pytest.raises(ValueError, match=message):
        PipelineSettings.load({variable: value})


def test_beam_runs_in_process_on_small_data_and_on_every_core_on_large(settings):
    multi_processing = ["--direct_running_mode=multi_processing", "--direct_num_workers=0"]
    # The shipped spans (about 2 MB) are far below the default threshold: in-process, and no
    # Beam argument at all (any would make TFX build an sdist of itself in every component).
    assert create_pipeline(settings).beam_pipeline_args == []

    def with_env(**env):
        return PipelineSettings.load(env, output_dir=settings.data.output_dir)

    # The same data over a threshold below its size: one worker process per core.
    low = with_env(PIPELINE_BEAM_MULTIPROCESSING_MIN_MB="1")
    assert create_pipeline(low).beam_pipeline_args == multi_processing
    # An explicit setting wins either way.
    assert (
        create_pipeline(
            with_env(PIPELINE_BEAM_MULTIPROCESSING_MIN_MB="1", PIPELINE_BEAM_DIRECT_NUM_WORKERS="1")
        ).beam_pipeline_args
        == []
    )
    assert (
        create_pipeline(with_env(PIPELINE_BEAM_DIRECT_NUM_WORKERS="0")).beam_pipeline_args
        == multi_processing
    )
    with pytest.raises(ValueError, match="PIPELINE_BEAM_DIRECT_NUM_WORKERS='two': expected auto"):
        with_env(PIPELINE_BEAM_DIRECT_NUM_WORKERS="two")


def test_transform_traces_one_tf1_graph_unless_switched_off(settings):
    assert _by_id(create_pipeline(settings))["Transform"].exec_properties["force_tf_compat_v1"] == 1
    tf2 = _by_id(
        create_pipeline(
            PipelineSettings.load(
                {"PIPELINE_TRANSFORM_TF1_GRAPH": "0"}, output_dir=settings.data.output_dir
            )
        )
    )
    assert tf2["Transform"].exec_properties["force_tf_compat_v1"] == 0
