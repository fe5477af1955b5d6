"""WindowExamples: the window's span artifacts gathered into one artifact for Transform."""

import json
import os

import pytest
from tfx import v1 as tfx
from tfx.components.util import examples_utils
from tfx.types import artifact_utils

from pipeline.components.window_examples import merge_window


def _span_artifact(root, span: int, splits=("train", "eval"), artifact_id: int = 0):
    artifact = tfx.types.standard_artifacts.Examples()
    artifact.uri = str(root / f"span-{span}")
    artifact.id = artifact_id or span
    artifact.split_names = artifact_utils.encode_split_names(list(splits))
    artifact.set_int_custom_property("span", span)
    examples_utils.set_payload_format(artifact, examples_utils.get_payload_format(artifact))
    for split in splits:
        os.makedirs(os.path.join(artifact.uri, f"Split-{split}"))
        with open(
            os.path.join(artifact.uri, f"Split-{split}", "data_tfrecord-00000-of-00001.gz"), "w"
        ) as f:
            f.write(f"{split} of span {span}")
    return artifact


def _merged(root):
    merged = tfx.types.standard_artifacts.Examples()
    merged.uri = str(root / "merged")
    return merged


def test_every_split_file_of_every_span_is_linked_under_a_span_prefix(tmp_path):
    window = [_span_artifact(tmp_path, span) for span in (3, 1, 2)]  # any order
    merged = _merged(tmp_path)
    assert merge_window(window, merged) == [1, 2, 3]
    assert artifact_utils.decode_split_names(merged.split_names) == ["train", "eval"]
    assert merged.get_int_custom_property("span") == 3
    assert json.loads(merged.get_string_custom_property("spans")) == [1, 2, 3]
    for split in ("train", "eval"):
        directory = os.path.join(merged.uri, f"Split-{split}")
        names = sorted(os.listdir(directory))
        assert names == [f"span-{s}-data_tfrecord-00000-of-00001.gz" for s in (1, 2, 3)]
        with open(os.path.join(directory, names[1])) as f:
            assert f.read() == f"{split} of span 2"
        # Hard links: no copy of the data.
        source = os.path.join(tmp_path, "span-2", f"Split-{split}", names[1][len("span-2-") :])
        assert os.stat(os.path.join(directory, names[1])).st_ino == os.stat(source).st_ino


def test_a_span_without_a_split_is_named(tmp_path):
    window = [_span_artifact(tmp_path, 1), _span_artifact(tmp_path, 2, splits=("train",))]
    with pytest.raises(ValueError, match=r"span 2 \(.*span-2\) lacks the split\(s\) \['eval'\]"):
        merge_window(window, _merged(tmp_path))


def test_an_empty_window_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="training window is empty"):
        merge_window([], _merged(tmp_path))
