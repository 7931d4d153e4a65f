"""Progress where output is not a terminal: plain periodic lines (first, at most one per interval, last) with the
count, the job's fields, elapsed time and ETA; a bar only on a terminal."""

from __future__ import annotations

import io

from rich.progress import Progress

from distill.progress import LineProgress, progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_output_that_is_not_a_terminal_gets_lines_and_a_terminal_gets_a_bar():
    assert isinstance(progress("train", file=io.StringIO()), LineProgress)
    assert isinstance(progress("train", file=_Terminal()), Progress)
    assert not isinstance(progress("train", disable=True, file=io.StringIO()), LineProgress)


def test_lines_carry_the_count_the_fields_elapsed_and_eta():
    out = io.StringIO()
    with LineProgress("train", ("loss {loss}", "{tps} tok/s"), file=out, interval=0.0) as bar:
        task = bar.add_task("train", total=4, completed=0, loss="—", tps="—")
        for step in range(1, 5):
            bar.update(task, completed=step, loss=f"{1 / step:.4f}", tps="1,000")
    lines = out.getvalue().splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("train 1/4 (25%) loss 1.0000 · 1,000 tok/s · elapsed 0:00:00 · ETA ")
    assert lines[-1].startswith("train 4/4 (100%) loss 0.2500") and "ETA" not in lines[-1]


def test_lines_are_rate_limited_but_the_first_and_last_always_print():
    out = io.StringIO()
    with LineProgress("cache", ("{tps} tok/s",), unit="tokens", file=out, interval=3600.0) as bar:
        task = bar.add_task("cache", total=1000, tps="—")
        for _ in range(10):
            bar.advance(task, 100)
    lines = out.getvalue().splitlines()
    assert [line.split(" ·")[0] for line in lines] == ["cache 100/1,000 tokens (10%) — tok/s",
                                                        "cache 1,000/1,000 tokens (100%) — tok/s"]


def test_work_that_stops_early_prints_where_it_stopped():
    out = io.StringIO()
    with LineProgress("generate", file=out, interval=3600.0) as bar:
        task = bar.add_task("generate", total=10)
        for _ in range(3):
            bar.advance(task)
    assert [line.split(" ·")[0].split(" elapsed")[0] for line in out.getvalue().splitlines()] == [
        "generate 1/10 (10%)", "generate 3/10 (30%)"]


def test_a_field_not_yet_set_is_left_out():
    out = io.StringIO()
    with LineProgress("x", ("loss {loss}",), file=out, interval=0.0) as bar:
        bar.update(bar.add_task("x", total=None), advance=5)
    assert out.getvalue().startswith("x 5 elapsed 0:00:0") and len(out.getvalue().splitlines()) == 1
