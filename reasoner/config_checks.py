"""The checks of ``config.validate`` that span keys of one section (ranges, combinations, paths),
each given the section it reads. Fixed choices and signs are checked in ``config`` itself."""
from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from reasoner.errors import ConfigError


def data(d) -> None:
    """data.train: one source or several with weights (``reasoner.data.mixture.parse_sources``)."""
    importlib.import_module("reasoner.data.mixture").parse_sources(d.train)


def algo(a) -> None:
    """GAE's gamma/lam in [0, 1], the clip bounds, the policy loss's dual clip, reward weights, reward model."""
    for name in ("gamma", "lam"):
        if not 0 <= getattr(a, name) <= 1:
            raise ConfigError(f"algo.{name}={getattr(a, name)!r} must be in [0, 1]")
    if a.eps_low >= 1:
        raise ConfigError(f"algo.eps_low={a.eps_low!r} must be < 1 (the ratio's lower clip is 1 - eps_low)")
    if a.dual_clip != 0 and a.dual_clip <= 1:
        raise ConfigError(f"algo.dual_clip={a.dual_clip!r} must be 0 (off) or > 1")
    _loss_kind(a)
    try:
        importlib.import_module("reasoner.rewards").check_weights(a.reward_weights)
    except (KeyError, ValueError) as e:
        raise ConfigError(f"algo.reward_weights: {e.args[0]}") from None
    _reward_model(a)


def sampling(s) -> None:
    """The mismatch cap, top_p, min_p, stop strings."""
    if s.vllm_tis_cap != 0 and s.vllm_tis_cap <= 1:
        raise ConfigError(f"sampling.vllm_tis_cap={s.vllm_tis_cap!r} must be 0 (off) or > 1 (weights are "
                          "truncated at the cap, or masked outside [1/cap, cap])")
    if not 0 < s.top_p <= 1:
        raise ConfigError(f"sampling.top_p={s.top_p!r} must be in (0, 1]")
    if not 0 <= s.min_p < 1:
        raise ConfigError(f"sampling.min_p={s.min_p!r} must be in [0, 1)")
    if not all(s.stop):
        raise ConfigError(f"sampling.stop={s.stop!r}: an empty stop string would end every completion")


def backend(name: str, parallel: str) -> None:
    """sampling.backend=vllm: vLLM importable, and replicated weights (the engine is pushed whole tensors)."""
    if name != "vllm":
        return
    if parallel == "fsdp":
        raise ConfigError("sampling.backend=vllm with run.parallel=fsdp: the engine is pushed whole weights, and FSDP2 "
                          "shards them across ranks (they are not gathered before the push); use run.parallel=ddp or "
                          "sampling.backend=transformers")
    if importlib.util.find_spec("vllm") is None:
        from reasoner.sampler.vllm import MISSING

        raise ConfigError(MISSING)


def group_size(size: int, advantage: str, critic: bool) -> None:
    """A group estimator needs two completions per problem at least."""
    if size < 2 and not critic:
        raise ConfigError(f"sampling.group_size={size} with algo.advantage={advantage}: a group estimator "
                          "compares each completion with the others of its group, so one completion per problem "
                          "gives zero advantage and trains nothing; use sampling.group_size>=2 (or "
                          "algo.advantage=gae, which needs no group)")


def run(r, optim) -> None:
    """Trackers (known kinds, their optional extras installed), best checkpoint / early stopping, the LR schedule."""
    importlib.import_module("reasoner.trackers").check(r.report_to)
    if r.best_metric and not r.eval_every:
        raise ConfigError(f"run.best_metric={r.best_metric!r} needs evaluations during training: set "
                          "run.eval_every>0 (it is 0: only before and after), or run.best_metric='' to turn it off")
    if r.patience and not r.best_metric:
        raise ConfigError(f"run.patience={r.patience} counts evaluations without a new best of run.best_metric; "
                          "set run.best_metric (e.g. eval/accuracy) or run.patience=0")
    importlib.import_module("reasoner.optim").check_schedule(optim, r.steps)


def _reward_model(a) -> None:
    """algo.reward_model: a local directory with a config.json, given whenever the run asks for it."""
    path = Path(a.reward_model).expanduser() if a.reward_model else None
    if path is not None and not (path / "config.json").is_file():
        raise ConfigError(f"algo.reward_model={a.reward_model!r}: no save_pretrained sequence classifier there "
                          "(no config.json; build one with scripts/train_reward_model.py)")
    if path is None and ("reward_model" in a.reward_weights or a.reward_model_verifier):
        raise ConfigError("algo.reward_model is empty, but algo.reward_weights or algo.reward_model_verifier asks "
                          "for the 'reward_model' reward: set algo.reward_model=<local dir>")


def _loss_kind(a) -> None:
    """algo.dual_clip bounds the clipped surrogate: only policy losses that have one take it."""
    losses = importlib.import_module("reasoner.losses")
    if a.dual_clip and not losses.POLICY_LOSSES.get(a.policy_loss).dual_clip:
        raise ConfigError(f"algo.dual_clip={a.dual_clip!r} applies to algo.policy_loss="
                          f"{' | '.join(losses.dual_clip_losses())} only, not {a.policy_loss}; set algo.dual_clip=0")
