"""Which spans exist in the data location, and which ExampleGen has already ingested."""
from __future__ import annotations

import os
import re

import tensorflow as tf

from pipeline import configs, metadata


def available_spans(settings: configs.Settings) -> list[int]:
    """Span numbers whose input files exist, ascending."""
    glob = os.path.join(settings.data_dir, settings.span_pattern.replace("{SPAN}", "*"))
    regex = re.compile(re.escape(os.path.join(settings.data_dir, settings.span_pattern))
                       .replace(re.escape("{SPAN}"), r"(\d+)").replace(r"\*", "[^/]*") + "$")
    spans = {int(m.group(1)) for path in tf.io.gfile.glob(glob) if (m := regex.match(path))}
    return sorted(spans)


def earlier_spans_to_ingest(settings: configs.Settings, ingested: set[int]) -> list[int]:
    """The older spans of the training window (all but the newest, which a full run ingests)
    that ExampleGen has not ingested yet: what a new pipeline, or a grown window, catches up."""
    window = available_spans(settings)[-settings.train_window_spans:-1]
    return [span for span in window if span not in ingested]


def ingested_spans(settings: configs.Settings, example_gen_id: str) -> set[int]:
    """Spans with an Examples artifact from this pipeline's ExampleGen in the local MLMD."""
    store = metadata.open_store(settings)
    if store is None:
        return set()
    return {metadata.span_of(artifact) for artifact in metadata.node_outputs(
        store, settings.pipeline_name, example_gen_id, "Examples")}
