"""The training loop: problems -> sampler -> verifiers -> advantages -> loss -> update -> eval."""
from __future__ import annotations

from reasoner import seeds
from reasoner.build import build
from reasoner.config import Config
from reasoner.metrics import Timer
from reasoner.run import Interrupted  # noqa: F401 - re-exported: what Ctrl-C raises (reasoner.cli)
from reasoner.update import UpdateBatch, ppo_update


def train(cfg: Config) -> dict:
    """Train a policy with RL from verifiable rewards; return the run summary.

    1-3. Build the run (``reasoner.build``): the run directory and its config.yaml, seeds, device,
       the problems (train and held-out), the policy, the reference (only when beta > 0), the
       advantage stage (a group estimator, or the critic for algo.advantage=gae), the sampler,
       the optimizer and the evaluator.
    4. Resume from a checkpoint when asked; 5. else evaluate the held-out set before training.
    6. Each step: (a) take B problems, (b) sample G completions each, (c) score them and shape
       the rewards, (d) the reference's log-probs (here, or in a child process while (f) runs its
       forward) and the old ones, (e) advantages, (f) the PPO update, (g) log; evaluate every
       run.eval_every steps and checkpoint every run.save_every steps.
    7. Evaluate again, save the final model, write summary.json, the CSV and the plot.
    """
    run = build(cfg)
    run.begin()
    for step in run.steps():
        t = Timer()
        batch, shaped = run.collect(step, run.sampling(step), t)  # (a)-(c); dynamic sampling refills groups
        with t("reference"):  # (d)
            ref = t.charged(run.reference.start(batch.roll), "reference")  # [N, T] when called; waits count here
            old, weights = run.old_logp(batch.roll)  # weights: the engine/trainer mismatch correction, or None
        with t("advantage"):  # (e), less the KL when it sits in the reward
            adv = run.advantage(batch.roll, batch.rewards, run.kl.for_reward(batch.roll, ref))
        with t("update"):  # (f), plus the KL when it sits in the loss
            loss_ref, beta = run.kl.for_loss(ref)
            upd = ppo_update(run.policy, run.opt, UpdateBatch(batch.roll, adv.adv, old, loss_ref, beta, weights),
                             run.update, seeds.shuffle(run.r.seed, step), run.engine)
            upd.update(run.advantage.update(batch.roll, adv))  # the critic's own update, if any
            run.kl.adapt(upd)
            run.opt.schedule_step()
            run.sampler.sync_weights(run.model)
        run.record(step + 1, batch, shaped, upd, t.seconds)  # (g)
    return run.finish()
