"""The model store's version policy (serving/model_store.py) as TF Serving's, on real SavedModel
folders: a version removed from disk is unloaded; a restart with broken newest versions
serves the newest version that loads; the status lists only versions on disk; an idle store
loads nothing again; specific/all policies and labels from a TF Serving model config file."""

from __future__ import annotations

import shutil

import pytest
import tensorflow as tf

from serving.model_config import ModelConfigError, VersionPolicy, read_model_config
from serving.model_store import ModelStore
from serving.tensors import RequestError


class _Model(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(self, examples):
        return {"probabilities": tf.zeros([tf.shape(examples)[0], 1])}


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("model") / "saved")
    module = _Model()
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    return path


@pytest.fixture
def base(tmp_path, saved):
    def add(version: int, broken: bool = False) -> None:
        target = tmp_path / "base" / str(version)
        shutil.copytree(saved, target)
        if broken:
            (target / "saved_model.pb").write_bytes(b"not a SavedModel")

    add.path = str(tmp_path / "base")
    return add


def _states(store: ModelStore) -> dict[int, str]:
    return {int(s["version"]): s["state"] for s in store.status()}


def _settle(store: ModelStore, polls: int = 3) -> None:
    for _ in range(polls):
        store.refresh()


def test_removed_newest_is_unloaded_and_an_idle_store_loads_nothing(base):
    for version in (1, 2, 3):
        base(version)
    store = ModelStore(base.path, VersionPolicy("latest", num_versions=2))
    _settle(store)
    assert sorted(store.versions) == [2, 3] and store.get().version == 3
    loads = store.loads
    _settle(store, 5)
    assert store.loads == loads  # idle: no load, no drop

    shutil.rmtree(f"{base.path}/3")
    _settle(store)  # the version that falls within latest 2 again loads once its files settle
    assert sorted(store.versions) == [1, 2] and store.get().version == 2
    assert 3 not in _states(store)  # only versions on disk
    loads = store.loads
    _settle(store, 5)
    assert store.loads == loads and sorted(store.versions) == [1, 2]


def test_restart_with_broken_newest_two_serves_the_newest_that_loads(base):
    base(1)
    base(2)
    base(3, broken=True)
    base(4, broken=True)
    store = ModelStore(base.path, VersionPolicy("latest", num_versions=1))
    store.refresh()  # one poll at startup: serving at once
    assert sorted(store.versions) == [2]
    assert _states(store) == {4: "END", 3: "END", 2: "AVAILABLE"}
    assert str(base.path) not in str(store.status())  # no absolute paths in messages
    loads = store.loads
    _settle(store, 5)
    assert store.loads == loads  # failed versions are not retried while unchanged

    shutil.rmtree(f"{base.path}/4")
    store.refresh()
    assert _states(store) == {3: "END", 2: "AVAILABLE"}

    # A fixed version 3 (new files) is retried, loaded and replaces 2.
    shutil.rmtree(f"{base.path}/3")
    base(3)
    _settle(store)
    assert sorted(store.versions) == [3] and _states(store) == {3: "AVAILABLE"}


def test_all_removed_unloads_everything(base):
    base(1)
    store = ModelStore(base.path, VersionPolicy("latest", num_versions=2))
    store.refresh()
    shutil.rmtree(f"{base.path}/1")
    store.refresh()
    assert store.versions == {} and store.status() == [] and store.get() is None


def test_specific_and_all_policies(base):
    for version in (1, 2, 3):
        base(version)
    store = ModelStore(base.path, VersionPolicy("specific", versions=frozenset({1, 3, 9})))
    _settle(store)
    assert sorted(store.versions) == [1, 3]
    store = ModelStore(base.path, VersionPolicy("all"))
    _settle(store)
    assert sorted(store.versions) == [1, 2, 3]


CONFIG = """
model_config_list {
  config {
    name: "m"
    base_path: "/elsewhere"
    model_platform: "tensorflow"
    model_version_policy { latest { num_versions: 2 } }
    version_labels { key: "stable" value: 1 }
    version_labels { key: "canary" value: 2 }
  }
  config { name: "other" base_path: "/x" }
}
"""


def test_labels_and_policy_from_a_model_config_file(base, tmp_path):
    for version in (1, 2, 3):
        base(version)
    config = tmp_path / "models.config"
    config.write_text(CONFIG)
    store = ModelStore(base.path, config_file=str(config), model_name="m")
    _settle(store)
    assert store.policy == VersionPolicy("latest", num_versions=2)
    assert sorted(store.versions) == [2, 3]
    assert store.label("canary").version == 2
    assert store.label("stable") is None  # defined, but version 1 is not loaded
    assert store.label_version("stable") == 1
    for label in ("latest", "previous", "Stable"):
        with pytest.raises(RequestError, match=f"^Unrecognized servable version label: {label}$"):
            store.label(label)

    # An edit is picked up at the next poll; a broken edit keeps the last good config.
    config.write_text(
        CONFIG.replace("value: 1 }", "value: 3 }").replace("num_versions: 2", "num_versions: 3")
    )
    _settle(store)
    assert store.label("stable").version == 3 and sorted(store.versions) == [1, 2, 3]
    config.write_text("model_config_list { config { name: ")
    _settle(store)
    assert store.label("stable").version == 3


def test_model_config_errors_name_the_problem(tmp_path):
    config = tmp_path / "models.config"
    config.write_text(CONFIG)
    with pytest.raises(
        ModelConfigError, match=r"no config for model 'taxi' \(it names: m, other\)"
    ):
        read_model_config(str(config), "taxi")
    assert read_model_config(str(config), "other").policy == VersionPolicy("latest", 1)
    config.write_text("model_config_list { config { name: 'm' nonsense: 1 } }")
    with pytest.raises(ModelConfigError, match="not a ModelServerConfig text proto"):
        read_model_config(str(config), "m")
    with pytest.raises(ModelConfigError, match="No such file"):
        read_model_config(str(tmp_path / "missing.config"), "m")
