"""Which spans exist in the data location, and which ExampleGen has already ingested."""
from __future__ import annotations

import os
import re

import ml_metadata as mlmd
import tensorflow as tf
from tfx import v1 as tfx

from pipeline import configs


def available_spans(settings: configs.Settings) -> list[int]:
    """Span numbers whose input files exist, ascending."""
    glob = os.path.join(settings.data_dir, settings.span_pattern.replace("{SPAN}", "*"))
    regex = re.compile(re.escape(os.path.join(settings.data_dir, settings.span_pattern))
                       .replace(re.escape("{SPAN}"), r"(\d+)").replace(r"\*", "[^/]*") + "$")
    spans = {int(m.group(1)) for path in tf.io.gfile.glob(glob) if (m := regex.match(path))}
    return sorted(spans)


def ingested_spans(settings: configs.Settings, example_gen_id: str) -> set[int]:
    """Spans with an Examples artifact from this pipeline's ExampleGen in the local MLMD."""
    if not os.path.exists(settings.metadata_path):
        return set()
    store = mlmd.MetadataStore(
        tfx.orchestration.metadata.sqlite_metadata_connection_config(settings.metadata_path))
    context = store.get_context_by_type_and_name(
        "node", f"{settings.pipeline_name}.{example_gen_id}")
    if context is None:
        return set()
    return {_span(artifact) for artifact in store.get_artifacts_by_context(context.id)
            if artifact.type == "Examples" and artifact.state == mlmd.proto.Artifact.LIVE}


def _span(artifact: mlmd.proto.Artifact) -> int:
    # TFX writes `span` as a custom property, older releases as a property.
    for properties in (artifact.custom_properties, artifact.properties):
        if "span" in properties:
            return properties["span"].int_value
    raise ValueError(f"Examples artifact {artifact.id} ({artifact.uri}) has no span")
