"""Tokens/s of a real model pair (default: the offline demo pair), same
prompt, same run: HF generate() of the base alone, our loop base-only (lazy,
so the guide never runs), BlendIn lazy and eager, nudging lazy. Runs are
interleaved and the best of --repeats is kept (the machine may be shared).

    python benchmarks/bench_pair.py --threads 1
    blendin bench pair --threads 1 --new-tokens 32
"""
from __future__ import annotations

import argparse
import json
import time

import torch

DEFAULT_PROMPT = "Question: Give me two tips for sleeping better.\nAnswer:"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default="gemma3-270m")
    p.add_argument("--guide", default="smollm2-135m-instruct")
    p.add_argument("--prompt", default=DEFAULT_PROMPT)
    p.add_argument("--new-tokens", type=int, default=48)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", help="also write the rows to this file")
    return p.parse_args(argv)


def main(argv=None):
    from blendin_ext import BlendInGenerator
    from blendin_ext.models.loading import load_model

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    base, guide = load_model(args.base, progress=False), load_model(args.guide, progress=False)
    gen = BlendInGenerator(base.model, guide.model, base.tokenizer, guide.tokenizer)
    ids = base.tokenizer(args.prompt, return_tensors="pt")

    def loop(strategy, lazy):
        out = gen.generate([args.prompt], strategy=strategy, lazy=lazy,
                           max_new_tokens=args.new_tokens)
        diag = out[0].diagnostics
        return diag.tokens, {"intervention_rate": round(diag.intervention_rate, 3),
                             "guide_forwards": out.stats.guide_forwards}

    def hf_generate():
        out = base.model.generate(**ids, max_new_tokens=args.new_tokens,
                                  min_new_tokens=args.new_tokens, do_sample=False)
        return out.shape[1] - ids["input_ids"].shape[1], {}

    rows = {"hf_generate_base": hf_generate, "loop_base_only": lambda: loop("base", True),
            "blendin_lazy": lambda: loop("blendin", True),
            "blendin_eager": lambda: loop("blendin", False),
            "nudging_lazy": lambda: loop("nudging", True)}
    loop("blendin", True)  # warm-up
    best = {}
    for _ in range(args.repeats):
        for name, run in rows.items():
            started = time.perf_counter()
            tokens, info = run()
            seconds = time.perf_counter() - started
            if name not in best or seconds < best[name]["seconds"]:
                best[name] = {"row": name, "tokens": tokens, "seconds": seconds,
                              "tokens_per_s": tokens / seconds, **info}
    print(f"{args.base} + {args.guide}, {torch.get_num_threads()} thread(s), "
          f"best of {args.repeats}")
    for row in best.values():
        extra = {k: v for k, v in row.items() if k not in ("row", "tokens", "seconds", "tokens_per_s")}
        print(f"{row['row']:<18} {row['tokens']:>4} tokens {row['seconds']:7.2f} s "
              f"{row['tokens_per_s']:7.2f} tokens/s  {extra or ''}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(list(best.values()), f, indent=2)


if __name__ == "__main__":
    main()
