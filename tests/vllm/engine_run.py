"""Runs one vLLM engine in this process and prints what it generated as a
JSON line ("RESULT {...}"). The tests start it in a subprocess: one engine
per process, in-process engine core (VLLM_ENABLE_V1_MULTIPROCESSING=0) so
that the plug-in's diagnostics can be read here.

stdin: {"engine": LLM kwargs, "batches": [[{"prompt": str, "sampling":
SamplingParams kwargs}, ...], ...]}. A batch that fails (a bad argument)
gives {"error": message} and the next batch still runs.
"""

import json
import os
import sys

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def run(spec: dict) -> dict:
    from vllm import LLM, SamplingParams

    from blendin_ext.vllm.diagnostics import current

    llm = LLM(**spec["engine"])
    batches = []
    for batch in spec["batches"]:
        try:
            outputs = llm.generate(
                [r["prompt"] for r in batch],
                [SamplingParams(**r["sampling"]) for r in batch],
                use_tqdm=False,
            )
        except Exception as exc:  # noqa: BLE001 - reported to the test
            batches.append({"error": f"{type(exc).__name__}: {exc}"})
            continue
        batches.append(
            [
                {
                    "id": o.request_id,
                    "tokens": list(o.outputs[0].token_ids),
                    "logprobs": [
                        d[t].logprob
                        for d, t in zip(o.outputs[0].logprobs or [], o.outputs[0].token_ids)
                    ],
                }
                for o in outputs
            ]
        )
    return {"batches": batches, "diagnostics": current()}


if __name__ == "__main__":
    result = run(json.loads(sys.stdin.read()))
    print("RESULT " + json.dumps(result), flush=True)
