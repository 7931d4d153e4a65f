"""The on-policy batch source: the data set's prompts, a fraction λ of them completed by the current student.

Each optimizer step takes the same examples as the data-set plan (`DatasetBatches`). Global row g of step s is the
student's when ⌊(g + 1)λ⌋ > ⌊gλ⌋ — exactly ⌊Bλ⌋ rows of a batch of B, evenly spread, so every process samples its
share. For such a row the prompt is the example's tokens before its first label (the prompt of a prompt/completion
record; the conversation up to the first assistant answer of a chat record) and the completion is sampled from the
student as it is now (`generation/engine.py`: batched, KV cache), by a random stream keyed by (seed, s, g). The
completion, with the stop token that ended it, becomes the row's labels; the other rows keep the data's.

What this buys: a row's text is a function of the student's weights, the seed, the step and the row's global
position, nothing else. The weights are restored exactly on resume and are the same on every process, and the
micro-batches are the same rows on 1 process or N (for the same micro_batch_size), so a kill -9 and `--resume`, or
2 processes instead of 1, sample the same text — the state to save is only the plan's step. `draws` (one uniform per
position, from a stream keyed by (seed, s, g, 1)) are attached for objectives that draw a token at every position.
"""

from __future__ import annotations

import time
from fractions import Fraction

import torch

from distill.data.batch import Batch
from distill.data.dataset import BatchPlan, TokenizedData
from distill.data.formatting import IGNORE_INDEX, Example
from distill.errors import DataError
from distill.generation.engine import Engine, GenRequest
from distill.generation.sampling import SamplingParams, row_generator
from distill.training.batches import DatasetBatches

DRAWS_STREAM = 1  # the last element of a row's key for its per-position draws (the text's key has none)


def is_student_row(row: int, lmbda: Fraction) -> bool:
    """Global row `row` of a step is written by the student: ⌊(row + 1)λ⌋ > ⌊row·λ⌋ (exact, in fractions)."""
    return (row + 1) * lmbda.numerator // lmbda.denominator > row * lmbda.numerator // lmbda.denominator


def prompt_of(example: Example) -> list[int]:
    """The example's tokens before its first label: what the student continues."""
    first = next((i for i, label in enumerate(example.labels) if label != IGNORE_INDEX), len(example.labels))
    return example.input_ids[:first]


def draws_for(batch: Batch, seed: int, step: int, rows: list[int]) -> torch.Tensor:
    """(B, L) float64 uniforms, row b's from its own stream keyed by (seed, step, global row, DRAWS_STREAM)."""
    width = batch.input_ids.shape[1]
    return torch.stack([torch.rand(width, generator=row_generator((seed, step, g, DRAWS_STREAM)),
                                   dtype=torch.float64) for g in rows])


class StudentSamples(DatasetBatches):
    """`DatasetBatches` with an evenly spread share λ of each step's rows completed by the student."""

    kind = "student_samples"
    logged = ("student_share",)  # Σ targets the student wrote; over the step's target count, their share

    def __init__(self, data: TokenizedData, plan: BatchPlan, process_index: int, pad_id: int, *, engine: Engine,
                 lmbda: float, params: SamplingParams, seed: int, with_draws: bool):
        super().__init__(data, plan, process_index, pad_id)
        self.engine, self.params, self.seed, self.with_draws = engine, params, seed, with_draws
        self.lmbda = Fraction(lmbda).limit_denominator(1 << 20)
        self.sampling_seconds = 0.0  # time spent writing the student's completions (bench/onpolicy.py reads it)
        self.sampled_tokens = 0

    def micro_batches(self, step: int) -> list[Batch]:
        self.next_step = step + 1
        plan, out = self.plan, []
        for a, indices in enumerate(plan.micro_indices(step, self.rank)):
            first = (a * plan.world + self.rank) * plan.micro
            rows = list(range(first, first + len(indices)))
            examples = [self.data.examples[i] for i in indices]
            mine = [b for b, g in enumerate(rows) if is_student_row(g, self.lmbda)]
            if mine:
                written = self._sample(step, [rows[b] for b in mine], [examples[b] for b in mine],
                                       [indices[b] for b in mine])
                for b, example in zip(mine, written, strict=True):
                    examples[b] = example
            batch = Batch.of(examples, self.pad_id, None if mine else indices)
            batch.logged["student_share"] = float(sum(examples[b].n_targets for b in mine))
            if self.with_draws:
                batch.draws = draws_for(batch, self.seed, step, rows)
            out.append(batch)
        return out

    def _sample(self, step: int, rows: list[int], examples: list[Example], indices: list[int]) -> list[Example]:
        """The student's completions of `examples` (global rows `rows`, data-set indices `indices`)."""
        prompts = [prompt_of(e) for e in examples]
        for index, prompt in zip(indices, prompts, strict=True):
            if not prompt:
                raise DataError(f"the student cannot continue example {index}: it "
                                "has no prompt (its first token is already a label); on-policy kinds need "
                                "prompt/completion or chat records")
        requests = [GenRequest(prompt, self.params, (self.seed, step, g)) for prompt, g in zip(prompts, rows,
                                                                                                 strict=True)]
        start = time.perf_counter()
        results = self.engine.generate(requests)
        self.sampling_seconds += time.perf_counter() - start
        written = []
        for prompt, result in zip(prompts, results, strict=True):
            completion = result.token_ids + ([result.stop_token_id] if result.stop_token_id is not None else [])
            self.sampled_tokens += len(completion)
            written.append(Example(prompt + completion, [IGNORE_INDEX] * len(prompt) + completion))
        return written
