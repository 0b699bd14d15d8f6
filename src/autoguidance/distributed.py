"""One process or many: training and generation run plain or under `torchrun` with the same code.

Under torchrun (RANK / WORLD_SIZE / LOCAL_RANK in the environment) the process group is initialised
from the environment (NCCL on CUDA and gloo on the CPU unless a backend is asked for) and each rank
takes the GPU of its local rank; otherwise this is rank 0 of 1 with no process group.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as tdist

from .errors import UserInputError


@dataclass
class Distributed:
    """Where this process stands: its rank among world_size processes and the device it computes on."""

    rank: int
    world_size: int
    device: torch.device
    owns_group: bool  # we initialised the process group, so we tear it down

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes files, logs and draws the progress bar."""
        return self.rank == 0

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of a tensor over all ranks (a collective: every rank must call it)."""
        if self.world_size == 1:
            return value
        value = value.clone()
        tdist.all_reduce(value, op=tdist.ReduceOp.SUM)
        return value / self.world_size

    def max(self, value: float) -> float:
        """The largest value over all ranks (a collective), e.g. the slowest process's wall time."""
        return self._reduce(value, tdist.ReduceOp.MAX)

    def sum(self, value: float) -> float:
        """The sum of a number over all ranks (a collective)."""
        return self._reduce(value, tdist.ReduceOp.SUM)

    def _reduce(self, value: float, op) -> float:
        if self.world_size == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        tdist.all_reduce(t, op=op)
        return float(t)

    def barrier(self) -> None:
        if self.world_size > 1:
            tdist.barrier()

    def close(self) -> None:
        if self.owns_group and tdist.is_initialized():
            tdist.destroy_process_group()
            self.owns_group = False


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def resolve_device(device: str | torch.device | None) -> torch.device:
    """'cpu', 'cuda' (None or 'auto': CUDA when available) as a torch.device; UserInputError if unusable."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserInputError(f"unknown device {device!r}: use cpu or cuda") from None
    if dev.type not in ("cpu", "cuda"):
        raise UserInputError(f"unsupported device {device!r}: use cpu or cuda")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserInputError("device 'cuda' requested but CUDA is not available here")
    return dev


def setup(device: str | torch.device | None = None, backend: str | None = None) -> Distributed:
    """Join the torchrun process group if launched by torchrun; pick this rank's device.

    backend: None for NCCL on CUDA and gloo on the CPU; "gloo" where only CPU tensors are exchanged."""
    dev = resolve_device(device)
    if not launched_by_torchrun():
        return Distributed(rank=0, world_size=1, device=dev, owns_group=False)
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))  # one GPU per local rank
        torch.cuda.set_device(dev)
    owns = not tdist.is_initialized()
    if owns:
        tdist.init_process_group(backend=backend or ("nccl" if dev.type == "cuda" else "gloo"))
    return Distributed(rank=tdist.get_rank(), world_size=tdist.get_world_size(), device=dev, owns_group=owns)


# --- sharding seeds over processes -------------------------------------------------------------------


def shard_seeds(seeds: Sequence[int], rank: int, world_size: int, batch_size: int = 1) -> list[int]:
    """This rank's share of `seeds`: whole batches, dealt out in turn (strided by batch).

    The seed list is cut into consecutive batches of `batch_size` (the last one may be short); batch j
    goes to rank j % world_size. With batch_size = 1 this is plain striding, seeds[rank::world_size].
    Why batches: convolution and matmul kernels round differently for different batch sizes (about 1e-5
    in float32), so generating the rank's share with the same `batch_size` reproduces exactly the
    batches, hence bit for bit the images, of a single process. `gather_sharded` undoes the split.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank {rank}, world_size {world_size}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    seeds = list(seeds)
    starts = range(rank * batch_size, len(seeds), world_size * batch_size)
    return [s for start in starts for s in seeds[start : start + batch_size]]


def gather_sharded(local: torch.Tensor, total: int, batch_size: int = 1) -> torch.Tensor:
    """All-gather per-rank results of `shard_seeds` back into seed order, on every rank.

    local: (n_r, ...) this rank's rows for its share; total: the number of seeds before sharding;
    batch_size: as given to `shard_seeds`. Returns (total, ...). Uses tensor all_gather (no pickling):
    every rank pads to the largest share so that shapes agree. The process group must accept tensors on
    local's device (gloo: CPU). Without an initialised process group it returns `local`.
    """
    if not (tdist.is_available() and tdist.is_initialized()) or tdist.get_world_size() == 1:
        return local
    world = tdist.get_world_size()
    # Which global rows each rank holds: the same split applied to the row indices.
    owned = [shard_seeds(range(total), r, world, batch_size) for r in range(world)]
    width = max(len(o) for o in owned)
    padded = local.new_zeros((width, *local.shape[1:]))
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(world)]
    tdist.all_gather(parts, padded)
    out = local.new_empty((total, *local.shape[1:]))
    for part, rows in zip(parts, owned, strict=True):
        out[rows] = part[: len(rows)]
    return out
