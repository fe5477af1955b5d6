"""Wall time of one pipeline run on the same data: the local runner and `airflow dags test`.

    .venv/bin/python benchmarks/airflow_runs.py [--rows 400] [--spans 1 2] [--train-steps 200]

The same slice as tests/test_airflow_stack.py (the first ROWS rows of each shipped span, the
small run's settings, Tuner off, TRAIN_STEPS), each in a temp dir: `python local_runner.py`
(TFX's LocalDagRunner, one process), then `airflow dags test` (every task in one process, a
fresh AIRFLOW_HOME on SQLite). The production stack's time for the same run is what
tests/test_airflow_stack.py prints ("figures"). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.pipeline_run import run_env, write_data_slice

AIRFLOW = Path(sys.executable).with_name("airflow")


def _timed(command: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{(result.stdout + result.stderr)[-3000:]}")
    return time.monotonic() - started


def _pipeline_name(env: dict[str, str]) -> str:
    from pipeline.settings import PipelineSettings

    return PipelineSettings.load({k: v for k, v in env.items() if k.startswith("PIPELINE_")}).name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--spans", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--train-steps", type=int, default=200)
    args = parser.parse_args()
    settings = {"PIPELINE_ENABLE_TUNING": "0", "PIPELINE_TRAIN_STEPS": str(args.train_steps)}
    figures = {}
    with tempfile.TemporaryDirectory() as temp:
        local = Path(temp) / "local"
        write_data_slice(local / "data", args.spans, args.rows)
        env = {**run_env(local, **settings), "PYTHONPATH": str(ROOT)}
        figures["local_runner_seconds"] = round(
            _timed([sys.executable, str(ROOT / "local_runner.py")], env), 1
        )

        dags_test = Path(temp) / "airflow"
        write_data_slice(dags_test / "data", args.spans, args.rows)
        home = dags_test / "airflow-home"
        env = {
            **{k: v for k, v in run_env(dags_test, **settings).items() if "AIRFLOW" not in k},
            # The DAG imports `pipeline` and `models` from this checkout.
            "PYTHONPATH": str(ROOT),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "300",
            "PIPELINE_AIRFLOW_RETRIES": "0",
        }
        (home / "dags").mkdir(parents=True)
        shutil.copy(ROOT / "airflow_runner.py", home / "dags")
        _timed([str(AIRFLOW), "db", "migrate"], env)
        figures["airflow_dags_test_seconds"] = round(
            _timed([str(AIRFLOW), "dags", "test", _pipeline_name(env), "2024-01-02"], env), 1
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
