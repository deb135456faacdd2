"""`distill-ner` console command: set-up, MLflow UI, and using the production model.

    distill-ner predict --types person,location "Marie Curie was born in Warsaw."
    echo '{"text": "...", "types": ["person"]}' | distill-ner predict --model models:/distill-ner@production
    distill-ner promote --model-name distill-ner --version 3
    distill-ner rollback --model-name distill-ner
    distill-ner compare --experiment distill_ner --last 2
    distill-ner serve --model models:/distill-ner@production --port 5001
    distill-ner export --model models:/distill-ner@production --format gguf --quant q4_k_m --ollama
    distill-ner predict --model exports/distill-ner-production-q4_k_m.gguf --types person "Marie Curie ..."
    distill-ner extract --model models:/distill-extract@production --template t.json file.txt
    distill-ner benchmarks list
    distill-ner benchmarks fetch --suite uniner_zero_shot

The MLflow tracking URI is MLFLOW_TRACKING_URI when set, else the active ZenML stack's tracker.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from distill_ner.backends import BACKENDS, QUANTS
from distill_ner.console import check_model, quiet_defaults, results_only_on_stdout, tracking_uri, use_tracking_uri
from distill_ner.errors import DEBUG_ENV, HINT, debug_wanted, describe
from distill_ner.extraction.cli import add_commands as add_extraction_commands
from distill_ner.kubeflow import add_commands as add_kubeflow_commands
from distill_ner.ner.cli import add_commands as add_ner_commands

DEFAULT_STUDENT_DIR = ".cache/models/SmolLM2-135M-Instruct"
TINY_STUDENT_DIR = ".cache/models/tiny-random-llama"
# each recipe adds its own subcommands (a light module: heavy imports stay inside the commands)
RECIPE_COMMANDS = (add_ner_commands, add_extraction_commands)


def cmd_fetch_student(args: argparse.Namespace) -> None:
    from distill_ner import models

    if args.tiny:
        print(models.make_tiny_model(args.dest or TINY_STUDENT_DIR, models.demo_corpus_texts()))
    else:
        print(models.fetch_smollm2(args.dest or DEFAULT_STUDENT_DIR))


def cmd_stack(args: argparse.Namespace) -> None:
    from distill_ner.stack import ensure_stack

    print(ensure_stack(tracking_uri=args.tracking_uri))


def cmd_setup(args: argparse.Namespace) -> None:
    cmd_fetch_student(argparse.Namespace(tiny=False, dest=None))
    cmd_fetch_student(argparse.Namespace(tiny=True, dest=None))
    cmd_stack(argparse.Namespace(tracking_uri=args.tracking_uri))


def cmd_mlflow_uri(args: argparse.Namespace) -> None:
    from distill_ner.stack import tracking_uri_of_active_stack

    print(tracking_uri_of_active_stack())


def cmd_ui(args: argparse.Namespace) -> None:
    from distill_ner.processes import run_process_group

    uri = tracking_uri()
    print(f"MLflow UI on http://127.0.0.1:{args.port} for {uri}", flush=True)
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        "127.0.0.1",
        "--port",
        str(args.port),
        "--workers",
        str(args.workers),
    ]
    sys.exit(run_process_group(command))


def cmd_compare(args: argparse.Namespace) -> None:
    from mlflow import MlflowClient

    from distill_ner.compare import RunNotFoundError, markdown_table, resolve_runs, ui_compare_url

    results_only_on_stdout()
    use_tracking_uri()
    try:
        runs = resolve_runs(MlflowClient(), args.runs, args.experiment, args.last)
    except RunNotFoundError as exc:
        raise SystemExit(str(exc)) from None
    try:
        table = markdown_table(runs, all_params=args.all_params, keys=args.keys)
    except re.error as exc:
        raise SystemExit(f"compare --keys {args.keys!r}: not a regular expression ({exc})") from None
    print(table)
    print(
        f"\nIn the MLflow UI (distill-ner ui --port {args.port}): {ui_compare_url(runs, f'http://127.0.0.1:{args.port}')}"
    )


def cmd_export(args: argparse.Namespace) -> None:
    from distill_ner.engine.gguf import ExportError, as_jsonable, export_gguf

    results_only_on_stdout()
    if args.model.startswith(("models:/", "runs:/")):
        use_tracking_uri()
    try:
        result = export_gguf(args.model, args.out, args.quant, ollama=args.ollama)
    except (ExportError, ValueError, ImportError, FileNotFoundError) as exc:
        raise SystemExit(f"export: {exc}") from None
    print(json.dumps(as_jsonable(result)), flush=True)


def check_registered_name(model_name: str, version: str | None = None) -> None:
    """Exit with one line listing what is registered when `model_name` (or its `version`) is not."""
    from mlflow import MlflowClient

    from distill_ner.registry.lookup import ModelNotFoundError, check_registered

    try:
        check_registered(MlflowClient(), model_name, version=version)
    except ModelNotFoundError as exc:
        raise SystemExit(str(exc)) from None


def cmd_promote(args: argparse.Namespace) -> None:
    from distill_ner import registry

    use_tracking_uri()
    check_registered_name(args.model_name, str(args.version))
    replaced = registry.promote(args.model_name, args.version)
    print(
        f"{args.model_name}: production -> v{args.version}"
        + (f" (previous: v{replaced})" if replaced and replaced != str(args.version) else "")
    )


def cmd_rollback(args: argparse.Namespace) -> None:
    from distill_ner import registry

    use_tracking_uri()
    check_registered_name(args.model_name)
    current = registry.production_version(args.model_name)
    try:
        restored = registry.rollback(args.model_name)
    except LookupError as exc:
        raise SystemExit(f"rollback: {exc}") from exc
    print(f"{args.model_name}: production v{current} -> v{restored}")


def cmd_serve(args: argparse.Namespace) -> None:
    from distill_ner.processes import run_process_group

    uri = use_tracking_uri()
    check_model(args.model)
    print(f"serving {args.model} on http://127.0.0.1:{args.port}/invocations (tracking {uri})", flush=True)
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", args.model, "--env-manager", "local"]
    command += ["--host", "127.0.0.1", "-p", str(args.port), "--workers", str(args.workers)]
    # the server resolves models:/ URIs itself: it needs the same tracking URI
    env = {**interpreter_path_env(), "MLFLOW_TRACKING_URI": uri}
    if args.backend:
        from distill_ner.serving import BACKEND_ENV

        env[BACKEND_ENV] = args.backend
    overrides = serve_overrides(args)
    # MLflow's own load-time override of the logged model_config, read by every server worker
    env["MLFLOW_PYFUNC_INFERENCE_CONFIG"] = json.dumps(overrides)
    # MLflow's server answers 504 at its own limit without stopping the work; a little later than the
    # model's limit, so that the model drops the request's unanswered questions and says so itself
    env["MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"] = str(int(overrides["request_timeout_s"]) + 5)
    sys.exit(run_process_group(command, env=env))


def serve_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The served model's settings that `serve` changes (`--free`, `--timeout`, `--set KEY=VALUE`), checked
    against the serving settings of the recipes (distill_ner.ner.config.NERServing, ...)."""
    from distill_ner.extraction.config import ExtractionServing
    from distill_ner.ner.config import NERServing

    known = set(NERServing.model_fields) | set(ExtractionServing.model_fields)
    overrides: dict[str, Any] = {}
    for item in args.set or []:
        key, sep, raw = item.partition("=")
        if not sep or key not in known:
            raise SystemExit(f"serve: --set {item}: expected KEY=VALUE with KEY one of {', '.join(sorted(known))}")
        try:
            overrides[key] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key] = raw
    if args.free:
        overrides["grounded"] = False
    overrides["request_timeout_s"] = args.timeout
    try:
        NERServing(**{k: v for k, v in overrides.items() if k in NERServing.model_fields})
    except ValueError as exc:
        raise SystemExit(f"serve: {exc}") from None
    return overrides


def interpreter_path_env() -> dict[str, str]:
    """This environment with the running interpreter's bin folder first on PATH: mlflow starts
    `uvicorn`/`gunicorn` by name, and `.venv/bin/distill-ner` runs without an activated venv."""
    bindir = os.path.dirname(sys.executable)  # not resolved: a venv's python is a link out of the venv
    return {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}


def cmd_team_stack(args: argparse.Namespace) -> None:
    from distill_ner import team_stack

    state_dir = Path(args.state_dir)
    if args.action == "up":
        state = team_stack.up(state_dir)
        for name in ("postgres", "s3", "mlflow", "zenml"):
            print(f"{name}: 127.0.0.1:{state[name]['port']}")
        print(f"stack {state['stack']} ({state['stack_id']}); to use it from this checkout:")
        print('  eval "$(distill-ner team-stack env)"      # and back to the local stack:')
        print('  eval "$(distill-ner team-stack env --unset)"')
    elif args.action == "env":
        print(team_stack_env_script(args, state_dir))
    elif args.action == "down":
        print("\n".join(f"stopped {what}" for what in team_stack.down(state_dir)) or f"nothing recorded in {state_dir}")
    else:
        print(json.dumps(team_stack.status(state_dir), indent=1, sort_keys=True))


def team_stack_env_script(args: argparse.Namespace, state_dir: Path) -> str:
    """Shell lines that point this shell's ZenML (and so every pipeline and command run from it) at the team
    stack, or with --unset back at whatever was selected locally, which the team stack never changes."""
    import shlex

    from distill_ner import team_stack

    if args.unset:
        return "unset " + " ".join(team_stack.CLIENT_ENV_KEYS)
    if args.url or args.stack_id:
        if not (args.url and args.stack_id):
            raise SystemExit("team-stack env: --url and --stack-id go together")
        state = {"zenml": {"url": args.url}, "stack_id": args.stack_id, "dir": str(state_dir.resolve())}
    else:
        state = team_stack.load_state(state_dir)
        if state.get("status") != "up":
            raise SystemExit(
                f"team-stack env: no running team stack recorded in {state_dir} (`distill-ner team-stack up`, or "
                "give --url and --stack-id of a team ZenML server)"
            )
    env = team_stack.client_env(state, client_dir=args.client_dir)
    return "export " + " ".join(f"{key}={shlex.quote(value)}" for key, value in env.items())


class _SubcommandParser(argparse.ArgumentParser):
    """A subcommand's parser (the recipes' too): its --help shows each option's default."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distill-ner", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"show the traceback of configuration and input errors too (or {DEBUG_ENV}=1)",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_SubcommandParser)

    p = sub.add_parser(
        "fetch-student", help="get the offline default student (SmolLM2-135M-Instruct) or the tiny test model"
    )
    p.add_argument(
        "--tiny", action="store_true", help="build the tiny random Llama used by tests and configs/smoke.yaml"
    )
    p.add_argument(
        "--dest",
        default=None,
        help=f"folder to write; default {DEFAULT_STUDENT_DIR}, or {TINY_STUDENT_DIR} with --tiny",
    )
    p.set_defaults(func=cmd_fetch_student)

    p = sub.add_parser("stack", help="register (once) and activate the ZenML stack with MLflow tracker and registry")
    p.add_argument("--tracking-uri", default=None, help="remote MLflow server; default: a local sqlite store")
    p.set_defaults(func=cmd_stack)

    p = sub.add_parser("setup", help="fetch-student (both) + stack: everything the demo needs")
    p.add_argument("--tracking-uri", default=None, help="remote MLflow server; default: a local sqlite store")
    p.set_defaults(func=cmd_setup)

    p = sub.add_parser("mlflow-uri", help="print the MLflow tracking URI of the active stack")
    p.set_defaults(func=cmd_mlflow_uri)

    p = sub.add_parser("ui", help="serve the MLflow UI (MLFLOW_TRACKING_URI, else the active stack's) on 127.0.0.1")
    p.add_argument("--port", type=int, default=5055, help="port on 127.0.0.1")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes (MLflow's own default, 4, only costs memory for one user)",
    )
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser("compare", help="MLflow runs side by side: differing params and every metric, plus the UI link")
    p.add_argument("runs", nargs="*", help="run ids or run names (ZenML run names); default: the last --last runs")
    p.add_argument("--experiment", default=None, help="MLflow experiment (the pipeline name, e.g. distill_ner)")
    p.add_argument(
        "--last", type=int, default=2, help="without run names: this many latest finished runs (1 shows one run)"
    )
    p.add_argument("--all-params", action="store_true", help="every parameter, not only those that differ")
    p.add_argument(
        "--keys", default=None, help="regular expression: only the rows whose key it finds, e.g. 'learning_rate|f1'"
    )
    p.add_argument("--port", type=int, default=5055, help="port of `distill-ner ui`, for the link")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("promote", help="move the `production` alias (and ZenML stage) to a version, no gate")
    p.add_argument("--model-name", default="distill-ner", help="registered model name")
    p.add_argument("--version", required=True, help="registered version number")
    p.set_defaults(func=cmd_promote)

    p = sub.add_parser("rollback", help="production <- previous (and ZenML stage)")
    p.add_argument("--model-name", default="distill-ner", help="registered model name")
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("serve", help="mlflow models serve a model on 127.0.0.1 from this environment")
    p.add_argument("--model", default="models:/distill-ner@production", help="MLflow model URI")
    p.add_argument("--port", type=int, default=5001, help="port on 127.0.0.1")
    p.add_argument("--workers", type=int, default=1, help="each worker loads its own copy of the model")
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="inference backend (default: the logged model's); llamacpp converts the model to GGUF f16 on load",
    )
    p.add_argument(
        "--free",
        action="store_true",
        help="free decoding (UniNER's): answers may hold strings that are not in the text",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="a request's time limit in seconds (its unanswered questions are dropped)",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="a serving setting, e.g. max_text_chars=50000, max_batch=32, output=grouped (repeatable)",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("export", help="write a model as a GGUF file for llama.cpp / Ollama (llama.cpp's own converter)")
    p.add_argument(
        "--model", default="models:/distill-ner@production", help="hub id, folder, adapter folder or MLflow model URI"
    )
    p.add_argument("--format", choices=["gguf"], default="gguf")
    p.add_argument(
        "--quant",
        choices=QUANTS,
        default="f16",
        help="f32/f16/q8_0 by the converter; q4_k_m by llama.cpp's quantizer (needs llama-cpp-python)",
    )
    p.add_argument("--out", default=None, help="the .gguf file to write (default: exports/<model>-<quant>.gguf)")
    p.add_argument("--ollama", action="store_true", help="also write an Ollama Modelfile beside it")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("team-stack", help="PostgreSQL, S3, MLflow and ZenML servers on 127.0.0.1 and their ZenML stack")
    p.add_argument(
        "action",
        choices=["up", "down", "status", "env"],
        help="env: print the shell lines that use the team stack from this shell (eval them); --unset: back",
    )
    p.add_argument(
        "--state-dir",
        default=os.environ.get("DISTILL_NER_TEAM_STACK_DIR", ".cache/team-stack"),
        help="pids, ports and data of the servers (default .cache/team-stack)",
    )
    p.add_argument("--unset", action="store_true", help="env: the lines that return to the local stack selection")
    p.add_argument("--url", help="env: a team ZenML server's URL (default: the one `up` recorded)")
    p.add_argument("--stack-id", help="env: the team stack's id on that server (default: the one `up` recorded)")
    p.add_argument("--client-dir", help="env: ZenML's client state for the team stack (default: <state dir>/client)")
    p.set_defaults(func=cmd_team_stack)
    add_kubeflow_commands(sub)

    for add_commands in RECIPE_COMMANDS:
        add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    quiet_defaults()
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except Exception as exc:
        message = None if args.debug or debug_wanted() else describe(exc, [], paths=True)
        if message is None:
            raise
        raise SystemExit(f"distill-ner {args.command}: {message}\n{HINT}") from None


if __name__ == "__main__":
    main()
