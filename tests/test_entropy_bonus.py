"""The entropy bonus must reach the gradient (it was once computed under no_grad)."""
import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from reasoner.logprobs import completion_logp
from reasoner.losses import LossParams, policy_loss


@pytest.mark.parametrize("vocab", [64, 4096])
def test_entropy_bonus_alone_raises_entropy(vocab):
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32))
    pids = torch.randint(0, vocab, (4, 3))
    cids = torch.randint(0, vocab, (4, 5))
    pmask, cmask = torch.ones(4, 3, dtype=torch.bool), torch.ones(4, 5, dtype=torch.bool)

    def entropy_and_loss():
        logp, ent = completion_logp(model, pids, pmask, cids, cmask, 1.0, with_entropy=True, entropy_grad=True)
        # advantage 0 and beta 0: the loss is -entropy_coef * mean entropy, nothing else
        out = policy_loss(logp, logp.detach(), torch.zeros(4), cmask, LossParams(entropy_coef=1.0, norm_len=5), entropy=ent)
        return float(ent[cmask].mean()), out.loss

    before, loss = entropy_and_loss()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= 0.5 * p.grad  # a gradient step on -entropy
    after, _ = entropy_and_loss()
    assert after > before


def test_entropy_has_no_gradient_by_default():
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1))
    ids = torch.randint(0, 64, (2, 3))
    mask = torch.ones(2, 3, dtype=torch.bool)
    _, ent = completion_logp(model, ids, mask, ids, mask, 1.0, with_entropy=True)
    assert not ent.requires_grad
