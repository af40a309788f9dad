"""Running a vLLM engine for a test: one engine per subprocess
(tests/vllm/engine_run.py), results back as JSON."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_engine(engine: dict, batches: list, timeout: int = 900, env: dict = None) -> dict:
    """Starts an engine with LLM(**engine), runs each batch of
    {"prompt", "sampling"} requests; returns {"batches", "diagnostics"}.
    env: extra environment variables for the engine's process."""
    spec = json.dumps({"engine": engine, "batches": batches})
    done = subprocess.run(
        [sys.executable, "-m", "tests.vllm.engine_run"],
        input=spec,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        env=dict(os.environ, **(env or {})),
    )
    for line in done.stdout.splitlines()[::-1]:
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise AssertionError(f"engine failed (rc {done.returncode}):\n{done.stderr[-6000:]}")


def request(prompt: str, *, blendin=None, **sampling) -> dict:
    """One request: greedy with ignore_eos unless told otherwise."""
    params = {"temperature": 0.0, "max_tokens": 12, "ignore_eos": True, **sampling}
    if blendin is not None:
        params["extra_args"] = {"blendin": blendin}
    return {"prompt": prompt, "sampling": params}


def tokens(batch) -> list:
    if isinstance(batch, dict):
        raise AssertionError(f"the batch failed: {batch['error']}")
    return [r["tokens"] for r in batch]


def fake_params(
    blendin=None,
    *,
    temperature=0.0,
    top_k=0,
    top_p=1.0,
    seed=None,
    max_tokens=None,
    min_tokens=0,
    stop_token_ids=None,
    ignore_eos=True,
):
    """The fields of vLLM's SamplingParams the plug-in reads, for tests that
    drive it by hand (no vLLM needed); blendin: the extra_args entry."""
    from types import SimpleNamespace

    return SimpleNamespace(
        extra_args=None if blendin is None else {"blendin": blendin},
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
        max_tokens=max_tokens,
        min_tokens=min_tokens,
        stop_token_ids=stop_token_ids,
        ignore_eos=ignore_eos,
    )
