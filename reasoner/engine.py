"""The engine boundary: how the algorithm modules (update, reference, critic) run a model.

``Engine.logp`` gives the per-token log-probs (and entropies) of completions given their prompts,
``Engine.hidden`` the hidden states that predict them (the critic's values), and ``Engine.sized``
the context a forward and its backward run in. Generation is the sampler's
(``reasoner.sampler``), the other half of the engine; ``Engine.lean`` says which forward the
transformers sampler decodes with.

Two implementations (``run.engine``):

- ``plain``: one ordinary transformers forward over prompt + completion, ``log_softmax`` and a
  gather. The reference the fast engine is tested against (tests/test_engine.py).
- ``fast`` (default): each distinct prompt encoded once, the padding-free Llama-family forward
  (``reasoner.models.fast``), the chunked LM head (``reasoner.logprobs``) and CPU threads sized to
  each call (``reasoner.threads``).
"""
from __future__ import annotations

import contextlib
from typing import Protocol

import torch
from torch import Tensor

from reasoner import threads
from reasoner.logprobs import completion_logp, full_forward_logp, hidden_states
from reasoner.models import fast
from reasoner.models.fast import positions
from reasoner.registry import Registry


class Engine(Protocol):
    lean: bool  # the transformers sampler decodes through models.fast (where it supports the model)

    def logp(self, model, prompt_ids: Tensor, prompt_mask: Tensor, completion_ids: Tensor, completion_mask: Tensor,
             temperature: float = 1.0, with_entropy: bool = False, entropy_grad: bool = False
             ) -> tuple[Tensor, Tensor | None]:
        """(log-probs [N, T], entropies [N, T] or None) of the completion tokens; 0 off the mask."""
        ...

    def hidden(self, backbone, prompt_ids: Tensor, prompt_mask: Tensor, completion_ids: Tensor,
               completion_mask: Tensor) -> Tensor:
        """[N, T, H]: position t is the state that predicts completion token t."""
        ...

    def sized(self, model, tokens: int):
        """The context one forward (and its backward) over ``tokens`` completion tokens runs in."""
        ...


ENGINES: Registry[Engine] = Registry("engine")


@ENGINES.register("plain")
class PlainEngine:
    lean = False  # the sampler decodes through the transformers forward too
    def logp(self, model, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature=1.0,
             with_entropy=False, entropy_grad=False):
        ids, mask = torch.cat([prompt_ids, completion_ids], 1), torch.cat([prompt_mask, completion_mask], 1)
        return full_forward_logp(model, ids, mask, completion_ids, completion_mask, temperature, with_entropy,
                                 entropy_grad)

    def hidden(self, backbone, prompt_ids, prompt_mask, completion_ids, completion_mask):
        mask = torch.cat([prompt_mask, completion_mask], 1)  # [N, P+T]
        out = backbone(input_ids=torch.cat([prompt_ids, completion_ids], 1), attention_mask=mask.long(),
                       position_ids=positions(mask), use_cache=False)
        return out.last_hidden_state[:, -completion_ids.shape[1] - 1:-1]

    def sized(self, model, tokens: int):
        return contextlib.nullcontext()


@ENGINES.register("fast")
class FastEngine:
    lean = True  # the sampler decodes through models.fast where it supports the model
    def logp(self, model, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature=1.0,
             with_entropy=False, entropy_grad=False):
        return completion_logp(model, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature,
                               with_entropy, entropy_grad)

    def hidden(self, backbone, prompt_ids, prompt_mask, completion_ids, completion_mask):
        return hidden_states(backbone, fast.supports(backbone), prompt_ids, prompt_mask, completion_ids,
                             completion_mask)

    def sized(self, model, tokens: int):
        return threads.for_rows(model, tokens)


def get(name: str) -> Engine:
    """The engine of ``run.engine``."""
    return ENGINES.get(name)()


FAST: Engine = FastEngine()
