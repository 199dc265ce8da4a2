"""Named recipes that set several algorithm knobs at once (``algo.preset=NAME``).

Values a user gives explicitly (YAML or command line) win over the preset's.
"""
from __future__ import annotations

from reasoner.registry import Registry

PRESETS: Registry[dict] = Registry("preset")

# DeepSeekMath (Shao et al. 2024): group-std advantage, per-sequence token mean, k3 KL in the loss.
PRESETS.register("grpo")({"algo.advantage": "grpo", "algo.loss_agg": "seq_mean_token_mean",
                          "algo.kl_estimator": "k3", "algo.kl_in": "loss", "algo.eps_low": 0.2,
                          "algo.eps_high": 0.2})
# Dr. GRPO (Liu et al. 2025): no std normalisation, sum over tokens / constant length, no KL.
PRESETS.register("dr_grpo")({"algo.advantage": "dr_grpo", "algo.loss_agg": "seq_mean_token_sum_norm",
                             "algo.beta": 0.0, "algo.eps_low": 0.2, "algo.eps_high": 0.2})
# DAPO (Yu et al. 2025): clip-higher, token-mean, dynamic sampling, soft overlong punishment, no KL.
PRESETS.register("dapo")({"algo.advantage": "grpo", "algo.loss_agg": "token_mean", "algo.beta": 0.0,
                          "algo.eps_low": 0.2, "algo.eps_high": 0.28, "algo.dynamic_sampling": True,
                          "algo.overlong": "soft"})
# RLOO (Ahmadian et al. 2024): leave-one-out baseline, k3 KL in the loss.
PRESETS.register("rloo")({"algo.advantage": "rloo", "algo.loss_agg": "seq_mean_token_mean",
                          "algo.kl_estimator": "k3", "algo.kl_in": "loss"})
# JustRL (2025): fixed hyperparameters, clip 0.2/0.28, no KL, no length penalty, constant lr.
PRESETS.register("justrl")({"algo.advantage": "grpo", "algo.loss_agg": "token_mean", "algo.beta": 0.0,
                            "algo.eps_low": 0.2, "algo.eps_high": 0.28, "algo.overlong": "none",
                            "algo.dynamic_sampling": False, "optim.schedule": "constant"})
# GSPO (Zheng et al. 2025, "Group Sequence Policy Optimization", v2 sec. 5.1): one length-normalised
# sequence ratio, clipped at 3e-4 / 4e-4, the rollout batch split into 4 minibatches (where the ratio
# departs from 1), no KL; per-sequence mean as TRL's paper index reproduces it (loss_type="grpo",
# importance_sampling_level="sequence", beta=0).
PRESETS.register("gspo")({"algo.advantage": "grpo", "algo.policy_loss": "ppo_clip", "algo.ratio_level": "sequence",
                          "algo.loss_agg": "seq_mean_token_mean", "algo.beta": 0.0, "algo.eps_low": 3e-4,
                          "algo.eps_high": 4e-4, "algo.minibatches": 4})
# CISPO (Chen et al. 2025, "MiniMax-M1", sec. 3.1): clipped, detached IS weight times the log-prob,
# normalised by the batch's token count (TRL loss_type="cispo"), upper bound only. TRL's docs take
# the bound 5.0 from ScaleRL (Khatri et al. 2025, "The Art of Scaling RL Compute for LLMs"):
# TRL's epsilon_high is the bound itself, here it is 1 + eps_high, so eps_high = 4. No KL (TRL's beta=0).
PRESETS.register("cispo")({"algo.advantage": "grpo", "algo.policy_loss": "cispo", "algo.ratio_level": "token",
                           "algo.loss_agg": "token_mean", "algo.beta": 0.0, "algo.eps_high": 4.0})
