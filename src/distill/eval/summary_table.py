"""The terminal view of an evaluation result (eval.json or the demo's summary.json): one table per eval set with
intervals, the paired differences in words, and task accuracy — what `distill eval` and `distill demo` print last."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from distill.results.schema import EvalResult


def _ci(interval: dict[str, float] | None, digits: int = 3) -> str:
    if not interval:
        return "—"
    if interval.get("ci_low") is None:
        return f"{interval['mean']:.{digits}f}"
    return f"{interval['mean']:.{digits}f} [{interval['ci_low']:.{digits}f}, {interval['ci_high']:.{digits}f}]"


def print_summary(result: EvalResult, console: Console | None = None) -> None:
    console = console or Console()
    summary = result.to_json()
    for set_name, block in summary["sets"].items():
        table = Table(title=f"{set_name}: {block['n_docs']} docs, {block['n_tokens']:,} tokens "
                            "(95% bootstrap CIs over documents)")
        for column in ("model", "params", "NLL", "top-1", "agree", "KL(T‖M)", "ECE", "tok/s"):
            table.add_column(column, justify="left" if column == "model" else "right")
        for name, info in summary["models"].items():
            m = block["metrics"][name]
            table.add_row(info["label"], f"{info['params'] / 1e6:.1f}M", _ci(m["nll"]), _ci(m["top1_acc"]),
                          _ci(m.get("agreement")), _ci(m.get("kl_forward")), _ci(m["ece"]),
                          f"{info.get('score_tokens_per_s', 0):,.0f}")
        console.print(table)
        for pair, metrics in block["paired"].items():
            console.print(f"  {pair.replace('_minus_', ' − ')} NLL: {_ci(metrics['nll'])}  {_verdict(metrics['nll'])}")
        for name, gap in block.get("gap_recovered", {}).items():
            console.print(f"  gap recovered by {name} (vs baseline): {_ci(gap, 2)}")
        console.print(f"  contamination: {_contamination(block)}", highlight=False)
    for task, entry in summary.get("tasks", {}).items():
        scores = ", ".join(f"{summary['models'][n]['label']} {_ci(v['accuracy'], 2)}"
                           for n, v in entry["models"].items())
        console.print(f"task {task} (n={entry['n']}): {scores}")
    for name, facts in summary.get("training", {}).items():
        console.print(f"training {name}: {facts['steps']} steps, {facts['tokens']:,} tokens, {facts['wall_s']:.0f} s")


def _verdict(interval: dict[str, float]) -> str:
    """For a lower-is-better metric such as NLL."""
    if interval["ci_high"] < 0:
        return "(first is better; the interval excludes 0)"
    if interval["ci_low"] > 0:
        return "(second is better; the interval excludes 0)"
    return "(no detectable difference; the interval includes 0)"


def _contamination(block: dict[str, Any]) -> str:
    """The overlap with the training data, or why it was not computed (never a 0% that compared nothing)."""
    found = block.get("contamination")
    if not found:
        return f"not computed ({block.get('contamination_reason') or 'no training data given'})"
    text = (f"{found['fraction']:.1%} of the {found['n']}-word n-grams occur in the training data; "
            f"{found['docs_with_overlap']} of {found['docs']} documents overlap")
    if found.get("train_records_with_text", 0) < found.get("train_records", 0):
        text += f" (only {found['train_records_with_text']} of {found['train_records']} training records had text)"
    return text
