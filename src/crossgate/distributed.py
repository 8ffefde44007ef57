"""Several processes sharing one extraction, on torch.distributed: `torchrun --nproc-per-node N -m crossgate
extract ...`. torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; gloo on CPU, nccl on GPU (one GPU per rank)."""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Group:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def device(self, device: str) -> str:
        """One GPU per rank on a multi-GPU machine."""
        return f"cuda:{self.local_rank}" if device == "cuda" and self.world > 1 else device


def from_env() -> Group:
    return Group(rank=int(os.environ.get("RANK", 0)), world=int(os.environ.get("WORLD_SIZE", 1)),
                 local_rank=int(os.environ.get("LOCAL_RANK", 0)))


def start(device: str) -> Group:
    """The process group of this run (a single process when not started by torchrun)."""
    group = from_env()
    if group.world > 1:
        import torch
        import torch.distributed as dist

        backend = "nccl" if device == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(group.local_rank)
        dist.init_process_group(backend=backend)
    return group


def stop(group: Group) -> None:
    if group.world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
