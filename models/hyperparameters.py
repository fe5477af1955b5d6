"""The model's hyperparameters: the tuner's search space, whose defaults train when no
tuning result exists."""

from __future__ import annotations

from typing import Optional

import keras_tuner


def search_space(hp: Optional[keras_tuner.HyperParameters] = None) -> keras_tuner.HyperParameters:
    hp = hp or keras_tuner.HyperParameters()
    hp.Choice("learning_rate", [3e-4, 1e-3, 3e-3], default=1e-3)
    hp.Int("num_layers", 1, 3, default=1)
    hp.Choice("hidden_units", [32, 64, 128], default=64)
    hp.Choice("embedding_dim", [2, 4, 8], default=4)
    hp.Choice("dropout", [0.0, 0.1, 0.3], default=0.3)
    return hp


def from_config(config: Optional[dict]) -> keras_tuner.HyperParameters:
    """Tuned values (a HyperParameters config from the Tuner) over the defaults."""
    hp = search_space()
    if config:
        tuned = keras_tuner.HyperParameters.from_config(config)
        for name, value in tuned.values.items():
            if name in hp.values:
                hp.values[name] = value
    return hp
