"""LoRA through ``peft``: the policy trains small adapters; the reference is the same weights
with the adapters switched off, so no second copy of the model is held.

Checkpoints for resuming hold the adapter only (``adapter_model.safetensors``, megabytes);
the final model is saved merged (loads with plain ``AutoModelForCausalLM.from_pretrained``)
with the adapter beside it in ``final/adapter``.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from reasoner.config import ConfigError, ModelConfig

ADAPTER_FILE = "adapter_model.safetensors"


def enabled(cfg: ModelConfig) -> bool:
    return cfg.lora_r > 0


def check_config(cfg: ModelConfig) -> None:
    """Fail before any model is loaded: peft installed, sane rank, alpha, dropout and targets."""
    if not enabled(cfg):
        if cfg.lora_r < 0:
            raise ConfigError(f"model.lora_r={cfg.lora_r} must be >= 0 (0 = no LoRA)")
        return
    if importlib.util.find_spec("peft") is None:
        raise ConfigError(f"model.lora_r={cfg.lora_r} needs the package 'peft': pip install peft "
                          "(or set model.lora_r=0 to train all weights)")
    if cfg.lora_alpha <= 0:
        raise ConfigError(f"model.lora_alpha={cfg.lora_alpha} must be > 0")
    if not 0 <= cfg.lora_dropout < 1:
        raise ConfigError(f"model.lora_dropout={cfg.lora_dropout} must be in [0, 1)")
    if not targets(cfg):
        raise ConfigError("model.lora_targets is empty; name the modules to adapt, e.g. q_proj,v_proj")


def targets(cfg: ModelConfig) -> list[str]:
    return [t.strip() for t in cfg.lora_targets.split(",") if t.strip()]


def wrap(model, cfg: ModelConfig):
    """The model as a ``peft`` PeftModel with fresh adapters (only they require grad)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                        target_modules=targets(cfg), task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, config)
    except ValueError as err:  # no module matched the targets
        raise ConfigError(f"model.lora_targets={cfg.lora_targets!r}: {err}") from err


def is_peft(model) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


class AdapterOffReference:
    """The reference policy of a LoRA run: the base weights, adapters disabled for the call.

    Callable like a model (``completion_logp`` calls ``model(**inputs)``); runs in eval mode
    without gradients and restores the policy's train/eval mode afterwards.
    """

    def __init__(self, model):
        self.model = model

    def __call__(self, *args, **kwargs):
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad(), self.model.disable_adapter():
                return self.model(*args, **kwargs)
        finally:
            self.model.train(was_training)

    def eval(self):
        return self


def save_adapter(model, path: Path) -> None:
    """Adapter weights + adapter_config.json only (what a resume needs on top of the base)."""
    model.save_pretrained(path)


def load_adapter(model, path: Path) -> None:
    """Load adapter weights saved by ``save_adapter`` into a PeftModel, in place."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    file = Path(path) / ADAPTER_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no {ADAPTER_FILE}; was this checkpoint written by a LoRA run?")
    device = next(model.parameters()).device
    result = set_peft_model_state_dict(model, load_file(file, device=str(device)))
    bad = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
    if bad:
        raise ValueError(f"{path}: adapter keys do not fit the model: {bad[:3]}")


def save_merged(model, path: Path, tokenizer=None) -> None:
    """Save the adapter to ``path/adapter``, then the merged weights to ``path`` (destroys the adapter)."""
    path = Path(path)
    save_adapter(model, path / "adapter")
    merged = model.merge_and_unload()
    merged.save_pretrained(path)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
