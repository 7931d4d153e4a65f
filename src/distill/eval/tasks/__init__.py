"""Accuracy on verifiable generation tasks: the model answers, a verifier checks the answer exactly.

A task is data — a versioned `TaskSpec` — so a result can name exactly what was measured. `spec.py`: the spec, the
built-in tasks, loading and checking a task; `scoring.py`: its items, answer extraction, scoring and `run_task`.
"""

from distill.eval.tasks.scoring import (
    TaskItem,
    TaskResult,
    extract_answer,
    normalise,
    render_prompt,
    run_task,
    score,
    task_items,
    uses_chat_template,
)
from distill.eval.tasks.spec import (
    BUILTIN_TASKS,
    Extract,
    JsonlSource,
    PythonSource,
    ReasoningGymSource,
    TaskSource,
    TaskSpec,
    check_task,
    load_task,
)

__all__ = [
    "BUILTIN_TASKS",
    "Extract",
    "JsonlSource",
    "PythonSource",
    "ReasoningGymSource",
    "TaskItem",
    "TaskResult",
    "TaskSource",
    "TaskSpec",
    "check_task",
    "extract_answer",
    "load_task",
    "normalise",
    "render_prompt",
    "run_task",
    "score",
    "task_items",
    "uses_chat_template",
]
