"""Airflow as it runs in production, on this machine: `make airflow-up` / `make airflow-down`.

    python deploy/airflow/stack.py up        # starts what is not running; prints the UI and login
    python deploy/airflow/stack.py status    # what runs, with pids and memory (PSS)
    python deploy/airflow/stack.py down      # stops exactly what `up` started, by pid

Everything listens on 127.0.0.1 and lives under one directory (outputs/airflow/, or
AIRFLOW_STACK_DIR): data dirs, logs, pid files, AIRFLOW_HOME. The services, in start order:

    postgres    PostgreSQL 15: Airflow's metadata database (scheduler, UI, Celery results)
    mariadb     MariaDB 10.11: TFX's ML Metadata store, shared by every worker
    redis       Redis 7: the Celery broker
    scheduler   `airflow scheduler` with the CeleryExecutor
    webserver   `airflow webserver`: the UI, and the stable REST API under basic auth
    worker-1/2  `airflow celery worker`: two workers; a task runs on whichever is free

Passwords are generated once into secrets.env (mode 0600); the MLMD password also into its own
file, which the pipeline reads (PIPELINE_AIRFLOW_MLMD_PASSWORD_FILE). The DAG is installed as
the README tells users to: airflow_runner.py copied into AIRFLOW_HOME/dags/. The scheduler and
workers get the caller's PIPELINE_* variables, plus the MLMD connection and a pipeline root
(PIPELINE_AIRFLOW_OUTPUT_DIR, default <stack>/shared) unless the caller set them. Ports:
AIRFLOW_STACK_<SERVICE>_PORT (defaults below). Run as root, PostgreSQL (which refuses root)
runs as the `postgres` system user; everything else as the caller.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
AIRFLOW = BIN / "airflow"
POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")
HOST = "127.0.0.1"
DEFAULT_PORTS = {
    "postgres": 15432,
    "mariadb": 13306,
    "redis": 16379,
    "webserver": 8080,
}
WORKERS = ("worker-1", "worker-2")
SERVICES = ("postgres", "mariadb", "redis", "scheduler", "webserver", *WORKERS)
ADMIN_USER = "admin"
MLMD_DATABASE, MLMD_USER = "mlmd", "mlmd"
AIRFLOW_DATABASE, AIRFLOW_DB_USER = "airflow", "airflow"
# How long a service may take to answer after its start (the webserver's first start ~40 s).
START_TIMEOUT = {"postgres": 60, "mariadb": 60, "redis": 30, "webserver": 240}
STOP_TIMEOUT = 30


class StackError(RuntimeError):
    """A service did not start or stop; the message names it and its log."""


@dataclass(frozen=True)
class Stack:
    """One stack's directory layout and ports."""

    root: Path
    ports: dict[str, int]

    @classmethod
    def from_env(cls, environ: Optional[dict] = None) -> Stack:
        environ = os.environ if environ is None else environ
        root = Path(environ.get("AIRFLOW_STACK_DIR") or PROJECT_ROOT / "outputs" / "airflow")
        ports = {
            name: int(environ.get(f"AIRFLOW_STACK_{name.upper().replace('-', '_')}_PORT") or port)
            for name, port in DEFAULT_PORTS.items()
        }
        return cls(root.resolve(), ports)

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    @property
    def airflow_home(self) -> Path:
        return self.path("airflow-home")

    @property
    def dags_folder(self) -> Path:
        return self.airflow_home / "dags"

    @property
    def secrets_file(self) -> Path:
        return self.path("secrets.env")

    @property
    def mlmd_password_file(self) -> Path:
        return self.path("mlmd-password")

    @property
    def admin_password_file(self) -> Path:
        """The UI's and REST API's login password (PIPELINE_AIRFLOW_API_PASSWORD_FILE)."""
        return self.path("admin-password")

    @property
    def mariadb_socket(self) -> Path:
        return self.path("run", "mariadb.sock")

    @property
    def shared_dir(self) -> Path:
        """The default pipeline root's parent: every worker reaches it (one machine)."""
        return self.path("shared")

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.ports['webserver']}"

    def pid_file(self, service: str) -> Path:
        return self.path("run", f"{service}.pid")

    def log_file(self, service: str) -> Path:
        return self.path("logs", f"{service}.log")


# ---- secrets -------------------------------------------------------------------------------


def write_private(path: Path, text: str) -> None:
    """Writes `text` to a file only its owner reads (mode 0600 from its creation on)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(".tmp")
    temp.unlink(missing_ok=True)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    os.replace(temp, path)


def load_secrets(stack: Stack) -> dict[str, str]:
    """The stack's passwords and keys, generated on the first `up` and kept after; the two
    that clients read (MLMD's, the admin login's) also in files of their own."""
    if stack.secrets_file.exists():
        lines = stack.secrets_file.read_text().splitlines()
        values = dict(line.split("=", 1) for line in lines if "=" in line)
    else:
        from cryptography.fernet import Fernet  # Airflow's own dependency

        values = {
            "AIRFLOW_ADMIN_PASSWORD": secrets.token_urlsafe(12),
            "POSTGRES_PASSWORD": secrets.token_urlsafe(18),
            "MLMD_PASSWORD": secrets.token_urlsafe(18),
            "REDIS_PASSWORD": secrets.token_urlsafe(18),
            "FERNET_KEY": Fernet.generate_key().decode(),
            "WEBSERVER_SECRET_KEY": secrets.token_urlsafe(24),
        }
        write_private(stack.secrets_file, "".join(f"{k}={v}\n" for k, v in values.items()))
    for path, key in (
        (stack.mlmd_password_file, "MLMD_PASSWORD"),
        (stack.admin_password_file, "AIRFLOW_ADMIN_PASSWORD"),
    ):
        if not path.exists():
            write_private(path, values[key] + "\n")
    return values


# ---- processes -----------------------------------------------------------------------------


def read_pid(stack: Stack, service: str) -> Optional[int]:
    """The recorded pid of `service` if that process still runs the service's program (a
    recycled pid of another program does not count)."""
    try:
        pid = int(stack.pid_file(service).read_text().split()[0])
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, ValueError, IndexError):
        return None
    return pid if PROGRAMS[service] in command else None


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children first found through /proc/<pid>/task/*/children)."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            found += children
            todo += children
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def pss_kib(pid: int) -> int:
    """Proportional set size: shared pages divided among the processes sharing them, so
    summing it over forks (gunicorn, Celery, Airflow's task processes) counts memory once."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def stack_processes(stack: Stack) -> dict[str, list[int]]:
    """Each running service's processes: its main pid and everything below it."""
    running = {}
    for service in SERVICES:
        pid = read_pid(stack, service)
        if pid is not None:
            running[service] = [pid, *descendants(pid)]
    return running


def spawn(stack: Stack, service: str, command: list[str], env: dict[str, str]) -> int:
    """Starts a long-running process in a session of its own, output to its log; records its
    pid."""
    stack.log_file(service).parent.mkdir(parents=True, exist_ok=True)
    with open(stack.log_file(service), "ab") as log:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=stack.root,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stack.pid_file(service).parent.mkdir(parents=True, exist_ok=True)
    stack.pid_file(service).write_text(f"{process.pid}\n")
    return process.pid


def wait_for(service: str, stack: Stack, ready: Callable[[], bool], pid: Optional[int]) -> None:
    """Polls `ready` until it holds; fails when the process died or the time ran out."""
    deadline = time.monotonic() + START_TIMEOUT.get(service, 120)
    while not ready():
        if pid is not None and not alive(pid):
            raise StackError(f"{service} exited at start; see {stack.log_file(service)}")
        if time.monotonic() > deadline:
            raise StackError(f"{service} did not get ready in time; see {stack.log_file(service)}")
        time.sleep(0.5)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((HOST, port)) == 0


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def stop(stack: Stack, service: str) -> bool:
    """Stops the service's recorded process (SIGTERM, then SIGKILL for it and what it
    started); returns whether there was one."""
    pid = read_pid(stack, service)
    if pid is None:
        stack.pid_file(service).unlink(missing_ok=True)
        return False
    below = descendants(pid)
    # PostgreSQL: SIGINT is its "fast" shutdown (SIGTERM waits for every client to leave).
    os.kill(pid, signal.SIGINT if service == "postgres" else signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.3)
    # What is left of its tree (a Celery task still running, gunicorn workers): killed.
    for leftover in [pid, *below]:
        if alive(leftover):
            try:
                os.kill(leftover, signal.SIGKILL)
            except ProcessLookupError:
                pass
    stack.pid_file(service).unlink(missing_ok=True)
    return True


# ---- the services --------------------------------------------------------------------------


def as_postgres_user() -> list[str]:
    """PostgreSQL refuses to run as root: then it runs as the `postgres` system user."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def start_postgres(stack: Stack, values: dict[str, str]) -> None:
    data = stack.path("postgres")
    run_dir = stack.path("run")
    if not (data / "PG_VERSION").exists():
        data.mkdir(parents=True, exist_ok=True)
        password_file = stack.path("postgres.pw")
        write_private(password_file, values["POSTGRES_PASSWORD"] + "\n")
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            for path in (data, password_file):
                os.chown(path, user.pw_uid, user.pw_gid)
        try:
            _checked(
                [
                    *as_postgres_user(),
                    str(POSTGRES_BIN / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    AIRFLOW_DB_USER,
                    f"--pwfile={password_file}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                ],
                "postgres (initdb)",
            )
        finally:
            password_file.unlink(missing_ok=True)
    # Its socket directory and log: the postgres user's when it runs as that user.
    socket_dir, log = run_dir / "postgres", stack.log_file("postgres")
    socket_dir.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.touch()
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        for path in (socket_dir, log):
            os.chown(path, user.pw_uid, user.pw_gid)
    options = f"-c listen_addresses={HOST} -p {stack.ports['postgres']} -k {socket_dir}"
    _checked(
        [
            *as_postgres_user(),
            str(POSTGRES_BIN / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(log),
            "-o",
            options,
            "-w",
            "-t",
            str(START_TIMEOUT["postgres"]),
            "start",
        ],
        "postgres",
        stack,
    )
    # pg_ctl's postmaster.pid, first line: the server's pid.
    pid = (data / "postmaster.pid").read_text().split()[0]
    stack.pid_file("postgres").write_text(f"{pid}\n")


def ensure_airflow_database(stack: Stack, values: dict[str, str]) -> None:
    """Airflow's database, created once."""
    import psycopg2

    connection = psycopg2.connect(
        host=HOST,
        port=stack.ports["postgres"],
        user=AIRFLOW_DB_USER,
        password=values["POSTGRES_PASSWORD"],
        dbname="postgres",
    )
    connection.autocommit = True  # CREATE DATABASE runs outside a transaction
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (AIRFLOW_DATABASE,))
            if cursor.fetchone() is None:
                cursor.execute(f"CREATE DATABASE {AIRFLOW_DATABASE}")
    finally:
        connection.close()


def start_mariadb(stack: Stack, values: dict[str, str]) -> None:
    data = stack.path("mariadb")
    user = pwd.getpwuid(os.geteuid()).pw_name
    if not (data / "mysql").exists():
        data.mkdir(parents=True, exist_ok=True)
        _checked(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={data}",
                f"--user={user}",
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
            ],
            "mariadb (mariadb-install-db)",
            stack,
        )
    pid = spawn(
        stack,
        "mariadb",
        [
            "/usr/sbin/mariadbd",
            "--no-defaults",
            f"--datadir={data}",
            f"--socket={stack.mariadb_socket}",
            f"--port={stack.ports['mariadb']}",
            f"--bind-address={HOST}",
            f"--user={user}",
            "--skip-name-resolve",
            # A small server: the MLMD store of one team's pipelines.
            "--innodb-buffer-pool-size=64M",
            "--performance-schema=OFF",
        ],
        _plain_env(),
    )
    wait_for("mariadb", stack, lambda: stack.mariadb_socket.exists() and _mariadb_ping(stack), pid)


def ensure_mlmd_database(stack: Stack, values: dict[str, str]) -> None:
    """The MLMD database and its user (over TCP and over the socket), created once."""
    user = pwd.getpwuid(os.geteuid()).pw_name
    password = values["MLMD_PASSWORD"].replace("'", "''")
    sql = f"CREATE DATABASE IF NOT EXISTS {MLMD_DATABASE};" + "".join(
        f"CREATE USER IF NOT EXISTS '{MLMD_USER}'@'{host}' IDENTIFIED BY '{password}';"
        f"GRANT ALL ON {MLMD_DATABASE}.* TO '{MLMD_USER}'@'{host}';"
        for host in ("localhost", HOST)
    )
    _checked(
        ["mariadb", "--no-defaults", f"--socket={stack.mariadb_socket}", "-u", user, "-e", sql],
        "mariadb (users)",
        stack,
    )


def _mariadb_ping(stack: Stack) -> bool:
    command = ["mariadb-admin", "--no-defaults", f"--socket={stack.mariadb_socket}", "ping"]
    return subprocess.run(command, capture_output=True).returncode == 0


def start_redis(stack: Stack, values: dict[str, str]) -> None:
    data = stack.path("redis")
    data.mkdir(parents=True, exist_ok=True)
    config = stack.path("redis", "redis.conf")
    # The password goes in a file of its own, not on a command line every user can read.
    write_private(
        config,
        f"bind {HOST}\nport {stack.ports['redis']}\nrequirepass {values['REDIS_PASSWORD']}\n"
        f'dir {data}\nsave ""\nappendonly no\ndaemonize no\nprotected-mode yes\n',
    )
    pid = spawn(stack, "redis", ["redis-server", str(config)], _plain_env())
    wait_for("redis", stack, lambda: port_open(stack.ports["redis"]), pid)


def airflow_config(stack: Stack, values: dict[str, str]) -> str:
    """airflow.cfg: what differs from Airflow's defaults (it fills in the rest)."""
    pg = (
        f"{AIRFLOW_DB_USER}:{values['POSTGRES_PASSWORD']}@{HOST}:{stack.ports['postgres']}"
        f"/{AIRFLOW_DATABASE}"
    )
    sections = {
        "core": {
            "executor": "CeleryExecutor",
            "dags_folder": stack.dags_folder,
            "load_examples": "False",
            "fernet_key": values["FERNET_KEY"],
            # Importing TensorFlow and TFX takes 10 s or more (the default limit is 30 s).
            "dagbag_import_timeout": 300,
            "dag_file_processor_timeout": 600,
            # The pipeline's DAG runs one task at a time (airflow_runner.py): two workers
            # with one slot each are the two machines of a small team's deployment.
            "parallelism": 4,
        },
        "database": {"sql_alchemy_conn": f"postgresql+psycopg2://{pg}"},
        "celery": {
            "broker_url": f"redis://:{values['REDIS_PASSWORD']}@{HOST}:{stack.ports['redis']}/0",
            "result_backend": f"db+postgresql://{pg}",
            "worker_concurrency": 1,
        },
        "scheduler": {
            # Parsing the DAG imports TensorFlow: not every 30 s on 2 cores.
            "min_file_process_interval": 300,
            "dag_dir_list_interval": 60,
            "parsing_processes": 1,
            # A worker that died mid-task: its task is failed (then retried) after 2 minutes
            # without a heartbeat, not Airflow's default 5.
            "scheduler_zombie_task_threshold": 120,
            # Airflow 2 finds such a task again at every check until the DAG processor has
            # handled the first finding, which means parsing the DAG (10-30 s here), and
            # handles each finding: one handled after the retry was queued fails the retry
            # (apache/airflow#42553). Checking every 60 s, not 10, leaves one finding.
            "zombie_detection_interval": 60,
        },
        "webserver": {
            "web_server_host": HOST,
            "web_server_port": stack.ports["webserver"],
            "base_url": stack.url,
            "secret_key": values["WEBSERVER_SECRET_KEY"],
            "workers": 2,
            # No periodic worker refresh (a fresh gunicorn worker re-imports everything).
            "worker_refresh_batch_size": 0,
            "expose_config": "False",
            "warn_deployment_exposure": "False",
        },
        "api": {
            "auth_backends": "airflow.api.auth.backend.basic_auth,airflow.api.auth.backend.session"
        },
        "logging": {"base_log_folder": stack.path("logs", "tasks")},
    }
    return "".join(
        f"[{section}]\n" + "".join(f"{key} = {value}\n" for key, value in options.items()) + "\n"
        for section, options in sections.items()
    )


def airflow_env(stack: Stack, environ: Optional[dict] = None) -> dict[str, str]:
    """The environment of every Airflow process: AIRFLOW_HOME, this checkout first on the
    import path (the DAG imports `pipeline` and `models`), the caller's PIPELINE_* settings,
    and the stack's MLMD store and shared pipeline root where the caller set none."""
    environ = dict(os.environ if environ is None else environ)
    env = {k: v for k, v in environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(stack.airflow_home),
        PYTHONPATH=os.pathsep.join(filter(None, [str(PROJECT_ROOT), environ.get("PYTHONPATH")])),
        TF_USE_LEGACY_KERAS="1",
        TF_CPP_MIN_LOG_LEVEL=environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
        PATH=os.pathsep.join([str(BIN), environ.get("PATH", "")]),
    )
    defaults = {
        "PIPELINE_AIRFLOW_OUTPUT_DIR": str(stack.shared_dir),
        "PIPELINE_AIRFLOW_MLMD_HOST": HOST,
        "PIPELINE_AIRFLOW_MLMD_PORT": str(stack.ports["mariadb"]),
        "PIPELINE_AIRFLOW_MLMD_DATABASE": MLMD_DATABASE,
        "PIPELINE_AIRFLOW_MLMD_USER": MLMD_USER,
        "PIPELINE_AIRFLOW_MLMD_PASSWORD_FILE": str(stack.mlmd_password_file),
    }
    if environ.get("PIPELINE_AIRFLOW_MLMD_HOST") or environ.get("PIPELINE_AIRFLOW_MLMD_SOCKET"):
        defaults = {k: v for k, v in defaults.items() if "_MLMD_" not in k}
    for key, value in defaults.items():
        env[key] = environ.get(key) or value
    return env


def _plain_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PIPELINE_"))}


def prepare_airflow(stack: Stack, values: dict[str, str], env: dict[str, str]) -> None:
    """airflow.cfg, the database schema, the admin login, and the DAG in dags/."""
    stack.dags_folder.mkdir(parents=True, exist_ok=True)
    write_private(stack.airflow_home / "airflow.cfg", airflow_config(stack, values))
    # The README's way: the runner file copied into the DAG folder.
    shutil.copy2(PROJECT_ROOT / "airflow_runner.py", stack.dags_folder / "airflow_runner.py")
    _checked([str(AIRFLOW), "db", "migrate"], "airflow db migrate", stack, env)
    marker = stack.path("run", "admin-created")
    if not marker.exists():
        _checked(
            admin_user_command(values["AIRFLOW_ADMIN_PASSWORD"]),
            "airflow users create",
            stack,
            env,
        )
        marker.touch()


def start_airflow(stack: Stack, service: str, env: dict[str, str]) -> int:
    if service == "scheduler":
        return spawn(stack, service, [str(AIRFLOW), "scheduler"], env)
    if service == "webserver":
        return spawn(stack, service, [str(AIRFLOW), "webserver"], env)
    # No log server: Airflow's binds every interface ([::]), and on one machine the UI reads
    # the task logs from the shared log folder (across machines: remote logging, or the
    # workers' log servers behind a firewall).
    command = [
        str(AIRFLOW),
        "celery",
        "worker",
        "--celery-hostname",
        f"{service}@%h",
        "--skip-serve-logs",
    ]
    return spawn(stack, service, command, env)


def admin_user_command(password: str) -> list[str]:
    """`airflow users create` of the UI's admin login."""
    return [
        str(AIRFLOW),
        *("users", "create", "--role", "Admin", "--username", ADMIN_USER),
        # Attached with "=": a generated password may start with "-", which argparse would
        # read as an option.
        f"--password={password}",
        *("--firstname", "Pipeline", "--lastname", "Admin", "--email", "admin@localhost"),
    ]


def _checked(
    command: list[str], what: str, stack: Optional[Stack] = None, env: Optional[dict] = None
) -> None:
    result = subprocess.run(
        command, env=env or _plain_env(), capture_output=True, text=True, cwd=stack and stack.root
    )
    if result.returncode != 0:
        raise StackError(f"{what} failed:\n{(result.stdout + result.stderr)[-3000:]}")


# PIDs are checked against these before anything is signalled.
PROGRAMS = {
    "postgres": "postgres",
    "mariadb": "mariadbd",
    "redis": "redis-server",
    "scheduler": "airflow scheduler",
    "webserver": "airflow webserver",
    "worker-1": "celery",
    "worker-2": "celery",
}


def _worker_ready(stack: Stack, service: str) -> bool:
    try:
        return " ready." in stack.log_file(service).read_text(errors="replace")
    except OSError:
        return False


def up(stack: Stack, environ: Optional[dict] = None) -> dict:
    """Starts every service that is not running (each checked first: idempotent); returns
    what it measured."""
    started_at = time.monotonic()
    stack.root.mkdir(parents=True, exist_ok=True)
    for sub in ("run", "logs"):
        stack.path(sub).mkdir(exist_ok=True)
    if os.geteuid() == 0:
        _reachable_by_postgres(stack.root)
    values = load_secrets(stack)
    env = airflow_env(stack, environ)
    started = []
    for service in SERVICES:
        if read_pid(stack, service) is not None:
            if service == "postgres":
                ensure_airflow_database(stack, values)
            elif service == "mariadb":
                ensure_mlmd_database(stack, values)
            continue
        # A log of this start only: the previous one's is kept beside it.
        log = stack.log_file(service)
        if log.exists():
            log.replace(log.with_suffix(".log.1"))
        pid = None
        if service == "postgres":
            start_postgres(stack, values)
        elif service == "mariadb":
            start_mariadb(stack, values)
        elif service == "redis":
            start_redis(stack, values)
        else:
            if service == "scheduler":
                prepare_airflow(stack, values, env)
            pid = start_airflow(stack, service, env)
            if service == "webserver":
                wait_for(service, stack, lambda: http_ok(f"{stack.url}/health"), pid)
            elif service in WORKERS:
                wait_for(service, stack, lambda s=service: _worker_ready(stack, s), pid)
        started.append(service)
        if service == "postgres":
            ensure_airflow_database(stack, values)
        elif service == "mariadb":
            ensure_mlmd_database(stack, values)
        # The scheduler writes its pid file a moment after it starts: its process's pid then.
        shown = read_pid(stack, service) or pid
        print(f"  {service}: started (pid {shown})", flush=True)
    seconds = time.monotonic() - started_at
    processes = stack_processes(stack)
    pss = {service: sum(pss_kib(p) for p in pids) for service, pids in processes.items()}
    report = {
        "started": started,
        "seconds": round(seconds, 1),
        "pss_mib": {k: round(v / 1024, 1) for k, v in pss.items()},
        "pss_total_mib": round(sum(pss.values()) / 1024, 1),
        "url": stack.url,
        "user": ADMIN_USER,
    }
    (stack.path("run", "up.json")).write_text(json.dumps(report, indent=1) + "\n")
    return report


def _reachable_by_postgres(root: Path) -> None:
    """The `postgres` user must reach its data dir: every parent directory searchable."""
    for parent in [root, *root.parents]:
        if not os.stat(parent).st_mode & 0o001:
            raise StackError(
                f"{parent} is not searchable by other users, so PostgreSQL (run as the "
                f"`postgres` user, since you are root) cannot reach {root}: "
                f"`chmod o+x {parent}` or set AIRFLOW_STACK_DIR elsewhere"
            )


def down(stack: Stack) -> list[str]:
    """Stops, in reverse start order, each service whose recorded pid still runs it."""
    return [service for service in reversed(SERVICES) if stop(stack, service)]


def status(stack: Stack) -> dict[str, dict]:
    return {
        service: {"pid": pids[0], "processes": len(pids), "pss_mib": _pss_mib(pids)}
        for service, pids in stack_processes(stack).items()
    }


def _pss_mib(pids: list[int]) -> float:
    return round(sum(pss_kib(p) for p in pids) / 1024, 1)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("up", "down", "status"))
    args = parser.parse_args(argv)
    stack = Stack.from_env()
    try:
        if args.command == "up":
            print(f"Airflow stack under {stack.root}", flush=True)
            report = up(stack)
            values = load_secrets(stack)
            print(
                f"up in {report['seconds']} s; memory (PSS) {report['pss_total_mib']} MiB\n"
                f"Airflow UI and REST API: {stack.url}  (login: {ADMIN_USER} / "
                f"{values['AIRFLOW_ADMIN_PASSWORD']}; kept in {stack.secrets_file})\n"
                f"The DAG: {stack.dags_folder / 'airflow_runner.py'}; logs: {stack.path('logs')}"
            )
        elif args.command == "down":
            stopped = down(stack)
            print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
        else:
            print(json.dumps(status(stack), indent=1))
    except StackError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
