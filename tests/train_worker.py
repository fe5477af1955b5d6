"""Runs the template's `run_fn` once in this process: one worker of the distributed-training
tests, which start it as a subprocess so that TensorFlow's devices (logical CPUs) and
TF_CONFIG are set before TensorFlow initialises.

    python tests/train_worker.py '{"transform_graph": ..., "train_files": [...], ...}'

Keys: transform_graph, train_files, eval_files, serving_model_dir, model_run_dir,
train_steps, eval_steps, custom_config, hyperparameters (name -> value over the defaults),
logical_cpus (optional: split the CPU into that many logical devices), base_model (optional:
a model to warm-start from; custom_config then needs warm_start_steps_fraction).
"""

from __future__ import annotations

import json
import sys

import pipeline.runtime  # noqa: F401 (first: Keras 2 before TensorFlow loads)


def main(spec: dict) -> None:
    import tensorflow as tf  # after the environment is set

    if spec.get("logical_cpus"):
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * int(spec["logical_cpus"])
        )

    from absl import logging
    from tfx.components.trainer.fn_args_utils import FnArgs

    from models import hyperparameters, model

    logging.set_verbosity(logging.INFO)
    hp = hyperparameters.search_space()
    hp.values.update(spec.get("hyperparameters", {}))
    model.run_fn(
        FnArgs(
            train_files=spec["train_files"],
            eval_files=spec["eval_files"],
            train_steps=int(spec["train_steps"]),
            eval_steps=int(spec["eval_steps"]),
            transform_graph_path=spec["transform_graph"],
            serving_model_dir=spec["serving_model_dir"],
            model_run_dir=spec["model_run_dir"],
            hyperparameters=hp.get_config(),
            custom_config=spec["custom_config"],
            base_model=spec.get("base_model"),
        )
    )


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
