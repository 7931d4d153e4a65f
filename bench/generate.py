"""`distill generate` (local backend) against plain `model.generate`, one prompt at a time, on the same prompts.

Both sample with the same settings (temperature, top_p, max_new_tokens, the same stop tokens) from the same model.
`distill generate` runs the whole pipeline — chat rendering, the batched engine, the verifier, the journal (fsync per
batch), selection and the manifest — so its time is the user's time, not the engine's alone. The baseline is the
loop a user writes first: `model.generate` per prompt with a KV cache. Tokens are the completion tokens each side
reports (each row up to and including its stop token). The sampled texts differ (different random streams), so the
two sides write different numbers of tokens: the ratio is of tokens per second, and both counts are printed.

Output: JSON lines; the last is the summary with `speedup_vs_sequential` and the peak RSS.

    python bench/generate.py                    # SmolLM2-135M-Instruct (builtin), 48 prompts, ~5 min on 2 CPU cores
    python bench/generate.py --tiny             # the tiny test model: a smoke test of the script
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import harness
from distill.builtin.registry import resolve
from distill.generation.engine import Engine
from distill.generation.prompts import load_prompts, prompt_ids
from distill.generation.run import run_generation
from distill.recipe.schema import GenerationRecipe


def recipe(model: str, out: Path, prompts: int, max_new_tokens: int, batch_size: int) -> GenerationRecipe:
    return GenerationRecipe.model_validate({
        "teacher": {"model": model},
        "generate": {"task": {"name": "basic_arithmetic", "size": prompts, "seed": 7,
                              "config": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2}},
                     "system": "Solve the problem step by step.", "n": 1, "batch_size": batch_size,
                     "sampling": {"temperature": 0.8, "top_p": 0.95, "max_new_tokens": max_new_tokens, "seed": 0},
                     "output": str(out), "dedup": None}})


def sequential(model, tokenizer, recipe: GenerationRecipe) -> dict:
    """Plain `model.generate`, one prompt at a time, sampling with the recipe's settings."""
    g = recipe.generate
    stops = Engine(model, tokenizer).stop_ids
    tokens, began = 0, time.perf_counter()
    for prompt in load_prompts(g):
        ids = torch.tensor([prompt_ids(prompt, tokenizer)])
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                 temperature=g.sampling.temperature, top_p=g.sampling.top_p,
                                 max_new_tokens=g.sampling.max_new_tokens, eos_token_id=stops, pad_token_id=stops[0])
        new = out[0, ids.shape[1]:].tolist()
        tokens += next((k + 1 for k, t in enumerate(new) if t in stops), len(new))
    seconds = time.perf_counter() - began
    return {"bench": "generate", "contender": "model.generate, one prompt at a time", "completion_tokens": tokens,
            "seconds": round(seconds, 3), "tokens_per_s": round(tokens / seconds, 2)}


def ours(recipe: GenerationRecipe) -> dict:
    began = time.perf_counter()
    manifest = run_generation(recipe, overwrite=True, progress=False)
    seconds = time.perf_counter() - began  # includes loading the model and the prompts, which the baseline has not
    tokens = manifest["tokens"]["completion"]
    return {"bench": "generate", "contender": f"distill generate (batch {recipe.generate.batch_size})",
            "completion_tokens": tokens, "seconds": round(seconds, 3), "tokens_per_s": round(tokens / seconds, 2),
            "seconds_generating": round(manifest["seconds_this_run"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    harness.model_arguments(parser)
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    name = harness.chosen_model(args)
    harness.reset_peak_rss()
    with tempfile.TemporaryDirectory() as tmp:
        spec = recipe(name, Path(tmp) / "out", args.prompts, args.max_new_tokens, args.batch_size)
        folder = resolve(name, "model")
        model = AutoModelForCausalLM.from_pretrained(folder).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder)
        ours(recipe(name, Path(tmp) / "warm", 2, 4, 2))  # warm-up: the model is loaded once into the OS cache
        base = sequential(model, tokenizer, spec)
        harness.emit({"model": name, **base})
        del model
        mine = ours(spec)
        harness.emit({"model": name, **mine})
    harness.emit({"summary": True, "bench": "generate", "model": name, "prompts": args.prompts,
                  "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size,
                  "speedup_vs_sequential": round(mine["tokens_per_s"] / base["tokens_per_s"], 2),
                  "threads": torch.get_num_threads(), "peak_rss_mb": round(harness.peak_rss_mb(), 1),
                  **harness.provenance()})


if __name__ == "__main__":
    main()
