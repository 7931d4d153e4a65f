"""Null calibration of the radioactivity detector (`distill audit`, docs/audit.md): is its p-value a p-value?

A clean model (SmolLM2-135M-Instruct, builtin; it has never seen text watermarked with any of our keys) writes a few
hundred short answers once. Then many independently drawn watermark keys score that one text in closed mode: every
key is a null, so with de-duplication the p-values must be uniform — the empirical false-positive rate at α must be
about α, and a KS test against Uniform(0, 1) must not reject. The negative control scores the same text without
de-duplication: repeated (window, token) pairs are counted again, the pairs are no longer independent, and the
false-positive rate must come out inflated. Finally the closed and the open mode run once end to end on the clean
model (open mode: it reads text that the same model wrote *with* a watermark key — its weights are still independent
of the key, so this is a null too), with and without de-duplication.

    .venv/bin/python bench/audit_null.py                  # ~5-8 min on 2 CPU cores (1 torch thread)
    .venv/bin/python bench/audit_null.py --quick          # smoke test: fewer prompts, tokens and keys

Output: JSON lines on stdout (the generation, one line per context width, the end-to-end modes, the summary last);
in --out (default runs/audit_null/): audit_null.json (`{"calibration": …}`, what `distill audit --calibration`
reads) and qq.png (the QQ plot of the null p-values against uniform).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

import harness
from distill.builtin.registry import resolve
from distill.defenses.watermark import GreenList, WatermarkProcessor
from distill.forensics import detector, radioactivity
from distill.generation.engine import Engine, GenRequest
from distill.generation.sampling import SamplingParams

TOPICS = ["the ocean", "a thunderstorm", "bread baking", "the moon", "a city at night", "gardening", "chess",
          "volcanoes", "a library", "bicycles", "honeybees", "winter mornings", "the desert", "trains", "music",
          "a lighthouse", "mountains", "coffee", "rivers", "robots", "friendship", "a market", "snow", "forests",
          "the history of maps", "clocks", "owls", "a small village", "rain", "the stars", "islands", "kites",
          "a football match", "painting", "cats", "the wind", "ancient Rome", "tea", "a bridge", "autumn leaves",
          "a museum", "electric cars", "whales", "the first day of school", "a picnic", "sunsets", "dragons",
          "a bakery", "the internet", "fireflies"]
STYLES = ["Write a short paragraph about {}.", "Describe {} in a few sentences.", "Tell me three facts about {}.",
          "Write a short poem about {}.", "Explain {} to a child.", "What do people like about {}?"]
ALPHAS = (0.01, 0.001)


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="builtin:smollm2-135m-instruct")
    p.add_argument("--prompts", type=int, default=300)
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--keys", type=int, default=1000)
    p.add_argument("--gamma", type=float, default=0.25)
    p.add_argument("--context-widths", default="1,2")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/audit_null"))
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.prompts, args.max_new_tokens, args.keys = 24, 32, 200
    return args


def chat_ids(tokenizer, text: str) -> list[int]:
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)
    return list(tokenizer(rendered, add_special_tokens=False)["input_ids"])


def generate(engine: Engine, prompts: list[list[int]], max_new: int, seed: int) -> list[list[int]]:
    params = SamplingParams(temperature=0.8, top_p=0.95, max_new_tokens=max_new)
    return [r.token_ids for r in engine.generate([GenRequest(p, params, (seed, i)) for i, p in enumerate(prompts)])]


def null_pvalues(streams: list[detector.Stream], keys: list[str], h: int, gamma: float, dedup: bool,
                 seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The exact p-value per key, and its randomised twin P(X > k) + U·P(X = k), which is exactly uniform under H0
    (the exact one is discrete, hence slightly conservative, and a KS test over many keys sees the steps). The
    selection does not depend on the key: select once, then count green pairs per key."""
    selection = detector.select_pairs(streams, dedup=dedup)
    n = len(selection.pairs)
    uniforms = np.random.default_rng([seed, 3]).random(len(keys))
    exact, randomised = [], []
    for key, u in zip(keys, uniforms, strict=True):
        k = detector.count_green(GreenList(key, h, gamma), selection.pairs)
        exact.append(detector.binomial_tail(k, n, gamma))
        randomised.append(float(stats.binom.sf(k, n, gamma) + u * stats.binom.pmf(k, n, gamma)))
    return np.asarray(exact), np.asarray(randomised)


def summarise(p: np.ndarray, randomised: np.ndarray) -> dict[str, float]:
    ks, ks_r = stats.kstest(p, "uniform"), stats.kstest(randomised, "uniform")
    return {**{f"fpr_{a}": float(np.mean(p <= a)) for a in ALPHAS}, "ks_statistic": float(ks.statistic),
            "ks_p_value": float(ks.pvalue), "ks_randomised_statistic": float(ks_r.statistic),
            "ks_randomised_p_value": float(ks_r.pvalue), "median_p": float(np.median(p))}


def main() -> None:
    args = parse()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = resolve(args.model, "model")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    texts = [s.format(t) for s in STYLES for t in TOPICS]
    rng = np.random.default_rng(args.seed)
    texts = [texts[i] for i in rng.permutation(len(texts))][:args.prompts]
    prompts = [chat_ids(tokenizer, t) for t in texts]
    began = time.perf_counter()
    clean = generate(Engine(model, tokenizer, max_batch_size=args.batch_size), prompts, args.max_new_tokens,
                     args.seed)
    tokens = sum(len(c) for c in clean)
    harness.emit({"stage": "clean text", "model": args.model, "prompts": len(prompts), "tokens": tokens,
                  "seconds": round(time.perf_counter() - began, 1)})

    draw = np.random.default_rng([args.seed, 1])  # independent 256-bit keys, reproducible from --seed
    keys = [draw.bytes(32).hex() for _ in range(args.keys)]
    widths = [int(w) for w in args.context_widths.split(",")]
    per_width = {}
    for h in widths:
        streams = [detector.Stream(radioactivity.own_pairs(c, h), excluded=radioactivity.windows_of(p, h))
                   for p, c in zip(prompts, clean, strict=True)]
        with_dedup, with_dedup_r = null_pvalues(streams, keys, h, args.gamma, True, args.seed)
        without, without_r = null_pvalues(streams, keys, h, args.gamma, False, args.seed)
        sel, raw = detector.select_pairs(streams), detector.select_pairs(streams, dedup=False)
        line = {"stage": "null calibration", "context_width": h, "gamma": args.gamma, "keys": len(keys),
                "pairs_dedup": len(sel.pairs), "pairs_no_dedup": len(raw.pairs),
                "dedup": summarise(with_dedup, with_dedup_r), "no_dedup": summarise(without, without_r)}
        harness.emit(line)
        per_width[h] = (line, with_dedup, without)

    modes = end_to_end(model, tokenizer, texts, prompts, args)
    h = widths[0]
    line, with_dedup, without = per_width[h]
    command = "python bench/audit_null.py " + " ".join(sys.argv[1:])
    calibration = {
        "command": command.strip(), "n_keys": len(keys), "tokens": tokens, "context_width": h, "gamma": args.gamma,
        "fpr": {str(a): line["dedup"][f"fpr_{a}"] for a in ALPHAS},
        "fpr_no_dedup": {str(a): line["no_dedup"][f"fpr_{a}"] for a in ALPHAS},
        "ks_statistic": line["dedup"]["ks_statistic"], "ks_p_value": line["dedup"]["ks_p_value"],
        "ks_statistic_no_dedup": line["no_dedup"]["ks_statistic"],
        "ks_p_value_no_dedup": line["no_dedup"]["ks_p_value"],
        "p_values": sorted(float(p) for p in with_dedup), "p_values_no_dedup": sorted(float(p) for p in without)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "audit_null.json").write_text(json.dumps({"calibration": calibration}) + "\n")
    from distill.report.figures import qq_uniform

    (args.out / "qq.png").write_bytes(qq_uniform([("with de-duplication", "#2a6fdb", with_dedup),
                                                  ("without (control)", "#c0392b", without)]))
    summary = {"summary": True, "files": [str(args.out / "audit_null.json"), str(args.out / "qq.png")],
               "tokens": tokens, "keys": len(keys), "widths": {h: {"dedup": v[0]["dedup"], "no_dedup": v[0]["no_dedup"],
                                                               "pairs_dedup": v[0]["pairs_dedup"],
                                                               "pairs_no_dedup": v[0]["pairs_no_dedup"]}
                                                           for h, v in per_width.items()},
               "end_to_end": modes, "wall_s": round(time.perf_counter() - began, 1)}
    summary["provenance"] = harness.provenance()
    harness.emit(summary)


def end_to_end(model, tokenizer, texts: list[str], prompts: list[list[int]], args: argparse.Namespace) -> dict:
    """The closed and open mode once, through the forensics functions, on the clean model and a fresh key."""
    key = np.random.default_rng([args.seed, 2]).bytes(32).hex()
    green = GreenList(key, 1, args.gamma)
    n = min(32, len(prompts))
    held = [chat_ids(tokenizer, t.replace("about", "concerning")) for t in texts[:n]]
    out = {}
    streams, _ = radioactivity.closed_streams(Engine(model, tokenizer, max_batch_size=args.batch_size), held, green,
                                              max_new_tokens=args.max_new_tokens, seed=args.seed + 1)
    for dedup in (True, False):
        s = detector.score(green, streams, dedup=dedup)
        out[f"closed_{'dedup' if dedup else 'no_dedup'}"] = {"pairs": s.scored, "green": s.green, "p": s.p_value}
    marked = Engine(model, tokenizer, max_batch_size=args.batch_size,
                    logits_processors=[WatermarkProcessor(green, delta=2.0)])
    teacher_text = generate(marked, held, args.max_new_tokens, args.seed + 2)
    docs = [d for d in teacher_text if len(d) >= 2]
    preds = radioactivity.top1_predictions(model, docs, n_tokens=len(tokenizer), batch_size=8,
                                           pad_id=tokenizer.pad_token_id or 0)
    teacher_green = detector.score(green, [detector.Stream(radioactivity.own_pairs(d, 1)) for d in docs])
    out["teacher_text_itself"] = {"pairs": teacher_green.scored, "green": teacher_green.green,
                                  "p": teacher_green.p_value, "log10_p": teacher_green.log10_p_value}
    for dedup in (True, False):
        s = detector.score(green, radioactivity.open_streams(docs, preds, 1), dedup=dedup)
        out[f"open_{'dedup' if dedup else 'no_dedup'}"] = {"pairs": s.scored, "green": s.green, "p": s.p_value}
    harness.emit({"stage": "end to end on the clean model", **out})
    return out


if __name__ == "__main__":
    main()
