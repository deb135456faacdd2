"""Conversations, chat-template rendering and loss masks, across chat templates and tokenizer kinds."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from distill_ner.chat import IGNORE_INDEX, ChatEncoder, as_messages, preview_segments, tokenize_conversation
from distill_ner.models import CHATML_TEMPLATE, load_tokenizer
from distill_ner.ner.config import SFTConfig
from distill_ner.ner.conversations import (
    READ_REPLY,
    SYSTEM_PROMPT,
    build_conversation,
    build_sft_dataset,
    query_messages,
    query_prompt_ids,
)
from distill_ner.records import AnnotatedPassage, AnnotationSet, Conversation, Entity, SFTRow

# Llama-2 chat: system folded into the first [INST] inside <<SYS>>; the reply is ' ' + answer + ' ' + eos.
LLAMA2_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)

# Llama-3 instruct: header tokens around the role, <|eot_id|> ends every turn.
LLAMA3_TEMPLATE = (
    "{% for message in messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim"
    " + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)

# Gemma-2: no system role (the template raises), "model" for the assistant, <end_of_turn> ends a turn.
GEMMA2_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"
)

TRAINING_TEXTS = [
    SYSTEM_PROMPT,
    "Text: Marie Curie was born in Łódź and worked in Paris at the University of Paris.",
    "I've read this text. What describes person in the text? What describes location in the text?",
    '["Warsaw", "Paris"] [] ["Marie Curie"] ["Łódź"] Dataset: conll2003',
    "".join(chr(i) for i in range(32, 127)),  # every printable ASCII character, so nothing is <unk>
]


def _tiny_tokenizer(kind: str, specials: list[str], bos: str, eos: str, template: str):
    """A BPE tokenizer trained in milliseconds: byte-level (GPT-2 style) or Metaspace (SentencePiece style)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if kind == "bytelevel":
        tok = Tokenizer(models.BPE(unk_token=None))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=600, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        )
    else:
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        # no Strip step (real Llama-2 strips one leading space on decode) so decoding is exact here
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.Fuse()])
        trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials)
    tok.train_from_iterator(TRAINING_TEXTS * 3, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token=eos, unk_token="<unk>" if "<unk>" in specials else None
    )
    tokenizer.pad_token = eos
    tokenizer.chat_template = template
    return tokenizer


# name -> (tokenizer factory, the text a trained assistant turn must decode to)
Expect = Callable[[str], str]
TEMPLATES: dict[str, Expect] = {
    "smollm2-chatml": lambda c: c + "<|im_end|>",
    "tiny-chatml": lambda c: c + "<|im_end|>",
    "tiny-no-template": lambda c: c + "<|im_end|>",  # falls back to CHATML_TEMPLATE
    "llama2-metaspace": lambda c: " " + c + " </s>",  # what follows [/INST] is generated, space included
    "llama3-headers": lambda c: c + "<|eot_id|>",
    "gemma2-no-system": lambda c: c + "<end_of_turn>",  # system folded into the first user turn
}


@pytest.fixture(scope="module")
def tokenizers(tiny_student: Path, smollm2_student: Path) -> dict:
    tiny = tiny_student  # conftest's session-wide tiny model (ChatML, byte-level BPE)
    no_template = load_tokenizer(str(tiny))
    no_template.chat_template = None
    return {
        "smollm2-chatml": load_tokenizer(str(smollm2_student)),
        "tiny-chatml": load_tokenizer(str(tiny)),
        "tiny-no-template": no_template,
        "llama2-metaspace": _tiny_tokenizer("metaspace", ["<unk>", "<s>", "</s>"], "<s>", "</s>", LLAMA2_TEMPLATE),
        "llama3-headers": _tiny_tokenizer(
            "bytelevel",
            ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
            "<|begin_of_text|>",
            "<|eot_id|>",
            LLAMA3_TEMPLATE,
        ),
        "gemma2-no-system": _tiny_tokenizer(
            "bytelevel", ["<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"], "<bos>", "<eos>", GEMMA2_TEMPLATE
        ),
    }


@pytest.fixture(params=list(TEMPLATES))
def case(request, tokenizers):
    return tokenizers[request.param], TEMPLATES[request.param]


def _passage(n_types: int = 6, pid: str = "p1", text: str | None = None) -> AnnotatedPassage:
    entities = [
        Entity(text="Marie Curie", type="person"),
        Entity(text="Łódź", type="location"),
        Entity(text="Paris", type="location"),
        Entity(text="Paris", type="Location"),  # same type spelled differently, duplicate mention
        Entity(text="University of Paris", type="organization"),
        Entity(text='the "Radium" Institute', type="facility"),
    ]
    return AnnotatedPassage(
        id=pid,
        text=text or "Marie Curie was born in Łódź and worked in Paris at the University of Paris.",
        entities=entities[: max(1, n_types)],
        negatives=["date", "programming language", "sports team"],
    )


def _trained_runs(row: SFTRow) -> list[list[int]]:
    """Maximal runs of consecutive tokens that carry the loss."""
    runs: list[list[int]] = []
    previous = False
    for token, label in zip(row.input_ids, row.labels):
        trained = label != IGNORE_INDEX
        if trained:
            assert label == token  # labels are the tokens themselves; the shift is the model's job
            if not previous:
                runs.append([])
            runs[-1].append(token)
        previous = trained
    return runs


def _assistant_contents(conversation: Conversation) -> list[str]:
    return [t.content for t in conversation.turns if t.role == "assistant"]


# ----------------------------------------------------------------------------------- conversations


def test_build_conversation_turns_answers_and_order():
    conversation = build_conversation(_passage(), seed=0)
    turns = conversation.turns
    assert [t.role for t in turns[:3]] == ["system", "user", "assistant"]
    assert turns[0].content == SYSTEM_PROMPT
    assert turns[1].content == "Text: Marie Curie was born in Łódź and worked in Paris at the University of Paris."
    assert turns[2].content == READ_REPLY
    qa = {turns[i].content: turns[i + 1].content for i in range(3, len(turns), 2)}
    assert [t.role for t in turns[3:]] == ["user", "assistant"] * (len(turns[3:]) // 2)
    assert qa == {
        "What describes person in the text?": '["Marie Curie"]',
        # Location/location merged; first-occurrence order; duplicate dropped; non-ASCII kept verbatim
        "What describes location in the text?": '["Łódź", "Paris"]',
        "What describes organization in the text?": '["University of Paris"]',
        "What describes facility in the text?": json.dumps(['the "Radium" Institute']),
        "What describes date in the text?": "[]",
        "What describes programming language in the text?": "[]",
        "What describes sports team in the text?": "[]",
    }
    assert json.loads(qa["What describes facility in the text?"]) == ['the "Radium" Institute']
    assert conversation.dataset is None and conversation.id == "p1"

    again = build_conversation(_passage(), seed=0)
    assert again == conversation
    orders = {tuple(t.content for t in build_conversation(_passage(), seed=s).turns[3::2]) for s in range(6)}
    assert len(orders) > 1  # the seed shuffles the questions


@pytest.mark.parametrize("position", ["last", "first"])
def test_negatives_position(position: str):
    default = build_conversation(_passage(), seed=0)
    assert build_conversation(_passage(), seed=0, negatives_position="shuffled") == default
    answers = [t.content for t in build_conversation(_passage(), seed=0, negatives_position=position).turns[4::2]]
    empty = [a == "[]" for a in answers]
    assert empty == sorted(empty, reverse=position == "first")  # all negatives after / before the positives
    questions = {t.content for t in build_conversation(_passage(), seed=0, negatives_position=position).turns[3::2]}
    assert questions == {t.content for t in default.turns[3::2]}
    orders = {
        tuple(t.content for t in build_conversation(_passage(), seed=s, negatives_position=position).turns[3::2])
        for s in range(6)
    }
    assert len(orders) > 1  # each kind is still shuffled
    with pytest.raises(ValueError, match="negatives_position"):
        build_conversation(_passage(), seed=0, negatives_position="middle")


def test_read_reply_without_loss(tokenizers):
    tokenizer = tokenizers["smollm2-chatml"]
    annotations = _annotations(4)
    trained = build_sft_dataset(annotations, SFTConfig(), tokenizer)
    context = build_sft_dataset(annotations, SFTConfig(train_read_reply=False), tokenizer)
    assert [r.input_ids for r in context.rows] == [r.input_ids for r in trained.rows]
    assert len(context.rows) == len(context.conversations)
    for row in context.rows:
        conversation = next(c for c in context.conversations if c.id == row.conversation_id)
        segments = preview_segments(row, tokenizer)
        trained_text = [text for text, flag in segments if flag]
        assert trained_text == [c + "<|im_end|>" for c in _assistant_contents(conversation)[1:]]
    assert context.stats["trained_tokens"] < trained.stats["trained_tokens"]


def test_negative_that_is_also_positive_is_not_asked_twice():
    passage = AnnotatedPassage(
        id="p", text="Paris.", entities=[Entity(text="Paris", type="city")], negatives=["City", "country"]
    )
    questions = [t.content for t in build_conversation(passage, 0).turns[3::2]]
    assert sorted(questions) == ["What describes city in the text?", "What describes country in the text?"]


def test_query_messages_zero_shot_and_with_dataset():
    plain = query_messages("Some text.", "person")
    assert plain == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "Text: Some text."},
        {"role": "assistant", "content": READ_REPLY},
        {"role": "user", "content": "What describes person in the text?"},
    ]
    assert not any("Dataset:" in m["content"] for m in plain)
    named = query_messages("Some text.", "person", dataset="conll2003")
    assert named[1]["content"] == "Dataset: conll2003 \n Text: Some text."
    supervised = build_conversation(_passage(), 0, dataset="conll2003")
    assert as_messages(supervised.turns)[1]["content"].startswith("Dataset: conll2003 \n Text: Marie Curie")


# ------------------------------------------------------------------------------------ loss masks


def test_masks_cover_exactly_the_assistant_turns(case):
    tokenizer, expect = case
    conversation = build_conversation(_passage(), seed=1)
    rows = tokenize_conversation(conversation, tokenizer, max_length=4096)
    assert len(rows) == 1
    row = rows[0]
    assert len(row.input_ids) == len(row.labels) and row.id == "p1#0" and row.conversation_id == "p1"
    decoded = [tokenizer.decode(run, skip_special_tokens=False) for run in _trained_runs(row)]
    assert decoded == [expect(c) for c in _assistant_contents(conversation)]
    # nothing but the assistant turns: every other token is masked, so all trained text is accounted for
    trained = [t for t, label in zip(row.input_ids, row.labels) if label != IGNORE_INDEX]
    assert tokenizer.decode(trained, skip_special_tokens=False) == "".join(decoded)


def test_inference_prompt_is_the_training_prefix(case):
    tokenizer, expect = case
    passage = AnnotatedPassage(
        id="q", text="Marie Curie worked in Paris.", entities=[Entity(text="Paris", type="location")]
    )
    conversation = build_conversation(passage, seed=0)
    row = tokenize_conversation(conversation, tokenizer, max_length=4096)[0]
    prompt = query_prompt_ids(tokenizer, passage.text, "location")
    assert row.input_ids[: len(prompt)] == prompt
    in_prompt = [t for t, label in zip(row.input_ids[: len(prompt)], row.labels) if label != IGNORE_INDEX]
    assert tokenizer.decode(in_prompt, skip_special_tokens=False) == expect(READ_REPLY)
    answer = [t for t, label in zip(row.input_ids[len(prompt) :], row.labels[len(prompt) :]) if label != IGNORE_INDEX]
    assert tokenizer.decode(answer, skip_special_tokens=False) == expect('["Paris"]')
    assert row.labels[len(prompt)] != IGNORE_INDEX  # the target starts right where generation starts


def test_long_conversation_split_between_turns(case):
    tokenizer, expect = case
    conversation = build_conversation(_passage(), seed=2)
    whole = tokenize_conversation(conversation, tokenizer, max_length=4096)[0]
    contents = _assistant_contents(conversation)
    opening = conversation.model_copy(update={"turns": conversation.turns[:3]})
    opening_len = len(tokenize_conversation(opening, tokenizer, 4096)[0].input_ids)
    # room for the opening and about two question/answer pairs per row
    max_length = opening_len + (len(whole.input_ids) - opening_len) * 2 // (len(contents) - 1) + 2
    rows = tokenize_conversation(conversation, tokenizer, max_length=max_length)

    assert len(rows) >= 3
    assert [r.id for r in rows] == [f"p1#{i}" for i in range(len(rows))]
    passage_piece = "Marie Curie was born in Łódź"
    decoded_runs = []
    for n, row in enumerate(rows):
        assert len(row.input_ids) <= max_length
        # the opening is repeated (masked) at the start of every row
        first_trained = next(i for i, label in enumerate(row.labels) if label != IGNORE_INDEX)
        head = tokenizer.decode(row.input_ids[:first_trained], skip_special_tokens=False)
        assert SYSTEM_PROMPT in head and passage_piece in head
        if n > 0:
            assert READ_REPLY in head  # context in continuation rows, trained only in the first
        decoded_runs += [tokenizer.decode(run, skip_special_tokens=False) for run in _trained_runs(row)]
    # every assistant turn is trained exactly once, whole (never cut inside an answer), in order
    assert decoded_runs == [expect(c) for c in contents]


def test_pair_that_cannot_fit_is_dropped_and_counted(tokenizers):
    tokenizer = tokenizers["tiny-chatml"]
    many = [Entity(text=f"Entity number {i}", type="thing") for i in range(60)]
    passage = AnnotatedPassage(
        id="big", text="A short text.", entities=many + [Entity(text="Paris", type="city")], negatives=["date"]
    )
    conversation = build_conversation(passage, seed=0)
    opening = conversation.model_copy(update={"turns": conversation.turns[:3]})
    opening_len = len(tokenize_conversation(opening, tokenizer, 4096)[0].input_ids)
    max_length = opening_len + 40  # fits "city" or "date", never the 60-entity answer
    rows = tokenize_conversation(conversation, tokenizer, max_length)
    trained = [tokenizer.decode(run, skip_special_tokens=False) for r in rows for run in _trained_runs(r)]
    assert trained[0] == READ_REPLY + "<|im_end|>"
    assert sorted(trained[1:]) == sorted(['["Paris"]<|im_end|>', "[]<|im_end|>"])
    assert all(len(r.input_ids) <= max_length for r in rows)

    dataset = build_sft_dataset(AnnotationSet(passages=[passage]), SFTConfig(max_length=max_length), tokenizer)
    assert dataset.stats["truncations"] == 1
    assert dataset.stats["rows"] == len(rows)

    # a passage too long for max_length on its own: nothing fits, every pair is counted
    long_passage = passage.model_copy(update={"text": "word " * 400})
    dataset = build_sft_dataset(AnnotationSet(passages=[long_passage]), SFTConfig(max_length=64), tokenizer)
    assert dataset.rows == [] and dataset.stats["truncations"] == 3


def test_tokenizer_without_offsets_gives_the_same_labels(tokenizers):
    tokenizer = tokenizers["smollm2-chatml"]

    class NoOffsets:
        """The tokenizer as a backend without offset mappings (e.g. a pure-Python one) would behave."""

        def __init__(self, inner):
            self._inner = inner

        def __call__(self, text, **kwargs):
            if kwargs.get("return_offsets_mapping"):
                raise NotImplementedError("return_offsets_mapping is not available")
            return self._inner(text, **kwargs)

        def __getattr__(self, name):
            return getattr(self._inner, name)

    conversation = build_conversation(_passage(), seed=4)
    assert tokenize_conversation(conversation, NoOffsets(tokenizer), 4096) == tokenize_conversation(
        conversation, tokenizer, 4096
    )


# --------------------------------------------------------------------------------------- dataset


def _annotations(n: int) -> AnnotationSet:
    passages = [
        _passage(n_types=1 + i % 6, pid=f"p{i}", text=f"Marie Curie met person {i} in Paris.") for i in range(n)
    ]
    return AnnotationSet(passages=passages)


def test_dataset_is_byte_identical_per_seed_and_reordered_by_another(tokenizers):
    tokenizer = tokenizers["tiny-chatml"]
    annotations = _annotations(12)
    first = build_sft_dataset(annotations, SFTConfig(seed=5), tokenizer)
    second = build_sft_dataset(annotations, SFTConfig(seed=5), tokenizer)
    assert first.model_dump_json() == second.model_dump_json()
    other = build_sft_dataset(annotations, SFTConfig(seed=6), tokenizer)
    assert [c.id for c in other.conversations] != [c.id for c in first.conversations]
    assert sorted(c.id for c in other.conversations) == sorted(c.id for c in first.conversations)


def test_dataset_stats_and_preview(tokenizers):
    tokenizer = tokenizers["smollm2-chatml"]
    annotations = _annotations(5)
    dataset = build_sft_dataset(annotations, SFTConfig(), tokenizer)
    questions = sum(t.role == "user" for c in dataset.conversations for t in c.turns[3:])
    negatives = sum(len(p.negatives) for p in annotations.passages)
    stats = dataset.stats
    assert stats["conversations"] == 5 and stats["rows"] == 5 and stats["supervised_conversations"] == 0
    assert stats["questions"] == questions
    assert stats["negative_questions"] == negatives
    assert stats["negatives_share"] == pytest.approx(negatives / questions)
    assert stats["tokens"] == sum(len(r.input_ids) for r in dataset.rows)
    assert stats["trained_tokens"] == sum(label != IGNORE_INDEX for r in dataset.rows for label in r.labels)
    assert stats["truncations"] == 0
    assert dataset.tokenizer.endswith("SmolLM2-135M-Instruct")

    assert len(dataset.preview) == 3
    for segments, row in zip(dataset.preview, dataset.rows):
        assert "".join(text for text, _ in segments) == tokenizer.decode(row.input_ids, skip_special_tokens=False)
        flags = [trained for _, trained in segments]
        assert all(a != b for a, b in zip(flags, flags[1:]))  # runs of equal flag are merged
        trained_text = [text for text, trained in segments if trained]
        conversation = next(c for c in dataset.conversations if c.id == row.conversation_id)
        assert trained_text == [c + "<|im_end|>" for c in _assistant_contents(conversation)]


def test_supervised_mixing_is_capped_seeded_and_named(tokenizers):
    tokenizer = tokenizers["tiny-chatml"]
    annotations = _annotations(8)
    conll = [
        AnnotatedPassage(
            id=f"conll/{i}",
            text=f"EU rejects call {i}.",
            entities=[Entity(text="EU", type="organization")],
            negatives=["person"],
        )
        for i in range(10)
    ]
    wnut = [AnnotatedPassage(id=f"wnut/{i}", text=f"lol {i}", negatives=["person", "location"]) for i in range(10)]
    config = SFTConfig(supervised_ratio=0.5, seed=3)
    dataset = build_sft_dataset(annotations, config, tokenizer, [("conll", conll), ("wnut", wnut)])
    supervised = [c for c in dataset.conversations if c.dataset is not None]
    assert len(supervised) == 4 == dataset.stats["supervised_conversations"]
    assert len(dataset.conversations) == 12
    for conversation in supervised:
        assert conversation.turns[1].content.startswith(f"Dataset: {conversation.dataset} \n Text: ")
        assert conversation.id.startswith(conversation.dataset + "/")
    for conversation in dataset.conversations:
        if conversation.dataset is None:
            assert conversation.turns[1].content.startswith("Text: ")
    again = build_sft_dataset(annotations, config, tokenizer, [("conll", conll), ("wnut", wnut)])
    assert again.model_dump_json() == dataset.model_dump_json()
    # the dataset line reaches the rendered tokens of supervised rows only
    for row in dataset.rows:
        text = tokenizer.decode(row.input_ids, skip_special_tokens=False)
        assert ("Dataset: " in text) == row.conversation_id.startswith(("conll/", "wnut/"))
    # no cap hit: everything is mixed in
    everything = build_sft_dataset(
        annotations, SFTConfig(supervised_ratio=3.0), tokenizer, [("conll", conll), ("wnut", wnut)]
    )
    assert everything.stats["supervised_conversations"] == 20


def test_layout_fast_path_agrees_with_prefix_rendering(tokenizers):
    conversations = [
        build_conversation(_passage(), seed=0),
        build_conversation(_passage(n_types=2, pid="x"), seed=1, dataset="conll2003"),
        build_conversation(AnnotatedPassage(id="e", text="Nothing here."), seed=0),
        # trailing blanks that some templates keep and others strip
        build_conversation(_passage(n_types=3, pid="w", text="Marie Curie met Paris.  \n"), seed=2),
    ]
    for name, tokenizer in tokenizers.items():
        encoder = ChatEncoder(tokenizer)
        assert encoder.layouts is not None, name  # every template here takes the fast path
        for conversation in conversations:
            messages = as_messages(conversation.turns)
            full = encoder.render(messages)
            assert encoder._spans_by_layout(full, messages) == encoder._spans_by_prefixes(full, messages), name


def test_template_whose_generation_prompt_is_not_a_history_prefix(tokenizers):
    # Qwen3-style: the generation prompt opens an empty reasoning block that past turns do not show.
    template = CHATML_TEMPLATE.replace(
        "{{ '<|im_start|>assistant\n' }}", "{{ '<|im_start|>assistant\n<think>\n\n</think>\n\n' }}"
    )
    assert template != CHATML_TEMPLATE
    tokenizer = copy.deepcopy(tokenizers["tiny-chatml"])
    tokenizer.chat_template = template
    conversation = build_conversation(_passage(), seed=3)
    row = tokenize_conversation(conversation, tokenizer, 4096)[0]
    decoded = [tokenizer.decode(run, skip_special_tokens=False) for run in _trained_runs(row)]
    assert decoded == [c + "<|im_end|>" for c in _assistant_contents(conversation)]
    encoder = ChatEncoder(tokenizer)
    messages = as_messages(conversation.turns)
    full = encoder.render(messages)
    assert encoder._spans_by_layout(full, messages) == encoder._spans_by_prefixes(full, messages)
