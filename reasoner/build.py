"""The build step: the config becomes the run's parts, once (``build(cfg) -> Run``).

Every config string is turned into an object here and nowhere else: the KL term (``reasoner.kl``),
the advantage stage (a group estimator or the critic: the registry the name is in decides), the
reward model (``algo.reward_model``, loaded and bound once, ``reasoner.reward_model``), the
old-log-prob policy (reuse / recompute / recompute with a mismatch correction, ``reasoner.mismatch``),
the reference runner, the sampler, the evaluator. ``reasoner.trainer.train`` is the loop over them;
the functions below it get the sections or values they read.
"""
from __future__ import annotations

import dataclasses
import functools
import sys
from pathlib import Path

import torch

from reasoner import verifiers
from reasoner.benchmarks.run import TrainingEval
from reasoner.benchmarks.suites import load_suite, resolve_suite
from reasoner import (checkpoint, config_checks, data, distributed, engine, kl, lora, precision, reward_model, runtime,
                      trackers)
from reasoner.advantages import ADVANTAGES, CRITIC_ESTIMATORS, GroupAdvantage
from reasoner.best import Best
from reasoner.breakdown import Breakdown
from reasoner.config import Config, ConfigError, SamplingConfig, to_dict
from reasoner.critic import Critic, CriticAdvantage, CriticParams
from reasoner.data import mixture
from reasoner.data.overlap import warn_overlap
from reasoner.dynamic import Collector
from reasoner.mismatch import Correction
from reasoner.models import load_model
from reasoner.optim import Optimizer
from reasoner.reference import OldLogp, make_runner
from reasoner.run import Run, StopAtStep
from reasoner.sampler import SamplingParams
from reasoner.sampler.processing import truncates
from reasoner.sampler.transformers import TransformersSampler
from reasoner.update import UpdateParams
from reasoner.verifiers.code import require_isolation


def build(cfg: Config) -> Run:
    """Steps 1-3 of ``train``: the run directory, the problems, the models and every part."""
    device, dd, is_sharded = _setup(cfg)
    out = Path(cfg.run.out_dir)
    if dd.is_main:
        checkpoint.prepare_run_dir(out, cfg.run.resume, cfg.run.overwrite)  # writable; not another run's; no stale tmp
        checkpoint.save_config(cfg, out / "config.yaml")  # written atomically: a resume reads it
    stop = StopAtStep(dd.rank, dd.world)  # before any fork: children leave SIGINT to this process
    if not sys.stderr.isatty():
        _quiet_progress_bars()  # a log file: no carriage-return bars from transformers and the hub
    sources = mixture.parse_sources(cfg.data.train)
    train_set, eval_set, suites = _problems(cfg, sources)
    train_set = _reward_model(cfg.algo, device, train_set)
    isolation = _check_sandbox(train_set + eval_set, cfg.run.allow_weak_sandbox)

    model, tok = load_model(cfg.model, device=str(device), kinds=cfg.data.synthetic_kinds)
    model, prec, start = runtime.prepare_policy(model, cfg.model, cfg.run.threads, device, is_sharded)
    ref = runtime.make_reference(model, cfg.algo.beta, is_sharded)  # before wrapping: FSDP2 shards in place
    eng = engine.get(cfg.run.engine)
    reference = make_runner(ref, cfg.run.reference_process, cfg.sampling.temperature, device, eng)
    advantage = _advantage_stage(model, cfg.algo, cfg.optim, cfg.sampling.group_size, eng)
    policy = distributed.wrap(model, cfg.run.parallel)  # DDP/FSDP2 under torchrun
    sampler = make_sampler(model, tok, cfg, device, eng.lean)
    render = functools.partial(data.render, tokenizer=tok, cfg=cfg.data)
    stream = runtime.problem_stream(train_set, mixture.weights(sources), cfg.run.batch_size, cfg.data.seed,
                                    dd.rank, dd.world)
    a, s = cfg.algo, cfg.sampling
    return Run(
        r=cfg.run, out=out, dd=dd, device=device, model=model, policy=policy, tok=tok, prec=prec,
        sampler=sampler, params=sampling_params(s),
        collect=Collector(stream, render, sampler, a, cfg.run.batch_size, cfg.run.steps,
                          a.max_sampling_tries if a.dynamic_sampling else 0),
        reference=reference, old_logp=_old_logp(model, cfg, eng), advantage=advantage, engine=eng,
        kl=kl.make(a.kl_in, a.beta, a.kl_estimator, a.kl_target, a.kl_horizon), update=UpdateParams.of(cfg),
        opt=Optimizer(model, cfg.optim, cfg.run.steps, master=prec.master, start=start),  # AdamW, fp32 masters
        evaluate=TrainingEval(sampler, (eval_set, [render(p) for p in eval_set]),
                              {k: (v, data.render_all(v, tok, cfg.data)) for k, v in suites.items()}, s.max_new_tokens,
                              cfg.run.eval_samples, s.temperature, s.top_p, cfg.run.seed,
                              top_k=s.top_k, min_p=s.min_p, stop=tuple(s.stop)),
        log=distributed.metrics_log(out, sinks=trackers.make(cfg.run.report_to, out, to_dict(cfg),
                                                             cfg.run.tracker_project, dd.is_main)),
        isolation=isolation, n_eval=len(eval_set), stop=stop, best=Best.of(cfg.run),
        breakdown=Breakdown.of([s.label for s in sources], train_set))


def sampling_params(s: SamplingConfig) -> SamplingParams:
    """The run's sampling parameters from ``sampling.*`` (the seed is set per step: ``Run.sampling``)."""
    return SamplingParams(n=s.group_size, temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens,
                          top_k=s.top_k, min_p=s.min_p, stop=tuple(s.stop))


def _setup(cfg: Config) -> tuple[torch.device, distributed.DistInfo, bool]:
    """Before any model is loaded: config checks, seeds, device, process group."""
    is_sharded = runtime.sharded(cfg.run.parallel)
    lora.check_config(cfg.model)
    config_checks.backend(cfg.sampling.backend, cfg.run.parallel)  # vLLM installed; no sharded weights
    trackers.check(cfg.run.report_to)  # known kinds, extras installed (also in config.validate)
    distributed.check_config(cfg.run.batch_size, distributed.env_info().world)
    precision.check(cfg.model.precision, is_sharded)
    check_critic(cfg.algo.advantage, is_sharded)
    runtime.seed_everything(cfg.run.seed)  # the same on every rank: identical initial weights and adapters
    device = distributed.local_device(runtime.pick_device(cfg.run.device))
    return device, distributed.init(device), is_sharded


def _problems(cfg: Config, sources: list[mixture.Source]):
    """(train set: every source's problems, held-out set, the run.eval_suites' problem lists); one-line
    errors before any model loads: a source that cannot be loaded or is empty, a row naming an unknown
    verifier."""
    d = cfg.data
    parts = mixture.load_sources(sources, d)  # each names its entry of data.train in its errors
    eval_set = _load(d.eval, d.eval_split, d, "data.eval")
    eval_set = eval_set[: d.eval_size] if d.eval_size else eval_set
    suites = {spec: load_suite(resolve_suite(spec), d)
              for spec in [x.strip() for x in cfg.run.eval_suites.split(",") if x.strip()]}
    named = {f"run.eval_suites: {spec}": problems for spec, problems in suites.items()}
    train = {s.where: part for s, part in zip(sources, parts)}
    for key, problems in {**train, f"data.eval={d.eval!r}": eval_set, **named}.items():
        try:
            verifiers.check_names(problems)
        except ValueError as e:
            raise data.DataError(f"{key}: {e.args[0]} (for a run: run.plugins=mypkg.verifiers or ./my_verifiers.py)"
                                 ) from None
    train_set = parts[0] if len(parts) == 1 else [p for part in parts for p in part]
    warn_overlap(train_set, {d.eval: eval_set})
    return train_set, eval_set, suites


def _load(spec: str, split: str, d, key: str):
    """``data.load_problems``; its one-line error names the config key (data.train / data.eval)."""
    try:
        return data.load_problems(spec, split, d)
    except data.DataError as e:
        raise data.DataError(f"{key}={spec!r}: {e.args[0]}") from None


def _reward_model(algo, device: torch.device, train_set: list) -> list:
    """Load and bind ``algo.reward_model`` once, on the trainer's device (``reasoner.reward_model``); with
    ``algo.reward_model_verifier`` it replaces the verifier of every training problem (the held-out set
    keeps its own: held-out accuracy stays the rule-based one). Returns the training set."""
    rm = reward_model.from_config(algo, device)
    if rm is None and any(p.verifier == reward_model.NAME for p in train_set):
        raise ConfigError(f"data.train has problems with verifier {reward_model.NAME!r}: set algo.reward_model")
    if not algo.reward_model_verifier:
        return train_set
    return [dataclasses.replace(p, verifier=reward_model.NAME) for p in train_set]


def _check_sandbox(problems, allow_weak: bool) -> str | None:
    return require_isolation(allow_weak) if any(p.verifier == "code" for p in problems) else None


def check_critic(advantage: str, is_sharded: bool) -> None:
    """Before any model loads: the critic (gae) trains through DDP only, not FSDP2."""
    if advantage in CRITIC_ESTIMATORS and is_sharded:
        raise ConfigError(f"run.parallel=fsdp with algo.advantage={advantage} is not supported under torchrun (the "
                          "critic trains through DDP only); use run.parallel=ddp")


def _advantage_stage(model, algo, optim, group_size: int, eng: engine.Engine):
    """A group estimator's stage, or the critic's for a name in CRITIC_ESTIMATORS (gae); under torchrun
    the critic trains through DDP (``reasoner.critic``)."""
    if algo.advantage not in CRITIC_ESTIMATORS:
        return GroupAdvantage(ADVANTAGES.get(algo.advantage), group_size)
    return CriticAdvantage(Critic(model, CriticParams.of(algo), optim, eng))


def _old_logp(model, cfg: Config, eng: engine.Engine) -> OldLogp:
    """Reuse (old = the current log-probs, detached) when this very model sampled and one epoch of one
    minibatch makes them equal; recompute them otherwise (vLLM), with the mismatch correction of
    ``sampling.vllm_tis_cap`` / ``vllm_is_level`` / ``vllm_is_mode`` for engine rollouts. The ratio is
    between the trainer's tempered distributions; the sampler's own log-probs (renormalised after
    top_k/min_p/top_p) serve the KL-in-reward estimate and the mismatch weights, whose trainer side is then
    taken under that same processed distribution (``reasoner.sampler.vllm.processed_trainer_logp``)."""
    exact = cfg.sampling.backend == "transformers"
    reuse = exact and cfg.algo.ppo_epochs * cfg.algo.minibatches == 1
    correction = None if exact else Correction.of(cfg.sampling)
    params = sampling_params(cfg.sampling)
    matched = None
    if correction is not None and truncates(params):  # compare like with like: both after top_k/min_p/top_p
        from reasoner.sampler.vllm import processed_trainer_logp

        matched = functools.partial(processed_trainer_logp, model, params=params)
    return OldLogp(model, cfg.sampling.temperature, not reuse, correction, eng, matched)


def make_sampler(model, tokenizer, cfg: Config, device: torch.device, lean: bool = True):
    """The sampler of ``sampling.backend``: transformers (this process), or a colocated vLLM engine."""
    if cfg.sampling.backend == "vllm":
        from reasoner.sampler.vllm import EngineParams, VLLMSampler

        params = EngineParams(seed=cfg.run.seed, memory_fraction=cfg.sampling.vllm_gpu_memory_utilization,
                              model=cfg.model, kinds=cfg.data.synthetic_kinds)
        return VLLMSampler(model, tokenizer, params)
    lockstep = runtime.sharded(cfg.run.parallel)  # sharded weights: the same calls on every rank
    return TransformersSampler(model, tokenizer, device=device, lockstep=lockstep, lean=lean)


def _quiet_progress_bars() -> None:
    try:
        import huggingface_hub.utils
        import transformers.utils.logging

        transformers.utils.logging.disable_progress_bar()
        huggingface_hub.utils.disable_progress_bars()
    except (ImportError, AttributeError):
        pass
