"""A team stack of real servers on 127.0.0.1, and the ZenML stack that uses them.

`up` starts, each on a random free port and with its data under one state folder:

- PostgreSQL (Debian's server binaries): the MLflow backend store;
- an S3-compatible object store (moto's server mode) with one bucket;
- `mlflow server` on PostgreSQL, its artifacts in the bucket (served through the tracking server, so
  clients need no object-store credentials for MLflow);
- a ZenML server (`zenml login --local`), which clients use over REST;

then registers, on the ZenML server, an S3 artifact store on the same bucket, the MLflow tracker and
registry pointing at the tracking server, and a stack of them. The object-store keys and the database
password exist only in ZenML secrets (and in the environment of the servers `up` started); the state
file holds pids, ports and folders, never a credential. `down` stops exactly what `up` recorded.

A client "machine" needs only `client_env(state)`: the ZenML server URL and the stack id, and folders of
its own for ZenML's client state (`eval "$(distill-ner team-stack env)"` sets them, `--unset` undoes it).
"""

from __future__ import annotations

import glob
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from distill_ner.paths import PROJECT_ROOT

logger = logging.getLogger(__name__)

DEFAULT_STATE_DIR = Path(".cache/team-stack")
STATE_FILE = "state.json"
STACK_NAME = "distill-ner-team"
BUCKET = "distill-ner"
DB_NAME = "mlflow"
DB_USER = "mlflow"
S3_SECRET = "team_s3"  # keys aws_access_key_id / aws_secret_access_key (ZenML's AWS secret schema)
DB_SECRET = "team_postgres"  # keys username / password
MLFLOW_SECRET = "team_mlflow"  # keys username / password of the tracking server's basic auth
MLFLOW_USER = "distill-ner"
AUTH_DB_NAME = "mlflow_auth"
ARTIFACT_STORE = "team_s3_store"
TRACKER = "team_mlflow_tracker"
REGISTRY = "team_mlflow_registry"
START_TIMEOUT_S = 300.0
# ZenML looks for a repository (.zen) upward from the working directory: the admin commands run where
# none is, so that they never touch a project's active stack
NEUTRAL_CWD = "/"


# ------------------------------------------------------------------------------------------- helpers


def free_port() -> int:
    """A port nobody listens on now (the OS picks it; a race with another process is unlikely)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(
    what: str, ready: Any, proc: subprocess.Popen | None, log: Path | None, timeout: float = START_TIMEOUT_S
) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with code {proc.returncode} while starting:\n{tail}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout:.0f} s (log: {log})")
        time.sleep(0.3)


def _http_ok(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status < 500
    except Exception:  # noqa: BLE001 - not up yet
        return False


def postgres_bin() -> Path | None:
    """The folder of Debian's PostgreSQL server binaries (highest version), or of `initdb` on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def missing_requirements() -> list[str]:
    """What `up` needs and this machine lacks (empty when the team stack can start)."""
    missing = [] if postgres_bin() else ["PostgreSQL server binaries (apt-get install postgresql)"]
    for module, package in (
        ("moto", "moto[server]"),
        ("s3fs", "s3fs"),
        ("boto3", "boto3"),
        ("psycopg2", "psycopg2-binary"),
    ):
        try:
            __import__(module)
        except ImportError:
            missing.append(f"{package} (pip install -e '.[team]')")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        missing.append("runuser (initdb refuses to run as root)")
    return missing


def _as_postgres_user(cmd: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: as root, run them as the `postgres` system user."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _spawn(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """A server in its own session (so `down` can stop its whole process group), output to `log`."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )


def _base_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ZENML_ANALYTICS_OPT_IN="false",
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="1",
        ZENML_AUTO_OPEN_DASHBOARD="false",
    )
    for key in (
        "ZENML_STORE_URL",
        "ZENML_STORE_API_KEY",
        "ZENML_ACTIVE_STACK_ID",
        "MLFLOW_TRACKING_URI",
        "MLFLOW_REGISTRY_URI",
    ):
        env.pop(key, None)
    return env


def _bin(name: str) -> str:
    """An executable of this interpreter's environment (the venv), else from PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else name


# ------------------------------------------------------------------------------------------- state


def load_state(state_dir: Path) -> dict[str, Any]:
    path = Path(state_dir) / STATE_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def _save_state(state_dir: Path, state: dict[str, Any]) -> None:
    path = Path(state_dir) / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
    tmp.replace(path)


CLIENT_ENV_KEYS = (
    "ZENML_STORE_URL",
    "ZENML_ACTIVE_STACK_ID",
    "ZENML_CONFIG_PATH",
    "ZENML_REPOSITORY_PATH",
    "ZENML_CUSTOM_SOURCE_ROOT",
)


def client_env(
    state: dict[str, Any], client_dir: str | Path | None = None, source_root: str | Path | None = None
) -> dict[str, str]:
    """Environment variables that make a client use the team stack (no credential among them), without
    touching what the checkout or the user selected locally.

    Only the server URL and the stack id select the team stack. The rest keeps ZenML off the local state:
    with a server URL in the environment ZenML writes that server into its global config and, finding the
    checkout's active stack missing there, resets the checkout's `.zen/config.yaml` to the server's
    `default` stack (after which local runs go to a stack without MLflow). So the client keeps its own
    global config and ZenML repository in `client_dir` (default: `<state dir>/client`), and the checkout is
    only the source root the pipelines' code is imported from (default: the project's root)."""
    client = Path(client_dir) if client_dir else Path(state["dir"]) / "client"
    (client / ".zen").mkdir(parents=True, exist_ok=True)
    (client / "zenml").mkdir(exist_ok=True)
    return {
        "ZENML_STORE_URL": state["zenml"]["url"],
        "ZENML_ACTIVE_STACK_ID": state["stack_id"],
        "ZENML_CONFIG_PATH": str((client / "zenml").resolve()),
        "ZENML_REPOSITORY_PATH": str(client.resolve()),
        "ZENML_CUSTOM_SOURCE_ROOT": str(Path(source_root or PROJECT_ROOT).resolve()),
    }


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ------------------------------------------------------------------------------------------- up


def _folder_others_can_reach() -> str:
    """The temp folder when every folder above it lets other users through; else /tmp. A private TMPDIR (mode
    0700, as `mktemp -d` makes) would keep the `postgres` user out of its own cluster: initdb fails."""
    tmp = Path(tempfile.gettempdir()).resolve()
    if all(folder.stat().st_mode & 0o001 for folder in (tmp, *tmp.parents)):
        return str(tmp)
    return "/tmp"


def _start_postgres(state_dir: Path, state: dict[str, Any], password: str, env: dict[str, str]) -> None:
    bindir = postgres_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL server binaries not found: apt-get install postgresql")
    if os.geteuid() == 0:
        # the cluster belongs to the `postgres` user, which must reach every folder above it
        data_root = Path(tempfile.mkdtemp(prefix="distill-ner-pg-", dir=_folder_others_can_reach()))
        shutil.chown(data_root, "postgres", "postgres")
    else:
        data_root = state_dir / "postgres"
        data_root.mkdir(parents=True, exist_ok=True)
    data = data_root / "data"
    port = free_port()
    state["postgres"] = {"root": str(data_root), "data": str(data), "port": port, "bin": str(bindir)}
    _save_state(state_dir, state)
    pwfile = data_root / "pwfile"
    pwfile.write_text(password + "\n")
    if os.geteuid() == 0:
        shutil.chown(pwfile, "postgres", "postgres")
    pwfile.chmod(0o600)
    try:
        subprocess.run(
            _as_postgres_user(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    DB_USER,
                    f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256",
                    "--auth-local=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                ]
            ),
            check=True,
            capture_output=True,
            text=True,
            env=env,
            cwd=data_root,
        )
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"initdb failed: {exc.stderr[-2000:]}") from exc
    finally:
        pwfile.unlink(missing_ok=True)
    options = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories='' -c max_connections=200"
    done = subprocess.run(
        _as_postgres_user(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(data / "server.log"),
                "-o",
                options,
                "-w",
                "-t",
                "120",
                "start",
            ]
        ),
        capture_output=True,
        text=True,
        env=env,
        cwd=data_root,
    )
    if done.returncode != 0:
        log = (data / "server.log").read_text(errors="replace")[-2000:] if (data / "server.log").exists() else ""
        raise RuntimeError(f"pg_ctl start failed: {done.stdout[-1000:]} {done.stderr[-1000:]}\n{log}")
    state["postgres"]["pid"] = int((data / "postmaster.pid").read_text().split()[0])
    _save_state(state_dir, state)

    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=port, user=DB_USER, password=password, dbname="postgres")
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            for name in (DB_NAME, AUTH_DB_NAME):
                cur.execute(f"CREATE DATABASE {name} OWNER {DB_USER}")
    finally:
        conn.close()


def _start_object_store(state_dir: Path, state: dict[str, Any], key: str, secret: str, env: dict[str, str]) -> None:
    port = free_port()
    log = state_dir / "s3.log"
    proc = _spawn([_bin("moto_server"), "-H", "127.0.0.1", "-p", str(port)], log, env)
    url = f"http://127.0.0.1:{port}"
    state["s3"] = {"pid": proc.pid, "port": port, "url": url, "bucket": BUCKET, "log": str(log)}
    _save_state(state_dir, state)
    _wait_for("the object store", lambda: _http_ok(url), proc, log)
    s3_client(url, key, secret).create_bucket(Bucket=BUCKET)


def s3_client(url: str, key: str, secret: str) -> Any:
    import boto3

    return boto3.client(
        "s3", endpoint_url=url, aws_access_key_id=key, aws_secret_access_key=secret, region_name="us-east-1"
    )


def _start_mlflow(state_dir: Path, state: dict[str, Any], creds: dict[str, str], env: dict[str, str]) -> None:
    port = free_port()
    log = state_dir / "mlflow.log"
    pg = state["postgres"]
    # basic auth, its users in PostgreSQL; the file holds no credential (they come from the environment)
    auth_ini = state_dir / "mlflow_auth.ini"
    auth_ini.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = postgresql://{DB_USER}@127.0.0.1:{pg['port']}/{AUTH_DB_NAME}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # a password check costs a PBKDF2 hash per request: cache a verified one for a minute
        "auth_cache_ttl_seconds = 60\n"
    )
    key, secret = creds["key"], creds["secret"]
    server_env = {
        **env,
        # the password reaches libpq through its environment, never a command line or a URI on disk
        "PGPASSWORD": creds["password"],
        "MLFLOW_AUTH_CONFIG_PATH": str(auth_ini),
        "MLFLOW_AUTH_ADMIN_USERNAME": MLFLOW_USER,
        "MLFLOW_AUTH_ADMIN_PASSWORD": creds["mlflow_password"],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(32),  # CSRF tokens of the auth app
        "MLFLOW_S3_ENDPOINT_URL": state["s3"]["url"],
        "AWS_ACCESS_KEY_ID": key,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    cmd = [
        _bin("mlflow"),
        "server",
        "--backend-store-uri",
        f"postgresql://{DB_USER}@127.0.0.1:{pg['port']}/{DB_NAME}",
        "--serve-artifacts",
        "--artifacts-destination",
        f"s3://{BUCKET}/mlflow",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--app-name",
        "basic-auth",
        # one worker: uvicorn's supervisor kills workers slower to start than its 5 s health check,
        # which a busy machine is
        "--workers",
        "1",
    ]
    proc = _spawn(cmd, log, server_env)
    url = f"http://127.0.0.1:{port}"
    state["mlflow"] = {"pid": proc.pid, "port": port, "url": url, "log": str(log)}
    _save_state(state_dir, state)
    _wait_for("mlflow server", lambda: _http_ok(url + "/health"), proc, log, timeout=300)


def _start_zenml_server(state_dir: Path, state: dict[str, Any], env: dict[str, str]) -> dict[str, str]:
    port = free_port()
    config = state_dir / "zenml-server"
    config.mkdir(parents=True, exist_ok=True)
    # kfp and kubernetes on the server's path, as `zenml integration install kubeflow` puts them on a real one's:
    # the server validates a Kubeflow orchestrator's settings with kubernetes' models (kubeflow.register_stack)
    from distill_ner.kubeflow import kfp_pythonpath

    admin_env = {**env, "ZENML_CONFIG_PATH": str(config), "PYTHONPATH": kfp_pythonpath(env.get("PYTHONPATH", ""))}
    state["zenml"] = {
        "port": port,
        "url": f"http://127.0.0.1:{port}",
        "config": str(config),
        "log": str(state_dir / "zenml.log"),
    }
    _save_state(state_dir, state)
    # `zenml login --local`, with a start timeout of ours (its own 30 s default is too short for a busy
    # machine); the server is ZenML's local daemon, its store the admin client's SQLite
    with open(state_dir / "zenml.log", "ab") as out:
        done = subprocess.run(
            [sys.executable, "-m", "distill_ner.team_stack"],
            input=json.dumps({"action": "zenml_server", "port": port, "timeout": int(START_TIMEOUT_S)}).encode(),
            env=admin_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=START_TIMEOUT_S + 120,
            cwd=NEUTRAL_CWD,
        )
    if done.returncode != 0:
        raise RuntimeError(
            f"starting the ZenML server failed: {(state_dir / 'zenml.log').read_text(errors='replace')[-3000:]}"
        )
    pid_file = config / "zen_server" / "daemon" / "service.pid"
    if pid_file.exists():
        state["zenml"]["pid"] = int(pid_file.read_text().strip())
    _save_state(state_dir, state)
    return admin_env


def start_zenml_server_here(port: int, timeout: int) -> None:
    """What `zenml login --local --ip-address 127.0.0.1 --port <port>` does, waiting up to `timeout` s."""
    import ipaddress

    from zenml.enums import ServerProviderType
    from zenml.zen_server.deploy.deployer import LocalServerDeployer
    from zenml.zen_server.deploy.deployment import LocalServerDeploymentConfig

    deployer = LocalServerDeployer()
    config = LocalServerDeploymentConfig(
        provider=ServerProviderType.DAEMON, ip_address=ipaddress.ip_address("127.0.0.1"), port=port
    )
    deployer.deploy_server(config, timeout=timeout)
    deployer.connect_to_server()


def register_stack_on_server(args: dict[str, str]) -> str:
    """Secrets, components and the stack on the ZenML server this process is connected to; returns the stack id."""
    from zenml.client import Client
    from zenml.enums import StackComponentType as T

    client = Client()
    client.create_secret(
        args["s3_secret"], values={"aws_access_key_id": args["key"], "aws_secret_access_key": args["secret"]}
    )
    client.create_secret(args["db_secret"], values={"username": args["db_user"], "password": args["password"]})
    client.create_stack_component(
        args["artifact_store"],
        flavor="s3",
        component_type=T.ARTIFACT_STORE,
        configuration={
            "path": f"s3://{args['bucket']}/zenml",
            "authentication_secret": args["s3_secret"],
            "client_kwargs": {"endpoint_url": args["s3_url"], "region_name": "us-east-1"},
        },
    )
    client.create_secret(
        args["mlflow_secret"], values={"username": args["mlflow_user"], "password": args["mlflow_password"]}
    )
    client.create_stack_component(
        args["tracker"],
        flavor="mlflow",
        component_type=T.EXPERIMENT_TRACKER,
        configuration={
            "tracking_uri": args["mlflow_url"],
            "tracking_username": "{{%s.username}}" % args["mlflow_secret"],
            "tracking_password": "{{%s.password}}" % args["mlflow_secret"],
        },
    )
    client.create_stack_component(args["registry"], flavor="mlflow", component_type=T.MODEL_REGISTRY, configuration={})
    stack = client.create_stack(
        name=args["stack"],
        components={
            T.ORCHESTRATOR: "default",
            T.ARTIFACT_STORE: args["artifact_store"],
            T.EXPERIMENT_TRACKER: args["tracker"],
            T.MODEL_REGISTRY: args["registry"],
        },
    )
    return str(stack.id)


def _register_stack(state_dir: Path, state: dict[str, Any], admin_env: dict[str, str], creds: dict[str, str]) -> None:
    args = {
        **creds,
        "s3_secret": S3_SECRET,
        "db_secret": DB_SECRET,
        "mlflow_secret": MLFLOW_SECRET,
        "mlflow_user": MLFLOW_USER,
        "db_user": DB_USER,
        "bucket": BUCKET,
        "artifact_store": ARTIFACT_STORE,
        "tracker": TRACKER,
        "registry": REGISTRY,
        "stack": STACK_NAME,
        "s3_url": state["s3"]["url"],
        "mlflow_url": state["mlflow"]["url"],
    }
    # credentials travel on stdin: never on a command line, in a file or a log
    done = subprocess.run(
        [sys.executable, "-m", "distill_ner.team_stack"],
        input=json.dumps(args),
        env=admin_env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=NEUTRAL_CWD,
    )
    if done.returncode != 0:
        raise RuntimeError(f"registering the ZenML stack failed: {done.stderr[-3000:]}")
    state["stack_id"] = json.loads(done.stdout.strip().splitlines()[-1])["stack_id"]
    state["stack"] = STACK_NAME
    _save_state(state_dir, state)


def up(state_dir: Path = DEFAULT_STATE_DIR) -> dict[str, Any]:
    """Start every server and register the stack; returns the state (what `down` stops, what clients use).

    A state folder that already records running servers is refused: `down` first. A failure part-way
    stops what was started before re-raising.
    """
    state_dir = Path(state_dir).expanduser().resolve()
    existing = load_state(state_dir)
    if existing.get("status") in ("starting", "up"):
        raise RuntimeError(
            f"{state_dir} already holds a team stack ({existing['status']}); run `distill-ner team-stack down` first"
        )
    missing = missing_requirements()
    if missing:
        raise RuntimeError("the team stack needs: " + "; ".join(missing))
    state_dir.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {"status": "starting", "dir": str(state_dir)}
    _save_state(state_dir, state)
    creds = {
        "password": secrets.token_urlsafe(18),
        "mlflow_password": secrets.token_urlsafe(18),
        "key": "AKIA" + secrets.token_hex(8).upper(),
        "secret": secrets.token_urlsafe(30),
    }
    env = _base_env()
    timings = state.setdefault("start_s", {})
    try:
        t = time.monotonic()
        _start_postgres(state_dir, state, creds["password"], env)
        timings["postgres"], t = round(time.monotonic() - t, 1), time.monotonic()
        _start_object_store(state_dir, state, creds["key"], creds["secret"], env)
        timings["s3"], t = round(time.monotonic() - t, 1), time.monotonic()
        _start_mlflow(state_dir, state, creds, env)
        timings["mlflow"], t = round(time.monotonic() - t, 1), time.monotonic()
        admin_env = _start_zenml_server(state_dir, state, env)
        timings["zenml"], t = round(time.monotonic() - t, 1), time.monotonic()
        _register_stack(state_dir, state, admin_env, creds)
        timings["stack"] = round(time.monotonic() - t, 1)
    except BaseException:
        logger.error("starting the team stack failed; stopping what was started")
        down(state_dir)
        raise
    state["status"] = "up"
    _save_state(state_dir, state)
    return state


# ------------------------------------------------------------------------------------------- down


def _stop_group(pid: int, timeout: float = 20.0) -> None:
    """SIGTERM the process group `up` started (its leader's pid), SIGKILL what is left after `timeout`."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _stop_pid(pid: int, timeout: float = 20.0) -> None:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _pid_alive(pid):
        os.kill(pid, signal.SIGKILL)


def down(state_dir: Path = DEFAULT_STATE_DIR) -> list[str]:
    """Stop what `up` recorded in `state_dir` and remove its data; returns what was stopped."""
    state_dir = Path(state_dir).expanduser().resolve()
    state = load_state(state_dir)
    stopped: list[str] = []
    env = _base_env()
    zenml = state.get("zenml")
    if zenml:
        done = subprocess.run(
            [_bin("zenml"), "logout", "--local"],
            env={**env, "ZENML_CONFIG_PATH": zenml["config"]},
            capture_output=True,
            text=True,
            timeout=120,
            cwd=NEUTRAL_CWD,
        )
        pid_file = Path(zenml["config"]) / "zen_server" / "daemon" / "service.pid"
        pid = zenml.get("pid") or (int(pid_file.read_text().strip()) if pid_file.exists() else None)
        if pid and _pid_alive(pid):  # a daemon that logout could not stop (e.g. one that never became healthy)
            _stop_pid(pid)
        stopped.append(
            f"zenml server :{zenml['port']}"
            + ("" if done.returncode == 0 else " (logout failed: " + done.stderr[-300:] + ")")
        )
    for name in ("mlflow", "s3"):
        if state.get(name, {}).get("pid"):
            _stop_group(state[name]["pid"])
            stopped.append(f"{name} :{state[name]['port']}")
    pg = state.get("postgres")
    if pg:
        data = Path(pg["data"])
        if (data / "postmaster.pid").exists():
            subprocess.run(
                _as_postgres_user([str(Path(pg["bin"]) / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                capture_output=True,
                text=True,
                env=env,
                timeout=120,
                cwd=pg["root"],
            )
            stopped.append(f"postgres :{pg['port']}")
        if pg.get("pid") and _pid_alive(pg["pid"]):
            os.kill(pg["pid"], signal.SIGKILL)
        shutil.rmtree(pg["root"], ignore_errors=True)
    if state_dir.exists():
        shutil.rmtree(state_dir, ignore_errors=True)
    return stopped


def status(state_dir: Path = DEFAULT_STATE_DIR) -> dict[str, Any]:
    """The recorded state, each server marked alive or not."""
    state = load_state(Path(state_dir).expanduser().resolve())
    if not state:
        return {"status": "down"}
    checks = {
        "postgres": lambda s: bool(s.get("pid")) and _pid_alive(s["pid"]),
        "s3": lambda s: _http_ok(s["url"]),
        "mlflow": lambda s: _http_ok(s["url"] + "/health"),
        "zenml": lambda s: _http_ok(s["url"] + "/health"),
    }
    for name, check in checks.items():
        if name in state:
            state[name]["alive"] = check(state[name])
    return state


if __name__ == "__main__":  # run as the server's admin client, arguments on stdin (credentials included)
    request = json.loads(sys.stdin.read())
    if request.get("action") == "zenml_server":
        start_zenml_server_here(request["port"], request["timeout"])
    else:
        print(json.dumps({"stack_id": register_stack_on_server(request)}))
