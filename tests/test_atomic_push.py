"""The Pusher's push is atomic: TFX's Pusher executor run for real on a SavedModel, with every
file copy it makes observed; a version folder in the base path is never seen incomplete, and
an existing version is never written into."""

from __future__ import annotations

import json
import os
import types
from pathlib import Path

import pytest
import tensorflow as tf
from tfx.components.pusher import executor as tfx_pusher_executor
from tfx.dsl.io import fileio
from tfx.proto import pusher_pb2
from tfx.types import standard_artifacts
from tfx.utils import proto_utils

from pipeline import atomic_push
from pipeline.names import PUSHER_ID


class _Model(tf.Module):
    def __init__(self):
        self.w = tf.Variable(tf.ones([64, 64]))

    @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32)])
    def predict(self, x):
        return {"y": tf.matmul(x, self.w)}


def _files(folder: Path) -> dict[str, int]:
    """Relative path -> size of every file under `folder`."""
    return {
        str(path.relative_to(folder)): path.stat().st_size
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A Trainer's Model artifact folder: <uri>/Format-Serving/ holds the SavedModel."""
    uri = tmp_path_factory.mktemp("model")
    module = _Model()
    tf.saved_model.save(
        module, str(uri / "Format-Serving"), signatures={"serving_default": module.predict}
    )
    (uri / "Format-Serving" / "assets" / "vocab.txt").write_text("a\nb\n")
    return uri


def _push(executor_class, trained: Path, base: Path, tmp_path: Path, blessed: int = 1):
    model = standard_artifacts.Model()
    model.uri = str(trained)
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = str(tmp_path / "blessing")
    blessing.set_int_custom_property("blessed", blessed)
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(tmp_path / "pushed_model")
    destination = pusher_pb2.PushDestination(
        filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=str(base))
    )
    executor_class().Do(
        {"model": [model], "model_blessing": [blessing]},
        {"pushed_model": [pushed]},
        {"push_destination": proto_utils.proto_to_json(destination)},
    )
    return pushed


@pytest.fixture
def observed_copies(monkeypatch):
    """Before every file TFX copies (the Pusher copies with tfx.dsl.io.fileio.copy): what the
    base path's version folders hold at that moment."""

    def observe(base: Path) -> list[dict[str, dict[str, int]]]:
        seen = []
        real_copy = fileio.copy

        def copy(src, dst, overwrite=False):
            seen.append(
                {
                    name: _files(base / name)
                    for name in (os.listdir(base) if base.is_dir() else [])
                    if name.isdigit()
                }
            )
            return real_copy(src, dst, overwrite)

        monkeypatch.setattr(fileio, "copy", copy)
        return seen

    return observe


def test_a_pushed_version_appears_with_all_its_files_at_once(trained, tmp_path, observed_copies):
    base = tmp_path / "serving_model"
    seen = observed_copies(base)
    pushed = _push(atomic_push.AtomicPushExecutor, trained, base, tmp_path)
    version = pushed.get_string_custom_property("pushed_version")
    assert pushed.get_int_custom_property("pushed") == 1
    assert pushed.get_string_custom_property("pushed_destination") == str(base / version)
    assert sorted(os.listdir(base)) == [version]  # the staging folder is gone
    complete = _files(trained / "Format-Serving")
    assert _files(base / version) == complete
    assert _files(Path(pushed.uri)) == complete  # TFX's archive copy, as before
    # Every file copy of the push (the serving copy's and TFX's archive copy's) was observed:
    # at none of them was a version folder visible; it appeared, complete, after the last.
    assert len(seen) == 2 * len(complete)
    assert seen == [{}] * len(seen)
    tf.saved_model.load(str(base / version))


def test_tfx_pushers_own_copy_is_visible_half_way(trained, tmp_path, observed_copies):
    """The observation above would catch a partial version: TFX's stock executor, copying in
    place, shows the version folder with only some of its files."""
    base = tmp_path / "serving_model"
    seen = observed_copies(base)
    _push(tfx_pusher_executor.Executor, trained, base, tmp_path)
    complete = _files(trained / "Format-Serving")
    partial = [f for snapshot in seen for f in snapshot.values() if f != complete]
    assert partial and all("saved_model.pb" not in files for files in partial)


def test_an_existing_version_is_never_written_into(trained, tmp_path, monkeypatch):
    """The version number the push picks exists already: that folder is left exactly as it
    was (TFX's Pusher skips it too) and the staged copy is discarded."""
    base = tmp_path / "serving_model"
    (base / "1234").mkdir(parents=True)
    (base / "1234" / "keep.txt").write_text("an existing version")
    # TFX's Pusher numbers a version by the clock: make it pick 1234.
    monkeypatch.setattr(tfx_pusher_executor, "time", types.SimpleNamespace(time=lambda: 1234.5))
    pushed = _push(atomic_push.AtomicPushExecutor, trained, base, tmp_path)
    assert pushed.get_string_custom_property("pushed_version") == "1234"
    assert pushed.get_string_custom_property("pushed_destination") == str(base / "1234")
    assert sorted(os.listdir(base)) == ["1234"]
    assert _files(base / "1234") == {"keep.txt": len("an existing version")}


def test_a_model_not_blessed_is_not_pushed(trained, tmp_path):
    base = tmp_path / "serving_model"
    pushed = _push(atomic_push.AtomicPushExecutor, trained, base, tmp_path, blessed=0)
    assert pushed.get_int_custom_property("pushed") == 0
    assert os.listdir(base) == []


def test_publish_never_replaces_a_version(tmp_path):
    staged, final = tmp_path / "staged", tmp_path / "7"
    staged.mkdir()
    (staged / "saved_model.pb").write_text("new")
    final.mkdir()
    (final / "saved_model.pb").write_text("old")
    assert atomic_push.publish(str(staged), str(final)) is False
    assert (final / "saved_model.pb").read_text() == "old"
    (final / "saved_model.pb").unlink()
    final.rmdir()
    assert atomic_push.publish(str(staged), str(final)) is True
    assert (final / "saved_model.pb").read_text() == "new"
    assert not staged.exists()


def test_staging_folders_of_dead_pushes_are_found_and_live_ones_kept(tmp_path):
    host = atomic_push._host()  # the name the executor gives
    dead, alive = 2**22 + 12345, os.getpid()
    for pid in (dead, alive):
        (tmp_path / f".push-{host}-{pid}-abc").mkdir()
    (tmp_path / "17").mkdir()
    (tmp_path / ".push-otherhost-1-abc").mkdir()  # another machine's: not ours to judge
    assert atomic_push.stale_staging_dirs(str(tmp_path)) == [
        str(tmp_path / f".push-{host}-{dead}-abc")
    ]


@pytest.mark.parametrize(
    "path, atomic",
    [("/srv/models/taxi", True), ("relative/models", True), ("gs://bucket/models", False)],
)
def test_where_a_folder_rename_is_atomic(path, atomic):
    assert atomic_push.renames_atomically(path) is atomic


def test_the_pipelines_pusher_is_tfx_pusher_with_the_atomic_executor(tmp_path):
    from pipeline.pipeline import create_pipeline
    from pipeline.settings import PipelineSettings

    settings = PipelineSettings.load({}, output_dir=str(tmp_path))
    (pusher,) = [c for c in create_pipeline(settings).components if c.id == PUSHER_ID]
    assert type(pusher).__module__ + "." + type(pusher).__name__ == (
        "tfx.components.pusher.component.Pusher"
    )
    assert pusher.executor_spec.executor_class is atomic_push.AtomicPushExecutor
    assert set(pusher.outputs) == {"pushed_model"}
    assert json.loads(pusher.exec_properties["push_destination"])["filesystem"] == {
        "base_directory": settings.serving_model_dir
    }
