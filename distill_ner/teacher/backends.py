"""Teacher backends behind one interface: `complete(messages, params) -> Completion`.

- `OpenAIBackend`: any OpenAI-compatible chat-completions server (OpenAI, vLLM, llama.cpp, ...) over
  the official client. The client's own retries are off: `annotate` retries with its own backoff so
  every attempt is counted and Retry-After is honoured in one place.
- `TransformersBackend`: a local causal LM through its chat template, greedy by default.

Errors come out as `TeacherError(reason, retryable=...)` with the API key scrubbed from every message.
"""

from __future__ import annotations

import email.utils
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from distill_ner.config import TeacherConfig

LOCAL_SERVER_KEY = "EMPTY"  # local OpenAI-compatible servers accept any key


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


class TeacherError(Exception):
    """A failed request. `reason` is a short stable label (rate_limited, timeout, ...)."""

    def __init__(self, reason: str, detail: str = "", *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.retryable = retryable
        self.retry_after = retry_after


class TeacherBackend(Protocol):
    def complete(self, messages: list[dict[str, str]], params: dict[str, Any]) -> Completion: ...


def sampling_params(config: "TeacherConfig") -> dict[str, Any]:
    """The request parameters that change the answer; they are part of the cache key."""
    return {"temperature": config.temperature, "max_tokens": config.max_tokens}


def resolve_api_key(config: "TeacherConfig") -> str | None:
    """Environment variable `api_key_env`, else ZenML secret `api_key_secret` (key `api_key`), else None."""
    value = os.environ.get(config.api_key_env, "").strip()
    if value:
        return value
    if config.api_key_secret:
        from zenml.client import Client  # lazy: ZenML start-up is slow and only needed here

        try:
            secret = Client().get_secret(config.api_key_secret)
        except KeyError:
            raise ValueError(f"teacher.api_key_secret: no ZenML secret named {config.api_key_secret!r}") from None
        value = (secret.secret_values.get("api_key") or "").strip()
        if not value:
            raise ValueError(f"teacher.api_key_secret: ZenML secret {config.api_key_secret!r} has no key `api_key`")
        return value
    return None


def redact(text: str, secret: str | None) -> str:
    if secret and secret != LOCAL_SERVER_KEY and len(secret) >= 4:
        text = text.replace(secret, "***")
    return text


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from `retry-after-ms` / `Retry-After` (seconds or an HTTP date)."""
    if headers is None:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class OpenAIBackend:
    def __init__(
        self, model: str, *, base_url: str | None = None, api_key: str | None = None, timeout_s: float = 60.0
    ) -> None:
        import openai  # lazy: keeps `import distill_ner.teacher` light

        if api_key is None and base_url is None:
            raise ValueError(
                "teacher: no API key for the OpenAI API (set the environment variable named by "
                "teacher.api_key_env, or teacher.api_key_secret), or point teacher.base_url "
                "at a local server"
            )
        self.model = model
        self._secret = api_key
        self._openai = openai
        self._client = openai.OpenAI(
            api_key=api_key or LOCAL_SERVER_KEY,
            base_url=base_url,
            timeout=timeout_s,
            max_retries=0,  # we retry ourselves (annotate.py)
        )

    @classmethod
    def from_config(cls, config: "TeacherConfig") -> "OpenAIBackend":
        return cls(config.model, base_url=config.base_url, api_key=resolve_api_key(config), timeout_s=config.timeout_s)

    def _error(
        self, reason: str, exc: BaseException | str, *, retryable: bool, retry_after: float | None = None
    ) -> TeacherError:
        detail = redact(str(exc), self._secret)[:500]
        return TeacherError(reason, detail, retryable=retryable, retry_after=retry_after)

    def complete(self, messages: list[dict[str, str]], params: dict[str, Any]) -> Completion:
        oa = self._openai
        try:
            resp = self._client.chat.completions.create(model=self.model, messages=messages, **params)
        except oa.APITimeoutError as exc:
            raise self._error("timeout", exc, retryable=True) from None
        except oa.APIConnectionError as exc:
            raise self._error("connection_error", exc, retryable=True) from None
        except oa.APIStatusError as exc:
            status = exc.status_code
            retry_after = parse_retry_after(exc.response.headers)
            if status == 429 and getattr(exc, "code", None) == "insufficient_quota":
                raise self._error("quota_exceeded", exc, retryable=False) from None  # waiting will not help
            if status == 429:
                raise self._error("rate_limited", exc, retryable=True, retry_after=retry_after) from None
            if status >= 500 or status in (408, 409):
                raise self._error("server_error", exc, retryable=True, retry_after=retry_after) from None
            raise self._error(f"http_{status}", exc, retryable=False) from None
        except (json.JSONDecodeError, oa.APIResponseValidationError) as exc:
            # the client does not wrap an unparseable 200 body; treat it like a transient server fault
            raise self._error("malformed_response", f"body is not valid JSON: {exc}", retryable=True) from None
        except Exception as exc:  # noqa: BLE001 - anything else fails this request alone, key scrubbed
            raise self._error("backend_error", f"{type(exc).__name__}: {exc}", retryable=False) from None
        choices = getattr(resp, "choices", None)
        if not choices:
            raise self._error("malformed_response", "response has no choices", retryable=True)
        message = getattr(choices[0], "message", None)
        content = getattr(message, "content", None)
        if not isinstance(content, str):
            if getattr(message, "refusal", None):
                raise self._error("refused", str(message.refusal), retryable=False)
            raise self._error("malformed_response", "choice has no text content", retryable=True)
        usage = getattr(resp, "usage", None)
        return Completion(
            text=content,
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        )


class TransformersBackend:
    """A local causal LM. `model` is a folder or hub id, or a path to a .gguf file (needs `gguf`)."""

    def __init__(self, model: str) -> None:
        import torch  # lazy: heavy imports only when this backend is used
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_ref = model
        path = Path(model).expanduser()
        kwargs: dict[str, Any] = {}
        source = model
        if path.suffix == ".gguf":
            source, kwargs = str(path.parent), {"gguf_file": path.name}
        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        self.model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
        self.model.eval()
        if self.tokenizer.chat_template is None:
            raise ValueError(f"teacher.model {model!r}: the tokenizer has no chat template")
        # generate() is not safe to run concurrently on one model; calls are serialised
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: "TeacherConfig") -> "TransformersBackend":
        return cls(config.model)

    def complete(self, messages: list[dict[str, str]], params: dict[str, Any]) -> Completion:
        torch = self._torch
        temperature = float(params.get("temperature", 0.0))
        gen: dict[str, Any] = {"max_new_tokens": int(params.get("max_tokens", 256))}
        if temperature > 0:
            gen.update(do_sample=True, temperature=temperature)
        else:
            gen.update(do_sample=False)  # greedy, as the recipe's temperature 0
        pad = self.tokenizer.pad_token_id
        gen["pad_token_id"] = pad if pad is not None else self.tokenizer.eos_token_id
        try:
            with self._lock, torch.inference_mode():
                inputs = self.tokenizer.apply_chat_template(
                    messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
                )
                inputs = {k: v.to(self.model.device) for k, v in inputs.items()}
                out = self.model.generate(**inputs, **gen)
        except (RuntimeError, ValueError) as exc:
            raise TeacherError("backend_error", str(exc)[:500], retryable=False) from None
        n_in = int(inputs["input_ids"].shape[1])
        new = out[0, n_in:]
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        return Completion(text=text, prompt_tokens=n_in, completion_tokens=int(new.shape[0]))


def make_backend(config: "TeacherConfig") -> TeacherBackend:
    if config.backend == "openai":
        return OpenAIBackend.from_config(config)
    if config.backend == "transformers":
        return TransformersBackend.from_config(config)
    raise ValueError(f"teacher.backend: unknown backend {config.backend!r}")
