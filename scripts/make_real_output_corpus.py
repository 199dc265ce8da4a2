"""Build the held-out corpus of real model output for the math checker (issue 17).

    python scripts/make_real_output_corpus.py [--no-generate-smollm2] [--list-disagreements]

Writes ``tests/data/math_real_output.jsonl``, one row per distinct (gold, response):
``{"source", "model", "gold", "response", "label", "how"}``. Sources:

- ``synthetic``: the embedded tiny model sampled (n=4, temperature 1, 16 new tokens, seed 0) on the
  built-in test problems of every kind (add, sub, mul, linear, fraction);
- ``runs``: completions found in ``/tmp/runs/*/samples.jsonl``, logged by training runs (SmolLM2 on
  "What is A + B?", the tiny model on "A+B="; the model is read from the run's config.yaml, the gold
  is computed from the prompt);
- ``synthetic-greedy``: the same problems, the tiny model greedy;
- ``smollm2-synthetic``: SmolLM2-135M-Instruct sampled (n=4, temperature 1, 48 new tokens, seed 0)
  on the first question-style built-in test problems ("What is 47 + 35?"), every kind;
  ``smollm2-synthetic-greedy``: the same problems, greedy, 32 new tokens;
- ``gsm8k`` / ``math500``: SmolLM2-135M-Instruct greedy (bf16, 256 new tokens) on the first
  problems of each test set. SmolLM2 output is generated once and cached in ``--cache``
  (regenerated only when the cache is missing and ``--no-generate-smollm2`` is not given).

Labels never use the checker under test (``verifiers.math``). ``how="agree"``: two independent rules
agree: (i) math-verify (gold wrapped in ``$...$``) and (ii) ``simple_rule`` below (the last
``\\boxed{}``, else the text after ``####``, else the value after the last ``=`` / the last number,
compared exactly as a Fraction with a numeric gold). ``how="hand"``: the rules disagree or (ii) does
not apply, and the row was read and labelled by hand under issue 17's label policy (``HAND`` below,
keyed by ``key(gold, response)``). Other rows are dropped; ``--list-disagreements`` prints them.

This file is a benchmark, not a tuning target: do not fix the checker against it.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import re
import signal
import sys
import time
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "tests/data/math_real_output.jsonl"
SMOL = "SmolLM2-135M-Instruct"

# Hand labels, key(gold, response) -> label; each read under issue 17's label policy. The first
# ones are rows where the two rules disagree (or rule (ii) does not apply); those marked "both rules
# said right" override an agreement: responses that restate an operand equal to the gold (414 * 1).
HAND: dict[str, bool] = {
    "d047956c9cac6316": False,  # "six hundred and fifty" is not 115
    "31336fc050fa5062": False,  # restates the question / no final answer
    "f4f7350eb1b8f9a0": False,  # "would be 11200"
    "06b094618869a350": False,  # restates the question / no final answer
    "035c7fb6f7b8cd2d": False,  # restates the question / no final answer
    "df06e8a73668766b": False,  # restates the question / no final answer
    "6fdc01bd76e4c40d": False,  # restates the question / no final answer
    "2f49f589d6ab4899": False,  # restates the question / no final answer
    "8b03b9f3ef054d31": False,  # restates the question / no final answer
    "300027093766b175": False,  # restates the question / no final answer
    "1e4b8c212faf6e99": False,  # restates the question / no final answer
    "3b2ba0504c3d2e5a": False,  # restates the question / no final answer
    "b72773df2627ec85": False,  # restates the question / no final answer
    "3ce1b439d88f65eb": False,  # restates the question / no final answer
    "9c2e1bbd18b86ae7": False,  # restates the question / no final answer
    "f92413e7a6f986f0": False,  # restates the question / no final answer
    "3011e8e430fa9dc6": False,  # restates the question / no final answer
    "3d6cc5b90eeb6ab1": False,  # "(692)" in nonsense, not an answer
    "835c5c3c2083364a": False,  # restates the question / no final answer
    "3da92ede6cfc68f1": False,  # restates the question / no final answer
    "96976d9b7db078d0": False,  # restates the question / no final answer
    "b110ae239bbdae5e": False,  # restates the question / no final answer
    "dc7c8af3c1cf74a7": False,  # restates the question / no final answer
    "b15139a46345b4eb": False,  # restates the question / no final answer
    "c07fb78aff64d0bb": False,  # restates the question / no final answer
    "85d5905fd9a7ec7e": False,  # restates the question / no final answer
    "cae9623f16d063d7": False,  # restates the question / no final answer
    "ed58c0cf71ab33cd": True,  # 25 + 25 = 50: the value after the last =
    "1a2bff9dc50b9696": False,  # wrong or no final answer
    "1971fb42233d8c7e": False,  # wrong or no final answer
    "bb67df534f683253": False,  # wrong or no final answer
    "5ce7ea67cd3b68ca": False,  # wrong or no final answer
    "faf161411b46410b": False,  # wrong or no final answer
    "1ecc56ed204ed17e": False,  # wrong or no final answer
    "0854b6cf0cea8f9c": False,  # wrong or no final answer
    "4a155d5c2fa199a0": False,  # wrong or no final answer
    "c9d8fa060ea449d5": False,  # wrong or no final answer
    "35776e04bf50af66": False,  # wrong or no final answer
    "f5091f02e61372e7": False,  # wrong or no final answer
    "172281a7098dd344": False,  # wrong or no final answer
    "4285460c7e50aa11": False,  # wrong or no final answer
    "8f1fb1f0d765a263": False,  # wrong or no final answer
    "9e412aab1df1c3cf": False,  # wrong or no final answer
    "a414e253b1478554": False,  # hedged: "could be 70", then 50 (both rules said right)
    "ae7bdc0b715b9a6d": False,  # "the square of 414" is not 414 (both rules said right)
    "606b1f3fae07f43f": False,  # no answer (414 is the operand) (both rules said right)
    "f77b394430a8404b": False,  # no answer (692 is the operand) (both rules said right)
    "9c0401149fa7b966": False,  # truncated, no answer (both rules said right)
    "f3e4206e0de38fd4": False,  # no answer (9 is the operand) (both rules said right)
    "d31338626bb07d13": False,  # no answer (9 is a multiplier) (both rules said right)
    "3e3466282af8f486": False,  # no answer (692 is the operand) (both rules said right)
}
HAND["a32e3497aedb3ee0"] = False  # "The equation 65 + 50 is a classic ...": restates the question (a later run)
# Rows too ambiguous under the policy to label either way: dropped.
DROP = {
    "ebd6beeb977b13c1",  # "240 * 3 = 720. Here's a bit of code ... x = 200 * 3 = 600": an extra answer or not?
}


def key(gold: str, response: str) -> str:
    return hashlib.sha1(f"{gold}\x00{response}".encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# rule (ii): a simple exact rule for numeric golds
_NUM = r"-?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?|-?\.\d+"


def last_boxed(text: str) -> str | None:
    i = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if i < 0:
        return None
    j = text.find("{", i)
    if j < 0:
        return None
    depth, k = 0, j
    while k < len(text):
        depth += {"{": 1, "}": -1}.get(text[k], 0)
        if depth == 0:
            return text[j + 1:k]
        k += 1
    return None


def to_fraction(s: str) -> Fraction | None:
    """An exact number from a plain or simple-LaTeX string: 12, -3, 1,234, 2.5, 3/4, \\frac{3}{4}, $5$."""
    s = s.strip().strip("$").strip()
    s = re.sub(r"\\[dt]?frac\{(-?\d+)\}\{(\d+)\}", r"\1/\2", s)
    s = re.sub(r"\\[,!; ]|\\text\{[^}]*\}|\\%|%|\\\$|\^\\circ|\^\{\\circ\}", "", s).strip()
    s = s.replace("−", "-").rstrip(".").strip()
    if not re.fullmatch(_NUM, s):
        return None
    s = s.replace(",", "").replace(" ", "")
    try:
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def final_span(response: str) -> str | None:
    """The answer text by rule (ii): last \\boxed{}, else after '####', else the last number."""
    b = last_boxed(response)
    if b is not None:
        return b
    if "####" in response:
        return response.rsplit("####", 1)[1].strip().split("\n")[0]
    nums = re.findall(_NUM, response.replace("−", "-"))
    return nums[-1] if nums else None


def simple_rule(response: str, gold: str) -> bool | None:
    """True/False for a numeric gold; None where the gold is not a plain number (rule not applicable)."""
    g = to_fraction(gold)
    if g is None:
        return None
    span = final_span(response)
    if span is None:
        return False
    v = to_fraction(span)
    if v is None:  # a boxed expression: fall back to its last number only if it is the whole thing
        return None
    return v == g


# ---------------------------------------------------------------------------------------------
# rule (i): math-verify, gold wrapped
class _Timeout(Exception):
    pass


def math_verify_rule(response: str, gold: str, limit: int = 5) -> bool:
    from math_verify import parse, verify

    def alarm(*_):
        raise _Timeout

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(3 * limit + 1)
    try:
        g = parse(f"${gold}$", parsing_timeout=limit)
        return bool(g) and bool(verify(g, parse(response, parsing_timeout=limit), timeout_seconds=limit))
    except Exception:  # noqa: BLE001 - a crash or a timeout counts as "not correct"
        return False
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ---------------------------------------------------------------------------------------------
# sources
def tiny_rows() -> list[dict]:
    import torch

    from reasoner.config import DataConfig, ModelConfig
    from reasoner.data import load_problems, render
    from reasoner.models import load_model
    from reasoner.sampler import SamplingParams
    from reasoner.sampler.transformers import TransformersSampler

    torch.manual_seed(0)
    model, tok = load_model(ModelConfig(name="tiny"))
    problems = load_problems("synthetic", "test", DataConfig(synthetic_kinds="add,sub,mul,linear,fraction"))
    prompts = [render(p, tok, DataConfig()) for p in problems]
    sampler, rows = TransformersSampler(model, tok), []
    for name, params in (("synthetic", SamplingParams(n=4, temperature=1.0, max_new_tokens=16, seed=0)),
                         ("synthetic-greedy", SamplingParams(n=1, temperature=0.0, max_new_tokens=16, seed=0))):
        texts = sampler.generate(prompts, params).texts
        rows += [{"source": f"{name}/{p.meta.get('kind', '')}", "model": "tiny", "gold": p.answer, "response": t}
                 for i, p in enumerate(problems) for t in texts[i * params.n:(i + 1) * params.n]]
    return rows


_ARITH = re.compile(r"What is (-?\d+) ([+\-*]) (-?\d+)\?|^(-?\d+)([+\-*])(-?\d+)=$")


def run_model(samples: str) -> str | None:
    """The model named in the run's config.yaml beside samples.jsonl (tiny or smollm2), else None."""
    cfg = Path(samples).with_name("config.yaml")
    m = re.search(r"^model:\s*\n\s+name:\s*(\S+)", cfg.read_text(encoding="utf-8"), re.M) if cfg.is_file() else None
    return {"tiny": "tiny", "smollm2": SMOL}.get(m[1]) if m else None


def runs_rows(pattern: str) -> list[dict]:
    """Completions logged by training runs on built-in add/sub/mul problems, gold computed from the prompt."""
    rows = []
    for f in sorted(glob.glob(pattern)):
        model = run_model(f)
        if model is None:
            continue
        for line in open(f, encoding="utf-8", errors="replace"):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line being written right now
            m = _ARITH.search(rec.get("prompt", "").strip()) if isinstance(rec.get("prompt"), str) else None
            if not m:
                continue
            a, op, b = (int(m[1]), m[2], int(m[3])) if m[1] else (int(m[4]), m[5], int(m[6]))
            gold = str({"+": a + b, "-": a - b, "*": a * b}[op])
            for c in rec.get("completions", []):
                rows.append({"source": "runs/synthetic", "model": model, "gold": gold, "response": c["text"]})
    return rows


def _smollm2():
    from reasoner.config import ModelConfig
    from reasoner.models import load_model
    from reasoner.sampler.transformers import TransformersSampler

    model, tok = load_model(ModelConfig(name="smollm2"), dtype="bfloat16")
    return TransformersSampler(model, tok), tok


def smollm2_synthetic_rows(n: int, greedy: bool = False) -> list[dict]:
    from reasoner.config import DataConfig
    from reasoner.data import load_problems, render
    from reasoner.sampler import SamplingParams

    sampler, tok = _smollm2()
    cfg = DataConfig(synthetic_kinds="add,sub,mul,linear,fraction", synthetic_style="question")
    problems, rows = list(load_problems("synthetic", "test", cfg))[:n], []
    for i in range(0, len(problems), 64):
        chunk = problems[i:i + 64]
        t = time.perf_counter()
        params = (SamplingParams(n=1, temperature=0.0, max_new_tokens=32, seed=0) if greedy
                  else SamplingParams(n=4, temperature=1.0, max_new_tokens=48, seed=i))
        r = sampler.generate([render(p, tok, cfg) for p in chunk], params)
        print(f"  smollm2 synthetic{' greedy' * greedy} {i}+{len(chunk)}: {int(r.lengths.sum())} tokens in "
              f"{time.perf_counter() - t:.0f}s", flush=True)
        name = "smollm2-synthetic-greedy" if greedy else "smollm2-synthetic"
        rows += [{"source": f"{name}/{p.meta.get('kind', '')}", "model": SMOL, "gold": p.answer, "response": txt}
                 for j, p in enumerate(chunk) for txt in r.texts[params.n * j:params.n * (j + 1)]]
    return rows


def smollm2_bench_rows(data_dir: str, n_gsm8k: int, n_math500: int, budget_s: float) -> list[dict]:
    from reasoner.config import DataConfig
    from reasoner.data import load_problems, render
    from reasoner.sampler import SamplingParams

    sampler, tok = _smollm2()
    cfg = DataConfig(data_dir=data_dir)
    rows, t0 = [], time.perf_counter()
    for name, n in (("gsm8k", n_gsm8k), ("math500", n_math500)):
        problems = list(load_problems(name, "test", cfg))[:n]
        for i in range(0, len(problems), 20):
            chunk = problems[i:i + 20]
            t = time.perf_counter()
            r = sampler.generate([render(p, tok, cfg) for p in chunk],
                                 SamplingParams(n=1, temperature=0.0, max_new_tokens=256, seed=0))
            dt = time.perf_counter() - t
            toks = int(r.lengths.sum())
            print(f"  smollm2 {name} {i}+{len(chunk)}: {toks} tokens in {dt:.0f}s ({toks / dt:.1f} tok/s)",
                  flush=True)
            rows += [{"source": name, "model": SMOL, "gold": p.answer, "response": txt}
                     for p, txt in zip(chunk, r.texts)]
            if toks / dt < 3 or time.perf_counter() - t0 > budget_s:
                print("  smollm2: too slow or over budget, stopping here", flush=True)
                return rows
    return rows


def cached(path: Path, make, generate: bool) -> list[dict]:
    """Rows from ``path``; when it is missing and ``generate``, made by ``make()`` and saved there."""
    if not path.is_file() and generate:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in make()), encoding="utf-8")
    return [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()] if path.is_file() else []


# ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", default="/tmp/runs/*/samples.jsonl")
    ap.add_argument("--cache", default="/tmp/reasoner_real_output",
                    help="folder of SmolLM2 completions, generated once")
    ap.add_argument("--no-generate-smollm2", action="store_true")
    ap.add_argument("--n-synthetic", type=int, default=128)
    ap.add_argument("--n-gsm8k", type=int, default=40)
    ap.add_argument("--n-math500", type=int, default=40)
    ap.add_argument("--budget", type=float, default=480.0, help="seconds of SmolLM2 generation at most")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--list-disagreements", action="store_true",
                    help="print rows with no label (rules disagree, no hand label) as JSON lines")
    ap.add_argument("--out", default=str(OUT))
    a = ap.parse_args(argv)

    import torch
    torch.set_num_threads(a.threads)
    data_dir = os.environ.get("REASONER_DATA_DIR") or str(ROOT.parent / "shared" / "data")

    cands = tiny_rows()
    cands += runs_rows(a.runs)
    gen = not a.no_generate_smollm2
    cands += cached(Path(a.cache) / "smollm2_synthetic.jsonl", lambda: smollm2_synthetic_rows(a.n_synthetic), gen)
    cands += cached(Path(a.cache) / "smollm2_synthetic_greedy.jsonl",
                    lambda: smollm2_synthetic_rows(a.n_synthetic, greedy=True), gen)
    cands += cached(Path(a.cache) / "smollm2_bench.jsonl",
                    lambda: smollm2_bench_rows(data_dir, a.n_gsm8k, a.n_math500, a.budget), gen)

    seen, rows, unlabelled = set(), [], []
    for c in cands:
        k = key(c["gold"], c["response"])
        if k in seen or k in DROP:
            continue
        seen.add(k)
        mv, simple = math_verify_rule(c["response"], c["gold"]), simple_rule(c["response"], c["gold"])
        if k in HAND:
            rows.append({**c, "label": HAND[k], "how": "hand"})
        elif simple is not None and mv == simple:
            rows.append({**c, "label": mv, "how": "agree"})
        else:
            unlabelled.append({**c, "key": k, "math_verify": mv, "simple": simple})

    Path(a.out).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    by: dict[tuple, int] = {}
    for r in rows:
        s = (r["source"].split("/")[0], r["model"], r["label"], r["how"])
        by[s] = by.get(s, 0) + 1
    print(f"wrote {len(rows)} rows to {a.out} ({len(cands)} completions, {len(seen)} distinct, "
          f"{len(unlabelled)} dropped: rules disagree or do not apply, no hand label)")
    for s, n in sorted(by.items(), key=str):
        print(f"  {s[0]:<10} {s[1]:<22} label={str(s[2]):<5} how={s[3]:<5} {n}")
    if a.list_disagreements:
        for u in unlabelled:
            print(json.dumps(u, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
