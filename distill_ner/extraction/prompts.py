"""NuExtract prompts: the two teacher prompts (verbatim from seed 000) and the student's input formats.

Teacher prompts. Both are sent as ONE user message, no system message: that is how the seed shows
them. The context goes between `!!!START Context!!!` / `!!!END Context!!!` exactly where the seed
writes `*<text-to-annotate>*`, and the schema where it writes `*<schema>*`. The seed elides the
few-shot examples of the template-generation prompt (`*<few-shot examples>*`); NuMind does not
publish them, so the placeholder is replaced by whatever block the config gives, and dropped with
its blank line when that block is empty (the zero-shot default). The messages are part of the
teacher cache key: any edit here invalidates every cached and recorded answer.

Student formats (what the student reads, not the teacher):
- "1.5" (default): `<|input|>\\n### Template:\\n{t}\\n### Text:\\n{x}\\n\\n<|output|>`
- "1.0": `<|input|>\\n### Template:\\n{t}\\n` + one `### Example:\\n{e}\\n` per example (optional)
  + `### Text:\\n{x}\\n<|output|>\\n`
Templates and examples are serialised with `json.dumps(..., indent=4)` as NuMind's own code does
(configurable: a compact dump saves tokens on CPU).

Choice: the student prompt is rendered through the student's CHAT TEMPLATE as the user turn, with the
filled JSON as the assistant turn, not fed raw. That way training reuses the shared
`chat.tokenize_conversation` (loss only on the assistant turn, found through the template)
and inference reuses the shared chat-prompt path, so the prompt at test time is token for token the
training prefix. The NuExtract markers stay inside the user turn so the text the model reads is
NuMind's format; the template's end-of-turn token plays the role of 1.0's `<|end-output|>`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

PromptFormat = Literal["1.5", "1.0"]

CONTEXT_START = "!!!START Context!!!"
CONTEXT_END = "!!!END Context!!!"
TEXT_PLACEHOLDER = "*<text-to-annotate>*"
FEW_SHOT_PLACEHOLDER = "*<few-shot examples>*"
SCHEMA_PLACEHOLDER = "*<schema>*"

# Seed 000, first code block, character for character.
TEMPLATE_GENERATION_PROMPT = """!!!START Context!!!

*<text-to-annotate>*

!!!END Context!!!

Goal: Generate an information extraction dataset.

Input: Text document + instructions for annotation.

Output: 1 JSON object (schema).

Schema:
Describes the information to be extracted.
Each field should:
Be a clear and concise name representing the extracted data.
ONLY STRING TYPE ARE ALLOWED AS VALUES (it can be an array of strings, or an object with string values, or an array of objects with string values...).
NO BOOLEAN, INT, ENUM, ETC.
The schema can focus only on part of the context document, or on the whole document.

Constraints:
Extracted information should be thematically coherent and form a well-structured JSON schema with a clear relationship between fields.

*<few-shot examples>*"""

# Seed 000, second code block, character for character.
EXTRACTION_PROMPT = """!!!START Context!!!

*<text-to-annotate>*

!!!END Context!!!

Goal: Extract strings from the text corresponding to the given schema.

Input: Text document + schema.

Output: 1 JSON object

Schema:
The schema describes the information to be extracted.
ONLY STRING TYPE ARE ALLOWED AS VALUES (it can be an array of strings, or an object with string values, or an array of objects with string values...).
NO BOOLEAN, INT, ENUM, ETC.
The schema can focus only on part of the context document, or on the whole document.

Output:
THE OUTPUT SHOULD FOLLOW EXACTLY THE SCHEMA.
It should respect the schema and contain the extracted information from the context document.
THE STRING SHOULD BE PRESENT EXACTLY AS IT IS IN THE CONTEXT DOCUMENT. NO PARAPHRASING ALLOWED.
If the information is NOT PRESENT in the context, return "" for empty string and [] for empty array. If the list of object is empty, return [].
Return only the information extracted as JSON. Do not output anything else or says anything else.

Information to extract:

*<schema>*"""

TEACHER_SCHEMA_INDENT = 4  # how a template is written into the extraction prompt (part of the cache key)


def dump_json(value: Any, indent: int | None = 4) -> str:
    """One spelling per value: key order kept (a template's order is meaningful), UTF-8 kept as is so the
    student copies "Łódź" rather than learning \\u escapes; compact separators when indent is None."""
    separators = (",", ": ") if indent is not None else (",", ":")
    return json.dumps(value, indent=indent, ensure_ascii=False, separators=separators)


def _fill(prompt: str, placeholder: str, value: str) -> str:
    # str.replace on the one placeholder, not str.format: texts and schemas are full of braces
    if prompt.count(placeholder) != 1:
        raise ValueError(f"prompt template must hold {placeholder} exactly once")
    return prompt.replace(placeholder, value)


def template_generation_messages(text: str, few_shot: str = "") -> list[dict[str, str]]:
    """The teacher request that asks for a template (schema) for `text`."""
    # examples first, then the text: a passage that quotes a placeholder is never substituted into
    if few_shot.strip():
        prompt = _fill(TEMPLATE_GENERATION_PROMPT, FEW_SHOT_PLACEHOLDER, few_shot.strip())
    else:
        prompt = TEMPLATE_GENERATION_PROMPT.removesuffix("\n\n" + FEW_SHOT_PLACEHOLDER)
    return [{"role": "user", "content": _fill(prompt, TEXT_PLACEHOLDER, text)}]


def extraction_messages(text: str, template: dict[str, Any]) -> list[dict[str, str]]:
    """The teacher request that asks for `template` filled from `text`."""
    # the text first: a schema that happened to contain the text placeholder must not be substituted
    prompt = _fill(EXTRACTION_PROMPT, TEXT_PLACEHOLDER, text)
    prompt = prompt[: prompt.rindex(SCHEMA_PLACEHOLDER)] + dump_json(template, TEACHER_SCHEMA_INDENT)
    return [{"role": "user", "content": prompt}]


def student_prompt(
    template: dict[str, Any],
    text: str,
    *,
    fmt: PromptFormat = "1.5",
    examples: Sequence[dict[str, Any]] = (),
    indent: int | None = 4,
) -> str:
    """The student's input in NuExtract's format (the user turn of its chat)."""
    t = dump_json(template, indent)
    if fmt == "1.5":
        if examples:
            raise ValueError("the NuExtract 1.5 prompt format has no examples; use prompt_format '1.0'")
        return "<|input|>\n### Template:\n" + t + "\n### Text:\n" + text + "\n\n<|output|>"
    if fmt == "1.0":
        shown = "".join("### Example:\n" + dump_json(e, indent) + "\n" for e in examples)
        return "<|input|>\n### Template:\n" + t + "\n" + shown + "### Text:\n" + text + "\n<|output|>\n"
    raise ValueError(f"unknown prompt format {fmt!r}; expected '1.5' or '1.0'")


def student_messages(
    template: dict[str, Any],
    text: str,
    filled: dict[str, Any] | None = None,
    *,
    fmt: PromptFormat = "1.5",
    examples: Sequence[dict[str, Any]] = (),
    indent: int | None = 4,
) -> list[dict[str, str]]:
    """Chat messages: the prompt as the user turn, and the filled JSON as the assistant turn when given."""
    messages = [{"role": "user", "content": student_prompt(template, text, fmt=fmt, examples=examples, indent=indent)}]
    if filled is not None:
        messages.append({"role": "assistant", "content": dump_json(filled, indent)})
    return messages
