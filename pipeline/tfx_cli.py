"""Whether the TFX CLI is running a runner file only to capture its pipeline.

TFX 1.16's `tfx pipeline create|update|compile` sets no environment variable and passes no
flag (the `TFX_JSON_EXPORT_PIPELINE_ARGS_PATH` variable of TFX 0.2x is gone). Its handler
(tfx/tools/cli/handler/base_handler.py, `execute_dsl`) runs the runner file inside the CLI's
own process, as `__main__` with `sys.argv = [path]`, within `DagRunnerPatcher.patch()`
(dag_runner_patcher.py), which replaces `<runner class>.run` for that time with a
`functools.wraps` wrapper: it records the pipeline's name and root, and calls the real `run()`
or not (LocalDagRunnerPatcher and BeamDagRunnerPatcher: never, the pipeline is only captured;
KubeflowV2DagRunnerPatcher: it does, with the spec redirected into the CLI's own folder under
`pipeline create`). `tfx run create --engine local` then runs `python <runner file>` in a
process of its own: a real run, unpatched.

So the signal is the runner class's `run` wrapped by the CLI's patcher, with the patcher's
module loaded in this process.
"""

from __future__ import annotations

import inspect
import sys

PATCHER_MODULE = "tfx.tools.cli.handler.dag_runner_patcher"


def run_is_patched(runner_class: type) -> bool:
    """True while `tfx pipeline create|update|compile` executes this process's runner file:
    `runner_class.run` is the CLI's wrapper, not the runner's own method."""
    run = runner_class.run
    return PATCHER_MODULE in sys.modules and inspect.unwrap(run) is not run
