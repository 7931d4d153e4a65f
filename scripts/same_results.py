"""Compare two result files (summary.json or eval.json) field by field, ignoring only what is measured time.

    python scripts/same_results.py BEFORE/summary.json AFTER/summary.json

Ignored: provenance (versions, git commit, machine), wall and stage times, throughput (`*_per_s`), the seconds a
step took, and `inputs_key` (the demo's hash of its options, which include the output folder). Each file's own
folder is written as `<out>` in both, so two runs into different folders compare equal. Every other value — every
metric, interval, task output, training fact — must be equal, and so must the set of fields. The last JSON line
says how many values were compared and lists every difference.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

TIMING = re.compile(r"(^|\.)(provenance|wall_s|seconds|stage_s|stages|elapsed_s|time_s|inputs_key)(\.|\[|$)"
                    r"|_per_s(\.|$)|step_s(\.|$)")


def flatten(value: Any, path: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{path}.{key}" if path else key))
        return out
    if isinstance(value, list):
        out = {}
        for i, item in enumerate(value):
            out.update(flatten(item, f"{path}[{i}]"))
        return out
    return {path: value}


def _load(path: Path) -> dict[str, Any]:
    folder = str(path.resolve().parent)
    return {key: value.replace(folder, "<out>") if isinstance(value, str) else value
            for key, value in flatten(json.loads(path.read_text())).items()}


def main() -> None:
    before, after = (_load(Path(p)) for p in sys.argv[1:3])
    keys = sorted(k for k in before.keys() | after.keys() if not TIMING.search(k))
    diffs = [{"field": k, "before": before.get(k, "<absent>"), "after": after.get(k, "<absent>")}
             for k in keys if before.get(k, "<absent>") != after.get(k, "<absent>")]
    ignored = sorted(k for k in before.keys() | after.keys() if TIMING.search(k))
    print(json.dumps({"summary": True, "compared": len(keys), "ignored": len(ignored),
                      "ignored_fields": ignored, "differences": diffs, "identical": not diffs}))
    raise SystemExit(0 if not diffs else 1)


if __name__ == "__main__":
    main()
