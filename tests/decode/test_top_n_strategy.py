"""Strategy blendin-top100 (the paper's top-N procedure) through every entry
point on tiny random models: the decode loop, the command line (generate
and eval) and transformers' generate() with `hf.BlendIn`. Where the lists
hold the whole vocabulary (V <= 100) its tokens are blendin's; where they
do not, the first token where the two differ is explained by the lists
alone."""

import json

import pytest
import torch

import blendin_ext
from blendin_ext import cli
from blendin_ext.hf import BlendIn
from blendin_ext.models.prompts import base_prompt_ids, chat_prompt_ids
from blendin_ext.ops.args import StepArgs
from blendin_ext.ops.top_n import top_n_step
from blendin_ext.testing import random_prompts, tiny_llama, tiny_tokenizer
from tests.helpers.tokenizer_fixtures import trained_byte_level, trained_sentencepiece

PROMPTS = random_prompts(4, min_words=1, max_words=8, seed=7)
GAMMA = 0.9  # tiny models are unsure: most steps intervene
NEW = 16


@pytest.fixture(scope="module")
def small():
    """V = 100: each model's top-100 list is its whole vocabulary."""
    return tiny_tokenizer(100), tiny_llama(100, seed=1), tiny_llama(100, seed=2)


def decode(pair, strategy, prompts=PROMPTS, **options):
    tok, base, guide = pair
    options = dict(dict(max_new_tokens=NEW, gamma=GAMMA), **options)
    return blendin_ext.generate(base, guide, prompts, tokenizer=tok, strategy=strategy, **options)


def tokens(output):
    return [r.token_ids for r in output]


def steps(output):
    return [[(i.position, i.token) for i in r.diagnostics.interventions] for r in output]


def alphas(output):
    return [a for r in output for a in (i.alpha for i in r.diagnostics.interventions)]


# -------------------------------------------------------------- the loop
@pytest.mark.parametrize("lazy", [False, True])
def test_whole_vocabulary_lists_give_blendins_tokens(small, lazy):
    exact, lists = decode(small, "blendin", lazy=lazy), decode(small, "blendin-top100", lazy=lazy)
    assert tokens(lists) == tokens(exact)
    assert steps(lists) == steps(exact)
    assert alphas(lists) == pytest.approx(alphas(exact), abs=1e-5)
    assert sum(len(s) for s in steps(lists)) > NEW  # the guide did join


def test_mixed_batch_equals_each_row_alone(small):
    strategies = ["blendin-top100", "nudging", "blendin-top3", "blendin"]
    batch = decode(small, strategies, lazy=True)
    alone = [decode(small, s, prompts=[p], lazy=True)[0] for s, p in zip(strategies, PROMPTS)]
    assert tokens(batch) == [r.token_ids for r in alone]
    assert steps(batch) == steps(alone)


def test_rows_that_finish_early_leave_the_batch(small):
    stop = tokens(decode(small, "blendin-top100"))[0][3]  # row 0 ends at its 4th token
    kept = decode(
        small, ["blendin-top100", "blendin-top5"] * 2, stop_token_ids=[stop], compact=False
    )
    compacted = decode(small, ["blendin-top100", "blendin-top5"] * 2, stop_token_ids=[stop])
    assert tokens(compacted) == tokens(kept) and len(kept[0].token_ids) <= 4


def test_sampling_is_refused_before_any_step(small):
    with pytest.raises(
        ValueError,
        match="temperature must be 0 with strategy blendin-top100.*"
        r"\(prompt 1\)",
    ):
        decode(small, ["blendin", "blendin-top100"], prompts=PROMPTS[:2], temperature=0.7)


@pytest.fixture(scope="module")
def wide():
    """V = 1000, near-flat distributions: most mass lies outside the top 100."""
    return (
        tiny_tokenizer(1000),
        tiny_llama(1000, seed=3, init_std=0.2),
        tiny_llama(1000, seed=4, init_std=0.2),
    )


def test_large_vocabulary_differs_only_through_the_lists(wide):
    """At the first token where blendin and blendin-top100 part, the op on
    the same logits gives blendin's token, the top-100 step gives the other,
    and the top-N step with lists of the whole vocabulary gives blendin's."""
    tok, base, guide = wide
    exact, lists = (
        decode(wide, "blendin", max_new_tokens=24),
        decode(wide, "blendin-top100", max_new_tokens=24),
    )
    parted = 0
    for prompt, a, b in zip(PROMPTS, tokens(exact), tokens(lists)):
        step = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
        if step is None:
            continue
        parted += 1
        prefix = a[:step]
        with torch.no_grad():
            base_logits = base(torch.tensor([base_prompt_ids(tok, [prompt])[0] + prefix])).logits
            guide_logits = guide(torch.tensor([chat_prompt_ids(tok, [prompt])[0] + prefix])).logits
        b_row, g_row = base_logits[:, -1], guide_logits[:, -1]
        args = StepArgs.build(gamma=GAMMA)
        assert int(blendin_ext.blend_step(b_row, g_row, gamma=GAMMA).tokens) == a[step]
        assert int(top_n_step(b_row, g_row, None, args, 100).tokens) == b[step]
        assert int(top_n_step(b_row, g_row, None, args, 1000).tokens) == a[step]
    assert parted >= 1


def test_cross_tokenizer_pair_runs_lazy_as_eager():
    """Different tokenizers: the guide's lists are mapped to base ids
    through the vocabulary map; lazy equals eager, batch equals alone."""
    base_tok, guide_tok = trained_sentencepiece(), trained_byte_level()
    base = tiny_llama(
        len(base_tok),
        seed=5,
        eos_token_id=base_tok.eos_token_id,
        pad_token_id=base_tok.pad_token_id,
    )
    guide = tiny_llama(
        len(guide_tok),
        seed=6,
        eos_token_id=guide_tok.eos_token_id,
        pad_token_id=guide_tok.pad_token_id,
    )
    gen = blendin_ext.BlendInGenerator(base, guide, base_tok, guide_tok)
    prompts = ["the cat sat on", "a dog ran"]

    def run(p, **o):
        return gen.generate(p, strategy="blendin-top100", max_new_tokens=NEW, gamma=GAMMA, **o)

    eager, lazy = run(prompts), run(prompts, lazy=True)
    assert tokens(lazy) == tokens(eager) and steps(lazy) == steps(eager)
    assert [run([p])[0].token_ids for p in prompts] == tokens(eager)
    assert sum(r.diagnostics.intervention_count for r in eager) > 0


# ------------------------------------------------- transformers generate()
def test_hf_blendin_equals_our_loop(small):
    tok, base, guide = small
    generator = blendin_ext.BlendInGenerator(base, guide, tok)
    ours = generator.generate(
        PROMPTS, strategy="blendin-top100", max_new_tokens=NEW, gamma=GAMMA, lazy=True
    )
    inputs = tok(
        PROMPTS, return_tensors="pt", padding=True, padding_side="left", return_token_type_ids=False
    )
    blend = BlendIn(guide, tokenizer=tok, strategy="blendin-top100", gamma=GAMMA)
    out = base.generate(
        **inputs,
        max_new_tokens=NEW,
        do_sample=False,
        eos_token_id=sorted(generator.stop_ids),
        custom_generate=blend,
    )
    width = inputs["input_ids"].shape[1]
    assert [row[width : width + len(r.token_ids)].tolist() for row, r in zip(out, ours)] == tokens(
        ours
    )
    with pytest.raises(ValueError, match="temperature must be 0 with strategy blendin-top100"):
        base.generate(**inputs, max_new_tokens=2, do_sample=True, custom_generate=blend)


# --------------------------------------------------------- command line
@pytest.fixture(scope="module")
def folders(small, tmp_path_factory):
    tok, base, guide = small
    root = tmp_path_factory.mktemp("models")
    for name, model in (("base", base), ("guide", guide)):
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
    return str(root / "base"), str(root / "guide")


def test_cli_generate(folders, capsys):
    base, guide = folders
    texts = {}
    for strategy in ("blendin", "blendin-top100"):
        assert (
            cli.main(
                [
                    "generate",
                    "--base",
                    base,
                    "--guide",
                    guide,
                    "--prompt",
                    PROMPTS[0],
                    "--prompt",
                    PROMPTS[1],
                    "--strategy",
                    strategy,
                    "--gamma",
                    str(GAMMA),
                    "--max-new-tokens",
                    "8",
                    "--json",
                    "--quiet",
                    "--dtype",
                    "float32",
                ]
            )
            == 0
        )
        texts[strategy] = [r["text"] for r in json.loads(capsys.readouterr().out)["results"]]
    assert texts["blendin-top100"] == texts["blendin"]
    assert (
        cli.main(
            [
                "generate",
                "--base",
                base,
                "--guide",
                guide,
                "--prompt",
                "w1",
                "--strategy",
                "blendin-top100",
                "--temperature",
                "0.5",
                "--quiet",
                "--dtype",
                "float32",
            ]
        )
        == 1
    )
    assert "temperature must be 0 with strategy blendin-top100" in capsys.readouterr().err


def test_cli_eval(folders, tmp_path):
    base, guide = folders
    task = tmp_path / "task.jsonl"
    task.write_text(
        "".join(
            json.dumps({"question": f"w{i} w{i + 3}", "answer": f"#### {i}"}) + "\n"
            for i in range(3)
        )
    )
    out = tmp_path / "run"
    assert (
        cli.main(
            [
                "eval",
                "--base",
                base,
                "--guide",
                guide,
                "--task",
                str(task),
                "--limit",
                "3",
                "--strategies",
                "blendin,blendin-top100,nudging",
                "--gamma",
                str(GAMMA),
                "--max-new-tokens",
                "6",
                "--out",
                str(out),
                "--quiet",
                "--no-plots",
                "--dtype",
                "float32",
                "--batching",
                "mixed",
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in (out / "examples.jsonl").read_text().splitlines()]
    by = {(r["strategy"], r["id"]): r for r in rows}
    assert {s for s, _ in by} == {"blendin", "blendin-top100", "nudging"}
    for (strategy, problem), row in by.items():
        assert len(row["token_ids"]) == row["new_tokens"]
        assert len(row["intervention_positions"]) == row["interventions"]
        if strategy == "blendin-top100":
            assert row["token_ids"] == by["blendin", problem]["token_ids"]
            assert row["alphas"] == by["blendin", problem]["alphas"]
    summary = json.loads((out / "summary.json").read_text())
    assert [line["strategy"] for line in summary["strategies"]] == [
        "blendin",
        "blendin-top100",
        "nudging",
    ]
