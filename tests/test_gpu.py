"""CUDA checks (marker gpu; skipped without CUDA; run by scripts/gpu_check.sh on a lent GPU): the transformers
sampler and the log-prob passes on the GPU, fp32 and bf16. The vLLM engine tests (marker vllm) run on whatever
platform vLLM has, a GPU included: tests/test_vllm_backend.py."""
from __future__ import annotations

import pytest
import torch

from reasoner.logprobs import completion_logp, full_forward_logp
from reasoner.sampler import SamplingParams
from reasoner.sampler.transformers import TransformersSampler

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
PROMPTS = ["12+7=", "3-1=", "45+45=", "9="]


def _rollout(model, tok, temperature: float = 1.0):
    sampler = TransformersSampler(model, tok, device="cuda")
    sampler.eos_ids = sorted(set(sampler.eos_ids) | set(range(10, 20)))  # ragged lengths from a random model
    return sampler.generate(PROMPTS, SamplingParams(n=4, temperature=temperature, max_new_tokens=16, seed=3))


def _inputs(roll):
    return [x.cuda() for x in (roll.prompt_ids, roll.prompt_mask, roll.completion_ids, roll.completion_mask)]


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_cuda_sampled_logp_equals_the_recompute(random_tiny_model, temperature):
    model, tok = random_tiny_model
    model = model.cuda()
    try:
        roll = _rollout(model, tok, temperature)
        with torch.no_grad():
            ref = completion_logp(model, *_inputs(roll), temperature)[0].cpu()
        m = roll.completion_mask
        print(f"CUDA fp32 sampler vs recompute: max {(roll.logp - ref)[m].abs().max():.2e}")
        torch.testing.assert_close(roll.logp[m], ref[m], atol=1e-4, rtol=0)
    finally:
        model.cpu()


def test_cuda_bf16_lean_logp_matches_the_plain_forward(random_tiny_model):
    model, tok = random_tiny_model
    bf16 = type(model)(model.config).to(torch.bfloat16)
    bf16.load_state_dict(model.state_dict())
    bf16 = bf16.cuda().eval()
    roll = _rollout(bf16, tok)
    pids, pmask, cids, cmask = _inputs(roll)
    with torch.no_grad():
        lean = completion_logp(bf16, pids, pmask, cids, cmask)[0]
        plain = full_forward_logp(bf16, torch.cat([pids, cids], 1), torch.cat([pmask, cmask], 1), cids, cmask, 1.0,
                                  False)[0]
    diff = (lean - plain)[cmask].abs()
    print(f"CUDA bf16 lean vs plain log-probs: max {diff.max():.2e}, mean {diff.mean():.2e}")
    assert diff.max() < 0.1 and diff.mean() < 0.01  # two bf16 computations of one model
