"""Host cost of keeping a cross-tokenizer guide in sync, per decode step:
deriving every row's guide ids after one new base token per row, with
token twins (guide_sync="tokens") and by re-tokenising the text ("text").
No model runs: this is the per-row work the decode loop and the vLLM
plug-in do before each guide forward (eager mode: every step).

    python benchmarks/bench_guide_sync.py              # default pair, B=32, 128 tokens
    python benchmarks/bench_guide_sync.py --batch 8 --tokens 256

Rows are GSM8K reference answers (shipped with the package) tokenised by
the base's tokenizer. Prints the median over --repeats runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from blendin_ext.guides.token_sync import RowSync, TwinSync
from blendin_ext.guides.vocab_map import TokenBytes, vocab_map
from blendin_ext.ops.validate import GUIDE_SYNC_MODES

DATA = Path(__file__).resolve().parents[1] / "blendin_ext" / "eval" / "data" / "gsm8k_test.jsonl"


def rows_of(tokenizer, batch: int, tokens: int) -> list:
    answers = []
    with open(DATA, encoding="utf-8") as lines:
        for line in lines:
            answers.append(json.loads(line)["answer"])
            if len(answers) == batch:
                break
    return [tokenizer(a, add_special_tokens=False)["input_ids"][:tokens] for a in answers]


def one_run(sync: TwinSync, rows: list) -> tuple:
    """(seconds per step, row states): every row grows by one token, then
    its ids are derived."""
    states, grown = [RowSync() for _ in rows], [[] for _ in rows]
    steps = max(len(r) for r in rows)
    started = time.perf_counter()
    for step in range(steps):
        for i, row in enumerate(rows):
            if step < len(row):
                grown[i].append(row[step])
                sync.update(states[i], grown[i])
    return (time.perf_counter() - started) / steps, states


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="gemma3-270m")
    parser.add_argument("--guide", default="smollm2-135m-instruct")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from blendin_ext.models.loading import load_model

    base = load_model(args.base, progress=False)
    guide = load_model(args.guide, progress=False)
    table, _ = vocab_map(guide.tokenizer, base.tokenizer, base_vocab=base.model.config.vocab_size)
    rows = rows_of(base.tokenizer, args.batch, args.tokens)
    tokenise = lambda text: list(guide.tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    print(f"B={len(rows)}, {statistics.mean(map(len, rows)):.0f} tokens per row on average")
    for mode in GUIDE_SYNC_MODES:
        sync = TwinSync(
            table.base_to_guide.tolist(),
            TokenBytes(base.tokenizer),
            TokenBytes(guide.tokenizer),
            tokenise,
            mode,
        )
        runs = [one_run(sync, rows) for _ in range(args.repeats)]
        states = runs[-1][1]
        share = statistics.mean(s.twin_share or 0.0 for s in states)
        print(
            f"{mode:>6}: {1e3 * statistics.median(r[0] for r in runs):.2f} ms per step, "
            f"twin share {share:.3f}"
        )


if __name__ == "__main__":
    main()
