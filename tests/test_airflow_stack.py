"""Airflow as it runs in production, end to end: `make airflow-up`'s stack (PostgreSQL, MariaDB
for ML Metadata, Redis, the scheduler, the webserver, two Celery workers), a training run that a
person triggers through the REST API (`tfx-template airflow-trigger`), what MLMD in MariaDB
then holds, the run explored in the web UI (headless Chromium), and two faults: the metadata
store down when a task starts, and the worker running the Trainer killed mid-task.

The stack runs under the test's temp dir on free loopback ports (AIRFLOW_STACK_*), on a small
data slice, and is stopped at the end; every process it started must be gone.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import ml_metadata as mlmd
import psutil
import pytest

from deploy.airflow import stack as stack_module
from pipeline.airflow_api import AirflowApi
from pipeline.settings import PipelineSettings
from tests.pipeline_run import ROOT, run_env, write_data_slice

pytestmark = [pytest.mark.slow, pytest.mark.integration]

STACK_SCRIPT = ROOT / "deploy" / "airflow" / "stack.py"
CLI = [sys.executable, "-m", "cli.main"]
CHROMIUM = "/usr/bin/chromium"
SUCCESS_GREEN = "rgb(0, 128, 0)"  # Airflow's colour of the success state ("green")
DOCS_SCREENSHOT = ROOT / "docs" / "img" / "airflow-grid.png"
SPANS, ROWS_PER_SPAN = [1, 2], 400
FIRST_TRAIN_STEPS, FAULT_TRAIN_STEPS = 200, 150
# Every node with an execution of its own (resolvers record one too).
COMPONENTS = [
    "CsvExampleGen",
    "ImportSchemaGen",
    "StatisticsGen",
    "ExampleValidator",
    "LeakageCheck",
    "AnomaliesGate",
    "ProgressiveValidation",
    "WindowExamples",
    "Transform",
    "Trainer",
    "Evaluator",
    "Pusher",
]
# The DAG's own tasks besides the components and resolvers (pipeline/airflow_tasks.py).
OWN_TASKS = {"check_new_span", "ingest_earlier_spans"}


def _dag_tasks(stack) -> set[str]:
    """Every task of the DAG, as Airflow has it (GET /dags/{id}/tasks)."""
    answer = stack.api.call("GET", f"/dags/{stack.settings.name}/tasks")
    return {task["task_id"] for task in answer["tasks"]}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _searchable_by_others(path: Path) -> None:
    """PostgreSQL runs as the `postgres` user when the tests run as root: it must reach its
    data dir under pytest's temp dirs (created mode 0700)."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


class Stack:
    """The stack under test: its script, its environment, its API and its MLMD store."""

    def __init__(self, tmp_path: Path):
        self.root = tmp_path / "stack"
        ports = {name: _free_port() for name in stack_module.DEFAULT_PORTS}
        self.env = run_env(
            tmp_path,
            PIPELINE_ENABLE_TUNING="0",
            PIPELINE_AIRFLOW_SCHEDULE="none",
            PIPELINE_AIRFLOW_RETRIES="1",
            PIPELINE_AIRFLOW_RETRY_DELAY_SECONDS="20",
            AIRFLOW_STACK_DIR=str(self.root),
            **{
                f"AIRFLOW_STACK_{name.upper().replace('-', '_')}_PORT": str(port)
                for name, port in ports.items()
            },
        )
        self.layout = stack_module.Stack.from_env(self.env)
        self.env.update(
            PIPELINE_AIRFLOW_API_URL=self.layout.url,
            PIPELINE_AIRFLOW_API_PASSWORD_FILE=str(self.layout.admin_password_file),
        )

    def script(self, command: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(STACK_SCRIPT), command],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=900,
        )

    @property
    def pipeline_env(self) -> dict[str, str]:
        """What the scheduler and workers got: the stack's MLMD store and pipeline root."""
        return stack_module.airflow_env(self.layout, self.env)

    @property
    def settings(self) -> PipelineSettings:
        env = self.pipeline_env
        return PipelineSettings.load(
            {k: v for k, v in env.items() if k.startswith("PIPELINE_")}, orchestrator="airflow"
        )

    @property
    def api(self) -> AirflowApi:
        return AirflowApi.from_settings(self.settings)

    def store(self) -> mlmd.MetadataStore:
        from pipeline import metadata

        return mlmd.MetadataStore(metadata.connection_config(self.settings))

    def trigger(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [*CLI, "airflow-trigger", *args],
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("airflow_stack")
    _searchable_by_others(tmp_path)
    write_data_slice(tmp_path / "data", SPANS, ROWS_PER_SPAN)
    stack = Stack(tmp_path)
    started = time.monotonic()
    result = stack.script("up")
    seconds = time.monotonic() - started
    try:
        assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
        print(result.stdout)
        stack.up_output, stack.up_seconds = result.stdout, seconds
        yield stack
    finally:
        pids = [p for pids in stack_module.stack_processes(stack.layout).values() for p in pids]
        down = stack.script("down")
        assert down.returncode == 0, down.stderr
        left = [pid for pid in pids if stack_module.alive(pid)]
        assert not left, f"still running after airflow-down: {left}"


def test_up_prints_the_ui_and_login_and_keeps_passwords_private(stack):
    password = stack.layout.admin_password_file.read_text().strip()
    assert f"Airflow UI and REST API: {stack.layout.url}" in stack.up_output
    assert f"admin / {password}" in stack.up_output
    for secret in (
        stack.layout.secrets_file,
        stack.layout.admin_password_file,
        stack.layout.mlmd_password_file,
        stack.layout.airflow_home / "airflow.cfg",
    ):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
    # The DAG as the README installs it: the runner file in the dags folder.
    assert (stack.layout.dags_folder / "airflow_runner.py").read_bytes() == (
        ROOT / "airflow_runner.py"
    ).read_bytes()


def test_every_service_runs_and_listens_on_loopback_only(stack):
    processes = stack_module.stack_processes(stack.layout)
    assert sorted(processes) == sorted(stack_module.SERVICES)
    listening = {
        (conn.laddr.ip, conn.laddr.port)
        for pids in processes.values()
        for pid in pids
        for conn in psutil.Process(pid).net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN
    }
    assert listening, "no listening socket"
    assert {ip for ip, _ in listening} == {"127.0.0.1"}, listening
    assert ("127.0.0.1", stack.layout.ports["webserver"]) in listening
    assert ("127.0.0.1", stack.layout.ports["mariadb"]) in listening


def test_up_again_starts_nothing(stack):
    before = {s: pids[0] for s, pids in stack_module.stack_processes(stack.layout).items()}
    again = stack.script("up")
    assert again.returncode == 0, again.stderr[-3000:]
    assert ": started" not in again.stdout
    after = {s: pids[0] for s, pids in stack_module.stack_processes(stack.layout).items()}
    assert after == before


def test_rest_api_needs_the_login(stack):
    wrong = AirflowApi(stack.layout.url, "admin", "not-the-password")
    with pytest.raises(Exception, match="refused the login of 'admin'"):
        wrong.dag(stack.settings.name)
    # A bad run parameter: Airflow's own check of the DAG's Params, before any run exists.
    bad = subprocess.run(
        [*CLI, "airflow-trigger", "--conf", '{"train_steps": "many"}', "--unpause"],
        env=stack.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1
    assert "train_steps" in bad.stderr and "integer" in bad.stderr
    assert stack.api.call("GET", f"/dags/{stack.settings.name}/dagRuns")["total_entries"] == 0


@pytest.fixture(scope="module")
def first_run(stack) -> dict:
    """A run triggered as a person would: the CLI, with a run parameter, waiting for it."""
    started = time.monotonic()
    process = stack.trigger("--unpause", "--train-steps", str(FIRST_TRAIN_STEPS))
    peak_pss = 0.0
    while process.poll() is None:  # the stack's memory while the run goes on (PSS, MiB)
        peak_pss = max(peak_pss, _stack_pss_mib(stack))
        time.sleep(5)
    stdout, stderr = process.communicate()
    seconds = time.monotonic() - started
    assert process.returncode == 0, (stdout + stderr)[-5000:]
    run_id = stdout.split(" run ", 1)[1].split()[0]
    figures = {
        "stack_start_seconds": round(stack.up_seconds, 1),
        "idle_pss_mib": json.loads(stack.layout.path("run", "up.json").read_text())[
            "pss_total_mib"
        ],
        "peak_pss_during_run_mib": round(peak_pss, 1),
        "dag_run_seconds": round(seconds, 1),
    }
    print(stdout, "\nfigures:", json.dumps(figures))
    (stack.root.parent / "figures.json").write_text(json.dumps(figures, indent=1))
    return {"run_id": run_id, "stdout": stdout, "seconds": seconds}


def _stack_pss_mib(stack) -> float:
    pids = [p for pids in stack_module.stack_processes(stack.layout).values() for p in pids]
    return sum(stack_module.pss_kib(pid) for pid in pids) / 1024


def test_triggered_run_succeeds_showing_each_task(stack, first_run):
    tasks = _dag_tasks(stack)
    assert {*COMPONENTS, *OWN_TASKS} <= tasks
    states = stack.api.task_states(stack.settings.name, first_run["run_id"])
    assert states == {task: "success" for task in tasks}
    for task in tasks:
        assert f"] {task}: success" in first_run["stdout"]
    assert f"run {first_run['run_id']} succeeded in" in first_run["stdout"]


def _executions(store: mlmd.MetadataStore, component: str) -> list:
    return sorted(
        (
            e
            for e in store.get_executions()
            if e.properties["component_id"].string_value == component
        ),
        key=lambda e: e.id,
    )


def test_mlmd_in_mariadb_holds_every_execution_and_the_pushed_model(stack, first_run):
    store = stack.store()
    for component in COMPONENTS:
        executions = _executions(store, component)
        assert executions, component
        assert executions[-1].properties["state"].string_value in ("complete", "cached")
    (trainer,) = _executions(store, "Trainer")
    # The run parameter reached the Trainer.
    train_args = json.loads(trainer.properties["train_args"].string_value)
    assert int(train_args["num_steps"]) == FIRST_TRAIN_STEPS
    (pusher,) = _executions(store, "Pusher")
    events = store.get_events_by_execution_ids([pusher.id])
    pushed = store.get_artifacts_by_id(
        [e.artifact_id for e in events if e.type == mlmd.proto.Event.OUTPUT]
    )
    assert [a.custom_properties["pushed"].int_value for a in pushed] == [1]
    version = pushed[0].custom_properties["pushed_version"].string_value
    settings = stack.settings
    assert os.listdir(settings.serving_model_dir) == [version]
    # On the stack's shared pipeline root, not under PIPELINE_OUTPUT_DIR.
    assert settings.pipeline_root.startswith(str(stack.layout.shared_dir))
    stack.pushed_version = version


def test_the_run_explored_in_the_web_ui(stack, first_run, tmp_path):
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: run `make browser`"
    version = getattr(stack, "pushed_version", None) or _pushed_version(stack)
    dag, run_id = stack.settings.name, first_run["run_id"]
    grid = f"{stack.layout.url}/dags/{dag}/grid?dag_run_id={urllib.parse.quote(run_id)}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        page.goto(f"{stack.layout.url}/login/")
        page.fill("input#username", "admin")
        page.fill("input#password", stack.layout.admin_password_file.read_text().strip())
        page.click("input[type=submit]")
        page.wait_for_url(lambda url: "/login" not in url)

        page.goto(grid)
        page.wait_for_load_state("networkidle")
        # The grid (React, in a shadow root that Playwright's locators pierce): the run's
        # column of task squares, each coloured by its state (Airflow's: success = green).
        boxes = page.locator("[data-testid='task-instance']")
        boxes.first.wait_for()
        assert boxes.count() == len(_dag_tasks(stack))
        colours = {box.evaluate("b => getComputedStyle(b).backgroundColor") for box in boxes.all()}
        assert colours == {SUCCESS_GREEN}, colours
        details = page.locator("text=Dag Run Details")
        details.wait_for()
        assert page.get_by_text("train_steps", exact=False).count() > 0  # the run's conf
        page.screenshot(path=str(tmp_path / "grid.png"))

        page.goto(f"{grid}&tab=graph")
        page.wait_for_load_state("networkidle")
        page.locator(".react-flow__node").first.wait_for()
        nodes = page.locator(".react-flow__node")
        assert nodes.count() >= len(_dag_tasks(stack))
        page.screenshot(path=str(tmp_path / "graph.png"), full_page=True)

        page.goto(f"{grid}&task_id=Pusher&tab=logs")
        page.get_by_text(f"Model version: {version}").first.wait_for(timeout=60_000)
        page.screenshot(path=str(tmp_path / "pusher-log.png"), full_page=True)
        browser.close()
    # The docs' screenshot is refreshed only on request: a test run leaves the checkout as is.
    if os.environ.get("UPDATE_DOCS_SCREENSHOTS") == "1":
        DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copy(tmp_path / "grid.png", DOCS_SCREENSHOT)


def _pushed_version(stack) -> str:
    (version,) = os.listdir(stack.settings.serving_model_dir)
    return version


def _worker_of(stack, pid: int) -> str:
    """Which worker's process tree holds `pid`."""
    for service, pids in stack_module.stack_processes(stack.layout).items():
        if service in stack_module.WORKERS and pid in pids:
            return service
    raise AssertionError(f"pid {pid} is in no worker's tree")


def _task(stack, run_id: str, task_id: str) -> dict:
    return stack.api.call(
        "GET",
        f"/dags/{stack.settings.name}/dagRuns/{urllib.parse.quote(run_id, safe='')}"
        f"/taskInstances/{task_id}",
    )


def _task_log(stack, run_id: str, task_id: str, try_number: int) -> str:
    return stack.api.call(
        "GET",
        f"/dags/{stack.settings.name}/dagRuns/{urllib.parse.quote(run_id, safe='')}"
        f"/taskInstances/{task_id}/logs/{try_number}?full_content=true",
    )["content"]


def _diagnosis(stack, run_id: str, task_id: str) -> str:
    """What a failed fault run leaves to read: the scheduler's and the workers' logs, then each
    try's log, the last try last (a long failure message is cut in its middle)."""
    scheduler = stack.layout.log_file("scheduler")
    reports = scheduler.read_text().count("Detected zombie job") if scheduler.exists() else 0
    parts = [f"\n--- the scheduler reported {reports} dead task(s) (zombies)"]
    for name in ("scheduler", *stack_module.WORKERS):
        log_file = stack.layout.log_file(name)
        if log_file.exists():
            parts.append(f"\n--- {name} log:\n{log_file.read_text()[-2500:]}")
    for try_number in (1, 2):
        try:
            log = _task_log(stack, run_id, task_id, try_number)
            parts.append(f"\n--- {task_id} try {try_number}:\n{log[-4000:]}")
        except Exception as error:  # noqa: BLE001 (a diagnosis must not hide the failure)
            parts.append(f"\n--- {task_id} try {try_number}: no log ({error})")
    return "".join(parts)


def _wait_for(condition, what: str, timeout: float = 1800):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(2)
    return value


def test_faults_metadata_store_down_then_a_worker_killed_mid_task(stack, first_run):
    """MariaDB stopped when a run starts: its first task fails naming the metadata store,
    and succeeds on retry once MariaDB is back. Then the worker running the Trainer is killed
    (the whole process tree, as when its machine dies): the scheduler finds the task without a
    heartbeat, and its retry runs on the other worker; the run succeeds."""
    layout = stack.layout
    assert stack_module.stop(layout, "mariadb")
    process = stack.trigger("--force", "--train-steps", str(FAULT_TRAIN_STEPS))
    run_id = _wait_for(
        lambda: next(
            (
                r["dag_run_id"]
                for r in stack.api.call("GET", f"/dags/{stack.settings.name}/dagRuns")["dag_runs"]
                if r["dag_run_id"] != first_run["run_id"]
            ),
            None,
        ),
        "the second run",
    )
    first_task = "check_new_span"
    _wait_for(lambda: _task(stack, run_id, first_task)["state"] == "up_for_retry", "a failed try")
    restarted = stack.script("up")
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert "mariadb: started" in restarted.stdout
    log = _task_log(stack, run_id, first_task, 1)
    assert "MetadataStoreUnavailableError" in log
    assert f"the ML Metadata store (MySQL at 127.0.0.1:{layout.ports['mariadb']}" in log
    _wait_for(lambda: _task(stack, run_id, first_task)["state"] == "success", "the retry")
    assert _task(stack, run_id, first_task)["try_number"] == 2

    trainer_runs_before = len(_executions(stack.store(), "Trainer"))
    trainer = _wait_for(
        lambda: (t := _task(stack, run_id, "Trainer"))["state"] == "running" and t.get("pid") and t,
        "the Trainer to run",
    )
    # Killed once its try has registered its execution in MLMD: the retry must retire it.
    _wait_for(
        lambda: len(_executions(stack.store(), "Trainer")) > trainer_runs_before,
        "the Trainer's execution in MLMD",
    )
    killed = _worker_of(stack, trainer["pid"])
    tree = stack_module.stack_processes(layout)[killed]
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    stdout, stderr = process.communicate(timeout=3600)
    assert process.returncode == 0, (stdout + stderr)[-3000:] + _diagnosis(stack, run_id, "Trainer")
    retried = _task(stack, run_id, "Trainer")
    assert retried["state"] == "success" and retried["try_number"] == 2
    assert "an earlier try of Trainer in this run registered execution(s)" in _task_log(
        stack, run_id, "Trainer", 2
    )
    survivor = next(w for w in stack_module.WORKERS if w != killed)
    assert f"taxi-tips.Trainer {run_id}" in layout.log_file(survivor).read_text() or (
        f"Trainer {run_id}" in layout.log_file(survivor).read_text()
    )
    # MLMD stays consistent: the Trainer's last execution is complete, with this run's steps.
    trainer_runs = _executions(stack.store(), "Trainer")
    last = trainer_runs[-1]
    assert last.properties["state"].string_value == "complete"
    assert json.loads(last.properties["train_args"].string_value)["num_steps"] == FAULT_TRAIN_STEPS
    # `up` brings the killed worker back, and only it.
    again = stack.script("up")
    assert again.returncode == 0 and f"{killed}: started" in again.stdout
    assert again.stdout.count(": started") == 1
