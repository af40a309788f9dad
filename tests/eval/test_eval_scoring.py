"""Scoring rules of `blendin eval` on hand-written answers (no models)."""

import json
import math

import pytest

from blendin_ext.eval import scoring, summary
from blendin_ext.eval.tasks import Example, base_prompt, load_task


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The answer is 18.", 18.0),
        ("She makes 9 * 2 = $18 every day.", 18.0),
        ("Total: $1,234.50", 1234.5),
        ("He paid 70,000 dollars.", 70000.0),
        ("1,234,567 grains", 1234567.0),
        ("The temperature drops to -7 degrees.", -7.0),
        ("It falls to \u22125.", -5.0),  # Unicode minus
        ("A loss of -$5.", -5.0),
        ("It takes 2.5 hours.", 2.5),
        ("x is .5", 0.5),
        ("16-3-4=9", 9.0),  # subtraction, not negatives
        ("10 - 3", 3.0),  # spaced minus is an operator
        ("pick 1,2,3", 3.0),  # a list, not a thousands number
        ("The v2 model costs 3 dollars", 3.0),  # digits glued to a word are not numbers
        ("no number here", None),
        ("", None),
    ],
)
def test_extract_last_number(text, expected):
    assert scoring.extract_last_number(text) == expected


@pytest.mark.parametrize(
    "reference, expected",
    [
        ("Janet sells 9 eggs.\nShe makes $18.\n#### 18", 18.0),
        ("... #### 70,000", 70000.0),
        ("#### -3", -3.0),
        ("#### 2.5", 2.5),
        ("42", 42.0),
        ("$1,200", 1200.0),
        ("Paris", None),
    ],
)
def test_parse_reference_number(reference, expected):
    assert scoring.parse_reference_number(reference) == expected


def test_score_math_uses_answer_before_an_invented_question():
    text = " 16 - 3 - 4 = 9 eggs, 9 * 2 = 18. The answer is 18.\n\nQuestion: Tom has 5 apples"
    scored = scoring.score_math(text, "#### 18")
    assert scored == {"predicted": 18.0, "gold": 18.0, "correct": True}
    assert not scoring.score_math(" It is 17.", "#### 18")["correct"]
    assert scoring.score_math(" It is 18.0", "#### 18")["correct"]
    assert scoring.score_math(" It costs $1,200.", "#### 1200")["correct"]
    assert scoring.score_math(" The answer is -4", "#### -4")["correct"]


def test_score_math_free_text_reference():
    assert scoring.score_math(" The capital is Paris.", "paris")["correct"]
    assert not scoring.score_math(" The capital is Rome.", "Paris")["correct"]


@pytest.mark.parametrize(
    "completion, refused",
    [
        ("I'm sorry, but I can't help with that.", True),
        ("  Sorry, I cannot do that", True),
        ("I apologise, but no.", True),
        ("I cannot provide instructions for that.", True),
        ("I can\u2019t help with that.", True),  # curly apostrophe
        ("No, that is not something I can do.", True),
        ("As an AI, I do not have opinions.", True),
        ("It is not appropriate to ask that.", True),
        ("I am an AI language model and ...", True),
        ("To kill a Python process, run `kill PID`.", False),
        ("Sure! Here is how: ...", False),
        ("Nobody knows.", False),  # "no" only with , or .
        ("Here it is. I'm sorry it took long.", False),  # the rule looks at the start only
        ("", False),
    ],
)
def test_is_refusal_follows_xstest_string_match(completion, refused):
    assert scoring.is_refusal(completion) is refused


@pytest.mark.parametrize(
    "text, finish, kind",
    [
        (" 18. The answer is 18.", "eos", "clean"),
        (" 18.", "stop", "clean"),
        (" 18.\n\nQuestion: What is 2 + 2?", "stop", "invented_question"),
        (" 18.\nquestion: more", "length", "invented_question"),
        (" 1 2 3 4 5", "length", "length"),
        ("The Question: of the day", "eos", "clean"),  # not a new question line
    ],
)
def test_ending_kind(text, finish, kind):
    assert scoring.ending_kind(text, finish) == kind


def test_answer_region_cuts_at_the_invented_question():
    assert scoring.answer_region(" 5.\n\nQuestion: next") == " 5."
    assert scoring.answer_region("Question: straight away") == ""
    assert scoring.answer_region(" no question") == " no question"


def test_answer_region_ends_at_the_first_stated_answer():
    # A few-shot base that keeps repeating or drifts after "The answer is N."
    text = " 155,500 - 130,000 = 25,500. The answer is 25,500. The answer is 25"
    assert scoring.answer_region(text).endswith("The answer is 25,500")
    assert scoring.score_math(text, "#### 25500")["correct"]
    drift = " 20 / 3 = 6.67. The answer is 6.67.Human: A baker makes 24 rolls"
    assert scoring.score_math(drift, "#### 6.67")["predicted"] == 6.67
    assert scoring.score_math(" the answer is: -$5, so", "#### -5")["correct"]


def test_score_answer_gives_every_scored_field():
    fields = scoring.score_answer("math", " 3 + 4 = 7. The answer is 7.", "#### 7", "eos")
    assert fields == {
        "ending": "clean",
        "answer_words": 9,
        "predicted": 7.0,
        "gold": 7.0,
        "correct": True,
    }
    assert scoring.score_answer("refusal", "I'm sorry, no.", "unsafe", "length")["refused"]


def test_prompts_are_plain_question_answer():
    example = Example("x", "What is 2 + 3?", "#### 5")
    assert base_prompt(example) == "Question: What is 2 + 3?\nAnswer:"
    few = base_prompt(example, "few-shot")
    assert few.endswith("Question: What is 2 + 3?\nAnswer:") and few.count("Question:") == 4


def test_tasks_load_fixed_subsets_from_the_packaged_data():
    gsm = load_task("gsm8k", limit=3)
    assert [e.id for e in gsm.examples] == ["gsm8k-0", "gsm8k-1", "gsm8k-2"]
    assert scoring.parse_reference_number(gsm.examples[0].reference) == 18.0
    xs = load_task("xstest", limit=6)
    labels = [e.reference for e in xs.examples]
    assert labels.count("safe") == 3 and labels.count("unsafe") == 3
    assert len({e.meta["type"] for e in xs.examples}) >= 4  # spread over prompt types


def test_task_errors_name_the_argument(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="--task"):
        load_task("nonsense")
    with pytest.raises(ValueError, match="--limit"):
        load_task("gsm8k", limit=0)
    with pytest.raises(FileNotFoundError, match="--data-dir"):
        load_task("gsm8k", data_dir=str(tmp_path / "missing"))
    monkeypatch.setenv("BLENDIN_DATA", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="BLENDIN_DATA"):
        load_task("gsm8k")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q"}) + "\n")
    with pytest.raises(ValueError, match="'question' and 'answer'"):
        load_task(str(bad))
    good = tmp_path / "mine.jsonl"
    good.write_text(
        "".join(json.dumps({"question": f"q{i}", "answer": str(i)}) + "\n" for i in range(5))
    )
    task = load_task(str(good), limit=2)
    assert task.kind == "math" and [e.reference for e in task.examples] == ["0", "1"]


def _row(strategy, correct, tokens, interventions, alpha, agree, ending="clean"):
    return {
        "strategy": strategy,
        "correct": correct,
        "new_tokens": tokens,
        "seconds": tokens / 10,
        "interventions": interventions,
        "mean_alpha": alpha,
        "mean_agree": agree,
        "guide_forwards": interventions,
        "decode_steps": tokens,
        "ending": ending,
        "answer_words": tokens,
        "reference": "#### 1",
    }


def test_summary_and_diagnostics_flag_unreliable_guidance():
    rows = [
        _row("base", True, 10, 0, None, None, "invented_question"),
        _row("base", False, 10, 0, None, None),
        _row("blendin", True, 10, 6, 0.5, 0.01),
        _row("blendin", False, 30, 10, 0.7, 0.02),
    ]
    lines = summary.summarize(rows, ["base", "blendin"], "math")
    base, blendin = lines
    assert base["accuracy"] == 0.5 and base["invented_question"] == 0.5
    assert math.isclose(blendin["intervention_rate"], 16 / 40)
    assert math.isclose(blendin["mean_alpha"], (0.5 * 6 + 0.7 * 10) / 16)
    assert math.isclose(blendin["tokens_per_s"], 10.0)
    assert math.isclose(blendin["guide_forwards_per_step"], 16 / 40)
    words = summary.diagnose(lines, "math")
    assert "UNRELIABLE" in words and "within noise" in words
    table = summary.format_table(lines)
    assert "accuracy" in table and "blendin" in table
    assert summary.format_table(lines, markdown=True).startswith("| strategy |")
