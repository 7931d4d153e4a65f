"""A proxy causal LM run beside the teacher: the base of the defenses that mix a second model's logits into the
teacher's (product of experts, antidistillation).

The proxy shares the teacher's tokenizer and sees exactly the teacher's rows: the same left-padded prompts, the same
positions (counting only real tokens) and the same chosen tokens, through the engine's hooks (`start` when a batch
starts, `select` when finished rows leave it). It keeps its own KV cache, so each step costs it one token per row,
as it costs the teacher. For echo scoring (`score`) it runs one full forward pass over the right-padded rows, which
gives, position by position, the logits generation gave (up to float rounding, as for the teacher itself).

Why a proxy at all: these defenses reshape the teacher's distribution against a *student-like* model, the thing a
distiller would train; the teacher's users still get the teacher's answer, bent only where the proxy says a student
would learn most (see docs/defenses.md).
"""

from __future__ import annotations

from typing import Any

import torch

from distill.errors import ModelError


def load_proxy(name: str, field: str, device: torch.device | str, dtype: torch.dtype = torch.float32) -> Any:
    """A proxy model by name (a folder, a hub id or `builtin:NAME`, resolved as every other model in distill), in
    eval mode without gradients, on the teacher's device. float32 by default: antidistillation's finite difference
    (θ ± ε·g, ε ~ 1e-4) vanishes in bfloat16's 8 bits of mantissa."""
    from distill.models import load_causal_lm

    model = load_causal_lm(field, name, None, False, dtype)
    model.to(device)
    model.eval()
    model.requires_grad_(False)
    return model


def output_width(model: Any) -> int:
    head = model.get_output_embeddings()
    return int(head.weight.shape[0]) if head is not None else int(model.config.vocab_size)


def check_proxy_vocab(field: str, proxy: Any, n_tokens: int, proxy_tokenizer: Any | None = None,
                      tokenizer: Any | None = None) -> None:
    """The proxy must predict the teacher's tokens with the teacher's ids: at least as many logits as the teacher's
    tokenizer has tokens and, when its own tokenizer is known, the same vocabulary. One line when it does not."""
    width = output_width(proxy)
    if width < n_tokens:
        raise ModelError(f"{field}: the proxy has {width} output logits but the teacher's tokenizer has {n_tokens} "
                         "tokens; a proxy must share the teacher's tokenizer (same family)")
    if proxy_tokenizer is not None and tokenizer is not None and proxy_tokenizer.get_vocab() != tokenizer.get_vocab():
        raise ModelError(f"{field}: the proxy's tokenizer ({len(proxy_tokenizer)} tokens) differs from the teacher's "
                         f"({len(tokenizer)} tokens); a proxy must share the teacher's tokenizer (same family)")


class ProxyRunner:
    """One proxy model following the engine's batch: `start`, then one `step` per engine step, `select` when rows
    leave. `step` returns the proxy's logits at each row's last position, cut or padded to the teacher's width."""

    def __init__(self, model: Any, n_tokens: int):
        self.model, self.n_tokens = model, n_tokens
        from distill.models import cache_argument

        self._cache_name = cache_argument(model)
        self._cache: Any = None
        self._pending: torch.Tensor | None = None  # the prompts, run on the first step
        self._mask = self._positions = torch.zeros(0)

    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
        from transformers import DynamicCache

        self._cache = DynamicCache()
        self._pending, self._mask = input_ids, attention_mask
        self._positions = (attention_mask.cumsum(-1) - 1).clamp_min(0)

    def select(self, index: torch.Tensor) -> None:
        self._cache.batch_select_indices(index)
        self._mask, self._positions = self._mask[index], self._positions[index]

    @torch.inference_mode()
    def step(self, history: torch.Tensor, width: int) -> torch.Tensor:
        """The proxy's next-token logits [rows, width] for the rows whose tokens so far are `history`."""
        if self._cache is None:
            raise RuntimeError("a proxy processor was called before the batch started (Engine calls `start`)")
        if self._pending is not None:  # the batch's first step: the whole prompts
            step_ids, self._pending = self._pending, None
        else:  # one new token per row: the one the engine chose last
            step_ids = history[:, -1:]
            self._mask = torch.cat([self._mask, torch.ones_like(self._mask[:, :1])], dim=-1)
            self._positions = self._positions[:, -1:] + 1
        out = self.model(input_ids=step_ids, attention_mask=self._mask, position_ids=self._positions,
                         use_cache=True, logits_to_keep=1, **{self._cache_name: self._cache})
        if step_ids.shape[-1] > 1:
            self._positions = self._positions[:, -1:]
        return fit_width(out.logits[:, -1, :].float(), width)

    @torch.inference_mode()
    def score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, width: int) -> torch.Tensor:
        """The proxy's logits at every position of right-padded rows [rows, T, width]."""
        return fit_width(self.model(input_ids=input_ids, attention_mask=attention_mask).logits.float(), width)


def fit_width(logits: torch.Tensor, width: int) -> torch.Tensor:
    """Proxy logits cut or zero-padded to the teacher's output width (ids past the tokenizer are −inf in the
    teacher's logits anyway, so what stands there does not matter)."""
    have = logits.shape[-1]
    if have >= width:
        return logits[..., :width]
    return torch.nn.functional.pad(logits, (0, width - have))


class ProxyProcessor:
    """The base of a processor mixing proxy logits into the teacher's: subclasses set `runners` and implement
    `combine(teacher [.., V], proxies: list of [.., V]) -> logits`, applied to the tokenizer's ids only (the
    output's padding columns stay −inf, and no 0·∞ appears)."""

    name = "proxy"
    runners: list[ProxyRunner]

    def __init__(self, n_tokens: int):
        self.n_tokens = n_tokens

    def combine(self, teacher: torch.Tensor, proxies: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def _mixed(self, logits: torch.Tensor, proxies: list[torch.Tensor]) -> torch.Tensor:
        n = self.n_tokens
        out = logits.clone()
        out[..., :n] = self.combine(logits[..., :n], [p[..., :n] for p in proxies])
        return out

    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
        for runner in self.runners:
            runner.start(input_ids, attention_mask)

    def select(self, index: torch.Tensor) -> None:
        for runner in self.runners:
            runner.select(index)

    def __call__(self, input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return self._mixed(logits, [r.step(input_ids, logits.shape[-1]) for r in self.runners])

    def score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return self._mixed(logits, [r.score(input_ids, attention_mask, logits.shape[-1]) for r in self.runners])
