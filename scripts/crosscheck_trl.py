"""Cross-check reasoner's advantages and policy loss against TRL's real code paths.

    pip install trl        # benchmark-only dependency (extra "bench"); never needed at run time
    python scripts/crosscheck_trl.py [--seed 0] [--groups 4] [--group-size 6] [--tokens 7]

No TRL formula is re-implemented here. A real ``trl.GRPOTrainer`` / ``trl.RLOOTrainer`` is built
around a throw-away tiny random model (built from a config, no download) and:

* advantages: the trainer's own ``_generate_and_score_completions`` runs on N = B*G rows whose
  reward function returns fixed random rewards; its ``advantages`` output is compared with ours.
* loss: the trainer's own ``_compute_loss`` runs with its log-prob forward replaced by fixed
  random tensors (logp, old logp, ref logp, mask, advantages); the loss value and d loss / d logp
  are compared with ``reasoner.losses.policy_loss`` for every case of ``loss_cases``: TRL's
  grpo / bnpo / dr_grpo loss types, their ``importance_sampling_level="sequence"`` (GSPO) and
  ``loss_type="cispo"``.

Where the definitions differ, the script says so instead of comparing (see DIFFERENCES).
``tests/test_trl_crosscheck.py`` runs the same cases under pytest (skipped without TRL).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from types import MethodType
from typing import NamedTuple

import torch

from reasoner.advantages import ADVANTAGES
from reasoner.losses import LossParams, policy_loss

# (TRL setting) -> our name, for the quantities whose definitions coincide.
ADV_PAIRS = [  # (trainer, config overrides, our estimator)
    ("grpo", {"scale_rewards": "group"}, "grpo"),
    ("grpo", {"scale_rewards": "none"}, "dr_grpo"),
    ("rloo", {"normalize_advantages": False}, "rloo"),
]
LOSS_PAIRS = {"grpo": "seq_mean_token_mean", "bnpo": "token_mean", "dr_grpo": "seq_mean_token_sum_norm"}
DIFFERENCES = [
    "reinforce_pp_baseline: TRL's scale_rewards='batch' centres by the group mean like it but divides by the "
    "batch std of the RAW rewards (+ 1e-4); ours divides by the batch std of the centred rewards (+ 1e-6), "
    "as REINFORCE++-baseline does; not compared.",
    "cispo: TRL's epsilon_high is the IS weight's upper bound itself (5.0 recommended); ours is 1 + "
    "algo.eps_high (the cispo preset's eps_high = 4); neither has a lower bound. The cases map one to the other.",
    "sampling.vllm_is_level / vllm_is_mode (reasoner.mismatch) follow TRL's vllm_importance_sampling_mode, "
    "which runs only inside TRL's vLLM generation path; tested by hand (tests/test_mismatch.py), not here.",
    "grpo advantages: TRL divides by (std + 1e-4), reasoner by (std + 1e-6) (docs/algorithms.md); "
    "both use the Bessel-corrected std, so the gap is |A| * ~1e-4 / std, not a definition change.",
    "batch_mean / reinforce_pp: TRL's scale_rewards='batch' keeps the GROUP mean and divides by the "
    "batch std (neither of ours); not compared.",
    "loss_type 'dapo' in TRL normalises by the token count of the whole generation batch across "
    "processes and accumulation steps; on one process with one step it equals 'bnpo' (token_mean).",
    "TRL >= 1.x multiplies the KL term by the importance ratio by default (use_bias_correction_kl, "
    "DeepSeek-V3.2); reasoner adds plain beta * k3 as in GRPO, so the loss is compared with it off.",
    "dual clip, kl_in='reward', k1/k2 KL estimators and adaptive KL have no TRL GRPO counterpart "
    "(TRL uses k3 in the loss only); TRL's entropy bonus is always a token mean, ours follows "
    "loss_agg, so it is compared only with token_mean.",
]


def save_tiny_model(out_dir: str) -> str:
    """A random 1-layer Qwen2 with a 29-word tokenizer, saved to ``out_dir/tiny`` (TRL builds its
    reference model from the policy's path, so the model must live on disk)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    words = ["[PAD]", "[EOS]", "[UNK]"] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", eos_token="[EOS]", unk_token="[UNK]")
    cfg = Qwen2Config(vocab_size=len(words), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                      pad_token_id=0, eos_token_id=1, bos_token_id=1)
    path = f"{out_dir}/tiny"
    Qwen2ForCausalLM(cfg).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_trainer(kind: str, n: int, g: int, t: int, out_dir: str, **overrides):
    """A real TRL trainer of ``kind`` (grpo | rloo) whose reward is the row's ``target`` column."""
    from datasets import Dataset
    import trl

    def reward_from_column(prompts, completions, target, **kwargs):
        return [float(x) for x in target]

    from transformers import AutoTokenizer

    model = f"{out_dir}/tiny"
    config_cls, trainer_cls = {"grpo": (trl.GRPOConfig, trl.GRPOTrainer), "rloo": (trl.RLOOConfig, trl.RLOOTrainer)}[kind]
    args = config_cls(output_dir=out_dir, per_device_train_batch_size=n, num_generations=g,
                      max_completion_length=t, report_to=[], use_cpu=True, logging_steps=1, **overrides)
    data = Dataset.from_dict({"prompt": ["a b c"] * n, "target": [0.0] * n})
    return trainer_cls(model=model, reward_funcs=reward_from_column, args=args,
                       train_dataset=data, processing_class=AutoTokenizer.from_pretrained(model))


def trl_advantages(trainer, rewards: torch.Tensor) -> torch.Tensor:
    """Run the trainer's own scoring step on rows whose reward is fixed; return its advantages."""
    rows = [{"prompt": "a b c", "target": r} for r in rewards.flatten().tolist()]
    trainer.model.train()
    out = trainer._generate_and_score_completions(rows)
    return out["advantages"].view_as(rewards)


def random_batch(n: int, t: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    lengths = torch.randint(1, t + 1, (n,), generator=g)
    mask = torch.arange(t)[None] < lengths[:, None]
    old = -torch.rand(n, t, generator=g) * 3
    return {
        "mask": mask,
        "old": old,
        "logp": old + 0.4 * torch.randn(n, t, generator=g),  # ratios roughly in [0.3, 3]: clipping active
        "ref": old + 0.3 * torch.randn(n, t, generator=g),
        "adv": torch.randn(n, generator=g),
        "entropy": torch.rand(n, t, generator=g) * 2,
    }


def trl_loss(trainer, b: dict[str, torch.Tensor]) -> tuple[float, torch.Tensor]:
    """The trainer's own ``_compute_loss`` with its forward pass replaced by the fixed tensors."""
    logp = b["logp"].clone().requires_grad_(True)

    def fixed_forward(self, model, input_ids, attention_mask, logits_to_keep, **kw):
        return logp, b["entropy"], None

    trainer._get_per_token_logps_and_entropies = MethodType(fixed_forward, trainer)
    n, t = b["mask"].shape
    inputs = {
        "prompt_ids": torch.ones(n, 2, dtype=torch.long), "prompt_mask": torch.ones(n, 2, dtype=torch.long),
        "completion_ids": torch.ones(n, t, dtype=torch.long), "completion_mask": b["mask"].long(),
        "advantages": b["adv"], "old_per_token_logps": b["old"], "ref_per_token_logps": b["ref"],
        "num_items_in_batch": b["mask"].sum(),
    }
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by transformers.Trainer.training_step; one micro-batch
    loss = trainer._compute_loss(trainer.model, inputs)
    loss.backward()
    return loss.item(), logp.grad


def ours_loss(b: dict[str, torch.Tensor], params: LossParams, beta: float) -> tuple[float, torch.Tensor]:
    logp = b["logp"].clone().requires_grad_(True)
    out = policy_loss(logp, b["old"], b["adv"], b["mask"], params, ref_logp=b["ref"], beta=beta, entropy=b["entropy"])
    out.loss.backward()
    return out.loss.item(), logp.grad


class LossCase(NamedTuple):
    """One loss comparison: TRL GRPOConfig overrides, our LossParams keywords, the KL coefficient."""

    label: str
    trl: dict
    ours: dict
    beta: float


def _case(loss_type: str, agg: str, beta: float, ent: float = 0.0, level: str = "token",
          eps: tuple[float, float] = (0.2, 0.28)) -> LossCase:
    """TRL's clipped-surrogate loss types (token or sequence ratio) against ours."""
    label = f"TRL {loss_type:8s} {level:8s} vs {agg:24s} beta={beta} ent={ent} eps={eps[0]}/{eps[1]}"
    trl = {"loss_type": loss_type, "importance_sampling_level": level, "epsilon": eps[0], "epsilon_high": eps[1]}
    ours = {"loss_agg": agg, "ratio_level": level, "eps_low": eps[0], "eps_high": eps[1]}
    return LossCase(label, {**trl, "beta": beta, "entropy_coef": ent}, {**ours, "entropy_coef": ent}, beta)


def _cispo_case(bound: float, beta: float, ent: float = 0.0, level: str = "token") -> LossCase:
    """TRL's cispo (its epsilon_high is the weight's bound) against ours (bound 1 + eps_high, token_mean)."""
    label = f"TRL cispo    {level:8s} vs cispo token_mean         beta={beta} ent={ent} bound={bound}"
    trl = {"loss_type": "cispo", "importance_sampling_level": level, "epsilon_high": bound, "beta": beta,
           "entropy_coef": ent}
    ours = {"policy_loss": "cispo", "loss_agg": "token_mean", "ratio_level": level, "eps_high": bound - 1.0,
            "entropy_coef": ent}
    return LossCase(label, trl, ours, beta)


def loss_cases() -> list[LossCase]:
    """Every compared loss: TRL's grpo / bnpo / dr_grpo (token ratio, and GSPO's sequence ratio) and cispo.

    TRL's entropy bonus is always a token mean, so it is compared only where ours is one (token_mean)."""
    cases = []
    for loss_type, agg in LOSS_PAIRS.items():
        for beta, ent in [(0.0, 0.0), (0.04, 0.0)] + ([(0.04, 0.01)] if agg == "token_mean" else []):
            cases.append(_case(loss_type, agg, beta, ent))
        cases.append(_case(loss_type, agg, 0.0, level="sequence"))  # GSPO's ratio under each aggregation
    cases += [_case("grpo", "seq_mean_token_mean", 0.04, level="sequence"),
              _case("grpo", "seq_mean_token_mean", 0.0, level="sequence", eps=(3e-4, 4e-4))]  # the gspo preset
    cases += [_cispo_case(5.0, 0.0), _cispo_case(1.5, 0.0), _cispo_case(1.5, 0.04, 0.01),  # 5.0: the cispo preset
              _cispo_case(1.5, 0.0, level="sequence")]
    return cases


def compare_loss(case: LossCase, b: dict[str, torch.Tensor], tmp: str, g: int) -> tuple[float, float]:
    """(|loss difference|, max |d loss / d logp difference|) of one case on the batch ``b``."""
    n, t = b["mask"].shape
    trainer = build_trainer("grpo", n, g, t, tmp, use_bias_correction_kl=False, **case.trl)
    theirs, their_grad = trl_loss(trainer, b)
    ours, our_grad = ours_loss(b, LossParams(kl_estimator="k3", norm_len=t, **case.ours), case.beta)
    return abs(theirs - ours), (their_grad - our_grad).abs().max().item()


def random_rewards(seed: int, groups: int, group_size: int) -> torch.Tensor:
    """[B, G] float rewards, distinct within groups, and one uniform group (zero std)."""
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randint(0, 2, (groups, group_size), generator=g).float()
    rewards += 0.1 * torch.rand(rewards.shape, generator=g)
    rewards[0] = 1.0
    return rewards


def compare_advantages(kind: str, overrides: dict, ours: str, rewards: torch.Tensor, tmp: str) -> float:
    """Max |TRL's advantages - ours| for one ADV_PAIRS entry."""
    trainer = build_trainer(kind, rewards.numel(), rewards.shape[1], 3, tmp, beta=0.0, **overrides)
    return (trl_advantages(trainer, rewards) - ADVANTAGES.get(ours)(rewards)).abs().max().item()


def grpo_epsilon_gap(rewards: torch.Tensor) -> float:
    """The grpo gap the 1e-6 vs 1e-4 epsilon alone predicts: max |r - mean| * (1/(s + 1e-6) - 1/(s + 1e-4))."""
    std = rewards.std(dim=1, keepdim=True)
    return (ADVANTAGES.get("dr_grpo")(rewards).abs() * (1 / (std + 1e-6) - 1 / (std + 1e-4))).max().item()


def check_advantages(args, tmp: str) -> list[tuple[str, float]]:
    rewards = random_rewards(args.seed, args.groups, args.group_size)
    rows = [(f"advantage  TRL {kind} {overrides} vs {ours}", compare_advantages(kind, overrides, ours, rewards, tmp))
            for kind, overrides, ours in ADV_PAIRS]
    print(f"(grpo: the 1e-6 vs 1e-4 epsilon alone predicts a max gap of {grpo_epsilon_gap(rewards):.3e})")
    return rows


def check_losses(args, tmp: str) -> list[tuple[str, float]]:
    g = torch.Generator().manual_seed(args.seed + 1)
    b = random_batch(args.groups * args.group_size, args.tokens, g)
    rows = []
    for case in loss_cases():
        value, grad = compare_loss(case, b, tmp, args.group_size)
        rows += [(f"loss       {case.label} value", value), (f"loss       {case.label} d/dlogp", grad)]
    return rows


def quiet_transformers() -> None:
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--groups", type=int, default=4)
    p.add_argument("--group-size", type=int, default=6)
    p.add_argument("--tokens", type=int, default=7)
    args = p.parse_args(argv)
    try:
        import trl
    except ImportError:
        print("trl is not installed: `pip install trl` (benchmark-only) to run this cross-check.")
        return 2
    torch.manual_seed(args.seed)
    quiet_transformers()
    print(f"torch {torch.__version__}, trl {trl.__version__}; B={args.groups} G={args.group_size} T={args.tokens}")
    with tempfile.TemporaryDirectory() as tmp:
        save_tiny_model(tmp)
        rows = check_advantages(args, tmp) + check_losses(args, tmp)
    width = max(len(r[0]) for r in rows)
    for label, diff in rows:
        print(f"{label:{width}s}  max |diff| = {diff:.3e}")
    print(f"largest absolute difference overall: {max(d for _, d in rows):.3e}")
    print("Not compared / known differences:")
    for line in DIFFERENCES:
        print(f"  - {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
