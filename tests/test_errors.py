"""Configuration and input errors: one message naming the file and key, no traceback unless asked for.

`zenml pipeline run` with a bad config is checked end to end in test_pipeline_smoke.py."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from distill_ner import cli
from distill_ner.errors import DEBUG_ENV, InputError, describe, install_excepthook
from distill_ner.jsonl import iter_jsonl
from distill_ner.ner.config import DistillConfig

ROOT = Path(__file__).resolve().parents[1]


def _config_with(**train) -> dict:
    raw = yaml.safe_load((ROOT / "configs/demo.yaml").read_text())
    raw["parameters"]["config"]["train"].update(train)
    return raw


def _zenml_style_error(config: dict) -> ValueError:
    """What `zenml pipeline run` raises: the pipeline's arguments validated as a function call, the pydantic
    error wrapped in a ValueError of ZenML's."""
    from pydantic import validate_call

    @validate_call
    def distill_ner(config: DistillConfig) -> None:  # the pipeline's signature
        pass

    try:
        try:
            distill_ner(config=config)
        except ValidationError:
            raise ValueError("Invalid or missing pipeline function entrypoint arguments.")  # noqa: B904 (as ZenML)
    except ValueError as wrapped:
        return wrapped
    raise AssertionError("the config validated")


def test_wrapped_config_error_names_file_and_key_as_the_yaml_spells_them():
    raw = _config_with(learning_rat=1e-4, max_steps="forty")
    try:
        DistillConfig.model_validate(raw["parameters"]["config"], context={"skip_path_checks": True})
    except ValidationError as exc:
        # ZenML's wrapper drops the cause with `from None`, but keeps it as __context__
        wrapper = ValueError("Invalid or missing pipeline function entrypoint arguments.")
        wrapper.__context__ = exc
        # as ZenML reports it: the location starts at the pipeline's parameter
        message = describe(
            wrapper, ["zenml", "pipeline", "run", "pipelines.distill_ner.distill_ner", "-c", "configs/mine.yaml"]
        )
    assert message is not None
    assert message.startswith("configs/mine.yaml: invalid configuration (2 errors)")
    assert "train.learning_rat: unknown key" in message
    assert "train.max_steps:" in message and "'forty'" in message
    assert "Traceback" not in message


def test_pipeline_parameter_location_is_prefixed_with_parameters():
    exc = _zenml_style_error(_config_with(learning_rat=1e-4)["parameters"]["config"])
    message = describe(exc, ["-c", "x.yaml"])
    assert message is not None and "parameters.config.train.learning_rat: unknown key" in message


def test_bug_keeps_its_traceback():
    assert describe(RuntimeError("a bug")) is None
    assert describe(KeyError("k")) is None
    # a missing file is the user's on the command line only
    missing = FileNotFoundError(2, "No such file or directory", "notes.txt")
    assert describe(missing) is None
    assert describe(missing, paths=True) == "notes.txt: No such file or directory"


def test_input_errors_of_the_readers_are_input_errors(tmp_path: Path):
    bad = tmp_path / "corpus.jsonl"
    bad.write_text('{"text": "fine"}\nnot json\n')
    with pytest.raises(InputError, match=r"corpus.jsonl:2: invalid JSON"):
        list(iter_jsonl(bad))


def test_excepthook_prints_one_message_and_delegates_the_rest(monkeypatch, capsys):
    seen: list[BaseException] = []
    monkeypatch.setattr(sys, "excepthook", lambda kind, exc, tb: seen.append(exc))
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    install_excepthook()
    hook = sys.excepthook

    hook(InputError, InputError("corpus.jsonl:2: invalid JSON"), None)
    err = capsys.readouterr().err
    assert err.splitlines()[0] == "error: corpus.jsonl:2: invalid JSON"
    assert DEBUG_ENV in err and seen == []

    bug = RuntimeError("a bug")
    hook(RuntimeError, bug, None)
    assert seen == [bug]

    monkeypatch.setenv(DEBUG_ENV, "1")
    wanted = InputError("shown with its traceback")
    hook(InputError, wanted, None)
    assert seen == [bug, wanted]


def test_cli_path_error_is_one_line(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    template = tmp_path / "template.json"
    template.write_text(json.dumps({"name": ""}))
    missing = tmp_path / "missing.txt"
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["extract", "--model", str(tmp_path), "--template", str(template), str(missing)])
    message = str(exit_info.value.code)
    assert message.startswith(f"distill-ner extract: {missing}: No such file or directory")
    assert DEBUG_ENV in message
    # --debug: the exception itself, with its traceback (and nothing left behind for later commands)
    with pytest.raises(FileNotFoundError):
        cli.main(["--debug", "extract", "--model", str(tmp_path), "--template", str(template), str(missing)])
    assert DEBUG_ENV not in os.environ
