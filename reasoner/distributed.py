"""Data parallel training under ``torchrun``: process group, sharding, metric reduction, wrapping.

``torchrun --nproc_per_node N -m reasoner train ...`` starts N processes with RANK,
WORLD_SIZE, LOCAL_RANK and MASTER_ADDR/PORT set; ``init()`` joins the process group (``gloo``
on CPU, ``nccl`` on CUDA). Each rank takes its contiguous share of the step's global batch
(``shard``), so the G completions of a problem stay together on one rank and group-relative
advantages need no communication. Gradients are averaged by DDP (or FSDP2 ``fully_shard`` for
models that do not fit one device); the loss is scaled so that the average over ranks equals
the single-process loss of the global batch (see ``loss_scale``). Metrics are reduced before
logging and only rank 0 writes files. Without torchrun everything here is a cheap no-op.
"""
from __future__ import annotations

import contextlib
import datetime
import math
import os
from typing import Any, NamedTuple, Sequence

import torch
import torch.distributed as dist

from reasoner.config import ConfigError
from reasoner.metrics import MetricsLog
from reasoner.trackers import NO_TRACKERS

STRATEGIES = ("ddp", "fsdp")
SUM_KEYS = ("tokens_per_s",)  # metrics that add up over ranks


class DistInfo(NamedTuple):
    rank: int
    world: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_info() -> DistInfo:
    """Rank, world size and local rank from the torchrun environment (0, 1, 0 without it)."""
    env = os.environ
    return DistInfo(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def info() -> DistInfo:
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), env_info().local_rank)
    return env_info()


def is_main() -> bool:
    return info().rank == 0


def check_config(batch_size: int, world: int) -> None:
    """Fail before any model is loaded when the global batch cannot be split evenly."""
    if batch_size % world:
        raise ConfigError(f"run.batch_size={batch_size} must be divisible by the number of processes ({world}) "
                          "so every rank gets the same number of whole groups")


def init(device: torch.device, timeout_min: float = 60.0) -> DistInfo:
    """Join the torchrun process group when WORLD_SIZE > 1; return this process's DistInfo.

    CUDA ranks use ``nccl`` and the GPU ``LOCAL_RANK``; CPU ranks use ``gloo``.
    """
    env = env_info()
    if env.world == 1 or (dist.is_available() and dist.is_initialized()):
        return info()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(env.local_rank)
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_min))
    return info()


def local_device(device: torch.device) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` for CUDA, unchanged otherwise."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", env_info().local_rank)
    return device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(items: Sequence, rank: int, world: int) -> list:
    """This rank's contiguous share of ``items`` (its length must be divisible by ``world``)."""
    if len(items) % world:
        raise ValueError(f"cannot split {len(items)} items evenly over {world} ranks")
    n = len(items) // world
    return list(items[rank * n:(rank + 1) * n])


def barrier() -> None:
    if active():
        dist.barrier()


def all_sum(x: float) -> float:
    """Sum of a Python number over ranks (the number itself in one process)."""
    if not active():
        return float(x)
    t = torch.tensor([float(x)], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return float(t.item())


def all_sum_tensor(t: torch.Tensor) -> torch.Tensor:
    """Sum of a tensor over ranks (a new tensor); ``t`` itself in one process, so one-process
    arithmetic stays bit-identical."""
    if not active():
        return t
    out = t.detach().clone()
    dist.all_reduce(out)
    return out


def all_true(flag: bool) -> bool:
    """True only when ``flag`` is true on every rank (so all ranks skip a bad update together)."""
    if not active():
        return bool(flag)
    return all_sum(0.0 if flag else 1.0) == 0.0


def any_true(flag: bool) -> bool:
    """True when ``flag`` is true on some rank (an all-reduce MAX of one number; ``flag`` in one process)."""
    if not active():
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def loss_scale(n_local: float, loss_agg: str) -> float:
    """Factor on a rank's loss so that DDP's gradient average equals the global-batch gradient.

    DDP averages gradients over W ranks. Sequence-mean aggregations of equal shards already
    average to the global mean (factor 1). For ``token_mean`` the local loss is
    sum_r / n_r; scaling by W * n_r / n_global makes the average sum_r / n_global summed
    over r, i.e. the global token mean.
    """
    if not active() or loss_agg != "token_mean":
        return 1.0
    n_global = all_sum(n_local)
    return dist.get_world_size() * n_local / max(n_global, 1.0)


def reduce_metrics(row: dict[str, Any]) -> dict[str, Any]:
    """Reduce the numeric metrics of one step over ranks: mean by default, max for ``*max`` and
    ``time/*`` keys, min for ``*min``, sum for ``tokens_per_s`` and ``*/count`` (``reasoner.breakdown``);
    "step" and non-numbers stay.

    A key missing on some rank is reduced over the ranks that have it.
    """
    if not active():
        return row
    mine = {k: float(v) for k, v in row.items() if _is_number(v) and k != "step"}
    keys = sorted(set().union(*gather_objects(sorted(mine))))
    out = dict(row)
    for op, fill in (("max", -math.inf), ("min", math.inf), ("sum", 0.0), ("mean", 0.0)):
        names = [k for k in keys if _reduce_op(k) == op]
        if not names:
            continue
        t = torch.tensor([[mine.get(k, fill) for k in names], [float(k in mine) for k in names]],
                         dtype=torch.float64, device=_comm_device())
        if op in ("max", "min"):
            dist.all_reduce(t[0], op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.MIN)
        else:
            dist.all_reduce(t)
            if op == "mean":
                t[0] /= t[1]
        out.update({k: float(v) for k, v in zip(names, t[0].tolist())})
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _reduce_op(key: str) -> str:
    if key.endswith("max") or key.startswith("time/"):
        return "max"
    if key.endswith("min"):
        return "min"
    return "sum" if key in SUM_KEYS or key.endswith("/count") else "mean"


def gather_objects(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` in one process)."""
    if not active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ---------------------------------------------------------------- wrapping the policy


def wrap(model: torch.nn.Module, strategy: str = "ddp") -> torch.nn.Module:
    """The module the update trains through: DDP / FSDP2 under torchrun, ``model`` itself otherwise.

    Sampling, the reference pass and checkpoints keep using the unwrapped ``model`` (DDP shares
    its parameters; FSDP2 shards them in place, see ``fsdp_full_state_dict``).
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"parallel strategy {strategy!r} is not valid; choose one of: {', '.join(STRATEGIES)}")
    if not active():
        return model
    if strategy == "fsdp":
        return fsdp_shard(model)
    from torch.nn.parallel import DistributedDataParallel

    dev = next(model.parameters()).device
    return DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)


def fsdp_shard(model: torch.nn.Module) -> torch.nn.Module:
    """FSDP2: shard every decoder layer, then the root; parameters become DTensors in place."""
    from torch.distributed.fsdp import fully_shard

    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        base = getattr(model, "base_model", None)  # a peft model
        layers = getattr(getattr(getattr(base, "model", None), "model", None), "layers", None) or []
    for layer in layers:
        fully_shard(layer)
    fully_shard(model)
    return model


def fsdp_full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The full (unsharded, CPU) state dict of an FSDP2 model; collective: call on every rank."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def is_sharded(model: torch.nn.Module) -> bool:
    """FSDP2 has made the parameters DTensors."""
    return any(type(p).__name__ == "DTensor" for p in model.parameters())


def fsdp_reshard(model: torch.nn.Module) -> None:
    """Put every FSDP2 module back in its sharded state: the root keeps its parameters unsharded
    after a forward (reshard_after_forward defaults to False there), and then they are not the
    DTensors the optimizer holds."""
    from torch.distributed.fsdp import FSDPModule

    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.reshard()


def fsdp_full_optim_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The full (gathered, CPU) optimizer state of an FSDP2 model, keyed by parameter name: the
    same dict on every rank; collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    fsdp_reshard(model)
    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def fsdp_load_full(model: torch.nn.Module, model_state: dict | None = None, optimizer=None,
                   optim_state: dict | None = None) -> None:
    """Load full (unsharded) weights and/or optimizer state into an FSDP2 model: each rank keeps its
    own shards (every rank reads the same full dicts from the checkpoint); collective."""
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                         set_optimizer_state_dict)

    options = StateDictOptions(full_state_dict=True)
    fsdp_reshard(model)
    if model_state is not None:
        set_model_state_dict(model, model_state, options=options)
    if optimizer is not None:
        set_optimizer_state_dict(model, optimizer, optim_state_dict=optim_state, options=options)


def no_sync(model: torch.nn.Module, last: bool):
    """Skip DDP's gradient all-reduce on all but the last micro-batch of a minibatch."""
    if not last and hasattr(model, "no_sync"):
        return model.no_sync()
    return contextlib.nullcontext()


# ---------------------------------------------------------------- rank-0-only records


class _SilentLog(MetricsLog):
    """Keeps rows in memory (every rank needs them for checkpoints) but writes nothing."""

    def __init__(self, out_dir, rows=None, sinks=NO_TRACKERS):  # noqa: D107 - no file access, no trackers
        self.dir, self.rows, self.sinks = out_dir, list(rows or []), NO_TRACKERS

    def log(self, row: dict[str, Any]) -> None:
        self.rows.append(row)

    def write_csv(self) -> None:
        pass

    def plot(self) -> None:
        pass


def metrics_log(out_dir, rows=None, sinks=NO_TRACKERS) -> MetricsLog:
    """The run's MetricsLog on rank 0 (with the trackers ``sinks``); an in-memory twin that writes
    nothing and reports to no tracker on other ranks."""
    return MetricsLog(out_dir, rows, sinks) if is_main() else _SilentLog(out_dir, rows)
