"""Checkpoints a resume needs, written atomically: tmp dir, then rename; keep the last K.

A checkpoint directory holds the model and tokenizer (``AutoModelForCausalLM.from_pretrained``
loads it directly; a LoRA run stores the adapter only) and ``trainer_state.pt``: optimizer,
scheduler, every rank's RNG states, step (the data cursor: batches are a function of the step)
and the metrics so far (and the best-metric state, ``reasoner.best``). ``best/`` (``run.best_metric``)
is written the same way, beside the last K.
"""
from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForCausalLM

from reasoner import config, distributed, lora, writes
from reasoner.config import ConfigError

STATE = "trainer_state.pt"


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(run_dir: Path, step: int, model, tokenizer, state: dict[str, Any], keep: int) -> Path:
    """Write checkpoints/step-XXXXXXX atomically and prune all but the newest ``keep``.

    Under torchrun every rank calls it (it gathers each rank's RNG states); rank 0 writes,
    then all ranks wait at a barrier. A LoRA policy saves its adapter only.
    """
    root = Path(run_dir) / "checkpoints"
    final = root / f"step-{step:07d}"
    rngs = distributed.gather_objects(_rng_state())  # [rank 0, rank 1, ...]
    unwrapped = getattr(model, "module", model)
    full = distributed.fsdp_full_state_dict(unwrapped) if _is_sharded(unwrapped) else None
    if distributed.is_main():
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".tmp-step-{step:07d}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            unwrapped.save_pretrained(tmp, **({"state_dict": full} if full is not None else {}))
            tokenizer.save_pretrained(tmp)
            torch.save({**state, "step": step, "rng": rngs}, tmp / STATE)
        except (OSError, RuntimeError) as e:  # a full disk surfaces as RuntimeError from torch's zip writer
            shutil.rmtree(tmp, ignore_errors=True)
            raise _write_error(final, e) from e
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    distributed.barrier()
    return final


def _write_error(final: Path, e: BaseException) -> Exception:
    """One line for a checkpoint that could not be written (full disk, permissions), naming the place."""
    return writes.write_error(final, e, "checkpoint ", "the previous checkpoints are intact")


def save_final(path: Path, model, tokenizer, weights: dict | None = None) -> None:
    """The trained model, loadable by ``from_pretrained``: a LoRA policy is saved merged (its
    adapter in ``path/adapter``; this ends the adapter). ``weights``: a state dict to save instead
    of the module's (the float32 masters of a bf16-mixed run). Under torchrun: collective, rank 0 writes."""
    unwrapped = getattr(model, "module", model)
    full = distributed.fsdp_full_state_dict(unwrapped) if _is_sharded(unwrapped) else weights
    if distributed.is_main():
        with writes.guard(path, "the model ", (OSError, RuntimeError), intact="the checkpoints are intact"):
            if lora.is_peft(unwrapped):
                lora.save_merged(unwrapped, path, tokenizer)
            else:
                unwrapped.save_pretrained(path, **({"state_dict": full} if full is not None else {}))
                tokenizer.save_pretrained(path)
    distributed.barrier()


def save_best(run_dir: Path, model, tokenizer, weights: dict | None, info: dict[str, Any]) -> Path:
    """``run_dir/best``: the model (``from_pretrained`` loads it; a LoRA policy: its adapter, the run goes
    on training it) and ``best.json`` (metric, value, step), written to a temporary directory and
    renamed. Under torchrun: collective, rank 0 writes."""
    import json

    run_dir, unwrapped = Path(run_dir), getattr(model, "module", model)
    best, tmp = run_dir / "best", run_dir / f".tmp-best-{os.getpid()}"
    if lora.is_peft(unwrapped):
        if distributed.is_main():
            shutil.rmtree(tmp, ignore_errors=True)
            with writes.guard(best, "the best adapter ", (OSError, RuntimeError), intact="the checkpoints are intact"):
                lora.save_adapter(unwrapped, tmp)
                tokenizer.save_pretrained(tmp)
    else:
        save_final(tmp, model, tokenizer, weights)
    if distributed.is_main():
        with writes.guard(best, "the best model ", intact="the checkpoints are intact"):
            (tmp / "best.json").write_text(json.dumps(info, indent=2))
        shutil.rmtree(best, ignore_errors=True)
        os.replace(tmp, best)
    distributed.barrier()
    return best


def save_config(cfg, path: Path) -> None:
    """config.yaml, written to a temporary file and renamed: a resume reads it, so a full disk must
    not leave half of it (one-line error, the checkpoints untouched)."""
    writes.replace_with(path, lambda tmp: config.save_config(cfg, tmp), intact="the checkpoints are untouched")


def _is_sharded(model) -> bool:
    return distributed.is_sharded(model)


def load_weights(model, ckpt: Path, dtype: torch.dtype, device) -> None:
    """Load a checkpoint's weights into ``model`` in place (the adapter only for a LoRA policy)."""
    if lora.is_peft(model):
        lora.load_adapter(model, ckpt)
        return
    weights = AutoModelForCausalLM.from_pretrained(ckpt, dtype=dtype).to(device).state_dict()
    if _is_sharded(model):  # FSDP2: every rank reads the full weights and keeps its shards
        distributed.fsdp_load_full(model, {k: v for k, v in weights.items() if k in model.state_dict()})
        return
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected:
        raise ValueError(f"{ckpt}: weights do not fit the model (unexpected keys {unexpected[:3]})")


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (a half-written one is a .tmp dir and never listed)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step-*") if (p / STATE).is_file())


def find_resume(run_dir: Path, resume: str) -> Path | None:
    if resume == "none":
        return None
    if resume == "auto":
        ckpts = list_checkpoints(run_dir)
        return ckpts[-1] if ckpts else None
    path = Path(resume)
    if not (path / STATE).is_file():
        raise FileNotFoundError(f"run.resume={resume!r}: no {STATE} there; give a checkpoint directory "
                                "(run.out_dir/checkpoints/step-XXXXXXX) or --resume auto (the newest in run.out_dir)")
    return path


def load_state(ckpt: Path, rank: int | None = None) -> dict[str, Any]:
    """Load trainer_state.pt and restore this rank's RNG states (rank 0's for a new extra rank)."""
    state = torch.load(Path(ckpt) / STATE, weights_only=False)
    rng = state["rng"]
    if isinstance(rng, list):
        rank = distributed.info().rank if rank is None else rank
        rng = rng[rank] if rank < len(rng) else rng[0]
    _set_rng_state(rng)
    return state


def clean_stale(run_dir: Path) -> list[Path]:
    """Remove what a kill during a save leaves: ``.tmp-step-*`` directories and step directories
    without their trainer state (half deleted), and the temporary files of ``writes.replace_with``;
    return what was removed."""
    root = Path(run_dir) / "checkpoints"
    stale = [p for p in root.glob(".tmp-step-*")] + [p for p in root.glob("step-*") if not (p / STATE).is_file()]
    stale += list(Path(run_dir).glob(".tmp-best-*"))
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    files = [p for p in Path(run_dir).glob(".*.tmp-*") if p.is_file()]  # .config.yaml.tmp-PID, ...
    for p in files:
        p.unlink(missing_ok=True)
    return stale + files


def prepare_run_dir(run_dir: Path, resume: str, overwrite: bool) -> None:
    """Before anything is written: the directory must be writable, and a fresh run (``resume=none``)
    refuses one that holds another run's checkpoints unless ``overwrite`` (they are then removed)."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"run.out_dir={str(run_dir)!r} is not writable ({e.strerror or e}); choose another "
                          "run.out_dir") from None
    clean_stale(run_dir)
    old = list_checkpoints(run_dir)
    if resume != "none" or not old:
        return
    if not overwrite:
        raise ConfigError(f"run.out_dir={str(run_dir)!r} holds another run's checkpoints (up to {old[-1].name}); "
                          "continue it with --resume auto, choose another run.out_dir, or set run.overwrite=true "
                          "to replace it")
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    shutil.rmtree(run_dir / "final", ignore_errors=True)
    shutil.rmtree(run_dir / "best", ignore_errors=True)
    shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)
    for name in ("samples.jsonl", "summary.json", "trackers.json"):
        (run_dir / name).unlink(missing_ok=True)
