"""Reward models: a local ``AutoModelForSequenceClassification`` scores (problem, completion).

Classic RLHF replaces (or complements) the rule-based verifier with a learned scorer. Here a
reward model is a ``save_pretrained`` directory holding a sequence classifier and its tokenizer
(``scripts/train_reward_model.py`` builds one for the embedded tiny model). It is loaded once per
(path, device), on the trainer's device, by the build step (``algo.reward_model``), which binds it
for the run; it then serves two registered names:

- the extra reward ``reward_model`` (``algo.reward_weights={reward_model: w}``): the normalised
  score added, weighted, to the verifier's score, logged as ``reward/reward_model``;
- the verifier ``reward_model`` (a problem row's ``"verifier": "reward_model"``, or
  ``algo.reward_model_verifier=true`` for every training problem): ``Verdict(score, "correct"
  if score >= algo.reward_model_threshold else "wrong", None, "raw=<logit>")``.

Both score a step's completions in batches (``batch`` hooks). The classifier reads
``problem.prompt + completion`` (the problem's own text, not the chat-rendered prompt, so one
reward model serves any template). Its raw score is the single logit (``num_labels=1``) or
logit[1] - logit[0] (``num_labels=2``: wrong, correct); ``algo.reward_model_norm`` maps it:
``none`` (raw), ``sigmoid`` (0..1, the default: on the scale of a 0/1 verifier), ``tanh`` (-1..1).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from reasoner import rewards as R
from reasoner import verifiers
from reasoner.registry import Registry

NORMS: Registry[Callable[[Tensor], Tensor]] = Registry("reward-model normalisation")
NORMS.register("none")(lambda x: x)
NORMS.register("sigmoid")(torch.sigmoid)
NORMS.register("tanh")(torch.tanh)
NAME = "reward_model"  # the extra reward's and the verifier's registered name
MAX_LENGTH = 512  # tokens of prompt + completion the classifier reads (longer inputs keep their start)


def model_input(completion: str, problem: Any) -> str:
    """What the classifier reads: the problem's text followed directly by the completion (chat
    messages: their contents joined by newlines)."""
    prompt = problem.get("prompt", "") if isinstance(problem, dict) else getattr(problem, "prompt", "")
    if isinstance(prompt, list):
        prompt = "\n".join(str(m.get("content", "")) for m in prompt)
    return f"{prompt}{completion}"


@dataclass
class RewardModel:
    """A loaded sequence classifier with its tokenizer (right padding), scoring texts in batches."""

    model: torch.nn.Module
    tokenizer: Any
    device: torch.device
    norm: str = "sigmoid"  # a NORMS name
    threshold: float = 0.5  # the verifier's "correct" cut, on the normalised score
    batch_size: int = 64

    @torch.no_grad()
    def raw(self, texts: Sequence[str]) -> Tensor:
        """[N] raw scores (float32, CPU) of ``texts``, ``batch_size`` at a time."""
        out = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(list(texts[i:i + self.batch_size]), return_tensors="pt", padding=True,
                                 truncation=True, max_length=MAX_LENGTH, add_special_tokens=False)
            logits = self.model(**{k: v.to(self.device) for k, v in enc.items()}).logits.float()
            out.append((logits[:, 1] - logits[:, 0]) if logits.shape[-1] == 2 else logits[:, 0])
        return torch.cat(out).cpu() if out else torch.zeros(0)

    def scores(self, completions: Sequence[str], problems: Sequence[Any]) -> tuple[Tensor, Tensor]:
        """(normalised [N], raw [N]) for completion i against problems[i]."""
        if len(completions) != len(problems):
            raise ValueError(f"{len(completions)} completions but {len(problems)} problems")
        raw = self.raw([model_input(c, p) for c, p in zip(completions, problems)])
        return NORMS.get(self.norm)(raw), raw

    def verdicts(self, completions: Sequence[str], problems: Sequence[Any]) -> list[verifiers.Verdict]:
        """One Verdict per completion: the normalised score, correct/wrong by ``threshold``, raw in detail."""
        normed, raw = self.scores(completions, problems)
        return [verifiers.Verdict(float(s), "correct" if s >= self.threshold else "wrong", None, f"raw={float(r):.6g}")
                for s, r in zip(normed, raw)]


_CACHE: dict[tuple[str, str], tuple[torch.nn.Module, Any]] = {}


def _load(path: Path, device: torch.device) -> tuple[torch.nn.Module, Any]:
    """The classifier and its tokenizer from ``path``, once per (path, device); eval mode, right padding."""
    key = (str(path.resolve()), str(device))
    if key not in _CACHE:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(path)
        tok.padding_side = "right"  # positions of the real tokens as without padding: batched == one by one
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        model = AutoModelForSequenceClassification.from_pretrained(path).to(device).eval()
        if model.config.pad_token_id is None:  # the classifier finds each row's last token by the pad id
            model.config.pad_token_id = tok.pad_token_id
        _CACHE[key] = (model, tok)
    return _CACHE[key]


def load(path: str, device: torch.device | str = "cpu", norm: str = "sigmoid", threshold: float = 0.5,
         batch_size: int = 64, key: str = "algo.reward_model") -> RewardModel:
    """A RewardModel from a local directory; errors name ``key`` (the config key that gave the path)."""
    NORMS.get(norm)  # KeyError naming the choices
    p = Path(path).expanduser()
    if not path or not p.is_dir():
        raise ValueError(f"{key}={path!r}: not a local directory holding a save_pretrained sequence classifier "
                         "(build one with scripts/train_reward_model.py)")
    if not (p / "config.json").is_file():
        raise ValueError(f"{key}={path!r}: no config.json in it (not a save_pretrained directory)")
    device = torch.device(device)
    model, tok = _load(p, device)
    return RewardModel(model, tok, device, norm, threshold, batch_size)


# --- the run's bound reward model and the two registered names -----------------------------

_BOUND: list[RewardModel] = []


def bind(rm: RewardModel | None) -> None:
    """Make ``rm`` the model behind the ``reward_model`` reward and verifier (None: unbind)."""
    _BOUND[:] = [rm] if rm is not None else []


def bound() -> RewardModel:
    """The run's reward model; a clear error naming algo.reward_model when none is bound."""
    if not _BOUND:
        raise ValueError(f"the {NAME!r} reward/verifier needs a reward model: set algo.reward_model=<local dir>")
    return _BOUND[0]


def _reward_one(completion: str, problem: Any) -> float:
    """The normalised reward-model score of one completion (the ``reward_model`` extra reward)."""
    return float(bound().scores([completion], [problem])[0][0])


def _reward_batch(completions: Sequence[str], problems: Sequence[Any]) -> list[float]:
    """The step's completions scored in batches (``rewards.extra_rewards`` calls this hook)."""
    return bound().scores(completions, problems)[0].tolist()


def _verify_one(completion: str, problem: Any) -> verifiers.Verdict:
    """The ``reward_model`` verifier for one completion (score_all uses ``batch`` when it can)."""
    return bound().verdicts([completion], [problem])[0]


def _verify_batch(completions: Sequence[str], problems: Sequence[Any]) -> list[verifiers.Verdict]:
    """Verdicts for a group of completions in batched forwards (``verifiers.score_all``'s batch hook)."""
    return bound().verdicts(completions, problems)


_reward_one.batch = _reward_batch  # type: ignore[attr-defined]
_verify_one.batch = _verify_batch  # type: ignore[attr-defined]
_verify_one.in_process = True  # type: ignore[attr-defined]  # the model lives in this process
R.REWARDS.register(NAME)(_reward_one)
verifiers.register(NAME)(_verify_one)


def from_config(algo, device: torch.device) -> RewardModel | None:
    """The build step's decision: the reward model of ``algo.reward_model`` (None when empty), bound
    for the run; a run that names the reward without a model fails here, before training."""
    uses = NAME in algo.reward_weights or algo.reward_model_verifier
    if not algo.reward_model:
        if uses:
            raise ValueError("algo.reward_model is empty, but algo.reward_weights or algo.reward_model_verifier "
                             f"asks for the {NAME!r} reward: set algo.reward_model=<local dir>")
        bind(None)
        return None
    rm = load(algo.reward_model, device, algo.reward_model_norm, algo.reward_model_threshold,
              algo.reward_model_batch_size)
    bind(rm)
    return rm
