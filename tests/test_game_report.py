"""The distillation game's result file (distill.results.game) and its report section (report/game.py): what
bench/defense_game.py writes is what `distill report` shows, and a malformed file is one line."""

from __future__ import annotations

import json

import pytest

from distill.errors import DataError
from distill.report.render import write_report
from distill.results.game import GameResult, load_game


def _interval(mean: float, low: float, high: float) -> dict[str, float]:
    return {"mean": mean, "ci_low": low, "ci_high": high}


def _thief(gain: float, audit: list[float] | None = None) -> dict:
    entry = {"accuracy": 0.075 + gain, "gain": _interval(gain, gain - 0.1, gain + 0.1), "seeds": 3}
    if audit:
        entry.update({"audit_p": audit, "audit_pairs": [700, 710, 690]})
    return entry


GAME = {"init_accuracy": 0.075, "eval_problems": 40, "table": [
    {"config": "base", "defense": "temperature", "strength": 0.8, "teacher_utility": _interval(0.198, 0.131, 0.289),
     "thieves": {"passive": _thief(0.0667), "adaptive": _thief(0.0333)}},
    {"config": "watermark_d4", "defense": "watermark", "strength": 4.0,
     "teacher_utility": _interval(0.021, 0.006, 0.07),
     "thieves": {"passive": _thief(0.0083, [2.6e-6, 1.1e-3, 5.2e-6]), "adaptive": _thief(0.05)}},
    {"config": "truncation_k0", "defense": "truncation", "strength": 0, "same_samples_as": "base",
     "teacher_utility": _interval(0.198, 0.131, 0.289), "thieves": {"passive": _thief(0.0667)}}],
    "provenance": {"git": "abc123"}}


def test_the_game_report_shows_the_table_the_audit_and_the_plot(tmp_path):
    (tmp_path / "game.json").write_text(json.dumps(GameResult.for_writing(GAME).to_json()))
    assert load_game(tmp_path / "game.json").table[1].thieves["passive"].audit_p == [2.6e-6, 1.1e-3, 5.2e-6]
    html, md = write_report(tmp_path)
    text = md.read_text()
    assert "| watermark_d4 | watermark | 4 | 2.1 [0.6, 7.0] | +0.8 [-9.2, +10.8] | +5.0 [-5.0, +15.0] | 2.6e-06, " \
           "0.0011, 5.2e-06 |" in text
    assert "19.8 [13.1, 28.9] (same samples)" in text and "7.5% on 40 problems" in text
    assert 'id="game"' in html.read_text() and html.read_text().count("data:image/png;base64,") == 1


def test_a_malformed_game_file_is_one_line(tmp_path):
    bad = json.loads(json.dumps(GameResult.for_writing(GAME).to_json()))
    del bad["table"][0]["teacher_utility"]
    (tmp_path / "game.json").write_text(json.dumps(bad))
    with pytest.raises(DataError, match=r"game.json: .*teacher_utility.*bench/defense_game.py"):
        write_report(tmp_path)
    with pytest.raises(ValueError, match="fields the schema does not name"):
        GameResult.for_writing({**GAME, "surprise": 1})
