"""Evaluation tasks: where the data lives, which problems form a fixed
subset, and the prompt of each problem. The prompt is the plain
``Question: ... Answer:`` text a pretrained base continues; the decode loop
gives the guide the same text inside its chat template (as in the paper).

GSM8K and XSTest ship with the package (``blendin_ext/eval/data/``, with
their licences); ``--data-dir`` or ``$BLENDIN_DATA`` point elsewhere.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Optional

from blendin_ext.ops.validate import check_count

DATA_ENV = "BLENDIN_DATA"
GSM8K_FILE = "gsm8k_test.jsonl"
XSTEST_FILE = "xstest_prompts.csv"
BUILTIN_TASKS = ("gsm8k", "xstest")
PROMPT_STYLES = ("zero-shot", "few-shot")
# A base continuing "Question: ... Answer: ..." writes the next question
# itself; stopping there saves time and is how the answer is delimited.
QUESTION_STOP = "\nQuestion:"

# Worked examples in GSM8K's own style, written for this project (not taken
# from the test set), each ending in "The answer is N." so that the base
# learns where to stop.
FEW_SHOT = (
    (
        "A baker makes 24 rolls and sells 3 bags of 6 rolls. How many rolls are left?",
        "The bags hold 3 * 6 = 18 rolls. 24 - 18 = 6 rolls are left. The answer is 6.",
    ),
    (
        "Tom reads 15 pages a day for 4 days and then 10 pages on the fifth day. "
        "How many pages did he read?",
        "In 4 days he reads 15 * 4 = 60 pages. With the fifth day that is 60 + 10 = 70. "
        "The answer is 70.",
    ),
    (
        "A shirt costs $20 and is on sale for 25% off. How much does it cost on sale?",
        "The discount is 20 * 0.25 = $5. The sale price is 20 - 5 = $15. The answer is 15.",
    ),
)


@dataclass(frozen=True)
class Example:
    """One problem: a stable id, the question, the reference answer (gold
    number or text for math, "safe"/"unsafe" for XSTest) and extra fields."""

    id: str
    question: str
    reference: str
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Task:
    """A loaded task: its kind decides scoring ("math" or "refusal")."""

    name: str
    kind: str
    examples: list


def packaged_data_dir() -> Path:
    """The data that ships inside the package (GSM8K test, XSTest)."""
    return Path(str(resources.files("blendin_ext.eval") / "data"))


def resolve_data_dir(data_dir: Optional[str] = None) -> Path:
    """--data-dir, else $BLENDIN_DATA, else the packaged data."""
    explicit = data_dir or os.environ.get(DATA_ENV)
    if not explicit:
        return packaged_data_dir()
    path = Path(explicit).expanduser()
    if not path.is_dir():
        source = "--data-dir" if data_dir else f"${DATA_ENV}"
        raise FileNotFoundError(f"{source} points to {path}, which is not a folder")
    return path


def _spread(items: list, limit: Optional[int]) -> list:
    """``limit`` items spread evenly over ``items`` (all of them when None):
    a fixed subset that still covers every category of an ordered file."""
    if limit is None or limit >= len(items):
        return list(items)
    return [items[(i * len(items)) // limit] for i in range(limit)]


def load_gsm8k(path: Path, limit: Optional[int]) -> list:
    """The first ``limit`` GSM8K test problems (the usual fixed subset)."""
    examples = []
    with open(path, encoding="utf-8") as handle:
        for index, line in enumerate(handle):
            if limit is not None and len(examples) >= limit:
                break
            row = json.loads(line)
            examples.append(Example(f"gsm8k-{index}", row["question"], row["answer"]))
    return examples


def load_xstest(path: Path, limit: Optional[int]) -> list:
    """XSTest prompts: half of ``limit`` from the safe prompts and half from
    the unsafe contrast prompts, each spread over the file so that every
    prompt type is represented."""
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    chosen = []
    for label in ("safe", "unsafe"):
        group = [r for r in rows if r["label"] == label]
        share = None if limit is None else (limit + (label == "safe")) // 2
        chosen += _spread(group, share)
    return [
        Example(f"xstest-{r['id']}", r["prompt"], r["label"], {"type": r["type"]}) for r in chosen
    ]


def load_user_jsonl(path: Path, limit: Optional[int]) -> list:
    """A user's JSONL file with ``question`` and ``answer`` on every line."""
    examples = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            if limit is not None and len(examples) >= limit:
                break
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"--task {path}: line {number} is not JSON ({exc})") from exc
            if not isinstance(row, dict) or "question" not in row or "answer" not in row:
                raise ValueError(
                    f"--task {path}: line {number} needs 'question' and 'answer' fields"
                )
            example_id = str(row.get("id", f"{path.stem}-{number}"))
            examples.append(Example(example_id, str(row["question"]), str(row["answer"])))
    if not examples:
        raise ValueError(f"--task {path}: no examples in the file")
    return examples


def load_task(task: str, data_dir: Optional[str] = None, limit: Optional[int] = None) -> Task:
    """``gsm8k``, ``xstest`` or the path of a ``.jsonl`` file."""
    if limit is not None:
        limit = check_count(limit, "--limit")
    if task in BUILTIN_TASKS:
        folder = resolve_data_dir(data_dir)
        if task == "gsm8k":
            return Task("gsm8k", "math", load_gsm8k(folder / GSM8K_FILE, limit))
        return Task("xstest", "refusal", load_xstest(folder / XSTEST_FILE, limit))
    path = Path(task)
    if path.suffix != ".jsonl" or not path.is_file():
        raise ValueError(f"--task must be gsm8k, xstest or an existing .jsonl file, got {task!r}")
    return Task(path.stem, "math", load_user_jsonl(path, limit))


def base_prompt(example: Example, style: str = "zero-shot") -> str:
    """The plain prompt a pretrained base continues."""
    shots = ""
    if style == "few-shot":
        shots = "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in FEW_SHOT)
    return f"{shots}Question: {example.question}\nAnswer:"
