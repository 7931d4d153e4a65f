"""The reasoning demo's markdown table, made from `reasoning.json` alone (never from models or run folders), so the
numbers shown are the numbers stored."""

from __future__ import annotations

from pathlib import Path

from distill.results.reasoning import ReasoningResult, load_reasoning_result
from distill.results.schema import Interval


def write_table(result_path: Path, table_path: Path) -> str:
    """Render the result file at `result_path` as markdown into `table_path`; returns the text."""
    text = render(load_reasoning_result(result_path))
    tmp = table_path.with_name(f".{table_path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(table_path)
    return text


def render(result: ReasoningResult) -> str:
    g, e, s = result.generation, result.eval, result.student
    task = result.task
    kept_layers = len(s["layers"])
    lines = [
        f"## distill demo reasoning: {task['name']} {_config(task['config'])}",
        "",
        f"Teacher {s['teacher']} ({s['teacher_params'] / 1e6:.1f}M parameters) sampled {g.samples_per_prompt} "
        f"solutions to each of {g.prompts} training problems: pass@1 {g.pass_at_1:.3f}, "
        f"pass@{g.samples_per_prompt} {g.pass_at_n:.3f}; {g.accepted} of {g.samples} samples accepted, {g.kept} kept "
        f"(≤ {result.options.get('max_accepted')} distinct per problem). Student: {kept_layers} copied layers "
        f"({s['params'] / 1e6:.1f}M parameters).",
        "",
        f"Held-out: {e.problems} problems (seed {e.seed}; {e.overlap_with_training} shared with training, "
        f"{e.skipped_as_training_questions} training questions skipped), greedy, "
        f"≤ {e.max_new_tokens} new tokens, verifier `{e.verifier.get('kind')}`. Intervals: 95% Wilson.",
        "",
        "| arm | training rows (verified) | steps | objective | held-out pass@1 [95% CI] | correct | tokens/answer |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm in result.arms:
        rows = "–" if arm.training_rows is None else f"{arm.training_rows} ({arm.accepted_rows})"
        lines.append(f"| {arm.label} | {rows} | {_or_dash(arm.steps)} | {arm.objective or '–'} | "
                     f"{_interval(arm.pass_at_1)} | {arm.correct}/{arm.n} | {arm.mean_completion_tokens:.0f} |")
    if result.comparisons:
        lines += ["", "Paired differences on the same problems (95% paired bootstrap; McNemar exact p on the problems "
                  "where exactly one is right):", "",
                  "| difference | Δ pass@1 [95% CI] | only first right | only second right | McNemar p |",
                  "|---|---|---|---|---|"]
        labels = {arm.name: arm.label.split(" ", 1)[0] for arm in result.arms}
        for c in result.comparisons:
            lines.append(f"| {labels[c.a]} {c.a} − {labels[c.b]} {c.b} | {_interval(c.difference, signed=True)} | "
                         f"{c.a_only} | {c.b_only} | {c.mcnemar_p:.3f} |")
    names = sorted({name for arm in result.arms for name in arm.slices})
    if len(names) > 1:
        lines += ["", "Held-out pass@1 by slice (correct / problems):", "",
                  "| arm | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for arm in result.arms:
            cells = [f"{arm.slices[n].correct}/{arm.slices[n].n}" if n in arm.slices else "–" for n in names]
            lines.append(f"| {arm.label} | " + " | ".join(cells) + " |")
    walls = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in result.wall_s.items())
    threads = result.options.get("threads_used")
    lines += ["", f"Wall time: {result.total_wall_s / 60:.1f} min ({walls}); {threads} torch thread(s), "
              f"{result.provenance.cpu_count} CPUs.", ""]
    return "\n".join(lines)


def _interval(value: Interval, signed: bool = False) -> str:
    sign = "+" if signed else ""
    low = "?" if value.ci_low is None else f"{value.ci_low:{sign}.3f}"
    high = "?" if value.ci_high is None else f"{value.ci_high:{sign}.3f}"
    return f"{value.mean:{sign}.3f} [{low}, {high}]"


def _config(config: dict[str, object]) -> str:
    return "(" + ", ".join(f"{k}={v}" for k, v in config.items()) + ")" if config else ""


def _or_dash(value: object) -> str:
    return "–" if value is None else str(value)
