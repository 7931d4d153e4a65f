"""`teacher.shard`: the live teacher's decoder layers split across the processes of a run (torch FSDP2).

Why: without it every process holds the whole frozen teacher, so N processes keep N copies of its weights. Here
each decoder layer becomes an FSDP2 unit (`fully_shard`, `reshard_after_forward=True`): a process keeps 1/N of
every layer's weights and gathers one layer at a time for its forward pass, then frees the gathered copy. The
teacher runs under no_grad in eval mode, so nothing is ever reduced back.

What stays whole in every process: the embeddings, the final norm and the LM head (and any other weight outside the
layers). They are a small share of a large model, and the chunked loss reads the head's weight directly
(`LMHead.of`, `losses/lm_head.py`), which must stay a plain tensor.

The cost: every process must run every forward pass of the teacher together with the others (each layer's gather
is a collective), so the teacher is called the same number of times in every process. The training loop does that
(each process gets the same number of micro-batches), and so does validation (a process with fewer sequences runs
the teacher in an empty pass of its own: training/validation.py). Each process still loads the whole teacher once
before it is cut to its shard.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from distill.errors import ModelError, RecipeError
from distill.models import decoder_layers

# FSDP2's `fully_shard` is public from torch 2.6, but before 2.8 a module sharded on its own (each layer here, the
# model itself never) ignored reshard_after_forward and kept its layer gathered after the first forward
# (pytorch/pytorch#154704): more memory than no sharding at all
MIN_TORCH = (2, 8)


def local_parameter_bytes(module: nn.Module) -> int:
    """Bytes of parameters this process holds: a sharded weight counts its local shard only."""
    return sum(_local(p).numel() * p.element_size() for p in module.parameters())


def _local(p: torch.Tensor) -> torch.Tensor:
    return p.to_local() if is_sharded_tensor(p) else p


def is_sharded_tensor(p: torch.Tensor) -> bool:
    return hasattr(p, "to_local") and hasattr(p, "placements")  # a DTensor, without importing it on old torch


def torch_version() -> tuple[int, int]:
    major, minor = torch.__version__.split("+")[0].split(".")[:2]
    return int(major), int(minor)


def is_sharded(model: nn.Module) -> bool:
    """Whether `shard_teacher` split this model (each of its forwards is then a collective of every process)."""
    return any(is_sharded_tensor(p) for p in model.parameters())


def shard_teacher(model: nn.Module, device: torch.device, processes: int) -> str:
    """Place the frozen teacher on `device`, its decoder layers split over `processes` (the process group must
    exist when there are several). Returns a note for the run summary.

    One process has nothing to share the weights with: the teacher is kept whole, and the note says so. With
    several, each layer is moved and split in turn before the rest moves, so a GPU never holds all the layers whole
    (written for GPUs, run on CPUs only so far)."""
    if processes == 1:
        model.to(device)
        return "teacher.shard: one process, so the teacher is kept whole"
    if torch_version() < MIN_TORCH:
        wanted = ".".join(map(str, MIN_TORCH))
        raise RecipeError(f"teacher.shard: needs torch >= {wanted} (this is {torch.__version__}; older FSDP2 keeps "
                          "each layer gathered after its first forward, so nothing is saved); upgrade torch or set "
                          "teacher.shard: false")
    config = getattr(model, "config", None)
    if getattr(config, "quantization_config", None) is not None:
        raise RecipeError(f"teacher.shard: {type(model).__name__} is a quantised checkpoint; FSDP splits floating "
                          "point weights only. Load an unquantised teacher, or set teacher.shard: false")
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    layers, whole = _layers(model), local_parameter_bytes(model)
    assert torch.distributed.is_initialized(), "the launcher's process group must exist before the teacher is sharded"
    mesh = init_device_mesh(device.type, (processes,))
    for layer in layers:
        fully_shard(layer, mesh=mesh, reshard_after_forward=True)  # moves the layer to the mesh's device, then splits
    for tensor in itertools.chain(model.parameters(), model.buffers()):  # the rest (embeddings, norm, head) whole
        if not is_sharded_tensor(tensor) and tensor.device != device:
            tensor.data = tensor.data.to(device)
    mib = 2 ** 20
    return (f"decoder layers sharded over {processes} processes ({local_parameter_bytes(model) / mib:,.2f} of "
            f"{whole / mib:,.2f} MiB per process)")


def _layers(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks, found as `student.from_teacher` finds them: the one list of `num_hidden_layers` modules."""
    try:
        return decoder_layers(model)[1]
    except ModelError:
        raise ModelError(f"teacher.shard: cannot find the decoder layers of a {type(model).__name__} (no single list "
                         f"of {model.config.num_hidden_layers} modules) to shard; set teacher.shard: false") from None

