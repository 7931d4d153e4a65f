"""What tokenized data depends on, hashed: the tokenizer's full definition, and JSON-able settings.

Two users: the token store (data/token_store.py) keys tokenized data on disk by them, and a teacher cache
(teachers/cache/fingerprint.py) proves with them that it was computed on the same sequences.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from transformers import PreTrainedTokenizerBase


def sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def tokenizer_identity(tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    """The tokenizer's full definition (vocabulary, merges, normaliser, added tokens), special tokens and chat
    template, hashed; the template is also kept as text, since it decides how chat data is rendered."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    definition = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None
    body = {"definition": definition, "special": tokenizer.special_tokens_map, "template": template}
    return {"sha256": sha256_json(body), "vocab_size": len(tokenizer), "chat_template": template}
