"""Load teachers and students, initialise a student from a teacher, and check that the two can be compared.

A student is one of: (a) an existing model, (b) a fresh architecture from a config, or (c) a copy of chosen teacher
layers with the teacher's embeddings, final norm and head (the DistilBERT / distil-whisper initialisation).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from distill.builtin.registry import resolve
from distill.errors import ModelError
from distill.recipe import TEACHER_DTYPES, Recipe, StudentConfig, TeacherConfig

DTYPES = {name: getattr(torch, name) for name in TEACHER_DTYPES}  # the names are the recipe's teacher.dtype


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def load_tokenizer(field: str, name: str, revision: str | None = None, trust_remote_code: bool = False
                   ) -> PreTrainedTokenizerBase:
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            resolve(name, "model"), revision=revision, trust_remote_code=trust_remote_code
        )
    except ModelError:
        raise
    except Exception as exc:  # transformers raises OSError, ValueError, EnvironmentError, ... for bad sources
        raise ModelError(f"{field}: cannot load a tokenizer from {name!r}: {_first_line(exc)}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_config(field: str, name: str, revision: str | None = None, trust_remote_code: bool = False
                ) -> PretrainedConfig:
    try:
        return AutoConfig.from_pretrained(
            resolve(name, "model"), revision=revision, trust_remote_code=trust_remote_code
        )
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"{field}: cannot load a model config from {name!r}: {_first_line(exc)}") from None


def load_causal_lm(field: str, name: str, revision: str | None, trust_remote_code: bool, dtype: torch.dtype
                    ) -> PreTrainedModel:
    try:
        return AutoModelForCausalLM.from_pretrained(
            resolve(name, "model"), revision=revision, trust_remote_code=trust_remote_code, dtype=dtype
        )
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"{field}: cannot load a causal LM from {name!r}: {_first_line(exc)}") from None


def cache_argument(model: Any) -> str:
    """The name `model.forward` takes its KV cache by: `cache` from transformers 5.2x on, `past_key_values` before."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def load_teacher(cfg: TeacherConfig) -> PreTrainedModel:
    """The teacher, frozen: eval mode, no gradients."""
    model = load_causal_lm("teacher.model", cfg.model, cfg.revision, cfg.trust_remote_code, DTYPES[cfg.dtype])
    model.eval()
    model.requires_grad_(False)
    return model


def build_student(recipe: Recipe, tokenizer: PreTrainedTokenizerBase, teacher: PreTrainedModel | None
                  ) -> PreTrainedModel:
    """The student in fp32 (its master weights), initialised per `recipe.student`, with the recipe's seed."""
    cfg: StudentConfig = recipe.student
    torch.manual_seed(recipe.seed)
    if cfg.model is not None:
        return load_causal_lm("student.model", cfg.model, cfg.revision, cfg.trust_remote_code, torch.float32)
    if cfg.config is not None:
        return _student_from_config(cfg.config, tokenizer, cfg.trust_remote_code)
    assert cfg.from_teacher is not None and teacher is not None
    return copy_teacher_layers(teacher, cfg.from_teacher.layers)


def _student_from_config(config: dict[str, Any], tokenizer: PreTrainedTokenizerBase, trust_remote_code: bool
                         ) -> PreTrainedModel:
    options = dict(config)
    model_type = options.pop("model_type")
    options.setdefault("vocab_size", len(tokenizer))
    try:
        hf_config = AutoConfig.for_model(model_type, **options)
        return AutoModelForCausalLM.from_config(hf_config, trust_remote_code=trust_remote_code, dtype=torch.float32)
    except Exception as exc:
        raise ModelError(f"student.config: cannot build a {model_type!r} model: {_first_line(exc)}") from None


def decoder_layers(model: PreTrainedModel) -> tuple[str, nn.ModuleList]:
    """The ModuleList of decoder blocks: the one whose length is the config's number of hidden layers."""
    n_layers = model.config.num_hidden_layers
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) == n_layers]
    if len(found) != 1:
        raise ModelError(
            f"student.from_teacher: cannot find the decoder layers of a {type(model).__name__} "
            f"({len(found)} candidate lists of {n_layers} modules); use `student.config` or `student.model` instead"
        )
    return found[0]


def copy_teacher_layers(teacher: PreTrainedModel, layers: list[int]) -> PreTrainedModel:
    """A student with the teacher's architecture but only `layers` (in that order), weights copied in fp32."""
    n_teacher = teacher.config.num_hidden_layers
    check_layer_indices(layers, n_teacher)
    config = copy.deepcopy(teacher.config)
    for key, value in config.to_dict().items():  # per-layer settings (layer_types, sliding windows, ...)
        if isinstance(value, list) and len(value) == n_teacher:
            setattr(config, key, [value[i] for i in layers])
    config.num_hidden_layers = len(layers)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    student = AutoModelForCausalLM.from_config(config, dtype=torch.float32)

    list_name, _ = decoder_layers(teacher)
    prefix = list_name + "."
    teacher_state = teacher.state_dict()
    state = {k: v.float().clone() for k, v in teacher_state.items() if not k.startswith(prefix)}
    for dst, src in enumerate(layers):  # a layer may be listed twice; each destination gets its own copy
        src_prefix = f"{prefix}{src}."
        for key, value in teacher_state.items():
            if key.startswith(src_prefix):
                state[f"{prefix}{dst}.{key[len(src_prefix):]}"] = value.float().clone()
    missing, unexpected = student.load_state_dict(state, strict=False)
    missing = [k for k in missing if not _is_tied(student, k)]
    if missing or unexpected:
        raise ModelError(f"student.from_teacher: weights did not map cleanly (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    student.tie_weights()
    return student


def _is_tied(model: PreTrainedModel, key: str) -> bool:
    tied = getattr(model, "_tied_weights_keys", None) or {}
    return key in tied


def check_same_vocab(teacher_tok: PreTrainedTokenizerBase, student_tok: PreTrainedTokenizerBase) -> None:
    """Teacher and student must map every token to the same id (padded embedding sizes are fine)."""
    t_vocab, s_vocab = teacher_tok.get_vocab(), student_tok.get_vocab()
    if t_vocab == s_vocab:
        return
    only_t = sorted(set(t_vocab) - set(s_vocab))
    only_s = sorted(set(s_vocab) - set(t_vocab))
    moved = sorted(k for k in set(t_vocab) & set(s_vocab) if t_vocab[k] != s_vocab[k])
    details = []
    if only_t:
        details.append(f"{len(only_t)} tokens only in the teacher's (e.g. {only_t[0]!r})")
    if only_s:
        details.append(f"{len(only_s)} tokens only in the student's (e.g. {only_s[0]!r})")
    if moved:
        details.append(f"{len(moved)} tokens with different ids (e.g. {moved[0]!r}: {t_vocab[moved[0]]} vs "
                       f"{s_vocab[moved[0]]})")
    raise ModelError(
        f"student.model: its tokenizer differs from the teacher's ({'; '.join(details)}); "
        "distill needs a shared tokenizer: pick a student of the same family or use `student.from_teacher`"
    )


def check_layer_indices(layers: list[int], n_layers: int) -> None:
    bad = [i for i in layers if i >= n_layers]
    if bad:
        raise ModelError(
            f"student.from_teacher.layers: {bad} out of range; the teacher has {n_layers} layers (0..{n_layers - 1})"
        )


def check_logit_width(field: str, width: int, n_tokens: int) -> None:
    """A model's output (`width` logits) must cover every token id of the tokenizer; wider is fine (padding)."""
    if width < n_tokens:
        raise ModelError(f"{field}: the model predicts {width} tokens but the tokenizer has {n_tokens}; "
                         "they do not belong together")


def context_length(config: PretrainedConfig) -> int | None:
    """Positions the model was built for (`max_position_embeddings`, which transformers maps for GPT-2's
    n_positions too); None when the config does not say."""
    value = getattr(config, "max_position_embeddings", None)
    return value if isinstance(value, int) and value > 0 else None


def check_context_length(field: str, config: PretrainedConfig, max_length: int) -> None:
    """Sequences longer than the model's positions train on embeddings it never learned, or crash later."""
    limit = context_length(config)
    if limit is not None and max_length > limit:
        raise ModelError(f"data.max_length: {max_length} is more than the {limit} positions {field} was built for "
                         f"(max_position_embeddings); set data.max_length to at most {limit}")


def output_width(model: PreTrainedModel) -> int:
    return model.get_output_embeddings().weight.shape[0]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
