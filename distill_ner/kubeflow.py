"""Kubeflow Pipelines specs of the project's pipelines, compiled by ZenML's own Kubeflow orchestrator, with no
cluster, no Docker daemon and without touching the user's ZenML state.

    distill-ner kubeflow compile --out build/kubeflow --image registry.example.com/distill-ner:0.1

writes `<pipeline>.yaml` (KFP v2 IR) for distill_ner, evaluate_ner and distill_extraction, each from its config
(`--config PIPELINE=FILE`). The compile runs in a child process (`python -m distill_ner.kubeflow`) with its own
ZenML config and repository folders under a temp folder, a throw-away stack (ZenML's `kubeflow` orchestrator, a
placeholder container registry) and the image given: `DockerSettings(skip_build=True, parent_image=image)`, so
nothing is built; the image must hold the project (docs/remote_stack.md).

kfp lives in its own folder, not in the project's environment: every kfp release pins `protobuf<7`, while the
environment's transformers/sentencepiece protobuf modules were generated for protobuf 7 and fail to import on 6.
`KFP_REQUIREMENTS` is installed once with `pip install --no-deps --target <user cache>/kfp-<version>` and put on
the child's PYTHONPATH only. kfp 2.16.1: ZenML 0.98 accepts `kfp>=2.6`, but kfp 2.17's compiler rejects the
`.after(<component>)` call ZenML makes.

ZenML 0.98's orchestrator needs four corrections, each applied here and nowhere else (`_patched`), each pinned by a
test (tests/test_kubeflow.py):

1. Stack validation: its validator wants a remote container registry, image builder and ZenML server, and refuses
   any local component; compiling needs none of them: ZENML_SKIP_STACK_VALIDATION=true in the child.
2. Upload: `submit_pipeline` compiles, then uploads to the cluster: the private `_upload_and_run_pipeline` is
   replaced by one that only records the compiled file.
3. GPUs: a step's `ResourceSettings(gpu_count=N)` reaches the spec only with an `accelerator` node selector, which
   the orchestrator settings' validator always drops (it rebuilds `pod_settings` from a legacy key): the live
   orchestrator's config gets the selector (`--accelerator`, default `nvidia.com/gpu`).
4. Memory: ZenML passes `ResourceSettings.memory` as a float of GB to kfp's `set_memory_limit`, which wants a
   string, so any `memory:` crashes the compile: it is passed as "<n>G" (request and limit) instead.
Retries: the orchestrator drops a step's `retry:`; its `max_retries` becomes the task's KFP retry policy.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from distill_ner.paths import PROJECT_ROOT, building, user_cache_dir

KFP_VERSION = "2.16.1"
# what kfp 2.16.1 needs beyond the project's environment, pinned (installed with --no-deps)
KFP_REQUIREMENTS = (
    f"kfp=={KFP_VERSION}",
    f"kfp-kubernetes=={KFP_VERSION}",
    "kfp-pipeline-spec==2.17.3",
    "kfp-server-api==2.17.3",
    "kubernetes==30.1.0",
    "google-api-core==2.34.0",
    "google-cloud-core==2.8.0",
    "google-cloud-storage==3.17.2",
    "google-crc32c==1.9.0",
    "google-resumable-media==2.11.0",
    "googleapis-common-protos==1.76.0",
    "proto-plus==1.29.0",
    "click-option-group==0.5.7",
    "docstring_parser==0.18.0",
    "oauthlib==4.0.1",
    "requests-oauthlib==2.0.0",
    "requests-toolbelt==1.0.0",
    "tabulate==0.10.0",
    "websocket-client==1.9.2",
)
PIPELINES = {
    "distill_ner": ("pipelines.distill_ner.distill_ner", "configs/remote_gpu.yaml"),
    "evaluate_ner": ("pipelines.evaluate_ner.evaluate_ner", "configs/evaluate_production_cpu.yaml"),
    "distill_extraction": ("pipelines.distill_extraction.distill_extraction", "configs/extract_demo.yaml"),
}
DEFAULT_ACCELERATOR = "nvidia.com/gpu"


class KubeflowError(RuntimeError):
    pass


# ------------------------------------------------------------------------------------------- kfp


def kfp_dir() -> Path:
    """The folder kfp and its pinned dependencies are installed into (once), outside the environment."""
    return Path(os.environ.get("DISTILL_NER_KFP_DIR") or user_cache_dir() / f"kfp-{KFP_VERSION}")


def ensure_kfp(dest: Path | None = None) -> Path:
    """kfp installed under `dest` (pip --target --no-deps of KFP_REQUIREMENTS), once; returns the folder."""
    dest = dest or kfp_dir()
    with building(dest):
        if (dest / "kfp" / "__init__.py").is_file():
            return dest
        partial = dest.with_name(dest.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        command = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(partial)]
        done = subprocess.run([*command, *KFP_REQUIREMENTS], capture_output=True, text=True)
        if done.returncode != 0:
            raise KubeflowError(f"installing kfp {KFP_VERSION} into {dest} failed: {done.stderr.strip()[-800:]}")
        partial.rename(dest)
    return dest


def kfp_pythonpath(*after: str | Path) -> str:
    """A PYTHONPATH with kfp's folder first, then `after` (empty entries dropped): what every process that imports
    ZenML's Kubeflow orchestrator gets (compile, stack registration, the ZenML server, the runner's tasks)."""
    return os.pathsep.join(filter(None, [str(ensure_kfp()), *map(str, after)]))


# ------------------------------------------------------------------------------- in the parent


def compile_pipelines(
    out: str | Path,
    image: str,
    configs: Mapping[str, str] | None = None,
    accelerator: str = DEFAULT_ACCELERATOR,
    timeout_s: float = 900,
    without: tuple[str, ...] = (),
    stack: str | None = None,
) -> dict[str, Path]:
    """Compile each pipeline (name -> config file, default PIPELINES) to `<out>/<name>.yaml`; returns the files.
    `without` leaves corrections out ("gpu", "memory", "retries"): how the tests show each defect.

    Without `stack`: against a throw-away local store (a spec to check, not to run: its snapshot ids exist
    nowhere else). With `stack`: against that Kubeflow stack on the ZenML server this environment is connected
    to (`ZENML_STORE_URL`, as `distill-ner team-stack env` exports it), so the snapshots live on the server and the
    spec runs (`run_spec`, or a cluster); the user's ZenML config and the checkout's selection stay as they were."""
    chosen = {name: config for name, (_, config) in PIPELINES.items()} if configs is None else dict(configs)
    unknown = sorted(set(chosen) - set(PIPELINES))
    if unknown:
        raise KubeflowError(f"unknown pipeline(s) {unknown}; known: {', '.join(PIPELINES)}")
    for name, config in chosen.items():
        if not (PROJECT_ROOT / config).is_file() and not Path(config).is_file():
            raise KubeflowError(f"--config {name}={config}: no such file")
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="distill_ner_kfp_") as tmp:
        repo = Path(tmp) / "repo"
        (repo / ".zen").mkdir(parents=True)
        env = {
            **os.environ,
            "PYTHONPATH": kfp_pythonpath(PROJECT_ROOT, os.environ.get("PYTHONPATH", "")),
            "ZENML_CONFIG_PATH": str(Path(tmp) / "zenml"),
            "ZENML_REPOSITORY_PATH": str(repo),
            "ZENML_ANALYTICS_OPT_IN": "false",
            "ZENML_SKIP_STACK_VALIDATION": "true",  # correction 1 (module doc)
            "ZENML_LOGGING_COLORS_DISABLED": "true",
        }
        if stack is None:
            for key in ("ZENML_STORE_URL", "ZENML_STORE_API_KEY", "ZENML_ACTIVE_STACK_ID", "ZENML_ACTIVE_PROJECT_ID"):
                env.pop(key, None)  # never the team's server: the compile registers a throw-away stack
        elif not env.get("ZENML_STORE_URL"):
            raise KubeflowError(
                f"--stack {stack}: no ZenML server in this environment (ZENML_STORE_URL is unset); "
                'connect first: eval "$(distill-ner team-stack env)"'
            )
        else:
            env.pop("ZENML_ACTIVE_STACK_ID", None)  # the child selects `stack` in its own config
        request = {
            "stack": stack,
            "out": str(out),
            "image": image,
            "accelerator": accelerator,
            "configs": chosen,
            "without": list(without),
            "tmp": tmp,
        }
        done = subprocess.run(
            [sys.executable, "-m", "distill_ner.kubeflow", json.dumps(request)],
            cwd=PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    if done.returncode != 0:
        raise KubeflowError(f"compiling failed:\n{(done.stdout + done.stderr).strip()[-4000:]}")
    return {name: out / f"{name}.yaml" for name in chosen}


# ------------------------------------------------------------------------- the stack on a server

KUBEFLOW_STACK = "distill-ner-kubeflow"


def register_stack(host: str, registry: str, name: str = KUBEFLOW_STACK, base: str | None = None) -> str:
    """`_register_stack` in a child process that has kfp and kubernetes (ZenML validates a kubeflow orchestrator's
    settings with kubernetes' models); the child keeps this environment's ZenML server and client folders."""
    env = {**os.environ, "PYTHONPATH": kfp_pythonpath(PROJECT_ROOT)}
    request = {"action": "stack", "host": host, "registry": registry, "name": name, "base": base}
    done = subprocess.run(
        [sys.executable, "-m", "distill_ner.kubeflow", json.dumps(request)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise KubeflowError((done.stdout + done.stderr).strip()[-3000:])
    return done.stdout.strip().splitlines()[-1]


def _register_stack(host: str, registry: str, name: str = KUBEFLOW_STACK, base: str | None = None) -> str:
    """Register (or update) the Kubeflow stack `name` on the ZenML server this process is connected to: ZenML's
    kubeflow orchestrator at `host`, a container registry at `registry`, and the artifact store, MLflow tracker
    and registry (and image builder, if any) of the stack `base` (default: the active one, the team stack after
    `eval "$(distill-ner team-stack env)"`). Returns the stack's id. Selects nothing."""
    from zenml.client import Client
    from zenml.enums import StackComponentType as T
    from zenml.enums import StoreType

    client = Client()
    if client.zen_store.type != StoreType.REST:
        raise KubeflowError(
            "a Kubeflow stack lives on the team's ZenML server, and this environment uses a local store: "
            'connect first (eval "$(distill-ner team-stack env)")'
        )
    base_stack = client.get_stack(base) if base else client.active_stack_model
    shared = {
        t: base_stack.components[t][0].id
        for t in (T.ARTIFACT_STORE, T.EXPERIMENT_TRACKER, T.MODEL_REGISTRY, T.IMAGE_BUILDER)
        if base_stack.components.get(t)
    }
    missing = [t.value for t in (T.EXPERIMENT_TRACKER, T.MODEL_REGISTRY) if t not in shared]
    if missing or base_stack.components[T.ARTIFACT_STORE][0].flavor_name == "local":
        raise KubeflowError(
            f"stack {base_stack.name!r} cannot carry a Kubeflow stack: it needs a remote artifact store, an MLflow "
            f"experiment tracker and model registry (missing: {', '.join(missing) or 'a remote artifact store'})"
        )
    components = {
        T.ORCHESTRATOR: (f"{name}-orchestrator", "kubeflow", {"kubeflow_hostname": host}),
        T.CONTAINER_REGISTRY: (f"{name}-registry", "default", {"uri": registry}),
    }
    ids = dict(shared)
    for kind, (component, flavor, configuration) in components.items():
        existing = client.list_stack_components(name=component, type=kind).items
        if existing:
            ids[kind] = client.update_stack_component(component, kind, configuration=configuration).id
        else:
            ids[kind] = client.create_stack_component(component, flavor, kind, configuration).id
    if client.list_stacks(name=name).items:
        stack = client.update_stack(name, component_updates=ids)
    else:
        stack = client.create_stack(name, components=ids)
    return str(stack.id)


# ------------------------------------------------------------------------------------ the runner

# what a task's container gets from the runner's environment, as a cluster would give it from its secrets
PASSED_ENV = ("ZENML_STORE_API_KEY", "ZENML_STORE_API_TOKEN", "ZENML_STORE_VERIFY_SSL")
_PLACEHOLDER = re.compile(r"\{\{\$\.([a-z_]+)\}\}")


# run with a killed task's own environment: its step run, left "running" by a process that had no chance to
# say otherwise, marked failed (which fails the ZenML run until the step is run again)
_MARK_KILLED = """
import sys
from zenml.client import Client
from zenml.orchestrators import publish_utils
job, step = sys.argv[1:3]
for run in Client().list_pipeline_runs(orchestrator_run_id=job).items:
    for step_run in Client().list_run_steps(pipeline_run_id=run.id, name=step).items:
        if not step_run.status.is_finished:
            publish_utils.publish_failed_step_run(step_run.id)
            print(f"marked step run {step_run.id} of {step} failed")
"""


def spec_tasks(spec: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Step name -> {task, dependencies (step names), command, env} of a compiled spec, in the DAG's order."""
    tasks = spec["root"]["dag"]["tasks"]
    found: dict[str, dict[str, Any]] = {}
    for task_name, task in tasks.items():
        executor = spec["components"][task["componentRef"]["name"]]["executorLabel"]
        container = spec["deploymentSpec"]["executors"][executor]["container"]
        args = list(container.get("args", []))
        step = args[args.index("--step_name") + 1] if "--step_name" in args else task_name
        found[task_name] = {
            "step": step,
            "task": task_name,
            "after": list(task.get("dependentTasks", [])),
            "command": [*container.get("command", []), *args],
            "env": {e["name"]: e["value"] for e in container.get("env", [])},
        }
    ordered: dict[str, dict[str, Any]] = {}
    pending = dict(found)
    while pending:  # Kahn's order, ties by name: the same spec always runs in the same order
        ready = sorted(name for name, t in pending.items() if all(d in ordered for d in t["after"]))
        if not ready:
            raise KubeflowError(f"the spec's DAG has a cycle or an unknown dependency among {sorted(pending)}")
        for name in ready:
            ordered[name] = pending.pop(name)
    steps = {t["step"]: {**t, "after": [ordered[d]["step"] for d in t["after"]]} for t in ordered.values()}
    return steps


def _substitute(value: str, values: Mapping[str, str], where: str) -> str:
    def one(match: re.Match[str]) -> str:
        if match.group(1) not in values:
            raise KubeflowError(f"{where}: the runner cannot fill the placeholder {match.group(0)}")
        return values[match.group(1)]

    return _PLACEHOLDER.sub(one, value)


def run_spec(
    spec_path: str | Path,
    workdir: str | Path,
    job_name: str | None = None,
    only: tuple[str, ...] = (),
    timeout_s: float | None = None,
    pass_env: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Run a compiled spec without Kubernetes: each task's command (the image's entrypoint, here this
    environment's Python) as its own process, in the DAG's order, each with its own HOME, working directory,
    temp folder and ZenML config under `<workdir>/<job>/<step>/`; the processes share nothing but the servers
    named in the spec (the ZenML server and, through the stack, its object store and MLflow).

    `job_name` is the KFP run name (`{{$.pipeline_job_name}}`, ZenML's orchestrator run id): give a finished
    job's name with `only` to rerun some of its tasks in the same ZenML run (a pod restarted). `pass_env`
    names further variables of this environment the tasks get (e.g. a teacher's API key), beside PASSED_ENV.
    Returns {job, steps: {step: {returncode, seconds, log}}}; raises KubeflowError on the first failed task,
    naming it and its log (the tasks after it are not started)."""
    import yaml

    spec_path = Path(spec_path)
    try:
        spec = yaml.safe_load(spec_path.read_text(encoding="utf-8"))
        steps = spec_tasks(spec)
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise KubeflowError(
            f"{spec_path}: not a compiled Kubeflow pipeline spec ({type(exc).__name__}: {exc})"
        ) from None
    unknown = sorted(set(only) - set(steps))
    if unknown:
        raise KubeflowError(f"{spec_path}: no step {unknown}; its steps: {', '.join(steps)}")
    pipeline = spec.get("pipelineInfo", {}).get("name", spec_path.stem)
    job = job_name or f"{pipeline}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    root = Path(workdir).resolve() / job
    bindir = str(Path(sys.executable).parent)  # `python` of the image is this environment's
    base = {
        "PATH": os.pathsep.join([bindir, "/usr/local/bin", "/usr/bin", "/bin"]),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        # the image holds the project (its working directory) and kfp, which ZenML's kubeflow orchestrator imports
        "PYTHONPATH": kfp_pythonpath(PROJECT_ROOT),
        "ZENML_CUSTOM_SOURCE_ROOT": str(PROJECT_ROOT),
        "ZENML_ANALYTICS_OPT_IN": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
        "TRANSFORMERS_OFFLINE": os.environ.get("TRANSFORMERS_OFFLINE", "1"),
        "PYTHONUNBUFFERED": "1",
    }
    base.update({k: os.environ[k] for k in (*PASSED_ENV, *pass_env) if k in os.environ})
    results: dict[str, Any] = {}
    for step, task in steps.items():
        if only and step not in only:
            continue
        folder = root / step
        run_dir = folder / f"attempt-{1 + len(list(folder.glob('attempt-*')))}"
        home, cwd, tmp = run_dir / "home", run_dir / "cwd", run_dir / "tmp"
        for d in (home, cwd, tmp):
            d.mkdir(parents=True)
        values = {
            "pipeline_job_name": job,
            "pipeline_job_uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, job)),
            "pipeline_task_name": task["task"],
            "pipeline_task_uuid": str(uuid.uuid4()),
        }
        where = f"{spec_path} step {step}"
        command = [_substitute(c, values, where) for c in task["command"]]
        if command and command[0] == "python":
            command[0] = sys.executable
        env = {
            **base,
            **{k: _substitute(v, values, where) for k, v in task["env"].items()},
            "HOME": str(home),
            "TMPDIR": str(tmp),
            "ZENML_CONFIG_PATH": str(home / ".config" / "zenml"),
            "ZENML_REPOSITORY_PATH": str(cwd),
        }
        log = run_dir / "log.txt"
        started = time.monotonic()
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
            print(f"{step}: started, pid {proc.pid}", flush=True)
            try:
                returncode = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                returncode = -signal.SIGKILL
        results[step] = {"returncode": returncode, "seconds": round(time.monotonic() - started, 1), "log": str(log)}
        print(f"{step}: exit {returncode} in {results[step]['seconds']} s  ({log})", flush=True)
        if returncode < 0:
            # killed by a signal (SIGKILL: no handler of ZenML's ran): as an orchestrator that watches its pods
            # would, mark the step run failed rather than leave it "running" forever
            marked = subprocess.run(
                [command[0], "-c", _MARK_KILLED, job, step], cwd=cwd, env=env, capture_output=True, text=True
            )
            print(f"{step}: {(marked.stdout.strip() or marked.stderr.strip()[-500:] or 'no step run left running')}")
        if returncode != 0:
            tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
            raise KubeflowError(f"step {step} of job {job} exited with {returncode}; its log {log} ends:\n{tail}")
    return {"job": job, "steps": results}


# -------------------------------------------------------------------------------- in the child


@contextmanager
def _patched(
    orchestrator: Any, retries: Mapping[str, int], accelerator: str, without: tuple[str, ...] = ()
) -> Iterator[dict[str, Any]]:
    """Corrections 2-4 and retries (module doc) on the orchestrator for one compile; yields what the stubbed
    upload received (`pipeline_file_path`, ...)."""
    from zenml.integrations.kubeflow.orchestrators.kubeflow_orchestrator import KubeflowOrchestrator

    written: dict[str, Any] = {}
    original = KubeflowOrchestrator._configure_container_resources

    def configure(self: Any, task: Any, resource_settings: Any, node_selector_constraint: Any = None) -> Any:
        memory = resource_settings.get_memory() if resource_settings is not None and "memory" not in without else None
        if memory:
            resource_settings = resource_settings.model_copy(update={"memory": None})
        task = original(self, task, resource_settings, node_selector_constraint)
        if memory:
            task = task.set_memory_request(f"{memory:g}G").set_memory_limit(f"{memory:g}G")
        step = task._task_spec.display_name  # the step name: ZenML sets it as the task's display name
        if retries.get(step) and "retries" not in without:
            task = task.set_retry(num_retries=retries[step], backoff_duration="30s", backoff_factor=2.0)
        return task

    previous_config = orchestrator._config
    if "gpu" not in without:
        orchestrator._config = type(previous_config)(
            **previous_config.model_dump(exclude_unset=True), node_selectors={"accelerator": accelerator}
        )
    KubeflowOrchestrator._configure_container_resources = configure
    KubeflowOrchestrator_upload = KubeflowOrchestrator._upload_and_run_pipeline
    KubeflowOrchestrator._upload_and_run_pipeline = lambda self, **kwargs: written.update(kwargs)
    try:
        yield written
    finally:
        KubeflowOrchestrator._configure_container_resources = original
        KubeflowOrchestrator._upload_and_run_pipeline = KubeflowOrchestrator_upload
        orchestrator._config = previous_config


def _with_image(config: str, image: str, folder: Path) -> Path:
    """A copy of the config whose docker settings run `image` as it is (skip_build): a config file outranks any
    settings passed beside it, so the image has to be written into the file ZenML reads."""
    import yaml

    data = yaml.safe_load(Path(config).read_text(encoding="utf-8")) or {}
    settings = data.setdefault("settings", {})
    settings["docker"] = {**(settings.get("docker") or {}), "skip_build": True, "parent_image": image}
    dest = folder / Path(config).name
    dest.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return dest


def _throwaway_stack(client: Any, image: str) -> None:
    """A local stack to compile against: ZenML's kubeflow orchestrator at a host that resolves nowhere."""
    from zenml.enums import StackComponentType

    client.create_stack_component(
        "kubeflow", "kubeflow", StackComponentType.ORCHESTRATOR, {"kubeflow_hostname": "https://kubeflow.invalid"}
    )
    client.create_stack_component(
        "registry",
        "default",
        StackComponentType.CONTAINER_REGISTRY,
        {"uri": image.rsplit("/", 1)[0] if "/" in image else "localhost"},
    )
    # the pipelines run only on a stack with an MLflow tracker and registry (as the team stack's); the compile
    # never reaches the server, so an address that resolves nowhere stands in, with a placeholder for the token
    # ZenML requires of a remote tracker (a secret reference would have to resolve wherever ZenML reads it)
    client.create_stack_component(
        "mlflow_tracker",
        "mlflow",
        StackComponentType.EXPERIMENT_TRACKER,
        {"tracking_uri": "https://mlflow.invalid", "tracking_token": "compile-only-placeholder"},
    )
    client.create_stack_component("mlflow_registry", "mlflow", StackComponentType.MODEL_REGISTRY, {})
    client.create_stack(
        "kubeflow-compile",
        components={
            StackComponentType.ORCHESTRATOR: "kubeflow",
            StackComponentType.ARTIFACT_STORE: "default",
            StackComponentType.CONTAINER_REGISTRY: "registry",
            StackComponentType.EXPERIMENT_TRACKER: "mlflow_tracker",
            StackComponentType.MODEL_REGISTRY: "mlflow_registry",
        },
    )
    client.activate_stack("kubeflow-compile")


def _child(request: dict[str, Any]) -> None:
    import importlib

    from zenml.client import Client
    from zenml.enums import StackComponentType
    from zenml.utils import source_utils

    source_utils.set_custom_source_root(str(PROJECT_ROOT))  # step sources resolve against the project
    client = Client()
    step_env: dict[str, str] = {}
    if request["stack"]:
        stack_model = client.get_stack(request["stack"])
        if stack_model.components[StackComponentType.ORCHESTRATOR][0].flavor_name != "kubeflow":
            raise SystemExit(f"--stack {request['stack']}: its orchestrator is not a Kubeflow one")
        client.activate_stack(stack_model.id)
        # what ZenML's own submission gives every task to find its server, stack and project, less the API
        # token: a credential belongs in the cluster's secrets (or the runner's environment), never in the spec
        step_env = {
            "ZENML_STORE_URL": os.environ["ZENML_STORE_URL"],
            "ZENML_ACTIVE_STACK_ID": str(stack_model.id),
            "ZENML_ACTIVE_PROJECT_ID": str(client.active_project.id),
        }
    else:
        _throwaway_stack(client, request["image"])
    for name, config in request["configs"].items():
        t0 = time.perf_counter()
        module, attr = PIPELINES[name][0].rsplit(".", 1)
        pipeline = getattr(importlib.import_module(module), attr)
        configured = pipeline.with_options(config_path=str(_with_image(config, request["image"], Path(request["tmp"]))))
        snapshot = configured.create_snapshot(name=f"{name}-{uuid.uuid4().hex[:8]}")
        retries = {
            step: step_config.config.retry.max_retries
            for step, step_config in snapshot.step_configurations.items()
            if step_config.config.retry is not None
        }
        stack = client.active_stack
        with _patched(stack.orchestrator, retries, request["accelerator"], tuple(request["without"])) as written:
            stack.orchestrator.submit_pipeline(
                snapshot=snapshot,
                stack=stack,
                base_environment={},
                step_environments={step: dict(step_env) for step in snapshot.step_configurations},
            )
        dest = Path(request["out"]) / f"{name}.yaml"
        shutil.copyfile(written["pipeline_file_path"], dest)
        print(f"{name}: {dest} ({len(snapshot.step_configurations)} steps, {time.perf_counter() - t0:.1f} s)")


# ------------------------------------------------------------------------------------------- CLI


def add_commands(sub: Any) -> None:
    p = sub.add_parser("kubeflow", help="Kubeflow Pipelines specs of the pipelines (no cluster needed)")
    actions = p.add_subparsers(dest="action", required=True)
    c = actions.add_parser("compile", help="write <pipeline>.yaml (KFP v2) for each pipeline")
    c.add_argument("--out", default="build/kubeflow", help="folder for the YAML files")
    c.add_argument(
        "--image", required=True, help="image that holds the project, e.g. registry.example.com/distill-ner:0.1"
    )
    c.add_argument(
        "--config",
        action="append",
        metavar="PIPELINE=FILE",
        help=f"a pipeline and its config (repeatable; default: {', '.join(f'{n}={c}' for n, (_, c) in PIPELINES.items())})",
    )
    c.add_argument("--accelerator", default=DEFAULT_ACCELERATOR, help="accelerator type of GPU steps")
    c.add_argument(
        "--stack",
        help="compile against this Kubeflow stack on the connected ZenML server (a spec that runs); "
        "default: a throw-away local stack (a spec to check)",
    )
    c.set_defaults(func=cmd_compile)
    s = actions.add_parser("stack", help="register a Kubeflow stack on the connected ZenML server (the team stack's)")
    s.add_argument(
        "--host", required=True, help="the Kubeflow Pipelines API, e.g. https://kubeflow.example.com/pipeline"
    )
    s.add_argument("--registry", required=True, help="the container registry the image is pushed to")
    s.add_argument("--name", default=KUBEFLOW_STACK, help=f"the stack's name (default {KUBEFLOW_STACK})")
    s.add_argument("--base", help="the stack whose artifact store and MLflow it shares (default: the active one)")
    s.set_defaults(func=cmd_stack)
    r = actions.add_parser("run", help="run a compiled spec without Kubernetes: each step its own process")
    r.add_argument("spec", help="a spec compiled with --stack")
    r.add_argument("--workdir", default="build/kubeflow-runs", help="the tasks' HOME, cwd and temp folders, and logs")
    r.add_argument("--job", help="the KFP run name; an earlier job's, with --step, reruns steps in its ZenML run")
    r.add_argument("--step", action="append", default=[], help="run only this step (repeatable)")
    r.add_argument("--pass-env", action="append", default=[], metavar="NAME", help="pass this variable to the tasks")
    r.set_defaults(func=cmd_run)


def cmd_compile(args: argparse.Namespace) -> None:
    configs = None
    if args.config:
        configs = {}
        for item in args.config:
            name, sep, file = item.partition("=")
            if not sep:
                raise SystemExit(f"kubeflow compile: --config {item}: expected PIPELINE=FILE")
            configs[name] = file
    try:
        files = compile_pipelines(args.out, args.image, configs, args.accelerator, stack=args.stack)
    except KubeflowError as exc:
        raise SystemExit(f"kubeflow compile: {exc}") from None
    for name, path in files.items():
        print(f"{name}: {path}")


def cmd_stack(args: argparse.Namespace) -> None:
    try:
        stack_id = register_stack(args.host, args.registry, args.name, args.base)
    except (KubeflowError, KeyError) as exc:
        raise SystemExit(f"kubeflow stack: {exc}") from None
    print(f"{args.name}: {stack_id}")
    print(f"compile against it:  distill-ner kubeflow compile --stack {args.name} --image <image>")


def cmd_run(args: argparse.Namespace) -> None:
    try:
        done = run_spec(args.spec, args.workdir, args.job, tuple(args.step), pass_env=tuple(args.pass_env))
    except KubeflowError as exc:
        raise SystemExit(f"kubeflow run: {exc}") from None
    print(f"job {done['job']}: {len(done['steps'])} step(s) done")


if __name__ == "__main__":
    _request = json.loads(sys.argv[1])
    if _request.get("action") == "stack":
        try:
            print(_register_stack(_request["host"], _request["registry"], _request["name"], _request["base"]))
        except KubeflowError as _exc:
            raise SystemExit(str(_exc)) from None
    else:
        _child(_request)
