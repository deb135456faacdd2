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
import shutil
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


# ------------------------------------------------------------------------------- in the parent


def compile_pipelines(
    out: str | Path,
    image: str,
    configs: Mapping[str, str] | None = None,
    accelerator: str = DEFAULT_ACCELERATOR,
    timeout_s: float = 900,
    without: tuple[str, ...] = (),
) -> dict[str, Path]:
    """Compile each pipeline (name -> config file, default PIPELINES) to `<out>/<name>.yaml`; returns the files.
    `without` leaves corrections out ("gpu", "memory", "retries"): how the tests show each defect."""
    chosen = {name: config for name, (_, config) in PIPELINES.items()} if configs is None else dict(configs)
    unknown = sorted(set(chosen) - set(PIPELINES))
    if unknown:
        raise KubeflowError(f"unknown pipeline(s) {unknown}; known: {', '.join(PIPELINES)}")
    for name, config in chosen.items():
        if not (PROJECT_ROOT / config).is_file() and not Path(config).is_file():
            raise KubeflowError(f"--config {name}={config}: no such file")
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    site = ensure_kfp()
    with tempfile.TemporaryDirectory(prefix="distill_ner_kfp_") as tmp:
        repo = Path(tmp) / "repo"
        (repo / ".zen").mkdir(parents=True)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(site), str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")]),
            "ZENML_CONFIG_PATH": str(Path(tmp) / "zenml"),
            "ZENML_REPOSITORY_PATH": str(repo),
            "ZENML_ANALYTICS_OPT_IN": "false",
            "ZENML_SKIP_STACK_VALIDATION": "true",  # correction 1 (module doc)
            "ZENML_LOGGING_COLORS_DISABLED": "true",
        }
        for key in ("ZENML_STORE_URL", "ZENML_STORE_API_KEY", "ZENML_ACTIVE_STACK_ID", "ZENML_ACTIVE_PROJECT_ID"):
            env.pop(key, None)  # never the team's server: the compile registers a throw-away stack
        request = {
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


def _child(request: dict[str, Any]) -> None:
    import importlib

    from zenml.client import Client
    from zenml.enums import StackComponentType
    from zenml.utils import source_utils

    source_utils.set_custom_source_root(str(PROJECT_ROOT))  # step sources resolve against the project
    client = Client()
    client.create_stack_component(
        "kubeflow", "kubeflow", StackComponentType.ORCHESTRATOR, {"kubeflow_hostname": "https://kubeflow.invalid"}
    )
    client.create_stack_component(
        "registry",
        "default",
        StackComponentType.CONTAINER_REGISTRY,
        {"uri": request["image"].rsplit("/", 1)[0] if "/" in request["image"] else "localhost"},
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
                step_environments={step: {} for step in snapshot.step_configurations},
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
    c.set_defaults(func=cmd_compile)


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
        files = compile_pipelines(args.out, args.image, configs, args.accelerator)
    except KubeflowError as exc:
        raise SystemExit(f"kubeflow compile: {exc}") from None
    for name, path in files.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    _child(json.loads(sys.argv[1]))
