"""The TFX Tuner entry point: a Bayesian search over `hyperparameters.search_space`."""

from __future__ import annotations

from typing import Optional

import keras_tuner
import tensorflow_transform as tft
import tf_keras as keras

from models import hyperparameters, model
from pipeline.names import RAW_EXAMPLES_CONFIG
from pipeline.tfx_api import tfx

OBJECTIVE = keras_tuner.Objective("val_auc", direction="max")


class DefaultsFirstOracle(keras_tuner.oracles.BayesianOptimizationOracle):
    """Bayesian optimisation whose first trial trains the search space's defaults.

    keras-tuner's Bayesian oracle draws its first 3 x (number of hyperparameters) trials at
    random, so a small budget is a random search that may never try the defaults, which were
    chosen by experiment. Tried first, they are the bar every other trial must beat: the
    Tuner never hands the Trainer hyperparameters that scored below them on validation."""

    def populate_space(self, trial_id: str) -> dict:
        if not self.trials:
            return {
                "status": keras_tuner.engine.trial.TrialStatus.RUNNING,
                "values": dict(self.hyperparameters.values),
            }
        return super().populate_space(trial_id)


class KerasTwoTuner(keras_tuner.engine.base_tuner.BaseTuner):
    """Runs each trial with the template's own tf_keras training.

    keras-tuner 1.4 drives Keras 3 whenever it is installed (TF 2.16 installs it), and its
    Keras-3 callbacks cannot drive a tf_keras model; so trials train here and report the
    objective, and keras-tuner only proposes and ranks hyperparameters.
    """

    def __init__(
        self,
        *,
        train,
        evaluation,
        steps: int,
        eval_steps: int,
        seed: Optional[int] = None,
        crossed_embedding_buckets: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._crossed_embedding_buckets = crossed_embedding_buckets
        self._train, self._evaluation = train, evaluation
        self._steps, self._eval_steps = steps, eval_steps
        self._seed = seed

    def run_trial(self, trial, **_):
        if self._seed is not None:
            # Every trial starts from the same random state: trials differ only by their
            # hyperparameters, and a rerun (or another runner) ranks them the same way.
            keras.utils.set_random_seed(self._seed)
        candidate = model.build_model(trial.hyperparameters, self._crossed_embedding_buckets)
        history = candidate.fit(
            self._train,
            steps_per_epoch=self._steps,
            epochs=1,
            validation_data=self._evaluation,
            validation_steps=self._eval_steps,
            verbose=0,
        )
        return {name: values[-1] for name, values in history.history.items()}

    def save_model(self, trial_id, model, step=0):  # trials keep no weights
        pass

    def load_model(self, trial):
        raise NotImplementedError("trials keep no weights; train with the best hyperparameters")


def tuner_fn(fn_args: tfx.components.FnArgs) -> tfx.components.TunerFnResult:
    """TFX Tuner entry point."""
    config = fn_args.custom_config or {}
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_graph_path)
    batch_size = int(config.get("batch_size", 128))
    seed = config.get("seed")
    raw = bool(config.get(RAW_EXAMPLES_CONFIG))  # raw examples: Transform materialized none
    tuner = KerasTwoTuner(
        oracle=DefaultsFirstOracle(
            objective=OBJECTIVE,
            hyperparameters=hyperparameters.search_space(),
            max_trials=int(config.get("max_trials", 2)),
            seed=None if seed is None else int(seed),
        ),
        train=model.input_dataset(
            fn_args.train_files, tf_transform_output, batch_size, seed=seed, raw=raw
        ),
        evaluation=model.input_dataset(
            fn_args.eval_files, tf_transform_output, batch_size, shuffle=False, raw=raw
        ),
        steps=fn_args.train_steps,
        eval_steps=fn_args.eval_steps,
        seed=None if seed is None else int(seed),
        crossed_embedding_buckets=int(config.get("crossed_embedding_buckets") or 0),
        directory=fn_args.working_dir,
        project_name="search",
        overwrite=True,
    )
    return tfx.components.TunerFnResult(tuner=tuner, fit_kwargs={})
