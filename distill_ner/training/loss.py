"""The training loss computed only where it is taken: the LM head at the supervised (target) positions.

Imports nothing heavy at module level; torch is imported by the functions that use it.
"""

from __future__ import annotations

from typing import Any

from distill_ner.chat import IGNORE_INDEX


def supports_supervised_logits(model: Any) -> bool:
    """Whether `supervised_loss` computes what the model's own loss does: a causal LM whose logits are its
    output embedding applied to its decoder's last hidden state, with no scaling or soft-capping after."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if config is None or getattr(config, "final_logit_softcapping", None) or getattr(config, "logits_scaling", None):
        return False
    try:
        return base.get_decoder() is not None and base.get_output_embeddings() is not None
    except (AttributeError, NotImplementedError):
        return False


def supervised_loss(model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> Any:
    """The causal-LM loss computed with the LM head only at the positions that predict a target token.

    Most positions of a conversation are masked (-100): the full path multiplies every hidden state by the
    (vocabulary x hidden) head and takes a log-softmax over the vocabulary for each, then throws those away.
    Here the decoder runs as usual and only the supervised hidden states go through the head. The sum of the
    token losses is divided by `num_items_in_batch` where the Trainer counts targets over the accumulated
    micro-batches (as the model's own loss does), else by this batch's target count.
    """
    import torch.nn.functional as F

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = base.get_decoder()(
        input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask")
    ).last_hidden_state
    targets = inputs["labels"][:, 1:]
    keep = targets != IGNORE_INDEX
    logits = base.get_output_embeddings()(hidden[:, :-1][keep]).float()
    loss = F.cross_entropy(logits, targets[keep], reduction="sum")
    return loss / (num_items_in_batch if num_items_in_batch is not None else keep.sum().clamp(min=1))
