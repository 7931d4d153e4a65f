"""Tiny Llama-style models built from a config: for tests, the tiny recipe and the `builtin:tiny-teacher` alias."""

from __future__ import annotations

import math

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase


def tiny_llama_config(vocab_size: int, *, hidden: int = 64, layers: int = 4, heads: int = 4, kv_heads: int = 2,
                      max_positions: int = 512, eos_token_id: int = 0) -> LlamaConfig:
    """A Llama config small enough to train in seconds on a CPU; the vocab is padded to a multiple of 64, like
    real models pad theirs, so code that must tell tokenizer size from embedding size is exercised. BOS and EOS are
    the tokenizer's EOS (id 0 in `train_bpe_tokenizer`), not Llama's defaults (1 and 2), so generation stops where
    the tokenizer says a text ends. No pad_token_id: Llama would make it the embedding's padding_idx, a row frozen at
    zero, and the tokenizer pads with EOS, the token that separates packed documents."""
    return LlamaConfig(
        bos_token_id=eos_token_id,
        eos_token_id=eos_token_id,
        vocab_size=64 * math.ceil(vocab_size / 64),
        hidden_size=hidden,
        intermediate_size=3 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=False,
    )


def pretrain_briefly(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase, texts: list[str], *,
                     steps: int = 300, seq_len: int = 64, batch: int = 16, lr: float = 3e-3, seed: int = 0) -> float:
    """Plain next-token training so the tiny teacher knows something worth distilling. Returns the last loss."""
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id])
    blocks = torch.tensor(ids[: len(ids) // seq_len * seq_len]).view(-1, seq_len)
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 20) * (1 - s / steps))
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        batch_ids = blocks[torch.randint(len(blocks), (batch,), generator=gen)]
        loss = model(input_ids=batch_ids, labels=batch_ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    return float(loss.detach())
