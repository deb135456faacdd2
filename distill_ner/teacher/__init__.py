"""Teacher annotation for UniNER-style data construction: prompt, backends, cache, parsing."""

from distill_ner.teacher.annotate import (
    TeacherCacheMissError,
    TeacherRequest,
    TeacherRun,
    annotate_passages,
    make_request,
    run_teacher,
    teacher_request,
)
from distill_ner.teacher.backends import (
    Completion,
    OpenAIBackend,
    TeacherBackend,
    TeacherError,
    TransformersBackend,
    make_backend,
    resolve_api_key,
    sampling_params,
)
from distill_ner.teacher.cache import CacheRecord, ResponseCache, request_key
from distill_ner.teacher.parse import FILTER_REASONS, ParseResult, normalize_type, parse_answer
from distill_ner.teacher.prompt import SYSTEM_PROMPT, build_messages

__all__ = [
    "FILTER_REASONS", "SYSTEM_PROMPT", "CacheRecord", "Completion", "OpenAIBackend", "ParseResult", "ResponseCache",
    "TeacherBackend", "TeacherCacheMissError", "TeacherError", "TeacherRequest", "TeacherRun", "TransformersBackend",
    "annotate_passages", "build_messages", "make_backend", "make_request", "normalize_type", "parse_answer", "request_key",
    "resolve_api_key", "run_teacher", "sampling_params", "teacher_request",
]
