"""Atomic writes of a whole folder: a folder appears complete or not at all, and a failed write leaves the old one."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from distill.atomic import write_folder


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_folder_renames_the_written_folder_into_place(tmp_path):
    final = tmp_path / "out" / "student"  # the parent is created
    with write_folder(final) as tmp:
        assert tmp.is_dir() and not list(tmp.iterdir()) and tmp.parent == final.parent
        assert not final.exists()  # nothing shows before the block ends
        (tmp / "a.txt").write_text("a")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.txt").write_text("b")
    assert (final / "a.txt").read_text() == "a" and (final / "sub" / "b.txt").read_text() == "b"
    assert sorted(p.name for p in final.parent.iterdir()) == ["student"]


def test_write_folder_replaces_the_old_folder_whole(tmp_path):
    final = tmp_path / "student"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with write_folder(final) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]


def test_an_exception_leaves_the_old_folder_intact_and_no_temporary_folder(tmp_path):
    final = tmp_path / "student"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="killed"), write_folder(final) as tmp:
        (tmp / "new.txt").write_text("half")
        raise RuntimeError("killed while writing")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student"]
    assert sorted(p.name for p in final.iterdir()) == ["old.txt"]


def test_a_temporary_folder_left_by_a_killed_writer_is_removed_first(tmp_path):
    final = tmp_path / "student"
    leftover = tmp_path / ".student.tmp"
    leftover.mkdir()
    (leftover / "stale.txt").write_text("from a killed run")
    with write_folder(final) as tmp:
        assert tmp == leftover and not list(tmp.iterdir())
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student"]


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_the_folder_gets_the_permissions_the_umask_asks_for(tmp_path, umask):
    old = os.umask(umask)
    try:
        final = tmp_path / "student"
        with write_folder(final) as tmp:
            (tmp / "weights").write_text("w")
            os.chmod(tmp / "weights", 0o600)  # as safetensors writes it
            (tmp / "sub").mkdir(mode=0o700)
            os.chmod(tmp, 0o700)
    finally:
        os.umask(old)
    assert _mode(final) == _mode(final / "sub") == 0o777 & ~umask
    assert _mode(final / "weights") == 0o666 & ~umask


def test_without_replace_the_first_writer_wins_and_the_others_are_discarded(tmp_path):
    """Two processes building the same built-in: each writes its own folder; the one finishing second keeps the
    first one's folder (same contents) and leaves no temporary folder behind."""
    final = tmp_path / "tiny-teacher-v2"
    second_writer = write_folder(final, replace=False)
    with write_folder(final, replace=False) as first:
        second = second_writer.__enter__()
        assert first != second
        (first / "who").write_text("first")
        (second / "who").write_text("second")
    second_writer.__exit__(None, None, None)  # finishes after the first one
    assert (final / "who").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-teacher-v2"]


def test_without_replace_a_failed_rename_is_not_hidden(tmp_path):
    final = tmp_path / "x"
    final.write_text("a file in the way, not another writer's folder")
    with pytest.raises(OSError), write_folder(final, replace=False) as tmp:
        (tmp / "f").write_text("f")
    assert final.read_text().startswith("a file") and sorted(p.name for p in tmp_path.iterdir()) == ["x"]
