"""`distill.report`: summary.json (+ training metrics.jsonl) → report.html (self-contained) and report.md.

Everything is built from a synthetic but realistic summary: four models (teacher, KD student, baseline, untrained
copy), two evaluation sets with slices, calibration bins and contamination, one task with example generations, and
two training runs. The browser test renders the HTML in headless Chromium to check that the figures really decode.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from distill.errors import DataError
from distill.report.render import write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EVIL = '<script>alert("pwned")</script> & <b>bold</b>'


def ci(mean: float, half: float) -> dict[str, float]:
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half}


def _calibration(sharpness: float, overconfidence: float) -> dict[str, Any]:
    bins, ece, total = [], 0.0, 0
    for b in range(15):
        lo, hi = b / 15, (b + 1) / 15
        conf = (lo + hi) / 2
        count = int(4000 * math.exp(-sharpness * conf)) + 5
        acc = max(0.0, min(1.0, conf - overconfidence * conf * (1 - conf)))
        bins.append({"lo": lo, "hi": hi, "count": count, "confidence": conf, "accuracy": acc})
        ece += count * abs(conf - acc)
        total += count
    return {"ece": ece / total, "bins": bins}


def _set(description: str, nll: dict[str, float], contamination: dict[str, Any] | None,
         slices: bool) -> dict[str, Any]:
    metrics = {}
    for name, value in nll.items():
        m = {"nll": ci(value, 0.09), "ppl": ci(math.exp(value), math.exp(value) * 0.09),
             "top1_acc": ci(0.55 - 0.04 * value, 0.01), "ece": ci(0.02 + 0.003 * value, 0.004)}
        if name != "teacher":
            gap = value - nll["teacher"]
            m |= {"agreement": ci(0.9 - 0.08 * gap, 0.012), "kl_forward": ci(0.9 * gap + 0.05, 0.03),
                  "kl_reverse": ci(0.7 * gap + 0.04, 0.025)}
        metrics[name] = m
    out = {
        "description": description, "path": f"/data/{description.split()[0]}.jsonl", "sha256": "ab12" * 16,
        "n_docs": 64, "n_tokens": 16384, "metrics": metrics,
        "paired": {"kd_minus_baseline": {"nll": ci(-0.12, 0.07), "top1_acc": ci(0.011, 0.006),
                                         "ece": ci(0.001, 0.004), "agreement": ci(0.02, 0.01)},
                   "kd_minus_init": {"nll": ci(-7.1, 0.2), "top1_acc": ci(0.3, 0.02)}},
        "gap_recovered": {"kd": ci(0.17, 0.1), "init": ci(-9.8, 0.4)},
        "calibration": {"teacher": _calibration(6, 0.1), "kd": _calibration(5, 0.35),
                        "baseline": _calibration(5, 0.45), "init": _calibration(60, 0.9)},
        "contamination": contamination,
    }
    if slices:
        out["slices"] = {"genre": {
            genre: {"n_docs": n,
                    "metrics": {m: {"nll": ci(v + shift * (m != "teacher"), 0.15)} for m, v in nll.items()},
                    "paired": {"kd_minus_baseline": {"nll": ci(d, 0.1)}}}
            for genre, n, shift, d in (("comedy", 24, 0.05, -0.18), ("tragedy", 24, 0.35, -0.04),
                                       ("history", 16, -0.1, -0.15))}}
    return out


def build_summary(root: Path, *, with_optional: bool = True) -> Path:
    """Write a realistic summary.json (and, with optional sections, two training runs' metrics.jsonl) under root."""
    root.mkdir(parents=True, exist_ok=True)
    models = {
        "teacher": {"role": "teacher", "label": "Teacher", "params": 134_515_008, "disk_bytes": 538_090_408,
                    "score_tokens_per_s": 812.3, "generate_tokens_per_s": 35.1},
        "init": {"role": "init", "label": "Untrained copy", "params": 44_855_616, "disk_bytes": 179_432_448,
                 "score_tokens_per_s": 2403.0, "generate_tokens_per_s": None},
        "baseline": {"role": "baseline", "label": "Baseline (no KD)", "params": 44_855_616,
                     "disk_bytes": 179_432_448, "score_tokens_per_s": 2390.5, "generate_tokens_per_s": 88.2},
        "kd": {"role": "student", "label": "KD student", "params": 44_855_616, "disk_bytes": 179_432_448,
               "score_tokens_per_s": 2411.7, "generate_tokens_per_s": 90.4},
    }
    for name, m in models.items():
        m["path"] = f"runs/demo/{name}"
    nll = {"teacher": 3.12, "kd": 3.71, "baseline": 3.83, "init": 10.8}
    summary: dict[str, Any] = {
        "schema_version": 1, "kind": "distill.demo",
        "provenance": {"distill": "0.1.0", "git": "abc1234", "python": "3.11.2", "torch": "2.13.0",
                       "transformers": "4.57.0", "platform": "Linux-x86_64", "cpu_count": 2,
                       "created": "2026-11-21T10:00:00Z"},
        "reference": "teacher", "baseline": "baseline", "models": models, "primary": "heldout",
        "sets": {"heldout": _set("held-out Shakespeare plays (never trained on)", nll,
                                 {"n": 8, "eval_ngrams": 12000, "overlapping_ngrams": 40, "fraction": 40 / 12000,
                                  "docs": 64, "docs_with_overlap": 2, "docs_over_half": 0, "max_doc_fraction": 0.05},
                                 slices=with_optional)},
    }
    if not with_optional:
        summary["sets"]["heldout"] = {"metrics": {m: {"nll": ci(v, 0.1)} for m, v in nll.items()}}
        (root / "summary.json").write_text(json.dumps(summary))
        return root
    summary["sets"]["train_sample"] = _set("sample of the training plays", {k: v - 0.2 for k, v in nll.items()},
                                           None, slices=False)
    summary["paired"] = summary["sets"]["heldout"]["paired"]
    examples = [{"id": "a1", "question": "What is 7 + 5?", "expected": "12", "output": "12, said the fool.",
                 "extracted": "12", "score": 1.0},
                {"id": "a2", "question": "What is 9 × 3?", "expected": "27", "output": EVIL, "extracted": None,
                 "score": 0.0}]
    summary["tasks"] = {"arith": {
        "version": 1, "n": 20, "description": "two-number arithmetic, answer extracted from the generation",
        "models": {"teacher": {"accuracy": ci(0.45, 0.2), "examples": examples},
                   "kd": {"accuracy": {"mean": 0.15, "ci_low": 0.0, "ci_high": 0.30}, "examples": examples[::-1]},
                   "baseline": {"accuracy": {"mean": 0.10, "ci_low": 0.0, "ci_high": 0.25}, "examples": []},
                   "init": {"accuracy": ci(0.0, 0.0), "examples": examples[1:]}},
        "paired": {"kd_minus_baseline": {"accuracy": ci(0.05, 0.15)}}}}
    recipe = "seed: 0\nteacher:\n  model: builtin:tiny-teacher\nobjective:\n  alpha: 0.5  # <CE & KD>\n"
    baseline_dir = root.parent / f"{root.name}-baseline-run"  # absolute run_dir, outside the summary's folder
    summary["training"] = {
        "kd": {"run_dir": "kd", "steps": 40, "tokens": 81920, "wall_s": 301.5, "recipe": recipe},
        "baseline": {"run_dir": str(baseline_dir), "steps": 40, "tokens": 81920, "wall_s": 288.0,
                     "recipe": recipe.replace("0.5", "1.0")},
    }
    summary["wall_s"] = {"teacher": 12.0, "train_kd": 301.5, "train_baseline": 288.0, "eval": 95.2}
    for run_dir, alpha in ((root / "kd", 0.5), (baseline_dir, 1.0)):
        run_dir.mkdir(parents=True, exist_ok=True)
        lines = []
        for step in range(1, 41):
            ce = 3.6 + 4.0 * math.exp(-step / 8) + (0.1 if alpha == 1.0 else 0.0)
            kd = 0.6 + 2.5 * math.exp(-step / 10)
            lines.append(json.dumps({"step": step, "loss": alpha * ce + (1 - alpha) * kd, "ce": ce, "kd": kd,
                                     "lr": 1e-3, "grad_norm": 1.0, "tokens_per_s": 270.0 + step % 5,
                                     "tokens_seen": 2048 * step, "targets": 2000}))
        (run_dir / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 41, "lo')  # a line cut by a kill
    (root / "summary.json").write_text(json.dumps(summary, indent=1))
    return root


@pytest.fixture()
def report(tmp_path: Path) -> tuple[Path, Path]:
    return write_report(build_summary(tmp_path / "demo"))


def _images(html: str) -> list[str]:
    return re.findall(r"<img\b[^>]*\bsrc=\"([^\"]*)\"", html)


def test_writes_self_contained_html_and_markdown(report: tuple[Path, Path]) -> None:
    html_path, md_path = report
    assert html_path.name == "report.html" and md_path.name == "report.md"
    html = html_path.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I), "external reference in HTML"
    assert "<script" not in html and "<link" not in html
    sources = _images(html)
    assert len(sources) == 4  # training curves, quality vs cost, calibration, one slice field
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert png.startswith(PNG_SIGNATURE)
        with Image.open(io.BytesIO(png)) as image:
            image.verify()
            assert image.size[0] > 300 and image.size[1] > 200


def test_headline_comparison_and_paired_differences(report: tuple[Path, Path]) -> None:
    html, md = (p.read_text(encoding="utf-8") for p in report)
    headline = "KD student beat Baseline (no KD) on NLL by 0.12 nats/token, 95% CI [0.05, 0.19]"
    assert headline in html and headline in md
    assert "No detectable difference between KD student and Baseline (no KD) on accuracy" in md
    # comparison table rows in a fixed order: teacher, KD student, baseline, untrained copy
    rows = [line for line in md.splitlines() if line.startswith("| ") and "3.12 [3.03, 3.21]" in line]
    assert rows and rows[0].startswith("| Teacher | 3.12 [3.03, 3.21] |")
    section = md.split("## heldout (primary)")[1].split("###")[0]
    labels = [line.split("|")[1].strip() for line in section.splitlines() if line.startswith("| ")][1:]
    assert labels == ["Teacher", "KD student", "Baseline (no KD)", "Untrained copy"]
    assert "| KD student | 3.71 [3.62, 3.80] |" in md
    assert "| KD student − Baseline (no KD) | -0.12 [-0.19, -0.05] |" in md
    assert 'class="num sig-better">-0.12' in html
    assert "| Teacher | teacher | 134.5M | 513.2 MiB | 812 | 35.1 |" in md
    assert "0.33% of 8-word n-grams of the heldout set (40 of 12,000) occur in the training data" in md
    assert "2 of 64 documents have any overlap" in md
    assert "KD student falls flattest on genre = tragedy" in md


def test_task_notes_and_escaped_generations(report: tuple[Path, Path]) -> None:
    html, md = (p.read_text(encoding="utf-8") for p in report)
    assert EVIL not in html and "<script" not in html
    assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in html
    assert "alpha: 0.5  # &lt;CE &amp; KD&gt;" in html  # recipes are escaped too
    assert "Untrained copy scores about zero on arith" in html and "Untrained copy scores about zero" in md


def test_out_dir_and_missing_optional_sections(tmp_path: Path) -> None:
    run = build_summary(tmp_path / "bare", with_optional=False)
    html_path, md_path = write_report(run, out_dir=tmp_path / "out")
    assert html_path == tmp_path / "out" / "report.html" and md_path.is_file()
    assert not (run / "report.html").exists()
    html, md = html_path.read_text(), md_path.read_text()
    for absent in ('id="training"', 'id="tasks"', 'id="slices"', 'id="contamination"', 'id="calibration"'):
        assert absent not in html
    assert "| Teacher | 3.12 [3.02, 3.22] |" in md
    assert "On heldout, KD student reaches an NLL of 3.71 [3.61, 3.81] nats/token" in md


def test_sparse_sections_render(tmp_path: Path) -> None:
    """Each optional section with only its required fields: no paired diffs, no examples, an empty calibration bin,
    contamination without document counts, a training run without a run folder, no primary set named."""
    run = build_summary(tmp_path / "sparse", with_optional=False)
    summary = json.loads((run / "summary.json").read_text())
    del summary["primary"]
    heldout = summary["sets"]["heldout"]
    heldout["contamination"] = {"n": 13, "fraction": 0.2}
    heldout["calibration"] = {"kd": {"ece": 0.04, "bins": [
        {"lo": 0.0, "hi": 0.5, "count": 10, "confidence": 0.3, "accuracy": 0.2},
        {"lo": 0.5, "hi": 1.0, "count": 0, "confidence": None, "accuracy": None}]}}
    summary["tasks"] = {"qa": {"models": {"kd": {"accuracy": ci(0.5, 0.1)}}}}
    summary["training"] = {"kd": {"steps": 7}}
    (run / "summary.json").write_text(json.dumps(summary))
    html, md = (p.read_text() for p in write_report(run))
    assert 'id="calibration"' in html and 'id="tasks"' in html and "| KD student | 50.0 [40.0, 60.0] |" in md
    assert "20.0% of 13-word n-grams of the heldout set occur in the training data." in md
    assert 'class="callout"' in html  # a fifth of the n-grams overlapping is flagged
    assert "| KD student | 7 | — | — | — | — | — |" in md and 'alt="training curves"' not in html


def test_training_run_without_metrics_is_noted_not_fatal(tmp_path: Path) -> None:
    run = build_summary(tmp_path / "demo")
    (run / "kd" / "metrics.jsonl").unlink()
    html = write_report(run)[0].read_text()
    assert "KD student: no metrics.jsonl at" in html and 'alt="training curves"' in html


def test_arbitrary_model_names_are_ordered_by_role(tmp_path: Path) -> None:
    run = build_summary(tmp_path / "eval", with_optional=False)
    summary = json.loads((run / "summary.json").read_text())
    summary["models"] = {"zeta": {"role": "model"}, "my_student_v2": {"role": "student"}, "big": {"role": "teacher"}}
    summary["baseline"], summary["reference"] = None, "big"
    summary["sets"]["heldout"] = {"metrics": {n: {"nll": ci(v, 0.1)} for n, v in
                                              (("zeta", 4.0), ("my_student_v2", 3.5), ("big", 3.0))},
                                  "paired": {"my_student_v2_minus_zeta": {"nll": ci(-0.5, 0.1)}}}
    (run / "summary.json").write_text(json.dumps(summary))
    md = write_report(run)[1].read_text()
    assert md.index("| big |") < md.index("| my_student_v2 |") < md.index("| zeta |")
    assert "| my_student_v2 − zeta | -0.50 [-0.60, -0.40] |" in md
    assert "My_student_v2 beat zeta on NLL by 0.50 nats/token, 95% CI [0.40, 0.60]." in md


def test_contamination_not_computed_is_said_not_shown_as_zero(tmp_path: Path) -> None:
    run = build_summary(tmp_path / "eval", with_optional=False)
    summary = json.loads((run / "summary.json").read_text())
    summary["sets"]["heldout"] |= {"contamination": None,
                                   "contamination_reason": "no text in the 12 records of train.jsonl"}
    (run / "summary.json").write_text(json.dumps(summary))
    html, md = (p.read_text() for p in write_report(run))
    assert 'id="contamination"' in html
    assert "not computed: no text in the 12 records of train.jsonl" in md
    assert "not computed: no text in the 12 records of train.jsonl" in html


def test_report_reads_eval_json_when_there_is_no_summary(tmp_path: Path) -> None:
    run = build_summary(tmp_path / "eval", with_optional=False)
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").unlink()
    (run / "eval.json").write_text(json.dumps(summary | {"kind": "distill.eval"}))
    html, md = (p.read_text() for p in write_report(run))
    assert "| Teacher | 3.12 [3.02, 3.22] |" in md and "Teacher" in html
    assert 'id="training"' not in html


@pytest.mark.parametrize("content, message", [
    (None, "no summary.json"),
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "should hold a JSON object"),
    (json.dumps({"schema_version": 99, "models": {"a": {}}}), "schema_version 99"),
    (json.dumps({"schema_version": 1, "models": {}}), "lists no models"),
    (json.dumps({"schema_version": 1, "models": {"a": {}}, "sets": {"s": {"metrics": {"a": {"nll": 3.0}}}}}),
     "sets.s.metrics.a.nll should be an interval"),
    (json.dumps({"schema_version": 1, "models": {"a": {}}, "sets": []}), "sets should be an object"),
])
def test_missing_or_malformed_summary_is_a_data_error(tmp_path: Path, content: str | None, message: str) -> None:
    if content is not None:
        (tmp_path / "summary.json").write_text(content)
    with pytest.raises(DataError, match=re.escape(message)) as info:
        write_report(tmp_path)
    assert "\n" not in str(info.value)


def _chromium() -> str | None:
    for name in ("chromium-headless-shell", "chromium", "chromium-browser"):
        if found := shutil.which(name):
            return found
    return "/usr/bin/chromium-headless-shell" if Path("/usr/bin/chromium-headless-shell").is_file() else None


PROBE = """<script>
addEventListener("load", () => {
  const probe = document.createElement("pre");
  probe.id = "probe";
  probe.textContent = JSON.stringify({
    images: [...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight]),
    tables: [...document.querySelectorAll("table.comparison")].map(t => t.tBodies[0].rows.length),
    first: document.querySelector("table.comparison tbody th").textContent.trim(),
  });
  document.body.appendChild(probe);
});
</script>"""


@pytest.mark.browser
def test_report_renders_in_a_real_browser(report: tuple[Path, Path], tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium binary (chromium-headless-shell or chromium) on PATH")
    html = report[0].read_text(encoding="utf-8")
    probed = tmp_path / "probed.html"  # the report itself has no scripts; this copy gets one that measures it
    probed.write_text(html.replace("</body>", PROBE + "\n</body>"), encoding="utf-8")
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
              f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000"]
    dom = subprocess.run([*common, "--dump-dom", probed.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout, re.S)
    assert found, f"no probe in the DOM (rc {dom.returncode}): {dom.stderr[-2000:]}"
    probe = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert len(probe["images"]) == len(_images(html)) == 4
    assert all(complete and w > 300 and h > 200 for complete, w, h in probe["images"]), probe["images"]
    assert probe["tables"] == [4, 4] and probe["first"] == "Teacher"
    shot = tmp_path / "report.png"
    subprocess.run([*common, f"--screenshot={shot}", "--window-size=1280,2000", report[0].as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert shot.read_bytes().startswith(PNG_SIGNATURE) and shot.stat().st_size > 50_000
    with Image.open(shot) as image:
        assert image.size[0] >= 1000 and len(image.convert("L").getcolors(1 << 16) or []) > 50


# ------------------------------------------------------------------------------------------- wide tables, slices


def _wide_summary(root: Path, n_extra: int = 12) -> Path:
    """The full demo summary in a folder with a long name, plus many models with long names (one far wider than a
    page) and paths, in every table: sets, slices, tasks."""
    run = build_summary(root.parent / f"{root.name}_{'long_folder_name_' * 9}")
    summary = json.loads((run / "summary.json").read_text())
    heldout = summary["sets"]["heldout"]
    for i in range(n_extra):
        name = f"student_with_a_rather_long_descriptive_name_number_{i:02d}" + "_and_more" * (12 if i == 0 else 0)
        summary["models"][name] = {"role": "model", "label": name, "params": 1000 + i,
                                   "path": "/very/long/folder/" + "deeply_nested/" * 12 + name}
        summary["tasks"]["arith"]["models"][name] = {"accuracy": ci(0.3, 0.1)}
        if i == 0:
            continue  # the widest name only in tables: in a figure's legend it would squeeze the plot to nothing
        heldout["metrics"][name] = {"nll": ci(3.5 + i / 100, 0.1), "ppl": ci(33.0, 2.0), "top1_acc": ci(0.4, 0.01)}
        for entry in heldout["slices"]["genre"].values():
            entry["metrics"][name] = {"nll": ci(3.6, 0.2)}
    (run / "summary.json").write_text(json.dumps(summary))
    return run


class _Nesting(HTMLParser):
    """Each <table>'s ancestors, as (tag, classes)."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, set[str]]] = []
        self.tables: list[list[tuple[str, set[str]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append(list(self.stack))
        self.stack.append((tag, set((dict(attrs).get("class") or "").split())))

    def handle_endtag(self, tag: str) -> None:
        while self.stack and self.stack.pop()[0] != tag:
            pass  # an element left open (<p>, <li>) closes with its parent


REPORT_DIR = Path(__file__).resolve().parents[1] / "src" / "distill" / "report"


def test_every_table_in_the_html_templates_sits_in_its_own_scroll_box() -> None:
    """Audit and game tables too, whatever a test's data fills in: a table that does not fit scrolls in its box."""
    templates = sorted(REPORT_DIR.glob("*.html.j2"))
    assert {"report.html.j2", "audit_section.html.j2", "game_section.html.j2"} <= {t.name for t in templates}
    for template in templates:
        text = template.read_text(encoding="utf-8")
        for found in re.finditer(r"<table\b", text):
            before = text[:found.start()].rstrip()
            assert before.endswith('<div class="scroll">'), f"{template.name}: a <table> outside a div.scroll at " \
                f"line {text.count(chr(10), 0, found.start()) + 1}"
    css = (REPORT_DIR / "report.html.j2").read_text(encoding="utf-8")
    assert re.search(r"\.scroll \{[^}]*overflow-x: auto;[^}]*max-width: 100%", css)
    assert re.search(r"\npre \{[^}]*overflow-x: auto", css)  # recipes scroll inside their box
    assert re.search(r"\nmain \{[^}]*overflow-wrap: break-word", css)  # a long path in a sentence wraps


def test_a_wide_report_puts_every_table_in_a_scroll_box(tmp_path: Path) -> None:
    html = write_report(_wide_summary(tmp_path / "wide"))[0].read_text(encoding="utf-8")
    parser = _Nesting()
    parser.feed(html)
    assert len(parser.tables) >= 12  # models, both sets, paired, gap, training, slices, tasks, examples, provenance
    for ancestors in parser.tables:
        assert ("div", {"scroll"}) in ancestors, f"a table outside a div.scroll: {ancestors}"


WIDTH_PROBE = """<script>
addEventListener("load", () => {
  const probe = document.createElement("pre");
  probe.id = "probe";
  const page = document.documentElement;
  probe.textContent = JSON.stringify({
    page: [page.scrollWidth, page.clientWidth],
    boxes: [...document.querySelectorAll(".scroll")].map(b => [b.scrollWidth, b.clientWidth]),
  });
  document.body.appendChild(probe);
});
</script>"""


@pytest.mark.browser
def test_a_wide_report_never_scrolls_the_page_sideways_in_a_browser(tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium binary (chromium-headless-shell or chromium) on PATH")
    html = write_report(_wide_summary(tmp_path / "wide"))[0].read_text(encoding="utf-8")
    probed = tmp_path / "probed.html"
    probed.write_text(html.replace("</body>", WIDTH_PROBE + "\n</body>"), encoding="utf-8")
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                          "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=900,1000",
                          "--virtual-time-budget=10000", "--dump-dom", probed.as_uri()],
                         capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout, re.S)
    assert found, f"no probe in the DOM (rc {dom.returncode}): {dom.stderr[-2000:]}"
    probe = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    scroll_width, client_width = probe["page"]
    assert client_width >= 800 and scroll_width <= client_width, probe["page"]  # the page itself: no sideways scroll
    assert any(inner > outer for inner, outer in probe["boxes"])  # the wide tables scroll inside their own boxes


def _slice_field(run: Path, field: str, values: dict[str, tuple[int, float]]) -> None:
    """Give heldout one slice field: value → (documents, how far the KD student's NLL trails the teacher's)."""
    summary = json.loads((run / "summary.json").read_text())
    summary["sets"]["heldout"]["slices"][field] = {
        value: {"n_docs": n, "metrics": {"teacher": {"nll": ci(3.0, 0.1)}, "kd": {"nll": ci(3.0 + gap, 0.1)},
                                         "baseline": {"nll": ci(3.2 + gap, 0.1)}}}
        for value, (n, gap) in values.items()}
    (run / "summary.json").write_text(json.dumps(summary))


def _slice_rows(md: str, field: str) -> list[str]:
    section = md.split(f"## Slices: heldout by {field}\n")[1].split("\n## ")[0]
    return [line.split("|")[1].strip() for line in section.splitlines() if line.startswith("| ")][1:]


def test_length_and_numeric_slices_are_shown_in_numeric_order(tmp_path: Path) -> None:
    from distill.eval.runner import LENGTH_BUCKETS

    run = build_summary(tmp_path / "demo")
    labels = [label for *_, label in LENGTH_BUCKETS]
    _slice_field(run, "length", {label: (20, 0.1 * i) for i, label in enumerate(sorted(labels))})  # as old files
    _slice_field(run, "turns", {value: (20, 0.1) for value in ("1", "10", "2")})
    html, md = (p.read_text(encoding="utf-8") for p in write_report(run))
    assert _slice_rows(md, "length") == labels
    assert _slice_rows(md, "turns") == ["1", "2", "10"]
    assert _slice_rows(md, "genre") == ["comedy", "history", "tragedy"]
    assert html.index("<th>&lt;128 tokens</th>") < html.index("<th>128–255 tokens</th>") \
        < html.index("<th>≥512 tokens</th>")


def test_falls_flattest_ranks_only_slices_large_enough_to_mean_something(tmp_path: Path) -> None:
    from distill.report.view import MIN_FLATTEST_DOCS

    run = build_summary(tmp_path / "demo")
    _slice_field(run, "source", {"web": (40, 0.3), "books": (MIN_FLATTEST_DOCS, 0.5), "odd": (2, 3.0)})
    html, md = (p.read_text(encoding="utf-8") for p in write_report(run))
    assert "KD student falls flattest on source = books: 0.50 nats/token behind Teacher" in md
    assert f"Slices under {MIN_FLATTEST_DOCS} documents are not ranked (odd)." in md
    assert '<tr class="flattest"><th>books</th>' in html and '<tr class="flattest"><th>odd</th>' not in html
    assert "| odd | 2 |" in md and "+3.00 |" in md  # the small slice is still shown, gap and all


def test_no_slice_falls_flattest_when_fewer_than_two_are_large_enough(tmp_path: Path) -> None:
    run = build_summary(tmp_path / "demo")
    _slice_field(run, "source", {"web": (40, 0.3), "odd": (2, 3.0), "rare": (1, 2.0)})
    html, md = (p.read_text(encoding="utf-8") for p in write_report(run))
    section = md.split("## Slices: heldout by source\n")[1].split("\n## ")[0]
    assert "falls flattest" not in section and 'class="flattest"' not in html.split("heldout by source")[1]
    assert ("No source is singled out: slices under 10 documents are not ranked (odd, rare), and fewer than two "
            "are that large.") in section
    assert "KD student falls flattest on genre = tragedy" in md  # the other field, with large slices, still ranks


def test_the_task_table_says_how_many_answers_hit_the_budget_and_marks_them(tmp_path: Path) -> None:
    run = build_summary(tmp_path / "demo")
    summary = json.loads((run / "summary.json").read_text())
    task = summary["tasks"]["arith"]
    task["max_new_tokens"] = 32
    for name, share in (("teacher", 0.0), ("kd", 0.12), ("baseline", None), ("init", 1.0)):
        task["models"][name]["truncated"] = share
    cut_off = {**task["models"]["init"]["examples"][0], "truncated": True}
    task["models"]["init"]["examples"] = [cut_off]
    task["models"]["teacher"]["examples"] = [{**e, "truncated": False} for e in task["models"]["teacher"]["examples"]]
    (run / "summary.json").write_text(json.dumps(summary))
    html, md = (p.read_text(encoding="utf-8") for p in write_report(run))
    assert "| model | accuracy % | answers that hit the 32-token budget |" in md
    assert "| Teacher | 45.0 [25.0, 65.0] | 0% |" in md and "| KD student | 15.0 [0.0, 30.0] | 12.0% |" in md
    assert "| Baseline (no KD) | 10.0 [0.0, 25.0] | — |" in md  # not recorded: unknown, not 0%
    assert "12.0% of KD student's answers hit the 32-token budget and were scored unfinished" in md
    assert "100.0% of Untrained copy&#39;s answers hit the 32-token budget" in html
    assert "Teacher's answers hit" not in md  # none cut off: no note
    assert html.count('<span class="cut">[cut off: hit the 32-token budget]</span>') == 1  # init's one example


def test_a_task_without_truncation_data_shows_no_budget_column(report: tuple[Path, Path]) -> None:
    html, md = (p.read_text(encoding="utf-8") for p in report)
    assert "| model | accuracy % |\n" in md and "hit the" not in md and 'class="cut"' not in html
