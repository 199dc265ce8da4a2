"""Checkpoints a resume needs, written atomically: tmp dir, then rename; keep the last K.

A checkpoint directory holds the model and tokenizer (``AutoModelForCausalLM.from_pretrained``
loads it directly) and ``trainer_state.pt``: optimizer, scheduler, RNG states, step, data
cursor and the metrics so far.
"""
from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

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
    """Write checkpoints/step-XXXXXXX atomically and prune all but the newest ``keep``."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:07d}"
    tmp = root / f".tmp-step-{step:07d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    unwrapped = getattr(model, "module", model)
    unwrapped.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    torch.save({**state, "step": step, "rng": _rng_state()}, tmp / STATE)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


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
        raise FileNotFoundError(f"run.resume={resume!r}: no {STATE} there")
    return path


def load_state(ckpt: Path) -> dict[str, Any]:
    """Load trainer_state.pt and restore the RNG states it holds."""
    state = torch.load(Path(ckpt) / STATE, weights_only=False)
    _set_rng_state(state["rng"])
    return state
