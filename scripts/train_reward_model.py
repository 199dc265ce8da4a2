"""Train a small reward model for the embedded tiny policy: a classifier of correct vs wrong completions.

    python scripts/train_reward_model.py --out runs/reward_model            # ~1-2 min on 2 CPU cores
    reasoner train --config recipes/tiny_rlhf_ppo.yaml algo.reward_model=runs/reward_model

The classifier is ``Qwen2ForSequenceClassification`` (one logit: "this completion is correct"),
initialised from the embedded tiny model's backbone (``--init tiny``; ``--init scratch`` for a
fresh small one), with the same character tokenizer. Its examples come from the built-in synthetic
problems of the *train* split only (the held-out accuracy of an RL run is on the test split):

- each problem's gold answer (label 1) and a perturbed wrong one (label 0: off by one or ten, a
  changed/dropped/extra digit, the sign flipped);
- ``--policy-samples`` completions sampled from the tiny policy at temperature 1, labelled by the
  math verifier: the mistakes the policy really makes (its outputs are what the RM scores in RL).

The input is ``problem.prompt + completion``, as ``reasoner.reward_model`` scores it. Prints the
train and held-out (test split) classification accuracy and ROC AUC, saves model + tokenizer with
``save_pretrained`` to ``--out`` and writes ``--out/train_metrics.json``.
"""
from __future__ import annotations

import argparse
import bisect
import json
import random
import time
from pathlib import Path

import reasoner  # noqa: F401  (before torch: OMP_WAIT_POLICY)
import torch


def perturb(answer: str, rng: random.Random) -> str:
    """A wrong answer near the gold one (the kinds of mistakes a small arithmetic model makes)."""
    for _ in range(20):
        kind = rng.randrange(6)
        try:
            n = int(answer)
        except ValueError:  # a fraction or other non-integer: change one character
            kind = 3
        if kind == 0:
            out = str(n + rng.choice((-1, 1)))
        elif kind == 1:
            out = str(n + rng.choice((-10, 10)))
        elif kind == 2:
            out = str(-n) if n else "1"
        elif kind == 3:
            i = rng.randrange(len(answer))
            out = answer[:i] + rng.choice("0123456789") + answer[i + 1:]
        elif kind == 4:
            out = answer[:-1] if len(answer) > 1 else answer + rng.choice("0123456789")
        else:
            out = answer + rng.choice("0123456789")
        if out != answer and out not in ("", "-"):
            return out
    return answer + "1"


def synthetic_examples(problems, rng: random.Random) -> list[tuple[str, str, float]]:
    """(prompt, completion, label): each problem's gold answer (1) and one perturbed answer (0)."""
    rows = []
    for p in problems:
        rows.append((p.prompt, p.answer, 1.0))
        rows.append((p.prompt, perturb(p.answer, rng), 0.0))
    return rows


def policy_examples(policy, tok, problems) -> list[tuple[str, str, float]]:
    """(prompt, completion, label) for completions the policy samples, labelled by the math verifier."""
    from reasoner.models.tiny import generate_answers
    from reasoner.verifiers.math import check

    texts = generate_answers(policy, tok, problems, sample=True, max_new_tokens=8)
    return [(p.prompt, t, float(check(t, p.answer).status == "correct")) for p, t in zip(problems, texts)]


def encode(tok, rows, device) -> dict[str, torch.Tensor]:
    """Right-padded ``prompt + completion`` token ids, as ``reasoner.reward_model`` feeds them."""
    enc = tok([q + c for q, c, _ in rows], return_tensors="pt", padding=True, add_special_tokens=False)
    return {k: v.to(device) for k, v in enc.items()}


@torch.no_grad()
def logits_of(model, tok, rows, device, batch: int = 512) -> list[float]:
    """The classifier's logit for each row ("this completion is correct")."""
    model.eval()
    out: list[float] = []
    for i in range(0, len(rows), batch):
        out += model(**encode(tok, rows[i:i + batch], device)).logits[:, 0].tolist()
    model.train()
    return out


def auc(scores: list[float], labels: list[float]) -> float:
    """ROC AUC: the chance a correct row outscores a wrong one (ties count half); what RL relies on."""
    pos = sorted(s for s, y in zip(scores, labels) if y > 0.5)
    neg = sorted(s for s, y in zip(scores, labels) if y <= 0.5)
    if not pos or not neg:
        return float("nan")
    wins = sum(bisect.bisect_left(neg, p) + 0.5 * (bisect.bisect_right(neg, p) - bisect.bisect_left(neg, p))
               for p in pos)
    return wins / (len(pos) * len(neg))


def evaluate(model, tok, rows, device) -> dict[str, float]:
    """Accuracy (logit > 0 means "correct") and ROC AUC of the classifier on ``rows``."""
    scores, labels = logits_of(model, tok, rows, device), [r[2] for r in rows]
    hits = sum(int((x > 0) == (y > 0.5)) for x, y in zip(scores, labels))
    return {"accuracy": hits / max(len(rows), 1), "auc": auc(scores, labels)}


def train(model, tok, rows, args, device) -> float:
    """AdamW on binary cross-entropy, ``args.steps`` shuffled minibatches; returns the last loss."""
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50) * max(0.0, 1 - s / args.steps))
    rng, loss_fn, loss = random.Random(args.seed), torch.nn.BCEWithLogitsLoss(), float("nan")
    model.train()
    for step in range(args.steps):
        part = rng.sample(rows, min(args.batch_size, len(rows)))
        logits = model(**encode(tok, part, device)).logits[:, 0]
        labels = torch.tensor([r[2] for r in part], device=device)
        loss_t = loss_fn(logits, labels)
        opt.zero_grad()
        loss_t.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        loss = loss_t.item()
        if (step + 1) % max(1, args.steps // 10) == 0:
            print(f"step {step + 1}/{args.steps}  loss {loss:.4f}", flush=True)
    return loss


def build_model(tiny_dir: Path, tok, init: str):
    """The classifier: the tiny model's backbone + a fresh one-logit head, or a fresh small Qwen2."""
    from transformers import Qwen2Config, Qwen2ForSequenceClassification

    if init == "tiny":
        model = Qwen2ForSequenceClassification.from_pretrained(tiny_dir, num_labels=1)
    else:
        cfg = Qwen2Config.from_pretrained(tiny_dir)
        cfg.num_labels, cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers = 1, 64, 192, 2
        model = Qwen2ForSequenceClassification(cfg)
    model.config.pad_token_id = tok.pad_token_id
    return model


def datasets(args, policy, tok):
    """(train rows, {held-out name: rows}): synthetic pairs and policy samples, train vs test split."""
    from reasoner.config import DataConfig
    from reasoner.data import load_problems

    d = DataConfig(synthetic_kinds=args.kinds, seed=args.seed)
    rng = random.Random(args.seed)
    train_p = load_problems("synthetic", "train", d)
    test_p = load_problems("synthetic", "test", d)[: args.heldout]
    pool = rng.sample(list(train_p), min(len(train_p), args.pairs + args.policy_samples))
    rows = synthetic_examples(pool[: args.pairs], rng)
    if args.policy_samples:
        rows += policy_examples(policy, tok, pool[args.pairs:])
    held = {"pairs": synthetic_examples(test_p, rng)}
    if args.policy_samples:
        held["policy_samples"] = policy_examples(policy, tok, test_p)
    return rows, held


def main() -> None:
    """Parse the arguments, build the examples, train, report the accuracies and save."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/reward_model")
    ap.add_argument("--kinds", default="add,sub", help="synthetic kinds (the embedded default's: add,sub)")
    ap.add_argument("--init", choices=("tiny", "scratch"), default="tiny")
    ap.add_argument("--pairs", type=int, default=4000, help="problems giving a gold + a perturbed answer")
    ap.add_argument("--policy-samples", type=int, default=4000, help="policy completions labelled by the verifier")
    ap.add_argument("--heldout", type=int, default=512, help="test-split problems for the held-out accuracy")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    from reasoner.models.tiny import build_tiny
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0, device = time.perf_counter(), torch.device("cpu")
    tiny_dir = build_tiny(None, kinds=args.kinds)
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    rows, held = datasets(args, AutoModelForCausalLM.from_pretrained(tiny_dir), tok)
    tok.padding_side = "right"
    model = build_model(tiny_dir, tok, args.init).to(device)
    print(f"{len(rows)} training examples ({sum(r[2] for r in rows):.0f} correct); init {args.init} from {tiny_dir}")
    loss = train(model, tok, rows, args, device)
    metrics = {**{f"train_{k}": v for k, v in evaluate(model, tok, rows, device).items()}, "final_loss": loss,
               **{f"heldout_{m}/{k}": x for k, v in held.items() for m, x in evaluate(model, tok, v, device).items()},
               **{f"heldout_correct_frac/{k}": sum(r[2] for r in v) / len(v) for k, v in held.items()},
               "seconds": time.perf_counter() - t0, "args": vars(args)}
    out = Path(args.out)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    (out / "train_metrics.json").write_text(json.dumps(metrics, indent=2))
    print(json.dumps({k: v for k, v in metrics.items() if k != "args"}, indent=2))
    print(f"saved to {out}")


if __name__ == "__main__":
    main()
