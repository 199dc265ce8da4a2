"""CPU intra-op threads sized to the work of each forward/backward call.

Splitting a matmul over a second thread wakes that thread (a fixed cost even with
``OMP_WAIT_POLICY=PASSIVE``, which reasoner sets so that busy cores do not collapse), so it
only pays when the matmul is big. A whole pass crosses over later than a lone ``torch.mm``
(its elementwise ops and the backward's thin matmuls gain less), which is why the bar is
set on whole passes: a call whose biggest matmul, rows x (largest weight), is under
``MIN_MACS`` runs on one thread, everything else on the threads the run was given
(``run.threads``, or torch's default). GPU models are left alone.

The elementwise work over the parameters (gradient clipping, the fused AdamW step) follows
the same logic per tensor: a model whose largest parameter is under ``MIN_ELEMENTS`` runs
them on one thread.

The measurements behind both bars: ``docs/benchmarks.md`` ("reasoner/threads.py").
"""
from __future__ import annotations

import contextlib
import os
import weakref

import torch

MIN_MACS = 1 << 24  # multiply-adds of a call's biggest matmul below which one thread is faster
MIN_ELEMENTS = 1 << 19  # elements of a model's largest parameter below which one thread clips and steps faster
SMALL_MODEL_PARAMS = 5_000_000  # run.threads=0 (auto): models under this many parameters run on one thread

_SIZES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # module: (matmul width or None, largest parameter)


def configure(model, threads: int) -> None:
    """The run's thread count: run.threads when set; 0 (auto): one for a small model (all its calls
    are small, and so is the rest of its work), else torch's default."""
    if threads:
        torch.set_num_threads(threads)
    elif n_params(model) < SMALL_MODEL_PARAMS:
        torch.set_num_threads(1)


def for_rows(model, rows: int):
    """A context running ``model``'s calls on one thread when they are small.

    rows: token rows of the calls' biggest matmuls (a decode step's batch rows; a log-prob
    pass's completion tokens: it runs padding-free). Forward and backward both belong inside."""
    width = matmul_width(model)
    if width is None or torch.get_num_threads() == 1 or rows * width >= MIN_MACS:
        return contextlib.nullcontext()
    return using(1)


def for_params(model):
    """A context running elementwise work over ``model``'s parameters (gradient clipping, the
    optimizer step) on one thread when its largest parameter has fewer than MIN_ELEMENTS."""
    width, largest = _sizes(model)
    if width is None or largest >= MIN_ELEMENTS:
        return contextlib.nullcontext()
    return using(1)


@contextlib.contextmanager
def using(n: int):
    """torch's intra-op thread count set to n inside the block, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def matmul_width(model) -> int | None:
    """in x out of the model's largest linear layer (None: not a CPU module)."""
    return _sizes(model)[0]


def _sizes(model) -> tuple[int | None, int]:
    """(matmul_width, elements of the largest parameter), computed once per module."""
    if not isinstance(model, torch.nn.Module):
        return None, 0
    if model not in _SIZES:
        params = list(model.parameters())
        linears = [m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)]
        on_cpu = bool(params) and params[0].device.type == "cpu"
        _SIZES[model] = (max(linears) if on_cpu and linears else None, max((p.numel() for p in params), default=0))
    return _SIZES[model]


def n_params(model) -> int:
    """Parameters of ``model``: the one count behind every size decision (threads, precision, reference)."""
    return sum(p.numel() for p in model.parameters())


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1
