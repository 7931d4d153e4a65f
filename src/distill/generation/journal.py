"""The journal of a generation: one JSON line per (prompt, sample), appended as samples finish, so that a run killed
at any moment (kill -9 included) resumes with nothing lost and nothing done twice.

Each batch's lines are written with one `write` and then fsync'd. What a kill can leave is a torn last line (no
newline, or not JSON): on reopening it is cut away, and the samples on it are generated again. A (prompt, sample)
already in the journal is never generated again, and a second line for one — possible only if two runs wrote the
same folder, which the folder lock prevents — is refused as corruption, not silently dropped.

The journal also records the run's fingerprint (the recipe's generate settings, the teacher, the prompts) in
`run.json`: resuming a folder written by a different setup is refused, since mixing two setups' samples in one
output would make the manifest's rates meaningless.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from distill.atomic import write_json
from distill.errors import DataError

JOURNAL = "journal.jsonl"
RUN = "run.json"

Key = tuple[int, int]  # (prompt id, sample index)


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """{"generate": {"sampling": {"seed": 1}}} → {"generate.sampling.seed": 1}: so a refusal names the setting."""
    if not isinstance(value, dict) or not value:
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, item in value.items():
        out.update(_flat(item, f"{prefix}.{key}" if prefix else str(key)))
    return out


class SetupChanged(DataError):
    """The output folder holds a generation made with other settings: resuming it would mix two setups' samples."""


class Journal:
    def __init__(self, folder: Path, fingerprint: dict[str, Any]):
        self.folder = folder
        self.path = folder / JOURNAL
        self.rows: dict[Key, dict[str, Any]] = {}
        self._open(fingerprint)
        self._file = open(self.path, "ab")  # noqa: SIM115 (held open for the run's appends; closed by close())

    def _open(self, fingerprint: dict[str, Any]) -> None:
        run = self.folder / RUN
        if run.exists():
            earlier = json.loads(run.read_text(encoding="utf-8"))
            before, now = _flat(earlier), _flat(fingerprint)
            changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
            if changed:
                raise SetupChanged(f"generate.output: {self.folder} holds a generation made with other settings "
                                f"({', '.join(changed)} differ); choose another `output`, or pass --overwrite to "
                                "start again")
        else:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_json(run, fingerprint)
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        good = 0
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # torn by a kill: no newline yet
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break
            key = (int(row["prompt_id"]), int(row["sample"]))
            if key in self.rows:
                raise DataError(f"generate.output: {self.path} holds prompt {key[0]} sample {key[1]} twice; the "
                                "journal is corrupt (two runs wrote it?) — start again with --overwrite")
            self.rows[key] = row
            good += len(line)
        if good < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(good)
                f.flush()
                os.fsync(f.fileno())

    def __contains__(self, key: Key) -> bool:
        return key in self.rows

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Write finished samples durably, as one write followed by fsync."""
        if not rows:
            return
        for row in rows:
            key = (int(row["prompt_id"]), int(row["sample"]))
            assert key not in self.rows, f"sample {key} generated twice"
            self.rows[key] = row
        payload = b"".join(json.dumps(r, ensure_ascii=False).encode("utf-8") + b"\n" for r in rows)
        self._file.write(payload)
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
