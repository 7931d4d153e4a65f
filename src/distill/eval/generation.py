"""Greedy, batched generation with hand-made left padding: the decoding every evaluation (tasks, throughput) shares.

Left padding is built here rather than by flipping the tokenizer's `padding_side`, so a tokenizer shared with other
code is never modified; rows stop at EOS or at a chat end-of-turn token. Ids past the tokenizer's size (the padding
rows of a model whose output is wider than its tokenizer) are never chosen: they are no token, and an untrained
padding row can still win the argmax.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from distill.errors import DataError, ModelError
from distill.progress import progress as progress_display

END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>")


@dataclass
class Generation:
    texts: list[str]  # decoded new text per prompt, without the stop token
    new_tokens: int  # generated tokens over all prompts, each row counted up to and including its first stop token
    seconds: float
    lengths: list[int] = field(default_factory=list)  # generated tokens per prompt (same counting)
    stopped: list[bool] = field(default_factory=list)  # False where the row ran into max_new_tokens

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else float("nan")


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """EOS of the tokenizer and of the model's generation config, plus the chat template's end-of-turn token: a
    chat model ends its answer with the latter, and would otherwise go on to write the next turn."""
    ids: list[Any] = [tokenizer.eos_token_id]
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.extend(config_eos if isinstance(config_eos, list) else [config_eos])
    special = set(tokenizer.all_special_tokens)
    ids.extend(tokenizer.convert_tokens_to_ids(t) for t in END_OF_TURN if t in special)
    return list(dict.fromkeys(i for i in ids if isinstance(i, int) and i >= 0))


def generate(model: Any, tokenizer: Any, prompts: list[str], *, max_new_tokens: int, batch_size: int = 8,
             progress: bool = True, add_special_tokens: bool = True, description: str = "generating") -> Generation:
    """Greedy continuations of `prompts`, batched. Rows are left-padded by hand (the tokenizer is not modified, so
    a shared tokenizer stays as it was) and sorted by length so batches waste little padding; results come back in
    the order given. Pass add_special_tokens=False for text already rendered by a chat template."""
    stops = stop_token_ids(model, tokenizer)
    if not stops:
        raise ModelError("generate: the tokenizer has no EOS token, so generation could not stop; set eos_token")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    encoded = [tokenizer(p, add_special_tokens=add_special_tokens)["input_ids"] for p in prompts]
    if any(not ids for ids in encoded):
        raise DataError(f"generate: prompt {next(i for i, ids in enumerate(encoded) if not ids)} is empty")
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    from transformers import GenerationConfig

    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, eos_token_id=stops,
                              pad_token_id=pad_id)
    processors = _tokenizer_ids_only(len(tokenizer))
    texts, lengths, stopped = [""] * len(prompts), [0] * len(prompts), [False] * len(prompts)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        with torch.inference_mode(), progress_display("generate", disable=not progress) as bar:
            job = bar.add_task(description, total=len(prompts))
            for first in range(0, len(order), batch_size):
                rows = order[first:first + batch_size]
                width = max(len(encoded[i]) for i in rows)
                input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for r, i in enumerate(rows):
                    input_ids[r, width - len(encoded[i]):] = torch.tensor(encoded[i])
                    mask[r, width - len(encoded[i]):] = 1
                out = model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                                     generation_config=config, logits_processor=processors)
                for r, i in enumerate(rows):
                    new = out[r, width:].tolist()
                    end = next((k for k, t in enumerate(new) if t in stops), None)
                    stopped[i] = end is not None
                    lengths[i] = len(new) if end is None else end + 1
                    texts[i] = tokenizer.decode(new[:end], skip_special_tokens=True)
                bar.advance(job, len(rows))
    finally:
        model.train(was_training)
    return Generation(texts, sum(lengths), time.perf_counter() - start, lengths, stopped)


def _tokenizer_ids_only(n_tokens: int) -> Any:
    """A logits processor list that gives the ids ≥ `n_tokens` (padding rows, no token) a score of −inf."""
    from transformers import LogitsProcessor, LogitsProcessorList

    class TokenizerIdsOnly(LogitsProcessor):
        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            if scores.shape[-1] <= n_tokens:
                return scores
            scores = scores.clone()
            scores[:, n_tokens:] = float("-inf")
            return scores

    return LogitsProcessorList([TokenizerIdsOnly()])


# ------------------------------------------------------------------------------------------------------ running
