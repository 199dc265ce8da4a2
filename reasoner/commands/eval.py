"""``reasoner eval --model M --suite aime24,aime25,amc23,math500 --n 32 --temperature 0.6 ...``

The protocol is the config's ``eval`` section: ``reasoner eval --config f.yaml eval.n=4`` loads it like
``reasoner train`` loads the rest (defaults <- --config <- flags <- ``eval.key=value``); each flag is an
alias of one key (``--top-p 0.9`` sets ``eval.top_p``, ``--no-greedy`` sets ``eval.greedy=false``).
Writes ``results.json`` (every metric + the protocol), ``completions.jsonl``, ``results.md`` and
``pass_at_k.png`` to ``eval.out``; prints completions/s and the share of time verifying.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    from reasoner.config import SCHEMA, EvalConfig
    from reasoner.config_doc import comments

    p.add_argument("--config", help="YAML file: its eval section (any other section is read and checked too)")
    notes = comments()
    for f in dataclasses.fields(EvalConfig):
        note = notes.get(f"eval.{f.name}")
        text = (f"eval.{f.name} (default {f.default!r})" + (f": {note}" if note else "")).replace("%", "%%")
        if SCHEMA.hints["eval"][f.name] is bool:  # greedy: on by default, a flag turns it off
            p.add_argument(f"--no-{f.name}", dest=f.name, action="store_const", const=False, help=text)
        else:
            p.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, metavar=f.name.upper(), help=text)
    p.add_argument("overrides", nargs="*", metavar="eval.key=value", help="dotted overrides, e.g. eval.n=8")


def flags(args: argparse.Namespace) -> dict[str, Any]:
    """The flags given on the command line as config keys: ``{"eval.n": "4", "eval.greedy": False}``."""
    from reasoner.config import EvalConfig

    return {f"eval.{f.name}": getattr(args, f.name) for f in dataclasses.fields(EvalConfig)
            if getattr(args, f.name, None) is not None}


def protocol_from(e):
    from reasoner.benchmarks import Protocol

    k_list = [int(k) for k in e.k.split(",") if k.strip()] if e.k else None
    return Protocol(n=e.n, temperature=e.temperature, top_p=e.top_p, max_new_tokens=e.max_new_tokens,
                    seeds=list(range(e.seed, e.seed + e.seeds)), k_list=k_list, greedy=e.greedy,
                    batch_size=e.batch_size, limit=e.limit, template=e.template, instruction=e.instruction,
                    system_prompt=e.system_prompt, few_shot=e.few_shot)


def _prepare(args: argparse.Namespace, defaults: dict[str, Any]):
    """(the eval section, its protocol, the suites' problems): every error before any model is loaded."""
    from reasoner import verifiers
    from reasoner.benchmarks.run import load_suites
    from reasoner.config import DataConfig, load_config, load_plugins

    cfg = load_config(getattr(args, "config", None), getattr(args, "overrides", None),
                      base={f"eval.{k}": v for k, v in defaults.items()}, flags=flags(args))
    e = cfg.eval
    load_plugins(e.plugins, key="eval.plugins")  # before the suites' verifier names are checked
    protocol = protocol_from(e)
    protocol.validate()
    suites = [s.strip() for s in e.suite.split(",") if s.strip()]
    if not suites:
        raise ValueError("eval.suite (--suite) names no suite")
    data_cfg = DataConfig(data_dir=e.data_dir, synthetic_kinds=e.synthetic_kinds)
    loaded = load_suites(suites, data_cfg, protocol)  # data errors surface before the model loads
    for suite, problems in loaded.values():
        try:
            verifiers.check_names(problems)
        except ValueError as err:
            raise ValueError(f"suite {suite.name}: {err.args[0]} (for eval: --plugins mypkg.verifiers)") from None
    return e, protocol, suites, data_cfg, loaded


def main(args: argparse.Namespace, defaults: dict[str, Any] | None = None) -> int:
    """``defaults``: a script's protocol ({"n": 32, ...}), below --config, the flags and the overrides."""
    try:
        e, protocol, suites, data_cfg, loaded = _prepare(args, defaults or {})
    except (ValueError, KeyError) as err:  # ConfigError and DataError are ValueErrors
        print(f"reasoner eval: error: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2
    from reasoner import threads
    from reasoner.benchmarks.run import run_suites
    from reasoner.build import make_sampler
    from reasoner.config import Config, ModelConfig, SamplingConfig
    from reasoner.models import load_model  # heavy imports only once the flags are known to be good
    from reasoner.precision import resolve as resolve_precision
    from reasoner.runtime import pick_device

    cfg = Config(model=ModelConfig(name=e.model, gguf_file=e.gguf_file, precision=e.precision), data=data_cfg,
                 sampling=SamplingConfig(backend=e.backend, max_new_tokens=e.max_new_tokens))
    device = pick_device(e.device)
    # vllm holds its own copy of the weights on the GPU: keep ours (tokenizer, weight source) on the CPU
    model, tokenizer = load_model(cfg.model, "cpu" if e.backend == "vllm" else device, kinds=e.synthetic_kinds)
    prec = resolve_precision(e.precision, device, threads.n_params(model))
    model.to(prec.compute)
    sampler = make_sampler(model, tokenizer, cfg, device)
    run_suites(sampler, tokenizer, suites, data_cfg, protocol, e.out, model=e.model, loaded=loaded)
    print(f"wrote results.json, completions.jsonl, results.md, pass_at_k.png to {e.out}")
    return 0


def run_preset(suite: str, argv: list[str], **defaults) -> int:
    """What the ``scripts/eval_*.py`` wrappers call: ``MODEL [flags]`` with a suite's protocol defaults
    (below --config, the flags and ``eval.key=value``)."""
    p = argparse.ArgumentParser(description=f"evaluate a model on {suite} (flags as `reasoner eval`)")
    p.add_argument("model_path", help="tiny | smollm2 | a .gguf file | a checkpoint directory | a hub id")
    add_arguments(p)
    args = p.parse_args(argv)
    args.model = args.model_path
    return main(args, {"suite": suite, **defaults})
