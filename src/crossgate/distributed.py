"""Several processes sharing one extraction, on torch.distributed: `torchrun --nproc-per-node N -m crossgate
extract ...`. torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; gloo on CPU, nccl on GPU (one GPU per rank)."""
from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import UserError


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


_FIX = "run under torchrun, or unset RANK, WORLD_SIZE and LOCAL_RANK for a single process"


def _env_int(name: str, default: int, minimum: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise UserError(f"{name}={text!r} is not an integer >= {minimum}; {_FIX}")
    return value


def from_env() -> Group:
    """The group torchrun's variables describe, checked: a stray or half-set variable is one line, not a
    ValueError or a rendezvous that waits for a master that was never started."""
    group = Group(rank=_env_int("RANK", 0, 0), world=_env_int("WORLD_SIZE", 1, 1),
                  local_rank=_env_int("LOCAL_RANK", 0, 0))
    if group.rank >= group.world:
        raise UserError(f"RANK={group.rank} is not below WORLD_SIZE={group.world}; {_FIX}")
    if group.world > 1:
        missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v, "").strip()]
        if missing:
            raise UserError(f"WORLD_SIZE={group.world} asks for several processes, but {' and '.join(missing)} "
                            f"{'is' if len(missing) == 1 else 'are'} not set; {_FIX}")
        _env_int("MASTER_PORT", 0, 1)
    return group


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
