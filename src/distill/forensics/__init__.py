"""Forensics: did a suspect model learn from our teacher? `distill audit SUSPECT --against KEYFILE` (docs/audit.md).

Three independent tests, each with its assumptions written next to its p-value in audit.json
(`distill.results.audit`): watermark radioactivity (`radioactivity.py` feeding `detector.py`: closed mode samples
the suspect, open mode reads the teacher's watermarked text with it), canary exposure (`canaries.py`) and an output
fingerprint against reference models (`fingerprint.py`). `run.py` checks the inputs and runs them; `blocks.py`
turns the numbers into the result's blocks. This layer may use defenses, eval and generation, never report,
serving or the CLI.
"""
