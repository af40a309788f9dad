"""The two-model decode loop on tiny random-weight models (no download).

What must hold: gamma = 0 is the base's own greedy decoding, guide-only is
the guide's own greedy decoding on its chat prompt, lazy == eager, a batch
== its prompts one by one (ragged, mixed strategies, per-prompt seeds),
seeded sampling is reproducible, non-HF callables work, bad arguments fail
clearly.
"""

import pytest
import torch

import blendin_ext
from blendin_ext import BlendInGenerator
from blendin_ext.guides.stream import GuideStream, SameTokenizerGuide
from blendin_ext.models.prompts import chat_prompt_ids
from blendin_ext.models.streams import TokenStream
from blendin_ext.testing import random_prompts, tiny_llama, tiny_tokenizer

VOCAB = 200
STEPS = 12
PROMPTS = random_prompts(4, min_words=1, max_words=9, seed=3)  # ragged on purpose
STOP_IDS = [2, 7]  # "</s>" and the chat template's "<|end|>"


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer(VOCAB)


@pytest.fixture(scope="module")
def base():
    return tiny_llama(VOCAB, seed=0)


@pytest.fixture(scope="module")
def guide():
    return tiny_llama(VOCAB, seed=1)


@pytest.fixture(scope="module")
def gen(base, guide, tok):
    return BlendInGenerator(base, guide, tok)


def hf_greedy(model, ids, steps=STEPS):
    """The model's own greedy continuation by transformers' generate()."""
    inputs = torch.tensor([ids])
    out = model.generate(
        inputs,
        attention_mask=torch.ones_like(inputs),
        do_sample=False,
        max_new_tokens=steps,
        eos_token_id=STOP_IDS,
        pad_token_id=0,
    )
    return out[0, len(ids) :].tolist()


def tokens(output):
    return [r.token_ids for r in output]


def interventions(output):
    return [[(i.position, i.token, i.winner) for i in r.diagnostics.interventions] for r in output]


# ------------------------------------------------------- the baselines
def test_gamma_zero_equals_base_greedy_generate(gen, base, tok):
    expected = [hf_greedy(base, tok(p)["input_ids"]) for p in PROMPTS]
    assert tokens(gen.generate(PROMPTS, strategy="base", max_new_tokens=STEPS)) == expected
    out = gen.generate(PROMPTS, gamma=0.0, max_new_tokens=STEPS)
    assert tokens(out) == expected
    assert all(r.diagnostics.intervention_count == 0 for r in out)


def test_guide_only_equals_guide_greedy_on_chat_prompt(gen, guide, tok):
    chats = chat_prompt_ids(tok, PROMPTS)
    assert chats[0][:2] == [1, 5] and chats[0][-1] == 6  # "<s><|user|> ... <|assistant|>"
    expected = [hf_greedy(guide, ids) for ids in chats]
    out = gen.generate(PROMPTS, strategy="guide", max_new_tokens=STEPS)
    assert tokens(out) == expected
    assert tokens(gen.generate(PROMPTS, gamma=1.5, alpha=1.0, max_new_tokens=STEPS)) == expected
    assert all(r.diagnostics.intervention_rate == 1.0 for r in out)


# ------------------------------------------------------------ lazy mode
@pytest.mark.parametrize("sampling", [False, True])
def test_lazy_equals_eager(gen, sampling):
    options = dict(max_new_tokens=16, temperature=0.8 if sampling else 0.0, top_p=0.95, seed=11)
    eager = gen.generate(PROMPTS, **options)
    lazy = gen.generate(PROMPTS, lazy=True, **options)
    assert tokens(lazy) == tokens(eager)
    assert interventions(lazy) == interventions(eager)
    for a, b in zip(lazy, eager):
        assert a.diagnostics.mean_alpha == pytest.approx(b.diagnostics.mean_alpha, abs=1e-5)
    # The guide ran exactly at the steps where some row intervened, catching up in one forward.
    steps_needed = {i.position for r in lazy for i in r.diagnostics.interventions}
    assert eager.stats.guide_forwards == eager.stats.steps
    assert 0 < lazy.stats.guide_forwards == len(steps_needed) < eager.stats.guide_forwards
    assert lazy.stats.guide_tokens <= eager.stats.guide_tokens  # same tokens, fewer forwards
    assert lazy.stats.base_forwards == eager.stats.base_forwards


def test_lazy_base_only_never_runs_the_guide(gen):
    out = gen.generate(PROMPTS, strategy="base", lazy=True, max_new_tokens=6)
    assert out.stats.guide_forwards == 0 and out.stats.guide_tokens == 0


def test_op_with_zero_alpha_ignores_the_guide():
    """What lazy mode relies on: a row that does not intervene takes the
    base's token whatever the guide logits are (greedy and sampled)."""
    gen = torch.Generator().manual_seed(0)
    base_logits = torch.randn(64, 300, generator=gen) * 3
    guide_a, guide_b = (torch.randn(64, 300, generator=gen) * 3 for _ in range(2))
    for temperature in (0.0, 0.7):
        kwargs = dict(gamma=0.4, temperature=temperature, top_k=50, seed=torch.arange(64), offset=5)
        a = blendin_ext.blend_step(base_logits, guide_a, **kwargs)
        b = blendin_ext.blend_step(base_logits, guide_b, **kwargs)
        stand_in = blendin_ext.blend_step(base_logits, base_logits, **kwargs)
        quiet = ~a.intervened
        assert quiet.any() and (~quiet).any()
        assert torch.equal(a.intervened, stand_in.intervened)
        assert torch.equal(a.tokens[quiet], b.tokens[quiet])
        assert torch.equal(a.tokens[quiet], stand_in.tokens[quiet])
        if temperature == 0.0:
            assert torch.equal(a.tokens[quiet], base_logits.argmax(-1)[quiet])


# ---------------------------------------------------- batch == one by one
@pytest.mark.parametrize("sampling", [False, True])
def test_batch_equals_one_by_one(gen, sampling):
    strategies = ["blendin", "base", "nudging", "blend"]
    seeds = [5, 17, 99, 1234]
    options = dict(max_new_tokens=STEPS, temperature=[0.9, 0.7, 1.0, 0.8] if sampling else 0.0)
    batch = gen.generate(PROMPTS, strategy=strategies, seed=seeds, **options)
    for i, prompt in enumerate(PROMPTS):
        row_options = dict(options, temperature=options["temperature"][i] if sampling else 0.0)
        single = gen.generate([prompt], strategy=strategies[i], seed=[seeds[i]], **row_options)
        assert single[0].token_ids == batch[i].token_ids, f"prompt {i}"
        assert interventions(single) == [interventions(batch)[i]]
    assert batch.stats.generated_tokens == sum(len(r.token_ids) for r in batch)


def test_finished_rows_stop_counting(gen):
    free = gen.generate(PROMPTS, max_new_tokens=STEPS)
    stop_token = free[0].token_ids[2]  # row 0 ends at its third token
    stopping = BlendInGenerator(
        gen.base_model, gen.guide.model, gen.tokenizer, stop_token_ids=[stop_token]
    )
    out = stopping.generate(PROMPTS, max_new_tokens=STEPS)
    assert out[0].finish_reason == "eos" and out[0].token_ids == free[0].token_ids[:3]
    for r, f in zip(out, free):
        assert r.diagnostics.tokens == len(r.token_ids)
        if stop_token not in f.token_ids:  # rows that never meet it are unaffected
            assert r.token_ids == f.token_ids and r.finish_reason == "length"


# ------------------------------------------------------------- sampling
def test_seeded_sampling_is_reproducible(gen):
    options = dict(max_new_tokens=STEPS, temperature=1.0, top_k=40)
    first = gen.generate(PROMPTS, seed=7, **options)
    assert tokens(gen.generate(PROMPTS, seed=7, **options)) == tokens(first)
    assert tokens(gen.generate(PROMPTS, seed=[7, 8, 9, 10], **options)) == tokens(first)
    assert tokens(gen.generate(PROMPTS, seed=8, **options)) != tokens(first)


# ------------------------------------------------------- text and streams
def test_stop_strings_cut_the_text(gen, tok):
    free = gen.generate(PROMPTS[:1], max_new_tokens=STEPS)[0]
    stop = tok.decode([free.token_ids[4]])
    # The row ends at the first token whose text completes the stop string.
    end = next(j for j in range(STEPS) if stop in tok.decode(free.token_ids[: j + 1]))
    out = gen.generate(PROMPTS[:1], max_new_tokens=STEPS, stop=[stop, "never-there"])[0]
    assert out.finish_reason == "stop"
    assert out.token_ids == free.token_ids[: end + 1]
    text = tok.decode(free.token_ids[: end + 1])
    assert out.text == text[: text.index(stop)]


def test_stream_and_callback_give_the_text(gen):
    events = list(gen.stream(PROMPTS, max_new_tokens=STEPS))
    output = gen.last_output
    for row, result in enumerate(output):
        row_events = [e for e in events if e.row == row]
        assert [e.token for e in row_events] == result.token_ids
        assert "".join(e.text for e in row_events).strip() == result.text
        assert row_events[-1].finished and not any(e.finished for e in row_events[:-1])
        assert (
            sum(e.intervention is not None for e in row_events)
            == result.diagnostics.intervention_count
        )
    seen = []
    gen.generate(PROMPTS, max_new_tokens=STEPS, on_token=seen.append)
    assert [(e.row, e.token) for e in seen] == [(e.row, e.token) for e in events]


def test_diagnostics_say_who_won(gen):
    out = gen.generate(PROMPTS, strategy="nudging", max_new_tokens=STEPS)
    for r in out:
        d = r.diagnostics
        assert d.intervention_count > 0  # the tiny models are unsure often enough
        assert {i.winner for i in d.interventions} <= {"guide", "both"}  # alpha 1, greedy
        assert all(i.alpha == 1.0 for i in d.interventions)
        assert d.intervention_rate == d.intervention_count / d.tokens
        assert sum(d.wins.values()) == d.intervention_count
        summary = d.summary()
        assert summary["positions"] == [i.position for i in d.interventions]
    blend = gen.generate(PROMPTS, max_new_tokens=STEPS)
    alphas = [i.alpha for r in blend for i in r.diagnostics.interventions]
    assert alphas and all(0.0 <= a <= 1.0 for a in alphas) and len(set(alphas)) > 1


def test_max_new_tokens_zero(gen):
    out = gen.generate(PROMPTS, max_new_tokens=0)
    assert out.texts == [""] * len(PROMPTS) and out.stats.base_forwards == 0


# ---------------------------------------------------- other model kinds
class Bigram:
    """A non-HF model: logits depend on the last token only; no cache."""

    def __init__(self, vocab, seed):
        self.table = torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(seed)) * 3

    def __call__(self, input_ids, state):
        return self.table[input_ids[:, -1]], state


def test_callable_models(tok, base):
    bigram_base, bigram_guide = Bigram(VOCAB, 0), Bigram(VOCAB, 1)
    out = blendin_ext.generate(
        bigram_base, bigram_guide, PROMPTS, tokenizer=tok, strategy="base", max_new_tokens=5
    )
    for prompt, result in zip(PROMPTS, out):
        last, expected = tok(prompt)["input_ids"][-1], []
        for _ in range(5):
            last = int(bigram_base.table[last].argmax())
            expected.append(last)
            if last in STOP_IDS:
                break
        assert result.token_ids == expected
    mixed = blendin_ext.generate(
        base, bigram_guide, PROMPTS, tokenizer=tok, max_new_tokens=5, lazy=True
    )
    assert all(len(r.token_ids) > 0 for r in mixed)


def test_callable_gets_mask_and_positions(tok):
    seen = {}

    def model(input_ids, state, attention_mask=None, position_ids=None):
        seen.setdefault("shapes", []).append(
            (input_ids.shape, attention_mask.shape, position_ids[:, -1].tolist())
        )
        return torch.zeros(input_ids.shape[0], VOCAB).index_fill_(1, torch.tensor([9]), 5.0), state

    blendin_ext.generate(
        model, model, ["w1 w2 w3", "w4"], tokenizer=tok, max_new_tokens=2, guide_chat=False
    )
    prefill, step = seen["shapes"][0], seen["shapes"][2]
    assert prefill == (torch.Size([2, 4]), torch.Size([2, 4 + 0]), [3, 1])
    assert step[0] == torch.Size([2, 1]) and step[2] == [4, 2]  # positions follow real tokens


def test_padded_guide_vocabulary(tok, base):
    wide_guide = tiny_llama(VOCAB + 8, seed=1)  # same tokenizer, padded output layer
    out = blendin_ext.generate(
        base, wide_guide, PROMPTS[:2], tokenizer=tok, strategy="guide", max_new_tokens=4
    )
    assert all(0 <= t < VOCAB for r in out for t in r.token_ids)


def test_a_custom_guide_stream_plugs_in(base, guide, tok):
    class CountingGuide(SameTokenizerGuide):
        pushes = 0

        def push(self, tokens, host_tokens, live):
            assert len(host_tokens) == len(live) == tokens.shape[0]
            CountingGuide.pushes += 1
            super().push(tokens, host_tokens, live)

    stream = CountingGuide(guide, tok)
    assert isinstance(stream, GuideStream)
    out = blendin_ext.generate(base, stream, PROMPTS, tokenizer=tok, max_new_tokens=5)
    assert CountingGuide.pushes == out.stats.steps - 1


def test_token_stream_truncate_rolls_back(guide, tok):
    """What a cross-tokenizer guide needs: crop the cache, feed other tokens."""
    stream = TokenStream(guide, pad_id=0)
    stream.start([tok("w1 w2")["input_ids"], tok("w3")["input_ids"]], capacity=4)
    stream.logits()
    length = stream.length
    stream.push(torch.tensor([10, 11]))
    first = stream.logits().clone()
    stream.push(torch.tensor([[12, 13], [14, 0]]), mask=torch.tensor([[1, 1], [1, 0]]))
    stream.logits()
    stream.truncate(length)
    stream.push(torch.tensor([10, 11]))
    torch.testing.assert_close(stream.logits(), first)


# ------------------------------------------------------------ bad input
def test_bad_arguments(gen, base, guide, tok):
    other_tok = tiny_tokenizer(VOCAB, words=[f"x{i}" for i in range(VOCAB)])
    with pytest.raises(ValueError, match="guide_to_base"):
        BlendInGenerator(base, guide, tok, other_tok)
    with pytest.raises(ValueError, match="tokenizer is required"):
        BlendInGenerator(base, guide, None)
    bad_calls = [
        (dict(prompts=[]), ValueError, "non-empty list"),
        (dict(prompts=["w1", 3]), TypeError, r"prompts\[1\]"),
        (dict(max_new_tokens=-1), ValueError, "max_new_tokens"),
        (dict(max_new_tokens=2.5), ValueError, "max_new_tokens"),
        (dict(strategy="greedy"), ValueError, "unknown strategy 'greedy'"),
        (dict(strategy=["base"]), ValueError, "strategy has 1 values for 4 prompts"),
        (dict(alpha=1.5), ValueError, "alpha"),
        (dict(alpha="fixed"), ValueError, "alpha"),
        (dict(gamma=-0.1), ValueError, "gamma"),
        (dict(temperature=-1.0), ValueError, "temperature"),
        (dict(top_p=0.0), ValueError, "top_p"),
        (dict(top_k=-3), ValueError, "top_k"),
        (dict(seed=[1, 2]), ValueError, "seed has 2 values"),
        (dict(seed=1.5), ValueError, "seed"),
        (dict(stop=[""]), ValueError, "stop"),
        (dict(temprature=1.0), TypeError, "temprature"),
    ]
    for kwargs, error, message in bad_calls:
        prompts = kwargs.pop("prompts", PROMPTS)
        with pytest.raises(error, match=message):
            gen.generate(prompts, **kwargs)
    with pytest.raises(ValueError, match="max_new_tokens"):
        gen.stream(PROMPTS, max_new_tokens=-1)  # raised at the call, not at the first token
    with pytest.raises(TypeError, match="callable"):
        blendin_ext.generate(base, "not a model", PROMPTS, tokenizer=tok)
