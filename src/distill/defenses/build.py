"""From a key file to what the engine and the server run: `build_defenses(keys, model, tokenizer) -> Defenses`.

The processors' order matters and is fixed here: a proxy mixture (antidistillation, or product of experts) on the
teacher's raw logits first — both are defined on them; then the watermark, whose δ must survive into the sampled
distribution; then the canaries last, so that a canary's answer is exact whatever came before.

Proxies are loaded as every model in distill (`models.load_causal_lm`: a folder, a hub id or `builtin:NAME`), onto
the teacher's device, unless the caller passes `load_proxy` (tests, or a caller holding the models already).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.defenses.exposure import Exposure
from distill.defenses.keys import KeyFile
from distill.errors import ModelError

ProxyLoader = Callable[[str, str], Any]  # (name, field for messages) -> model on the teacher's device


@dataclass
class Defenses:
    keys: KeyFile = field(repr=False)
    processors: list[Any]
    exposure: Exposure

    def public_view(self) -> dict[str, Any]:
        """The knobs and key ids, never a secret: what provenance, logs and /v1/models show."""
        return self.keys.public_view()

    def names(self) -> list[str]:
        return [str(getattr(p, "name", type(p).__name__)) for p in self.processors]


def keyfile_sha256(keys: KeyFile) -> str:
    """A hash of the key file's content (secrets included, so a changed key is a different run); one-way, so it
    reveals nothing of them. Of the file's bytes when it was read from one, else of its canonical dump."""
    if keys.source and Path(keys.source).is_file():
        data = Path(keys.source).read_bytes()
    else:
        data = keys.model_dump_json(exclude_none=True).encode()
    return hashlib.sha256(b"distill-keyfile:" + data).hexdigest()


def build_defenses(keys: KeyFile, model: Any, tokenizer: Any, load_proxy: ProxyLoader | None = None) -> Defenses:
    if keys.poe and keys.antidistillation:
        raise ModelError(f"{keys.source or 'the key file'}: poe and antidistillation both reshape the teacher's raw "
                         "logits with a proxy; choose one")
    device = next(model.parameters()).device
    n_tokens = len(tokenizer)
    if load_proxy is None:
        from distill.defenses.proxy import check_proxy_vocab
        from distill.defenses.proxy import load_proxy as load
        from distill.models import load_tokenizer

        def load_proxy(name: str, where: str) -> Any:
            proxy = load(name, where, device)
            try:
                own = load_tokenizer(where, name)
            except ModelError:  # a bare model folder: only its output width can be checked
                own = None
            check_proxy_vocab(where, proxy, n_tokens, own, tokenizer)
            return proxy

    processors: list[Any] = []
    if keys.antidistillation:
        from distill.defenses.antidistillation import antidistillation_from_key
        from distill.defenses.proxy import check_proxy_vocab

        proxy = load_proxy(keys.antidistillation.proxy, "antidistillation.proxy")
        check_proxy_vocab("antidistillation.proxy", proxy, n_tokens)
        processors.append(antidistillation_from_key(keys.antidistillation, proxy, n_tokens))
    if keys.poe:
        from distill.defenses.poe import PoEProcessor
        from distill.defenses.proxy import check_proxy_vocab

        proxy = load_proxy(keys.poe.proxy, "poe.proxy")
        check_proxy_vocab("poe.proxy", proxy, n_tokens)
        processors.append(PoEProcessor(proxy, n_tokens, keys.poe.gamma))
    if keys.watermark:
        from distill.defenses.watermark import GreenList, WatermarkProcessor

        wm = keys.watermark
        processors.append(WatermarkProcessor(GreenList(wm.secret, wm.context_width, wm.gamma), wm.delta))
    if keys.canaries:
        from distill.defenses.canaries import CanaryProcessor

        processors.append(CanaryProcessor(keys.canaries, tokenizer))
    return Defenses(keys, processors, Exposure(keys.exposure))
