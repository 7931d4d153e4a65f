"""training/batches.py: the data-set plan as a batch source — its batches, the global count the loop forms from
them, and the state a checkpoint keeps."""

from __future__ import annotations

import pytest

from distill.data.dataset import BatchPlan, TokenizedData
from distill.data.formatting import IGNORE_INDEX, Example
from distill.errors import CheckpointError
from distill.training.batches import DatasetBatches


def _data(n: int = 37) -> TokenizedData:
    """Examples of unequal lengths, some with prompt tokens that are not targets."""
    examples = []
    for i in range(n):
        length = 5 + (i * 7) % 11
        ids = [(i + j) % 50 + 1 for j in range(length)]
        labels = [IGNORE_INDEX] * (i % 3) + ids[i % 3:]
        examples.append(Example(ids, labels))
    return TokenizedData(examples, "prompt_completion", dropped=0)


@pytest.mark.parametrize("world", [1, 2, 4])
def test_the_count_over_formed_batches_is_the_plans_count_for_any_process_count(world):
    """The loop divides by Σ over processes of the targets in the batches each formed (an all-reduce); for the data
    set that must be what the plan's examples hold, whatever the split."""
    data = _data()
    plan = BatchPlan(len(data.examples), 8, 2, world, seed=5)
    sources = [DatasetBatches(data, plan, rank, pad_id=0) for rank in range(world)]
    for step in (0, 3, 9):  # 9: past the first epoch
        formed = sum(b.n_targets() for s in sources for b in s.micro_batches(step))
        assert formed == sum(data.examples[i].n_targets for i in plan.step_indices(step))
        indices = sorted(i for s in sources for b in s.micro_batches(step) for i in b.examples)
        assert indices == sorted(plan.step_indices(step))


def test_a_batch_holds_the_examples_it_names_padded_and_masked():
    data = _data()
    plan = BatchPlan(len(data.examples), 4, 4, 1, seed=0)
    (batch,) = DatasetBatches(data, plan, 0, pad_id=0).micro_batches(2)
    for row, index in enumerate(batch.examples):
        n = len(data.examples[index].input_ids)
        assert batch.input_ids[row, :n].tolist() == data.examples[index].input_ids
        assert batch.attention_mask[row].sum() == n
        assert (batch.labels[row, n:] == IGNORE_INDEX).all()


def test_state_round_trips_and_the_state_of_another_kind_of_source_is_refused():
    data = _data()
    plan = BatchPlan(len(data.examples), 8, 2, 1, seed=5)
    source = DatasetBatches(data, plan, 0, pad_id=0)
    source.micro_batches(6)
    state = source.state_dict()
    assert state["next_step"] == 7
    resumed = DatasetBatches(data, plan, 0, pad_id=0)
    resumed.load_state_dict(state)
    assert resumed.state_dict() == state
    with pytest.raises(CheckpointError, match="not that of a data-set plan"):
        resumed.load_state_dict({"kind": "student_samples", "next_step": 7})
    with pytest.raises(CheckpointError, match="not that of a data-set plan"):
        resumed.load_state_dict({"kind": "dataset_plan"})


def test_a_checkpoint_from_before_batch_sources_resumes_exactly(tmp_path, text_data, tiny_teacher_dir):
    """Checkpoints written before batch sources hold no `batches` state: the plan stood at the checkpoint's step,
    and resuming from one gives the same student as the uninterrupted run."""
    import hashlib
    import json
    import shutil

    from conftest import base_recipe
    from distill.checksum import file_sha256
    from distill.recipe import validate_recipe
    from distill.training.loop import train

    recipe = validate_recipe(base_recipe(text_data, tmp_path / "run", training={
        "max_steps": 4, "batch_size": 4, "micro_batch_size": 2, "save_every": 2}))
    student = tmp_path / "run" / "student" / "model.safetensors"
    train(recipe)
    uninterrupted = hashlib.sha256(student.read_bytes()).hexdigest()

    shutil.rmtree(tmp_path / "run" / "student")
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "step-00000004")
    checkpoint = tmp_path / "run" / "checkpoints" / "step-00000002"
    state = json.loads((checkpoint / "state.json").read_text())
    batches = state.pop("batches")
    assert batches["kind"] == "dataset_plan" and batches["next_step"] == 2
    (checkpoint / "state.json").write_text(json.dumps(state))  # as an older distill wrote it
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    manifest["files"]["state.json"] = file_sha256(checkpoint / "state.json")
    (checkpoint / "manifest.json").write_text(json.dumps(manifest))
    train(recipe, resume=True)
    assert hashlib.sha256(student.read_bytes()).hexdigest() == uninterrupted
