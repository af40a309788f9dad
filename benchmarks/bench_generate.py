"""Throughput of the BlendIn decode loop beside its baselines, same prompts,
same run.

Rows (greedy), for each batch size of --batch:
  hf_generate     transformers generate() of the base alone
  loop_base       our loop, base-only strategy (lazy: the guide never runs)
  blendin_eager   our loop, BlendIn, guide stepped every token
  blendin_lazy    our loop, BlendIn, guide only where a live row intervenes
  eager_batch1, lazy_batch1   (when 1 is not among the batch sizes) the
                  first prompt alone, where the lazy guide's forwards per
                  step follow the intervention rate
Columns: tokens/s (generated tokens over wall time, prefill included),
intervention rate, guide forwards per step (decode steps), and for our loop
the time outside the models' forwards relative to the forwards themselves
(the loop's overhead; target <= 10% in eager mode).

By default both models are random-weight Llamas built from a config (no
download): a "base" of 4 layers x 512 and a "guide" of 2 layers x 256, both
with a 32000-word vocabulary, their output layers scaled so that the base
is unsure (top-1 < 0.4) at a fair share of steps. --base / --guide take HF
ids or folders instead (then --tokenizer, default: the base's).

    python benchmarks/bench_generate.py                    # CPU, a couple of minutes
    python benchmarks/bench_generate.py --quick --json out.json
    python benchmarks/bench_generate.py --device cuda --batch 1,16 --new-tokens 128

--profile DIR adds a torch.profiler view of a few B=1 decode steps of
generate(), our base-only loop and lazy BlendIn (decode_profile.py: traces,
top ops, launches / syncs / copies per token).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from blendin_ext import BlendInGenerator
from blendin_ext.testing import random_prompts, tiny_llama, tiny_tokenizer


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", help="HF id or folder of the base model (default: random tiny Llama)")
    p.add_argument(
        "--guide", help="HF id or folder of the guide model (default: random tiny Llama)"
    )
    p.add_argument("--tokenizer", help="tokenizer id or folder (default: the base's)")
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--base-size", default="4x512", help="LAYERSxHIDDEN of the random base")
    p.add_argument("--guide-size", default="2x256", help="LAYERSxHIDDEN of the random guide")
    p.add_argument("--batch", default="4", help="batch size, or comma-separated sizes")
    p.add_argument("--prompt-words", default="16-48", help="MIN-MAX words per random prompt")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3, help="timed runs per row (median)")
    p.add_argument("--gamma", type=float, default=0.4)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "float16", "bfloat16"],
        help="auto: bfloat16 on a CPU with native bf16 or CUDA, else float32",
    )
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--quick", action="store_true", help="fewer tokens and repeats")
    p.add_argument("--json", help="write the results to this file")
    p.add_argument("--profile", metavar="DIR", help="also profile B=1 decode steps into DIR")
    p.add_argument("--profile-tokens", type=int, default=8, help="new tokens per profiled run")
    args = p.parse_args(argv)
    args.batch = [int(v) for v in str(args.batch).split(",")]
    if args.quick:
        args.new_tokens, args.repeats = min(args.new_tokens, 24), 1
    return args


def random_models(args, dtype, device):
    def size(text):
        layers, hidden = (int(v) for v in text.lower().split("x"))
        return dict(
            layers=layers, hidden=hidden, heads=max(hidden // 64, 1), kv_heads=max(hidden // 128, 1)
        )

    tokenizer = tiny_tokenizer(args.vocab)
    # Spread of the output logits chosen so that the base is unsure at a fair
    # share of steps, as real base models are (random inits give ~0% or ~100%).
    base = tiny_llama(
        args.vocab, seed=0, init_std=0.05, logit_std=7.0, dtype=dtype, **size(args.base_size)
    )
    guide = tiny_llama(
        args.vocab, seed=1, init_std=0.05, logit_std=7.0, dtype=dtype, **size(args.guide_size)
    )
    return base.to(device), guide.to(device), tokenizer


def hub_models(args, dtype, device):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or args.base)
    load = dict(dtype=dtype)
    base = AutoModelForCausalLM.from_pretrained(args.base, **load).to(device).eval()
    guide = AutoModelForCausalLM.from_pretrained(args.guide or args.base, **load).to(device).eval()
    return base, guide, tokenizer


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_hf_generate(base, tokenizer, prompts, args, device):
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    inputs = tokenizer(prompts, return_tensors="pt", padding=True).to(device)

    def run():
        sync(device)
        start = time.perf_counter()
        with torch.inference_mode():
            out = base.generate(
                **inputs,
                do_sample=False,
                max_new_tokens=args.new_tokens,
                min_new_tokens=args.new_tokens,
                pad_token_id=tokenizer.pad_token_id,
            )
        sync(device)
        return time.perf_counter() - start, out.shape[1] - inputs["input_ids"].shape[1]

    run()  # warm-up
    times, new = zip(*(run() for _ in range(args.repeats)))
    seconds = statistics.median(times)
    return dict(
        name="hf_generate",
        tokens_per_s=len(prompts) * new[0] / seconds,
        seconds=seconds,
        tokens=len(prompts) * new[0],
    )


def time_loop(name, generator, prompts, args, **options):
    generator.time_forwards = True

    def run():
        out = generator.generate(
            prompts, max_new_tokens=args.new_tokens, gamma=args.gamma, **options
        )
        return out

    run()  # warm-up
    outs = [run() for _ in range(args.repeats)]
    out = sorted(outs, key=lambda o: o.stats.seconds)[len(outs) // 2]  # the median run
    stats = out.stats
    rates = [r.diagnostics.intervention_rate for r in out]
    outside = stats.seconds - stats.forward_seconds
    return dict(
        name=name,
        tokens_per_s=stats.generated_tokens / stats.seconds,
        seconds=stats.seconds,
        tokens=stats.generated_tokens,
        forward_seconds=stats.forward_seconds,
        loop_overhead=outside / stats.forward_seconds if stats.forward_seconds else None,
        intervention_rate=statistics.mean(rates),
        steps=stats.steps,
        guide_forwards=stats.guide_forwards,
        guide_tokens=stats.guide_tokens,
        guide_forwards_per_step=stats.guide_forwards / stats.steps,
        token_ids=[r.token_ids for r in out],
    )


def print_table(rows):
    columns = [
        ("row", "name", "<16", "s"),
        ("B", "batch", ">4", "d"),
        ("tok/s", "tokens_per_s", ">9", ".1f"),
        ("s", "seconds", ">7", ".2f"),
        ("interv.", "intervention_rate", ">9", ".2f"),
        ("guide fw/step", "guide_forwards_per_step", ">15", ".2f"),
        ("overhead", "loop_overhead", ">10", ".1%"),
    ]
    print("".join(format(title, align) for title, _, align, _ in columns))
    print("-" * 70)
    for r in rows:
        print(
            "".join(
                format(format(r[key], spec) if r.get(key) is not None else "-", align)
                for _, key, align, spec in columns
            )
        )


def batch_rows(generator, base, tokenizer, prompts, args, device):
    """generate(), base-only and BlendIn (eager, lazy) on these prompts;
    whether lazy and eager BlendIn gave the same tokens."""
    rows = [time_hf_generate(base, tokenizer, prompts, args, device)]
    rows.append(time_loop("loop_base", generator, prompts, args, strategy="base", lazy=True))
    rows.append(time_loop("blendin_eager", generator, prompts, args, strategy="blendin"))
    rows.append(time_loop("blendin_lazy", generator, prompts, args, strategy="blendin", lazy=True))
    if len(prompts) > 1 and 1 not in args.batch:
        # One row alone: lazy guide forwards per step then track its intervention rate.
        rows.append(time_loop("eager_batch1", generator, prompts[:1], args, strategy="blendin"))
        rows.append(
            time_loop("lazy_batch1", generator, prompts[:1], args, strategy="blendin", lazy=True)
        )
    ids = {r["name"]: r.pop("token_ids", None) for r in rows}
    same = ids["blendin_eager"] == ids["blendin_lazy"] and ids.get("eager_batch1") == ids.get(
        "lazy_batch1"
    )
    for r in rows:
        r["batch"] = 1 if r["name"].endswith("_batch1") else len(prompts)
    return rows, same


def profile_batch1(generator, base, tokenizer, prompt, args, device):
    from decode_profile import print_summaries, profile_runs

    tokens = args.profile_tokens
    inputs = tokenizer([prompt], return_tensors="pt").to(device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def hf_generate():
        with torch.inference_mode():
            base.generate(
                **inputs,
                do_sample=False,
                max_new_tokens=tokens,
                min_new_tokens=tokens,
                pad_token_id=pad,
            )

    def loop(**options):
        return lambda: generator.generate(
            [prompt], max_new_tokens=tokens, gamma=args.gamma, **options
        )

    runs = {
        "hf_generate": hf_generate,
        "loop_base": loop(strategy="base", lazy=True),
        "blendin_lazy": loop(strategy="blendin", lazy=True),
    }
    generator.time_forwards = False  # its per-forward syncs would show in the profile
    summaries = profile_runs(runs, tokens, Path(args.profile), device)
    print_summaries(summaries)
    return summaries


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from blendin_ext.models.loading import resolve_dtype

    device, dtype = torch.device(args.device), resolve_dtype(args.dtype, args.device)
    args.dtype = str(dtype).replace("torch.", "")
    build = hub_models if args.base else random_models
    base, guide, tokenizer = build(args, dtype, device)
    lo, hi = (int(v) for v in args.prompt_words.split("-"))
    prompts = random_prompts(
        max(args.batch), min_words=lo, max_words=hi, vocab=min(args.vocab - 8, 5000)
    )
    generator = BlendInGenerator(base, guide, tokenizer)

    rows, same = [], True
    for batch in args.batch:
        batch_results, batch_same = batch_rows(
            generator, base, tokenizer, prompts[:batch], args, device
        )
        rows += batch_results
        same = same and batch_same
    print(
        f"device {device} ({platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads), dtype {args.dtype}, "
        f"{args.new_tokens} new tokens, vocab {args.vocab}, base {args.base or args.base_size}, "
        f"guide {args.guide or args.guide_size}"
    )
    print_table(rows)
    print(f"lazy tokens == eager tokens: {same}")
    profiled = (
        profile_batch1(generator, base, tokenizer, prompts[0], args, device)
        if args.profile
        else None
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                dict(
                    args=vars(args),
                    rows=rows,
                    lazy_equals_eager=same,
                    profile=profiled,
                    torch=torch.__version__,
                ),
                f,
                indent=2,
            )
    return rows


if __name__ == "__main__":
    main()
