"""Errors in what a user gave (a configuration key, an input file or line): one clear message, no traceback.

`InputError` is a ValueError whose message already names the key, file or line and what to do. `describe`
turns it, or a pydantic validation error of a configuration (also when ZenML wraps it), into that message;
any other exception is a bug and keeps its traceback. `DISTILL_NER_DEBUG=1` (or `distill-ner --debug`)
shows the traceback of input errors too. A leaf module: the command line imports it before anything heavy.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from types import TracebackType
from typing import Any

DEBUG_ENV = "DISTILL_NER_DEBUG"
HINT = f"(set {DEBUG_ENV}=1 for the traceback)"


class InputError(ValueError):
    """A configuration or input error; the message names the key, file or line and what to do."""


def debug_wanted() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _config_file(argv: list[str]) -> str | None:
    """The file of `-c/--config FILE` on the command line (how `zenml pipeline run` takes a config)."""
    for i, arg in enumerate(argv):
        if arg in ("-c", "--config") and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    # ZenML validates a pipeline's arguments: their errors start at the parameter (`config`), which the YAML
    # file holds under `parameters:`; say it as the file spells it
    if parts[:1] == ["config"]:
        parts.insert(0, "parameters")
    return ".".join(parts) or "(top level)"


def _validation_message(exc: Any, where: str | None) -> str:
    lines = []
    for err in exc.errors(include_url=False):
        key = _location(tuple(err.get("loc", ())))
        msg = str(err.get("msg", "invalid value"))
        if err.get("type") == "extra_forbidden":
            msg = "unknown key: check its spelling and its section (every accepted key has a description in the config classes)"
        elif err.get("type") == "missing":
            msg = "required key is missing"
        elif "input" in err and err.get("type") != "value_error":
            msg += f" (got {err['input']!r})"[:200]
        lines.append(f"  {key}: {msg}")
    head = f"{where}: invalid configuration" if where else "invalid configuration"
    return "\n".join([f"{head} ({len(lines)} error{'s' * (len(lines) != 1)})", *lines])


_PATH_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def describe(exc: BaseException, argv: list[str] | None = None, *, paths: bool = False) -> str | None:
    """The one message for a user's error, or None when `exc` is not one (a bug: keep the traceback).

    `paths`: also a file the user named that cannot be opened (on the command line, the path is the user's).
    """
    from pydantic import ValidationError  # pydantic is light and already loaded wherever configs are

    where = _config_file(sys.argv if argv is None else argv)
    for link in _chain(exc):
        if isinstance(link, ValidationError):
            return _validation_message(link, where)
        if isinstance(link, InputError):
            return str(link)
    if paths and isinstance(exc, _PATH_ERRORS) and exc.filename:
        return f"{exc.filename}: {exc.strerror or exc}"
    return None


def install_excepthook() -> None:
    """Print user errors as one message on stderr (exit status 1, as before); everything else goes to the
    hook that was installed (ZenML's rich traceback, or Python's)."""
    previous = sys.excepthook
    if getattr(previous, "_distill_ner", False):
        return

    def hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        message = None if debug_wanted() else describe(exc)
        if message is None:
            previous(kind, exc, tb)
            return
        print(f"error: {message}\n{HINT}", file=sys.stderr)

    hook._distill_ner = True  # type: ignore[attr-defined]
    sys.excepthook = hook


class MissingInputError(InputError, FileNotFoundError):
    """A file or folder that the configuration or the command line names does not exist."""
