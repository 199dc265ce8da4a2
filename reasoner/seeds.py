"""Every seed a run derives, in one place: each is a fixed function of ``run.seed`` (or
``data.seed``) and where it is used, so a resumed run replays the same draws."""
from __future__ import annotations

import torch


def sampling(seed: int, step: int, rank: int = 0) -> int:
    """The sampler's seed at a training step, on one rank."""
    return seed * 1_000_003 + step + 7_919 * rank


def retry(seed: int | None, k: int) -> int | None:
    """Dynamic sampling's k-th extra draw of a step (k = 0: the step's own seed)."""
    return None if seed is None or k == 0 else seed + 7_919 * k


def eval_sampling(seed: int, step: int) -> int:
    """Sampled held-out accuracy (run.eval_samples) at a step."""
    return seed + step


def shuffle(seed: int, step: int) -> torch.Generator:
    """The minibatch shuffle of one update."""
    return torch.Generator().manual_seed(seed * 1_000_033 + step)


def epoch_order(seed: int, epoch: int) -> torch.Generator:
    """The order of the training problems in one pass over them (data.seed)."""
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def source_order(seed: int, source: int, epoch: int) -> torch.Generator:
    """The order of mixture source ``source``'s problems in one pass over them (data.seed; ``data.train``
    with several sources): each source has its own passes, apart from the others'."""
    return torch.Generator().manual_seed(seed * 100_003 + epoch + 1_000_000_007 * (source + 1))


def mixture(seed: int, step: int) -> torch.Generator:
    """Which source each problem of a step's global batch comes from (data.seed; several sources)."""
    return torch.Generator().manual_seed(seed * 1_000_037 + step + 500_000_003)
