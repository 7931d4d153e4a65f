"""`teacher.shard`: the live teacher's decoder layers split across the processes (FSDP2, teachers/sharding.py).

Two processes on the CPU (gloo): a sharded teacher trains exactly like a whole one, and each process really holds
only its half of the layers while the embeddings and the LM head stay whole. The refusals run in-process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from conftest import REPO, accelerate_launch, base_recipe, max_weight_difference, write_recipe
from distill.errors import ModelError, RecipeError
from distill.recipe.loading import validate_recipe
from distill.teachers.sharding import local_parameter_bytes, shard_teacher
from distill.training.metrics import read_metrics

# ------------------------------------------------------------------------------------- two processes (slow)


def test_a_sharded_teacher_trains_exactly_like_a_whole_one(tmp_path, text_data, tiny_teacher_dir):
    recipe = base_recipe(text_data, tmp_path / "whole", training={
        "max_steps": 4, "batch_size": 8, "micro_batch_size": 2, "save_every": 4, "eval_every": 2})
    # unequal lengths: padding and masks in the teacher. 5 held-out sequences: process 0 scores 3 (2 micro-batches),
    # process 1 scores 2 (1), so process 1 must join process 0's second teacher forward with a pass of its own (a
    # deadlock before validation padded it); the validator runs the teacher's own forward (val_kl), not the hidden
    # states the chunked loss reads
    recipe["data"].update({"packing": False, "max_length": 48, "validation_fraction": 0.025})
    path = write_recipe(tmp_path / "r.yaml", recipe)

    whole = accelerate_launch(2, "train", str(path), port=29581)
    assert whole.returncode == 0, whole.stderr
    sharded = accelerate_launch(2, "train", str(path), "--set", "teacher.shard=true",
                                "--set", f"training.output_dir={tmp_path / 'sharded'}", port=29583)
    assert sharded.returncode == 0, sharded.stderr

    # 4 layers of the tiny teacher: 197,120 of its 262,720 parameters (fp32); each process keeps half of them
    whole_mib, local_mib = 262_720 * 4 / 2**20, (262_720 - 197_120 / 2) * 4 / 2**20
    assert f"decoder layers sharded over 2 processes ({local_mib:.2f} of {whole_mib:.2f} MiB per process)" in \
        sharded.stdout, sharded.stdout
    assert "decoder layers sharded" not in whole.stdout

    rows_whole, rows_sharded = read_metrics(tmp_path / "whole"), read_metrics(tmp_path / "sharded")
    assert len(rows_whole) == len(rows_sharded) == 4
    for name in ("loss", "val_nll", "val_agreement", "val_kl"):  # validation at steps 2 and 4
        whole_values = [m[name] for m in rows_whole if name in m]
        assert len(whole_values) == (4 if name == "loss" else 2), name
        assert [m[name] for m in rows_sharded if name in m] == pytest.approx(whole_values, rel=1e-5), name
    assert max_weight_difference(tmp_path / "whole", tmp_path / "sharded") < 1e-5


SHARD_AND_MEASURE = textwrap.dedent("""
    import json, sys
    import torch, torch.distributed as dist
    from torch.distributed.tensor import DTensor
    from transformers import AutoModelForCausalLM
    from distill.losses.lm_head import LMHead, last_hidden_states
    from distill.models import decoder_layers
    from distill.teachers.sharding import shard_teacher

    dist.init_process_group("gloo")
    load = lambda: AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval().requires_grad_(False)
    whole, model = load(), load()
    local = lambda module: sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in module.parameters())
    shard_teacher(model, torch.device("cpu"), dist.get_world_size())
    ids = torch.randint(0, model.config.vocab_size, (3, 17), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # both forms LiveTeacher uses: the logits, and the last hidden states through the head
        logits = (model(input_ids=ids).logits - whole(input_ids=ids).logits).abs().max().item()
        hidden = LMHead.of(model).logits(last_hidden_states(model, ids, None))
        head_path = (hidden - whole(input_ids=ids).logits).abs().max().item()
    row = {  # measured after the forward passes: the gathered layers were freed again
        "rank": dist.get_rank(),
        "layers": [local(decoder_layers(model)[1]), local(decoder_layers(whole)[1])],
        "embeddings": [local(model.get_input_embeddings()), local(whole.get_input_embeddings())],
        "head": [local(model.get_output_embeddings()), local(whole.get_output_embeddings())],
        "head_is_plain": not isinstance(LMHead.of(model).weight, DTensor),
        "logits_diff": logits, "head_path_diff": head_path}
    with open(f"{sys.argv[2]}/rank-{dist.get_rank()}.json", "w") as f:  # one file each: stdout lines may interleave
        json.dump(row, f)
    dist.destroy_process_group()
""")


def test_each_process_holds_only_its_half_of_the_decoder_layers(tmp_path, tiny_teacher_dir):
    script = tmp_path / "shard_and_measure.py"
    script.write_text(SHARD_AND_MEASURE)
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--master_port", "29585", str(script), str(tiny_teacher_dir), str(tmp_path)],
                            capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr
    rows = [json.loads((tmp_path / f"rank-{rank}.json").read_text()) for rank in (0, 1)]
    for row in rows:
        here, whole = row["layers"]
        assert whole == 197_120 and here == whole // 2, row  # every dimension of the tiny teacher splits evenly
        assert row["embeddings"][0] == row["embeddings"][1] > 0, row  # kept whole
        assert row["head"][0] == row["head"][1] > 0 and row["head_is_plain"], row
        assert row["logits_diff"] < 1e-5 and row["head_path_diff"] < 1e-4, row


# ------------------------------------------------------------------------------------- in-process refusals


def _teacher_recipe(tmp_path, text_data, **teacher) -> dict:
    return base_recipe(text_data, tmp_path / "run", teacher={"shard": True, **teacher})


def test_a_cached_teacher_cannot_be_sharded(tmp_path, text_data):
    recipe = _teacher_recipe(tmp_path, text_data, cache=str(tmp_path / "cache"))  # model stays: from_teacher
    with pytest.raises(RecipeError, match=r"teacher\.shard: .*teacher\.cache .* runs no teacher"):
        validate_recipe(recipe)


def test_an_api_teacher_cannot_be_sharded(tmp_path, text_data):
    recipe = _teacher_recipe(tmp_path, text_data, model=None, cache=str(tmp_path / "cache"),
                             api={"base_url": "http://127.0.0.1:8000", "model": "teacher"})
    recipe["student"] = {"config": {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64,
                                    "num_hidden_layers": 1, "num_attention_heads": 2}}
    recipe["tokenizer"] = "builtin:tiny-teacher"
    recipe["objective"]["temperature"] = 1.0  # an API teacher's log-probs are at temperature 1
    with pytest.raises(RecipeError, match=r"teacher\.shard: "):
        validate_recipe(recipe)
    del recipe["teacher"]["cache"]  # the API alone: no live model either
    with pytest.raises(RecipeError, match=r"teacher\.shard: .*teacher\.api"):
        validate_recipe(recipe)


def test_a_live_teacher_may_be_sharded(tmp_path, text_data):
    assert validate_recipe(_teacher_recipe(tmp_path, text_data)).teacher.shard


def test_one_process_keeps_the_teacher_whole_and_says_so(tiny_teacher_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_teacher_dir)
    before = local_parameter_bytes(model)
    assert shard_teacher(model, torch.device("cpu"), 1) == "teacher.shard: one process, so the teacher is kept whole"
    assert local_parameter_bytes(model) == before == 262_720 * 4


def test_a_model_without_a_list_of_decoder_layers_is_refused_by_name():
    class Flat(nn.Module):
        def __init__(self):
            super().__init__()
            self.config = type("Config", (), {"num_hidden_layers": 2})()
            self.proj = nn.Linear(4, 4)

    with pytest.raises(ModelError, match=r"teacher\.shard: cannot find the decoder layers of a Flat"):
        shard_teacher(Flat(), torch.device("cpu"), 2)


def test_torch_older_than_2_8_is_refused_by_name(monkeypatch):
    """Before torch 2.8 a layer sharded on its own kept its weights gathered after the first forward: the setting
    would cost memory, not save it."""
    monkeypatch.setattr(torch, "__version__", "2.7.1+cpu")
    with pytest.raises(RecipeError, match=r"teacher\.shard: needs torch >= 2\.8 \(this is 2\.7\.1\+cpu"):
        shard_teacher(nn.Linear(2, 2), torch.device("cpu"), 2)


def test_a_quantised_teacher_is_refused_by_name():
    model = nn.Linear(2, 2)
    model.config = type("Config", (), {"quantization_config": {"load_in_8bit": True}})()
    with pytest.raises(RecipeError, match=r"teacher\.shard: Linear is a quantised checkpoint"):
        shard_teacher(model, torch.device("cpu"), 2)
