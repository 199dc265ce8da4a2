"""The embedded default model: a tiny Qwen2-style transformer with a character tokenizer.

``build_tiny()`` makes it once and caches it: a fresh model from a config, a short
supervised warm start on the built-in synthetic problems (loss on the answer tokens only),
then ``save_pretrained`` of model and tokenizer into ``<cache>/tiny-<recipe hash>``, so that
``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained`` load it like
any other checkpoint. The warm start stops as soon as greedy accuracy on the ``val`` split
reaches ``target_accuracy``: RL then starts from a model that is right some of the time and
samples varied answers, with room to improve. Accuracy is exact match of the decoded
completion with the gold answer (the synthetic answers are canonical strings).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import string
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from reasoner import threads
from reasoner.data.synthetic import VERSION as DATA_VERSION
from reasoner.data.synthetic import make_problems, parse_kinds
from reasoner.types import Problem

VERSION = 1  # bump whenever the recipe's behaviour changes: the cache key includes it
SPECIALS = ("<pad>", "<eos>", "<unk>")
CHARS = string.digits + string.ascii_letters + string.punctuation + " \n"


@dataclass(frozen=True)
class TinyRecipe:
    """Everything that decides the built model; its hash names the cache directory."""

    kinds: str = "add,sub"
    seed: int = 0
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 384
    max_positions: int = 64
    max_steps: int = 1500  # supervised steps at most
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 50
    target_accuracy: float | None = 0.2  # stop once greedy val accuracy reaches it (None: run max_steps)
    eval_every: int = 25  # steps between val checks
    val_size: int = 256
    test_size: int = 256  # held-out problems for the reported accuracy (0: skip)

    def key(self) -> str:
        blob = json.dumps({"version": VERSION, "data_version": DATA_VERSION, **dataclasses.asdict(self)},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


# ---------------------------------------------------------------- tokenizer and config


def build_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character (printable ASCII); anything else maps to ``<unk>``."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS + tuple(CHARS))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="left",
        model_max_length=TinyRecipe.max_positions,
    )


def build_config(recipe: TinyRecipe, tokenizer: PreTrainedTokenizerFast) -> Qwen2Config:
    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=recipe.hidden,
        intermediate_size=recipe.intermediate,
        num_hidden_layers=recipe.layers,
        num_attention_heads=recipe.heads,
        num_key_value_heads=recipe.kv_heads,
        max_position_embeddings=recipe.max_positions,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def new_model(recipe: TinyRecipe, tokenizer: PreTrainedTokenizerFast) -> Qwen2ForCausalLM:
    torch.manual_seed(recipe.seed)
    model = Qwen2ForCausalLM(build_config(recipe, tokenizer))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = None
    return model


# ---------------------------------------------------------------- supervised warm start


def sft_batch(problems: list[Problem], tokenizer) -> dict[str, torch.Tensor]:
    """Right-padded ``prompt + answer + EOS``; labels are -100 except on answer and EOS."""
    prompts = tokenizer([p.prompt for p in problems], add_special_tokens=False)["input_ids"]
    answers = tokenizer([p.answer for p in problems], add_special_tokens=False)["input_ids"]
    rows = [(q, a + [tokenizer.eos_token_id]) for q, a in zip(prompts, answers)]
    width = max(len(q) + len(a) for q, a in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    labels = torch.full((len(rows), width), -100)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (q, a) in enumerate(rows):
        n = len(q) + len(a)
        ids[i, :n] = torch.tensor(q + a)
        labels[i, len(q):n] = torch.tensor(a)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@torch.no_grad()
def generate_answers(model, tokenizer, problems: list[Problem], *, sample: bool = False,
                     max_new_tokens: int = 8, batch_size: int = 256) -> list[str]:
    """Completions for ``problems`` (greedy, or sampled at temperature 1), special tokens removed."""
    was_training = model.training
    model.eval()
    out: list[str] = []
    for i in range(0, len(problems), batch_size):
        enc = tokenizer([p.prompt for p in problems[i:i + batch_size]], return_tensors="pt",
                        padding=True, add_special_tokens=False).to(model.device)
        gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=sample,
                             temperature=1.0 if sample else None, top_p=1.0 if sample else None,
                             top_k=0 if sample else None, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=tokenizer.eos_token_id)
        out += tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    model.train(was_training)
    return out


def accuracy(model, tokenizer, problems: list[Problem], *, sample: bool = False) -> float:
    """Fraction of ``problems`` whose completion equals the gold answer exactly."""
    answers = generate_answers(model, tokenizer, problems, sample=sample)
    return sum(a.strip() == p.answer for a, p in zip(answers, problems)) / max(len(problems), 1)


def _lr_lambda(warmup: int):
    return lambda step: min(1.0, (step + 1) / max(warmup, 1))


def _sft_step(model, batch: dict[str, torch.Tensor], opt, sched) -> float:
    loss = model(**batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


def warm_start(model, tokenizer, recipe: TinyRecipe, log=None) -> dict:
    """Next-token training on train problems until val accuracy hits the target (or max_steps)."""
    torch.manual_seed(recipe.seed)
    train = make_problems("train", recipe.max_steps * recipe.batch_size, recipe.seed, recipe.kinds)
    val = make_problems("val", recipe.val_size, recipe.seed, recipe.kinds)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(recipe.warmup_steps))
    model.train()
    val_acc, step, loss = 0.0, 0, float("nan")
    for step in range(1, recipe.max_steps + 1):
        batch = sft_batch(train[(step - 1) * recipe.batch_size: step * recipe.batch_size], tokenizer)
        loss = _sft_step(model, batch, opt, sched)
        if step % recipe.eval_every == 0 or step == recipe.max_steps:
            val_acc = accuracy(model, tokenizer, val)
            if log:
                log(f"  warm start step {step}: loss {loss:.3f}, val greedy accuracy {val_acc:.1%}")
            if recipe.target_accuracy is not None and val_acc >= recipe.target_accuracy:
                break
    model.eval()
    return {"steps": step, "final_loss": loss, "val_greedy_accuracy": val_acc}


# ---------------------------------------------------------------- build and cache


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    return Path(cache_dir or os.environ.get("REASONER_CACHE") or Path.home() / ".cache" / "reasoner")


def tiny_path(cache_dir=None, kinds: str = "add,sub", seed: int = 0, **overrides) -> Path:
    """Where ``build_tiny`` with the same arguments puts (or has put) the model."""
    return cache_root(cache_dir) / f"tiny-{_recipe(kinds, seed, overrides).key()}"


def _recipe(kinds: str, seed: int, overrides: dict) -> TinyRecipe:
    return TinyRecipe(kinds=",".join(parse_kinds(kinds)), seed=seed, **overrides)


def build_tiny(cache_dir: str | os.PathLike | None = None, kinds: str = "add,sub", seed: int = 0,
               verbose: bool = True, **overrides) -> Path:
    """Build the tiny model once and return its directory; later calls return the cache.

    ``overrides`` are ``TinyRecipe`` fields (e.g. ``max_steps=20, target_accuracy=None`` for a
    quick test build); they change the recipe hash, so they never collide with the default.
    """
    recipe = _recipe(kinds, seed, overrides)
    final = cache_root(cache_dir) / f"tiny-{recipe.key()}"
    if (final / "config.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    log = print if verbose else None
    t0, cpu0 = time.perf_counter(), time.process_time()
    tokenizer = build_tokenizer()
    model = new_model(recipe, tokenizer)
    if log:
        n = sum(p.numel() for p in model.parameters())
        log(f"building the tiny model ({n / 1e6:.2f}M parameters, kinds {recipe.kinds}) into {final}")
    with threads.using(1):  # a 1M model gains nothing from a second thread (reasoner.threads)
        stats = warm_start(model, tokenizer, recipe, log)
    stats["build_seconds"] = round(time.perf_counter() - t0, 2)
    stats["build_cpu_seconds"] = round(time.process_time() - cpu0, 2)  # wall time on busy cores misleads
    if recipe.test_size:
        test = make_problems("test", recipe.test_size, recipe.seed, recipe.kinds)
        stats["test_greedy_accuracy"] = accuracy(model, tokenizer, test)
    stats |= {"parameters": sum(p.numel() for p in model.parameters()), "recipe": dataclasses.asdict(recipe),
              "version": VERSION}
    save_atomically(final, model.save_pretrained, tokenizer.save_pretrained,
                    lambda d: (d / "warm_start.json").write_text(json.dumps(stats, indent=2)))
    if log:
        acc = stats.get("test_greedy_accuracy")
        log(f"built the tiny model in {stats['build_seconds']:.1f}s (CPU {stats['build_cpu_seconds']:.1f}s, "
            f"{stats['steps']} warm-start steps); "
            f"held-out greedy accuracy {'n/a' if acc is None else f'{acc:.1%}'} on {recipe.test_size} problems")
    return final


def save_atomically(final: Path, *writers) -> None:
    """Run each ``writer(dir)`` into a temp dir beside ``final``, then rename it to ``final``.

    Readers never see a half-written directory; when a concurrent builder got there first,
    its copy wins and ours is dropped.
    """
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a cache is for every user of the machine
    try:
        for write in writers:
            write(tmp)
        os.rename(tmp, final)
    except OSError:
        if not (final / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
