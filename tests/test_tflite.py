"""TF Lite export (pipeline/components/tflite_exporter.py) of the shared finished run's pushed
model: quantized
models rank examples as the SavedModel does and are much smaller; the pipeline step writes
the file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from scipy.stats import rankdata
from tfx import v1 as tfx

from models import features, model
from pipeline.components import tflite_exporter as tflite
from pipeline.names import TFLITE_EXPORTER_ID
from pipeline.pipeline import EXAMPLE_GEN_ID, create_pipeline
from pipeline.settings import PipelineSettings
from tests.pipeline_run import read_records

# Runs a pipeline, a server, a Beam job or a subprocess: `make test-fast` leaves it out.
pytestmark = pytest.mark.integration

MAX_EXAMPLES = 500
MAX_AUC_GAP = 0.01
MIN_SIZE_RATIO = 3.0


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Exact ROC AUC (Mann-Whitney; ties count half, as int8 outputs tie often)."""
    ranks = rankdata(scores)
    positives = labels == 1
    n_pos, n_neg = positives.sum(), (~positives).sum()
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def directory_bytes(path: str) -> int:
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )


@pytest.fixture(scope="module")
def exported(finished_run):
    """The pushed model, the Transform outputs, and a few hundred raw examples with the
    SavedModel's predictions, transformed features and labels."""
    pushed = os.path.join(
        finished_run.settings.serving_model_dir, finished_run.pushed_versions()[-1]
    )
    raw = []
    for artifact in finished_run.outputs(EXAMPLE_GEN_ID, "Examples"):
        for split in ("eval", "train"):
            raw += read_records(os.path.join(artifact.uri, f"Split-{split}", "*.gz"))
    raw = tf.constant(raw[:MAX_EXAMPLES])
    loaded = tf.saved_model.load(pushed)
    transformed = loaded.signatures[model.TRANSFORM_SIGNATURE](examples=raw)
    return {
        "pushed": pushed,
        "train_patterns": [
            os.path.join(a.uri, "Split-train", "*")
            for a in finished_run.outputs("Transform", "Examples")
        ],
        "inputs": {k: transformed[k].numpy() for k in model.model_input_keys()},
        "labels": transformed[features.LABEL_KEY].numpy().ravel(),
        "saved_model_scores": loaded.signatures["serving_default"](examples=raw)[
            model.PREDICTION_KEY
        ]
        .numpy()
        .ravel(),
    }


def tflite_scores(flatbuffer: bytes, inputs: dict[str, np.ndarray]) -> np.ndarray:
    runner = tf.lite.Interpreter(model_content=flatbuffer).get_signature_runner()
    return runner(**inputs)[model.PREDICTION_KEY].ravel()


@pytest.mark.parametrize("quantization", tflite.QUANTIZATIONS)
def test_quantized_model_keeps_auc_and_is_smaller(exported, quantization):
    flatbuffer = tflite.convert(exported["pushed"], quantization, exported["train_patterns"])
    labels = exported["labels"]
    assert len(labels) >= 300 and 0 < labels.mean() < 1
    saved_auc = auc(labels, exported["saved_model_scores"])
    lite_auc = auc(labels, tflite_scores(flatbuffer, exported["inputs"]))
    assert abs(lite_auc - saved_auc) <= MAX_AUC_GAP, (quantization, lite_auc, saved_auc)
    saved_bytes = directory_bytes(exported["pushed"])
    assert len(flatbuffer) * MIN_SIZE_RATIO <= saved_bytes, (len(flatbuffer), saved_bytes)
    print(
        f"\n{quantization}: TF Lite AUC {lite_auc:.4f} vs SavedModel {saved_auc:.4f} on "
        f"{len(labels)} examples; {len(flatbuffer):,} bytes vs {saved_bytes:,} bytes"
    )


def test_bad_quantization_is_named():
    with pytest.raises(ValueError, match="PIPELINE_TFLITE_QUANTIZATION='float16'"):
        PipelineSettings.load({"PIPELINE_TFLITE_QUANTIZATION": "float16"})


def test_pipeline_gets_the_step_only_when_asked():
    def ids(settings):
        return [c.id for c in create_pipeline(settings).components]

    assert TFLITE_EXPORTER_ID not in ids(PipelineSettings.load({}))
    assert ids(PipelineSettings.load({}, tflite_export=True))[-1] == TFLITE_EXPORTER_ID


def test_pipeline_step_exports_the_pushed_model(finished_run, exported, tmp_path: Path):
    """The component itself, run by TFX's LocalDagRunner on the finished run's pushed model
    and transformed examples (imported, read-only)."""
    pushed_model = tfx.dsl.Importer(
        source_uri=exported["pushed"],
        artifact_type=tfx.types.standard_artifacts.PushedModel,
        custom_properties={"pushed": 1},
    ).with_id("pushed_model")
    (transformed,) = finished_run.outputs("Transform", "Examples")[-1:]
    examples = tfx.dsl.Importer(
        source_uri=transformed.uri, artifact_type=tfx.types.standard_artifacts.Examples
    ).with_id("transformed_examples")
    export = tflite.TFLiteExporter(
        pushed_model=pushed_model.outputs["result"],
        transformed_examples=examples.outputs["result"],
        quantization="int8",
        representative_examples=50,
    ).with_id(TFLITE_EXPORTER_ID)
    tfx.orchestration.LocalDagRunner().run(
        tfx.dsl.Pipeline(
            pipeline_name="tflite-step",
            pipeline_root=str(tmp_path / "root"),
            metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
                str(tmp_path / "metadata.db")
            ),
            components=[pushed_model, examples, export],
        )
    )

    (written,) = (tmp_path / "root" / TFLITE_EXPORTER_ID).glob(
        f"tflite_model/*/{tflite.MODEL_FILE}"
    )
    scores = tflite_scores(written.read_bytes(), exported["inputs"])
    assert (
        abs(
            auc(exported["labels"], scores)
            - auc(exported["labels"], exported["saved_model_scores"])
        )
        <= MAX_AUC_GAP
    )
