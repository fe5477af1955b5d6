"""A person starts a training run now: Airflow's stable REST API (v1, basic auth), as
`tfx-template airflow-trigger` calls it.

    api = AirflowApi.from_settings(settings)
    run_id = api.trigger(dag_id, {"train_steps": 2000})   # POST /dags/{id}/dagRuns
    state = api.wait(dag_id, run_id, on_change=print)     # polls the run and its tasks

The endpoints and fields are Airflow 2's stable API (/api/v1: dagRuns, taskInstances,
dags/{id}); Cloud Composer serves the same API behind its own authentication. Errors are
ApiError with a message that names the setting to fix; the password never appears in one.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Optional

from pipeline.settings import PipelineSettings

# A DAG run's final states (Airflow's DagRunState) and a task's that mean it went wrong.
RUN_DONE = ("success", "failed")
TASK_FAILED = ("failed", "upstream_failed")


class ApiError(RuntimeError):
    """The API refused or could not be reached; the message says why and what to check."""


@dataclasses.dataclass(frozen=True)
class AirflowApi:
    url: str
    user: str
    password: str = dataclasses.field(repr=False)
    timeout: float = 30.0

    @classmethod
    def from_settings(cls, settings: PipelineSettings) -> AirflowApi:
        airflow = settings.airflow
        try:
            password = Path(airflow.api_password_file).read_text().strip()
        except OSError as error:
            raise ApiError(
                f"PIPELINE_AIRFLOW_API_PASSWORD_FILE={airflow.api_password_file!r} cannot be "
                f"read ({error.strerror}): the file with the password of "
                f"{airflow.api_user!r} (`make airflow-up` writes it)"
            ) from None
        return cls(airflow.api_url.rstrip("/"), airflow.api_user, password)

    def call(self, method: str, path: str, body: Optional[dict] = None) -> dict:
        """One API call; the decoded JSON answer."""
        request = urllib.request.Request(
            f"{self.url}/api/v1{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={
                "Authorization": "Basic "
                + base64.b64encode(f"{self.user}:{self.password}".encode()).decode(),
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            raise ApiError(self._refusal(error, path)) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise ApiError(
                f"no Airflow API at {self.url} (PIPELINE_AIRFLOW_API_URL): {reason}; is the "
                "webserver up (`make airflow-up`)?"
            ) from None

    def _refusal(self, error: urllib.error.HTTPError, path: str) -> str:
        try:
            detail = json.loads(error.read()).get("detail") or error.reason
        except ValueError:
            detail = error.reason
        if error.code == 401:
            return (
                f"the Airflow API at {self.url} refused the login of {self.user!r}: check "
                "PIPELINE_AIRFLOW_API_USER and PIPELINE_AIRFLOW_API_PASSWORD_FILE (and that "
                "[api] auth_backends includes airflow.api.auth.backend.basic_auth)"
            )
        if error.code == 403:
            return f"{self.user!r} may not do this in Airflow ({path}): {detail}"
        return f"Airflow answered {error.code} to {path}: {detail}"

    def dag(self, dag_id: str) -> dict:
        try:
            return self.call("GET", f"/dags/{_quote(dag_id)}")
        except ApiError as error:
            if "answered 404" in str(error):
                raise ApiError(
                    f"Airflow at {self.url} has no DAG {dag_id!r}: is airflow_runner.py in its "
                    "dags folder, parsed without import errors (the UI's banner; GET "
                    "/api/v1/importErrors), and PIPELINE_NAME the same?"
                ) from None
            raise

    def unpause(self, dag_id: str) -> None:
        self.call("PATCH", f"/dags/{_quote(dag_id)}?update_mask=is_paused", {"is_paused": False})

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        """Creates a DAG run with `conf` (Airflow checks it against the DAG's params: a bad
        value is a 400 naming the param); returns its run id."""
        run = self.call("POST", f"/dags/{_quote(dag_id)}/dagRuns", {"conf": conf})
        return run["dag_run_id"]

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self.call("GET", f"/dags/{_quote(dag_id)}/dagRuns/{_quote(run_id)}")["state"]

    def running_runs(self, dag_id: str) -> list[str]:
        """The DAG's runs in progress (Airflow's `running` state)."""
        answer = self.call("GET", f"/dags/{_quote(dag_id)}/dagRuns?state=running&limit=100")
        return [run["dag_run_id"] for run in answer["dag_runs"]]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, Optional[str]]:
        answer = self.call(
            "GET", f"/dags/{_quote(dag_id)}/dagRuns/{_quote(run_id)}/taskInstances?limit=1000"
        )
        return {task["task_id"]: task["state"] for task in answer["task_instances"]}

    def wait(
        self,
        dag_id: str,
        run_id: str,
        on_change: Callable[[str, Optional[str]], None] = lambda task, state: None,
        poll_seconds: float = 5.0,
        timeout_seconds: Optional[float] = None,
        on_run_state: Callable[[str], None] = lambda state: None,
    ) -> str:
        """Polls the run until it finishes (or the timeout passes: ApiError); calls
        `on_change(task, state)` whenever a task's state changes, `on_run_state(state)`
        whenever the run's own does; returns the run's state."""
        deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
        seen: dict[str, Optional[str]] = {}
        run_seen = None
        while True:
            state = self.run_state(dag_id, run_id)
            if state != run_seen:
                run_seen = state
                on_run_state(state)
            for task, task_state in self.task_states(dag_id, run_id).items():
                if seen.get(task, "") != task_state:
                    seen[task] = task_state
                    if task_state is not None:
                        on_change(task, task_state)
            if state in RUN_DONE:
                return state
            if deadline is not None and time.monotonic() > deadline:
                raise ApiError(f"run {run_id} of {dag_id} still {state} after {timeout_seconds} s")
            time.sleep(poll_seconds)


def _quote(value: str) -> str:
    return urllib.parse.quote(value, safe="")
