"""Numerical precision of a run: one setting, ``model.precision``, decided once per run.

- ``fp32``: weights, activations and optimizer state in float32.
- ``bf16-mixed``: the module's weights and every forward/backward (sampling, the reference, the
  update) in bfloat16; the optimizer steps float32 *master* copies of the trainable weights
  (float32 AdamW state, gradients accumulated in float32) and writes them back rounded to
  bfloat16 after each step. Small updates accumulate in the masters instead of being lost to
  bfloat16's 8-bit mantissa (Micikevicius et al. 2018, "Mixed Precision Training"; the bf16
  variant of Kalamkar et al. 2019, "A Study of BFLOAT16 for Deep Learning Training").
  The masters start from the float32 weights as loaded (``loaded_float32``, taken before the cast),
  not from their bf16 rounding. Checkpoints hold the float32 masters, so a resume continues from the
  exact same state.
- ``bf16``: bfloat16 weights stepped directly (half the memory, but AdamW updates smaller than
  half a bf16 ulp of a weight, ~2^-9 relative, are rounded away).
- ``auto``: ``bf16-mixed`` where bfloat16 matmuls are fast (a CUDA GPU with bf16; a CPU with
  AVX512-BF16 or AMX) and the model is big enough for the arithmetic to dominate
  (``threads.SMALL_MODEL_PARAMS``: the embedded 0.8M-parameter model is bound by per-operation
  overhead and stays ``fp32``), else ``fp32``; also ``fp32`` under FSDP2 (sharded masters are not
  built yet).

Trainable parameters that are already float32 (peft keeps LoRA adapters in float32 over a
bfloat16 base) are their own masters: nothing is copied for them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from reasoner.config import CHOICES, ConfigError
from reasoner.threads import SMALL_MODEL_PARAMS

PRECISIONS = CHOICES["model.precision"]


@dataclass(frozen=True)
class Precision:
    name: str  # fp32 | bf16-mixed | bf16 (never auto: resolved)
    compute: torch.dtype  # dtype of the module's weights, hence of its activations
    master: bool  # float32 master copies of low-precision trainable weights for the optimizer


def bf16_fast(device: torch.device) -> bool:
    """True where bfloat16 matmuls run at hardware speed (not emulated)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        flags = open("/proc/cpuinfo").read().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def check(name: str, sharded: bool) -> None:
    """Fail before any model is loaded on a choice that cannot run."""
    if name not in PRECISIONS:
        raise ConfigError(f"model.precision={name!r} is not valid; choose one of: {', '.join(PRECISIONS)}")
    if name == "bf16-mixed" and sharded:
        raise ConfigError("model.precision=bf16-mixed is not supported with run.parallel=fsdp under torchrun yet "
                          "(use fp32 or bf16)")


def resolve(name: str, device: torch.device, n_params: int, sharded: bool = False) -> Precision:
    """The run's Precision: ``name`` is a ``model.precision`` choice (see the module docstring)."""
    check(name, sharded)
    if name == "auto":
        name = "bf16-mixed" if bf16_fast(device) and n_params >= SMALL_MODEL_PARAMS and not sharded else "fp32"
    return Precision(name, torch.float32 if name == "fp32" else torch.bfloat16, name == "bf16-mixed")


def loaded_float32(model: torch.nn.Module, prec: Precision) -> dict[str, torch.Tensor]:
    """The trainable float32 weights of ``model`` by name, taken before it is cast to ``prec.compute``
    (empty unless bf16-mixed): the masters start from them. Masters started from the bf16 rounding sit
    on bf16's grid, so the module moves a whole bf16 spacing once an update passes half of one, and the
    float32 weights a run saves no longer behave like the module it trained and evaluated (measured on
    SmolLM2 after 20 recipe steps: 22 % held-out in float32 against the module's 57 %; ``docs/benchmarks.md``,
    "reasoner/precision.py"). Started from the loaded values, they drift off the grid as autocast's do."""
    if not prec.master:
        return {}
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad and p.dtype == torch.float32}


def _master(p: torch.Tensor, start: torch.Tensor | None) -> torch.Tensor:
    """The float32 master of module weight ``p``: ``start`` (its loaded float32 value), else ``p`` upcast."""
    return (start if start is not None else p.detach().float().clone()).requires_grad_(True)


class MasterWeights:
    """The trainable parameters as the optimizer sees them.

    ``params``: what the optimizer steps and gradient clipping measures: float32 masters for the
    module's low-precision trainable weights under ``bf16-mixed``, else the module's own parameters.
    ``collect()`` after each backward moves the module's gradients onto the masters (adding in
    float32); ``publish()`` after each optimizer step writes the masters back into the module.
    start: ``loaded_float32(model)`` before the cast, the masters' starting values by name (else the
    module's weights, upcast)."""

    def __init__(self, model: torch.nn.Module, master: bool, start: dict[str, torch.Tensor] | None = None):
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        start = start or {}
        self.names = [n for n, _ in named]
        self.model_params = [p for _, p in named]
        self.params = [_master(p, start.get(n)) if master and p.dtype != torch.float32 else p for n, p in named]
        self._pairs = [(p, m) for p, m in zip(self.model_params, self.params) if m is not p]
        self._grad_bufs: dict[int, torch.Tensor] = {}  # pair index: its master's float32 gradient buffer

    @property
    def copies(self) -> bool:
        """True when some master is a separate float32 copy."""
        return bool(self._pairs)

    def collect(self) -> None:
        """Each module gradient copied (first micro-batch) or added into its master's float32 gradient,
        held in a buffer kept from step to step: a fresh float32 copy of every gradient would page-fault
        its way through the model's size in new memory at every step."""
        for i, (p, m) in enumerate(self._pairs):
            if p.grad is not None:
                if m.grad is None:
                    if i not in self._grad_bufs:
                        self._grad_bufs[i] = torch.empty_like(m)
                    m.grad = self._grad_bufs[i].copy_(p.grad)
                else:
                    m.grad.add_(p.grad)
                p.grad = None

    @torch.no_grad()
    def publish(self) -> None:
        for p, m in self._pairs:
            p.copy_(m)

    def zero_grad(self) -> None:
        for p in self.model_params + self.params:
            p.grad = None

    def state_dict(self, model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
        """``model``'s state dict with each copied weight replaced by its float32 master (None: no copies).
        Tied weights (one parameter under two names) map to the same master tensor."""
        if not self._pairs:
            return None
        by_ptr = {p.data_ptr(): m.detach() for p, m in self._pairs}
        return {k: by_ptr.get(v.data_ptr(), v) for k, v in model.state_dict().items()}

    def masters(self) -> list[torch.Tensor]:
        """The float32 copies (empty without copies), for checkpoints."""
        return [m.detach() for _, m in self._pairs]

    @torch.no_grad()
    def load_masters(self, masters: list[torch.Tensor]) -> None:
        """Restore ``masters()`` from a checkpoint and write them into the module."""
        if len(masters) != len(self._pairs):
            raise ValueError(f"the checkpoint holds {len(masters)} float32 master weights, this run has "
                             f"{len(self._pairs)}: was it saved with another model.precision?")
        for (_, m), saved in zip(self._pairs, masters):
            m.copy_(saved)
        self.publish()
