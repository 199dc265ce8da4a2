"""``reasoner list``: every registry, so users see what names they can use."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def registries() -> dict[str, list[str]]:
    from reasoner import verifiers
    from reasoner.config import advantage_names
    from reasoner.data import DATASETS
    from reasoner.losses import AGGREGATIONS, KL_ESTIMATORS, POLICY_LOSSES, RATIO_LEVELS
    from reasoner.mismatch import IS_LEVELS, IS_MODES
    from reasoner.optim import SCHEDULES
    from reasoner.presets import PRESETS
    from reasoner.rewards import REWARDS
    from reasoner.trackers import TRACKERS

    return {"verifiers": verifiers.names(), "advantage estimators (algo.advantage)": advantage_names(),
            "policy losses (algo.policy_loss)": POLICY_LOSSES.names(),
            "ratio levels (algo.ratio_level)": RATIO_LEVELS.names(),
            "loss aggregation (algo.loss_agg)": AGGREGATIONS.names(),
            "KL estimators (algo.kl_estimator)": KL_ESTIMATORS.names(), "presets (algo.preset)": PRESETS.names(),
            "extra reward functions (algo.reward_weights)": REWARDS.names(),
            "mismatch weight levels (sampling.vllm_is_level)": IS_LEVELS.names(),
            "mismatch weight modes (sampling.vllm_is_mode)": IS_MODES.names(),
            "named datasets (data.train / data.eval)": DATASETS.names(),
            "learning-rate schedules (optim.schedule)": SCHEDULES.names(),
            "trackers (run.report_to)": TRACKERS.names()}


def main(args: argparse.Namespace) -> int:
    for title, names in registries().items():
        print(f"{title}:\n  " + ", ".join(names))
    return 0
