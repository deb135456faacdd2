"""The teacher prompts, verbatim from UniversalNER (paper §3) plus its type-description ablation.

The messages are part of the response-cache key, so any edit here invalidates every cached and
recorded teacher answer: change them only on purpose.
"""

from __future__ import annotations

from typing import Literal

PromptKind = Literal["entities", "entities_with_descriptions"]

SYSTEM_PROMPT = "You are a helpful information extraction system."

ENTITIES_INSTRUCTION = (
    "Given a passage, your task is to extract all entities and identify their entity types. "
    'The output should be in a list of tuples of the following format: [("entity 1", "type of entity 1"), ... ].'
)

# Ablation in the paper: the teacher also writes a short description of each entity type. The
# answer then holds 3-tuples; the parser keeps the entity and its type (the description is dropped).
DESCRIPTIONS_INSTRUCTION = (
    "Given a passage, your task is to extract all entities, identify their entity types, and give a short "
    "description of each entity type. The output should be in a list of tuples of the following format: "
    '[("entity 1", "type of entity 1", "short description of type 1"), ... ].'
)

INSTRUCTIONS: dict[str, str] = {
    "entities": ENTITIES_INSTRUCTION,
    "entities_with_descriptions": DESCRIPTIONS_INSTRUCTION,
}

# Placeholder strings of the format line; a teacher that echoes them back produced no entity.
TEMPLATE_ECHOES = frozenset({"entity 1", "type of entity 1", "short description of type 1"})


def build_messages(passage: str, prompt: PromptKind | str = "entities") -> list[dict[str, str]]:
    """The chat messages sent to the teacher for one passage."""
    try:
        instruction = INSTRUCTIONS[prompt]
    except KeyError:
        raise ValueError(f"unknown teacher prompt {prompt!r}; expected one of {sorted(INSTRUCTIONS)}") from None
    # concatenation, not str.format: passages may contain braces
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": instruction + "\n\nPassage: " + passage},
    ]
