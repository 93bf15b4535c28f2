"""One meta-training across processes: `torchrun --nproc_per_node=N -m l2lcli meta-train ...`.

Each process (rank) meta-trains on its own share of the problem batch, from its own problem stream; the
meta-gradients are averaged across ranks before each meta step, so every rank takes the same step and keeps the
same weights; rank 0 validates, writes the run folder and logs. gloo on CPU, nccl on GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import L2LError, one_line


@dataclass(frozen=True)
class World:
    """This process's place among the processes of one meta-training (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def average_gradients(self, params: list[torch.Tensor]) -> None:
        """Replace each parameter's gradient by its mean over the ranks, in one all-reduce.

        A rank whose gradient is not finite makes every rank's mean not finite, so all ranks refuse the same step.
        """
        if self.size == 1:
            return
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        dist.all_reduce(flat)
        flat /= self.size
        offset = 0
        for p in params:
            p.grad = flat[offset:offset + p.numel()].view_as(p).clone()
            offset += p.numel()

    def mean(self, values: torch.Tensor) -> list[float]:
        """Each value's mean over the ranks (an unroll's mean loss per step, for the log), in one all-reduce."""
        if self.size == 1:
            return values.tolist()
        t = values.detach().to(torch.float64)
        dist.all_reduce(t)
        return (t / self.size).tolist()

    def from_main(self, value: float, device) -> float:
        """Rank 0's value on every rank: its validation loss and clock decide early stopping for all."""
        if self.size == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=device)
        dist.broadcast(t, 0)
        return t.item()

    def same_weights(self, module: torch.nn.Module) -> None:
        """Rank 0's weights on every rank, whatever each one initialised."""
        if self.size > 1:
            for p in module.parameters():
                dist.broadcast(p.data, 0)

    def share(self, obj):
        """Rank 0's object (its run folder) on every rank."""
        if self.size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, 0)
        return box[0]

    def leave(self) -> None:
        if self.size > 1 and dist.is_initialized():
            dist.barrier()  # no rank tears its connections down while another still uses them (gloo aborts then)
            dist.destroy_process_group()


SOLO = World()


def processes() -> int:
    """How many processes torchrun started for this job (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def only_meta_train(what: str) -> None:
    """Refuse `what` (a command, a multirun) under torchrun: only meta-train splits its work across processes."""
    if processes() > 1:
        raise L2LError(f"torchrun runs meta-train across processes; run {what} as one process (many jobs: -m)")


def join(device: torch.device, batch_size: int, threads: int | None) -> World:
    """This process's World: one process, or the process group torchrun describes (WORLD_SIZE, RANK, MASTER_ADDR
    in the environment). Each rank gets an equal share of the batch; with device.threads null, each its share of
    the cores."""
    size = processes()
    if size == 1:
        return World()
    if batch_size % size:
        raise L2LError(f"train.batch_size={batch_size} does not split over {size} processes: use a multiple of "
                       f"{size}")
    try:
        if not dist.is_initialized():
            if device.type == "cuda":  # one GPU per process: torchrun's LOCAL_RANK among those this one sees
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    except (RuntimeError, ValueError) as e:  # no MASTER_ADDR, a port taken, a peer that never came
        raise L2LError(f"cannot join the other processes ({one_line(e)[:160]}): start them with torchrun "
                       "--nproc_per_node=N -m l2lcli meta-train ...") from None
    if threads is None:  # torchrun's processes on this machine share its cores
        local = int(os.environ.get("LOCAL_WORLD_SIZE", size))
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // local))
    return World(dist.get_rank(), size)
