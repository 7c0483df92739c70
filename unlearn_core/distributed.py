"""The process group a run belongs to when torchrun started it, and the few collectives it needs.

Why a module of its own: data-parallel runs use PyTorch's own engine (``torchrun`` sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``; ``torch.distributed``
and :class:`~torch.nn.parallel.DistributedDataParallel` do the rest), and the library only has
to know *which* process it is. Everything here is a no-op in a plain one-process run:
:func:`world` returns :data:`SINGLE` without importing ``torch.distributed`` or reading more
than one environment variable, so the one-process path stays exactly as it was and as fast.

Example (what ``torchrun --nproc_per_node 2 -m unlearn_core unlearn ...`` does per process)::

    w = world()                  # joins the group on first use: gloo on CPU, nccl on CUDA
    mine = w.shard(indices)      # this rank's share
    model = w.wrap(model)        # DistributedDataParallel (gradients all-reduced)
    if w.is_main: save(...)      # only rank 0 writes
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from unlearn_core.errors import UserError

if TYPE_CHECKING:  # torch is imported where used so the command line starts fast
    import numpy as np
    import torch
    from torch import nn

T = TypeVar("T")

#: Environment variables torchrun sets in every worker process.
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
#: Subcommands that run data-parallel under torchrun (the others would only repeat the same work).
TORCHRUN_COMMANDS = ("train", "unlearn", "bench")


@dataclass(frozen=True)
class World:
    """This process's place in the run: ``rank`` of ``size`` (``size == 1``: a plain run).

    Attributes:
        rank: global rank (0 is the main process: the only one that writes).
        size: number of processes in the run (all nodes).
        local_rank: rank on this node (picks the GPU: ``cuda:<local_rank>``).
        backend: ``gloo`` (CPU) or ``nccl`` (CUDA); empty in a plain run.
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def active(self) -> bool:
        """Whether this is one of several processes (collectives are needed)."""
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that records the run, saves artifacts and prints results."""
        return self.rank == 0

    # ---------------------------------------------------------------- sharding and models

    def shard(self, items: "np.ndarray") -> "np.ndarray":
        """This rank's share of ``items`` (every ``size``-th, from ``rank``), never empty.

        The same rule as :class:`torch.utils.data.DistributedSampler` without shuffling: ranks
        take interleaved positions, so a batch split this way keeps its mix of samples on
        every rank; when there are fewer items than ranks, a rank repeats one (the sampler
        pads the same way), so every rank still takes part in each collective step.
        """
        if not self.active or len(items) == 0:
            return items
        mine = items[self.rank :: self.size]
        return mine if len(mine) else items[self.rank % len(items) : self.rank % len(items) + 1]

    def wrap(self, model: "nn.Module") -> "nn.Module":
        """``model`` under :class:`DistributedDataParallel` (gradients averaged over ranks), or itself.

        Rank 0's parameters and buffers are broadcast at construction, so every rank starts
        from the same weights; ``broadcast_buffers`` keeps BatchNorm statistics those of rank 0.
        """
        if not self.active:
            return model
        device = next(model.parameters()).device
        ids = [device.index if device.index is not None else self.local_rank] if device.type == "cuda" else None
        return _data_parallel_class()(model, device_ids=ids)

    def device_name(self, name: str) -> str:
        """The device this rank computes on: ``cuda:<local_rank>`` for ``cuda``/``auto`` on a GPU node
        (the CPU otherwise: several processes do not share one Apple GPU)."""
        if not self.active or name not in ("auto", "cuda"):
            return name
        import torch

        if torch.cuda.is_available() and self.backend == "nccl":
            return f"cuda:{self.local_rank}"
        if name == "cuda":
            raise UserError("A CUDA GPU was requested but none is available; use --device cpu or auto.")
        return "cpu"

    # ---------------------------------------------------------------- collectives

    def barrier(self) -> None:
        """Wait until every rank gets here (nothing to wait for in a plain run)."""
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` on every rank (any picklable object; produced by this library only)."""
        if not self.active:
            return value
        import torch.distributed as dist

        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def from_main(self, make: Callable[[], T]) -> T:
        """``make()`` computed on rank 0 only and handed to every rank.

        Why: work whose result must be the same everywhere and that may write (the stop-target
        estimate and its workspace cache) runs once, where writing is allowed.
        """
        if not self.active:
            return make()
        return self.broadcast(make() if self.is_main else None)

    def gather(self, value: T) -> list[T] | None:
        """Every rank's ``value`` in rank order on rank 0; ``None`` elsewhere."""
        if not self.active:
            return [value]
        import torch.distributed as dist

        out: list[Any] | None = [None] * self.size if self.is_main else None
        dist.gather_object(value, out, dst=0)
        return out

    def all_gather(self, value: T) -> list[T]:
        """Every rank's ``value`` in rank order, on every rank."""
        if not self.active:
            return [value]
        import torch.distributed as dist

        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, value)
        return out

    def sum(self, tensor: "torch.Tensor") -> "torch.Tensor":
        """The element-wise sum of ``tensor`` over ranks (in place; returned for chaining)."""
        return self.reduce(tensor, "sum")

    def reduce(self, tensor: "torch.Tensor", op: str) -> "torch.Tensor":
        """``sum``/``min``/``max`` of ``tensor`` over ranks, in place (moved to the backend's device and back)."""
        if self.active:
            import torch.distributed as dist

            ops = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}
            on = tensor.to(self._collective_device())
            dist.all_reduce(on, op=ops[op])
            if on is not tensor:
                tensor.copy_(on)
        return tensor

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any rank."""
        if not self.active:
            return flag
        import torch

        return bool(self.reduce(torch.tensor([int(flag)], device=self._collective_device()), "max").item())

    def _collective_device(self) -> "torch.device":
        import torch

        return torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else torch.device("cpu")

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the body first, the others after it: a cache rank 0 fills is read, not written, by them."""
        if self.active and not self.is_main:
            self.barrier()
        yield
        if self.active and self.is_main:
            self.barrier()


def _data_parallel_class() -> type:
    """DistributedDataParallel that also answers the wrapped model's own attributes (``spec``, ``head``...).

    Why: a method's loss reads e.g. ``model.spec.num_classes``; handing it the wrapper must not
    change what the loss can see.
    """
    from torch.nn.parallel import DistributedDataParallel

    class DataParallel(DistributedDataParallel):
        def __getattr__(self, name: str) -> Any:
            try:
                return super().__getattr__(name)
            except AttributeError:
                return getattr(self.module, name)

    return DataParallel


SINGLE = World()
_WORLD: World | None = None


def under_torchrun() -> bool:
    """Whether torchrun (or ``python -m torch.distributed.run``) started this process with others."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 and "RANK" in os.environ


def world(cpu: bool = False) -> World:
    """This process's :class:`World`; joins the process group on first use under torchrun.

    gloo on the CPU, nccl when CUDA is available (each rank on ``cuda:<LOCAL_RANK>``) unless
    ``cpu`` (the command asked for ``--device cpu``: its tensors never reach a GPU, which nccl
    needs). Only the first call's ``cpu`` counts. A plain run gets :data:`SINGLE` and imports nothing.
    """
    global _WORLD
    if _WORLD is not None:
        return _WORLD
    if not under_torchrun():
        _WORLD = SINGLE
        return _WORLD
    import torch
    import torch.distributed as dist

    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if not cpu and torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
    if backend == "nccl":
        check_gpu_count(int(os.environ.get("LOCAL_WORLD_SIZE", size)))
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    _WORLD = World(rank=rank, size=size, local_rank=local_rank, backend=backend)
    return _WORLD


def shutdown() -> None:
    """Leave the process group (end of a torchrun command); nothing in a plain run."""
    global _WORLD
    if _WORLD is not None and _WORLD.active:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    _WORLD = None


# ---------------------------------------------------------------- checks before launch


def check_gpu_count(per_node: int) -> None:
    """Refuse more processes per node than GPUs on a CUDA machine (each rank needs its own GPU)."""
    import torch

    if torch.cuda.is_available() and per_node > torch.cuda.device_count():
        raise UserError(f"{per_node} processes per node were asked for, but this machine has "
                        f"{torch.cuda.device_count()} CUDA GPU(s); use --nproc_per_node "
                        f"{torch.cuda.device_count()} or fewer (one process per GPU).")


def check_port_free(port: int, host: str = "") -> None:
    """Refuse a rendezvous port another program already listens on (say which and what to do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            raise UserError(f"Port {port} is already in use ({error.strerror}); pass another free port with "
                            "--master_port (or --rdzv_endpoint HOST:PORT), or stop the program using it.") from None


def free_port() -> int:
    """A TCP port free at this moment (for a single-node run's rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("", 0))
        return int(probe.getsockname()[1])


def launch_prefix(processes: int, port: int | None = None) -> list[str]:
    """``python -m torch.distributed.run --nproc_per_node N ...`` for a single-node run of ``processes``.

    The same launcher as ``torchrun`` (its module form needs no script on PATH); ``--master_port``
    is a free port so two runs on one machine do not collide on torchrun's default 29500.
    """
    import sys

    if processes < 1:
        raise UserError(f"processes must be a whole number of at least 1, got {processes!r}.")
    if port is not None:  # a port chosen by the caller: refuse a taken one before launching
        check_port_free(port)
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
            "--master_port", str(port if port is not None else free_port())]


def launcher_pid() -> int:
    """The pid that stands for the whole run: torchrun's (our parent) under torchrun, else ours.

    Why: torchrun starts every worker in a session of its own and, on SIGTERM, stops all of
    them; recording its pid lets a cancel reach every rank through it, and a run whose launcher
    is gone is recognised as ended (:func:`unlearn_core.runs.jobs.reconcile`).
    """
    if under_torchrun() and "TORCHELASTIC_RUN_ID" in os.environ:
        return os.getppid()
    return os.getpid()


def max_processes(device: str = "auto") -> int:
    """The most data-parallel processes a run on ``device`` can use on this machine.

    One per GPU where CUDA computes (``auto`` or ``cuda`` on a CUDA machine), else one per CPU
    core (more CPU processes than cores only compete for them). For the dashboard's
    "processes / GPUs" field; several nodes are for torchrun on the command line (docs).
    """
    import torch

    if device in ("auto", "cuda") and torch.cuda.is_available():
        return max(1, torch.cuda.device_count())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores)
