"""``reasoner eval --model M --suite aime24,aime25,amc23,math500 --n 32 --temperature 0.6 ...``

Writes ``results.json`` (every metric + the protocol), ``completions.jsonl``, ``results.md``
and ``pass_at_k.png`` to ``--out``; prints completions/s and the share of time verifying.
"""
from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="tiny", help="tiny | smollm2 | a .gguf file | a checkpoint directory | a hub id")
    p.add_argument("--gguf-file", default=None, help="GGUF file name inside --model (a directory or hub repo)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="weights and compute: auto = bf16 where bf16 matmuls are fast and the model has >= 5M "
                        "parameters (reasoner.precision), else fp32")
    p.add_argument("--suite", default="aime24,aime25,amc23,math500",
                   help="comma-separated suites: named sets (see `reasoner list`), NAME:SPLIT, or files")
    p.add_argument("--n", type=int, default=1, help="samples per problem (avg@n, pass@k, maj@k)")
    p.add_argument("--temperature", type=float, default=0.6)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--max-new-tokens", type=int, default=1024)
    p.add_argument("--seeds", type=int, default=1, help="number of sampled passes (seeds SEED..SEED+seeds-1)")
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--k", default=None, help="comma-separated k for pass@k / maj@k (default 1,2,4,...,n)")
    p.add_argument("--no-greedy", action="store_true", help="skip the greedy (temperature 0) pass")
    p.add_argument("--batch-size", type=int, default=64, help="completions per sampler call")
    p.add_argument("--limit", type=int, default=0, help="only the first N problems of each suite")
    p.add_argument("--out", default="runs/eval", help="output directory")
    p.add_argument("--data-dir", default=None, help="local copies of named sets (else $REASONER_DATA_DIR, else hub)")
    p.add_argument("--template", default="auto", choices=("auto", "plain", "chat"))
    p.add_argument("--instruction", default=None, help="instead of each set's default ('' for none)")
    p.add_argument("--system-prompt", default=None)
    p.add_argument("--few-shot", type=int, default=0)
    p.add_argument("--synthetic-kinds", default="add,sub", help="kinds for the synthetic suite (and the tiny model)")
    p.add_argument("--backend", default="transformers", help="transformers | vllm")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--plugins", default="", help="comma-separated modules or .py files imported first (their "
                                                 "@verifiers.register verifiers become valid names)")


def protocol_from_args(args: argparse.Namespace):
    from reasoner.benchmarks import Protocol

    k_list = [int(k) for k in args.k.split(",") if k.strip()] if args.k else None
    return Protocol(n=args.n, temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
                    seeds=list(range(args.seed, args.seed + args.seeds)), k_list=k_list, greedy=not args.no_greedy,
                    batch_size=args.batch_size, limit=args.limit, template=args.template,
                    instruction=args.instruction, system_prompt=args.system_prompt, few_shot=args.few_shot)


def main(args: argparse.Namespace) -> int:
    from reasoner.benchmarks.run import load_suites, run_suites
    from reasoner.config import Config, DataConfig, ModelConfig, SamplingConfig

    try:
        from reasoner import verifiers
        from reasoner.config import load_plugins

        load_plugins(getattr(args, "plugins", ""), key="--plugins")  # before the suites' verifier names are checked
        protocol = protocol_from_args(args)
        protocol.validate()  # bad flags and unknown suites fail before any model is loaded
        suites = [s.strip() for s in args.suite.split(",") if s.strip()]
        if not suites:
            raise ValueError("--suite names no suite")
        data_cfg = DataConfig(data_dir=args.data_dir, synthetic_kinds=args.synthetic_kinds)
        loaded = load_suites(suites, data_cfg, protocol)  # data errors surface before the model loads
        for suite, problems in loaded.values():
            try:
                verifiers.check_names(problems)
            except ValueError as e:
                raise ValueError(f"suite {suite.name}: {e.args[0]} (for eval: --plugins mypkg.verifiers)"
                                 ) from None
    except (ValueError, KeyError) as e:  # DataError is a ValueError
        print(f"reasoner eval: error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    from reasoner import threads
    from reasoner.models import load_model  # heavy imports only once the flags are known to be good
    from reasoner.precision import resolve as resolve_precision
    from reasoner.build import make_sampler
    from reasoner.runtime import pick_device

    cfg = Config(model=ModelConfig(name=args.model, gguf_file=args.gguf_file, precision=args.precision), data=data_cfg,
                 sampling=SamplingConfig(backend=args.backend, max_new_tokens=args.max_new_tokens))
    device = pick_device(args.device)
    # vllm holds its own copy of the weights on the GPU: keep ours (tokenizer, weight source) on the CPU
    model, tokenizer = load_model(cfg.model, "cpu" if args.backend == "vllm" else device, kinds=args.synthetic_kinds)
    prec = resolve_precision(args.precision, device, threads.n_params(model))
    model.to(prec.compute)
    sampler = make_sampler(model, tokenizer, cfg, device)
    run_suites(sampler, tokenizer, suites, data_cfg, protocol, args.out, model=args.model, loaded=loaded)
    print(f"wrote results.json, completions.jsonl, results.md, pass_at_k.png to {args.out}")
    return 0


def run_preset(suite: str, argv: list[str], **defaults) -> int:
    """What the ``scripts/eval_*.py`` wrappers call: ``MODEL [flags]`` with a suite's protocol defaults."""
    p = argparse.ArgumentParser(description=f"evaluate a model on {suite} (flags as `reasoner eval`)")
    p.add_argument("model_path", help="tiny | smollm2 | a .gguf file | a checkpoint directory | a hub id")
    add_arguments(p)
    p.set_defaults(suite=suite, **defaults)
    args = p.parse_args(argv)
    args.model = args.model_path
    return main(args)
