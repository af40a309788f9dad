"""benchmarks/exactness.py on a real `blendin eval` folder of tiny random
models: where blendin and a top-N list strategy part, and `--explain`
replaying the loop's logits at each first difference to say why."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from blendin_ext import cli
from blendin_ext.testing import tiny_llama, tiny_tokenizer

ROOT = Path(__file__).resolve().parent.parent
VOCAB, PROBLEMS = 300, 4

pytest.importorskip("transformers")


def load_exactness():
    spec = importlib.util.spec_from_file_location("exactness", ROOT / "benchmarks" / "exactness.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def results_folder(tmp_path_factory):
    """One answer at a time (batch 1), so a lone replay is the run's own
    arithmetic. The output layers are scaled down: flat rows, where the
    exact blend often picks a token outside the top-5 lists' union."""
    root = tmp_path_factory.mktemp("exactness")
    folders = []
    for name, seed in (("base", 1), ("guide", 2)):
        folder = root / name
        model = tiny_llama(VOCAB, seed=seed)
        with torch.no_grad():
            model.lm_head.weight.mul_(0.3)
        model.save_pretrained(folder)
        tiny_tokenizer(VOCAB).save_pretrained(folder)
        folders.append(str(folder))
    task = root / "task.jsonl"
    task.write_text(
        "".join(
            json.dumps({"question": f"w{i} w{i + 5} w9", "answer": "#### 1"}) + "\n"
            for i in range(PROBLEMS)
        )
    )
    out = root / "run"
    argv = ["eval", "--base", folders[0], "--guide", folders[1], "--task", str(task)]
    argv += ["--strategies", "blendin,blendin-top5", "--limit", str(PROBLEMS), "--gamma", "0.9"]
    argv += ["--max-new-tokens", "16", "--batch-size", "1", "--threads", "1"]
    assert cli.main([*argv, "--no-plots", "--quiet", "--out", str(out)]) == 0
    return out


def test_first_difference():
    first_difference = load_exactness().first_difference
    assert first_difference([1, 2, 3], [1, 2, 3]) is None
    assert first_difference([1, 2, 3], [1, 5, 3]) == 1
    assert first_difference([1, 2], [1, 2, 3]) == 2  # one a prefix of the other


def test_parts_are_found_and_explained(results_folder, tmp_path, capsys):
    exactness = load_exactness()
    numbers = tmp_path / "exactness.json"
    argv = [str(results_folder), "--lists", "blendin-top5", "--explain", "--json", str(numbers)]
    assert exactness.main(argv) == 0
    printed = capsys.readouterr().out
    assert "| blendin-top5 | 4 |" in printed and "blendin vs blendin-top5:" in printed

    (result,) = json.loads(numbers.read_text())
    assert result["problems"] == PROBLEMS
    assert result["identical"] + len(result["parted"]) == PROBLEMS
    assert result["parted"], "top-5 lists of flat rows should part from the exact blend"
    for part in result["parted"]:
        assert part["reproduced"], part  # batch 1: the replay is the run's arithmetic
        assert part["cause"] == "mass outside the top 5"  # one tokenizer: nothing to renormalise
        assert part["step"] >= 0 and part["interventions_before"] <= part["step"]
        assert 0 <= part["alpha_exact"] <= 1 and 0 < part["c_b"] < 0.9


def test_a_stopped_run_is_summarised_from_its_rows(results_folder, tmp_path):
    """A run stopped before its end has no summary.json yet: the table
    comes from the rows it wrote, as the eval would summarise them."""
    exactness = load_exactness()
    finished = exactness.compare(results_folder, "blendin-top5")
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    for name in ("config.json", "examples.jsonl"):
        (stopped / name).write_text((results_folder / name).read_text())
    partial = exactness.compare(stopped, "blendin-top5")
    assert [line["strategy"] for line in partial["summary"]] == ["blendin", "blendin-top5"]
    for mine, theirs in zip(partial["summary"], finished["summary"]):
        assert mine["n"] == theirs["n"] == PROBLEMS
        assert mine["intervention_rate"] == pytest.approx(theirs["intervention_rate"])
    assert partial["parted"] == finished["parted"]
