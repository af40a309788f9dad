"""BlendIn through transformers' generate(): token for token against
generate() itself (strategy base) and against our own loop (BlendIn,
nudging), for ragged left-padded batches, streamers, stop strings, a
cross-tokenizer guide, and errors that name the bad setting."""

import pytest
import torch
from transformers import StopStringCriteria, TextStreamer
from transformers.generation.streamers import BaseStreamer

import blendin_ext
from blendin_ext.hf import BlendIn
from blendin_ext.testing import tiny_llama, tiny_llama_for, tiny_tokenizer
from tests.helpers.tokenizer_fixtures import trained_byte_level, trained_sentencepiece

PROMPTS = ["w1 w2 w3 w4 w5", "w6", "w7 w8 w9"]
NEW = 10


@pytest.fixture(scope="module")
def pair():
    tok = tiny_tokenizer(200)
    return tok, tiny_llama(200, seed=1), tiny_llama(200, seed=2)


def left_padded(tok, prompts):
    return tok(
        prompts, return_tensors="pt", padding=True, padding_side="left", return_token_type_ids=False
    )


def generated(sequences, inputs):
    """Each row's new tokens, up to and including its EOS (pads dropped)."""
    width = inputs["input_ids"].shape[1]
    return [row[width:].tolist() for row in sequences]


def test_strategy_base_equals_generate_greedy_with_eos_and_padding(pair):
    tok, base, guide = pair
    inputs = left_padded(tok, PROMPTS)
    free = base.generate(**inputs, max_new_tokens=NEW, do_sample=False)
    eos = int(free[0, inputs["input_ids"].shape[1] + 3])  # row 0 ends early on it
    ref = base.generate(**inputs, max_new_tokens=NEW, do_sample=False, eos_token_id=eos)
    ours = base.generate(
        **inputs,
        max_new_tokens=NEW,
        do_sample=False,
        eos_token_id=eos,
        custom_generate=BlendIn(guide, tokenizer=tok, strategy="base"),
    )
    assert torch.equal(ours, ref)
    assert (ref[0, -1] == base.generation_config.pad_token_id) or ref.shape[1] < free.shape[1]


def test_sampling_is_seeded_by_torch(pair):
    tok, base, guide = pair
    inputs = left_padded(tok, PROMPTS)
    blend = BlendIn(guide, tokenizer=tok)

    def run(seed):
        torch.manual_seed(seed)
        return base.generate(
            **inputs,
            max_new_tokens=NEW,
            do_sample=True,
            temperature=1.3,
            top_k=40,
            top_p=0.95,
            custom_generate=blend,
        )

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


@pytest.mark.parametrize("strategy", ["blendin", "nudging", "guide"])
@pytest.mark.parametrize("lazy", [True, False])
def test_blendin_equals_our_loop_for_ragged_batches(pair, strategy, lazy):
    tok, base, guide = pair
    generator = blendin_ext.BlendInGenerator(base, guide, tok)
    ours = generator.generate(PROMPTS, strategy=strategy, max_new_tokens=NEW, lazy=lazy)
    inputs = left_padded(tok, PROMPTS)
    blend = BlendIn(guide, tokenizer=tok, strategy=strategy, lazy=lazy)
    out = base.generate(
        **inputs,
        max_new_tokens=NEW,
        do_sample=False,
        eos_token_id=sorted(generator.stop_ids),
        custom_generate=blend,
        return_dict_in_generate=True,
    )
    pad = base.generation_config.pad_token_id
    rows = [
        [t for t in row[: len(r.token_ids)]]
        for row, r in zip(generated(out.sequences, inputs), ours.results)
    ]
    assert rows == [r.token_ids for r in ours.results]
    for row, result in zip(generated(out.sequences, inputs), ours.results):
        assert all(t == pad for t in row[len(result.token_ids) :])
    diags = [r.diagnostics.summary() for r in out.blendin]
    assert diags == [r.diagnostics.summary() for r in ours.results]
    assert blend.last_output is out.blendin


class Collect(BaseStreamer):
    def __init__(self):
        self.puts, self.ended = [], False

    def put(self, value):
        self.puts.append(value.tolist())

    def end(self):
        self.ended = True


def test_streamers_receive_what_generate_would_send(pair, capsys):
    tok, base, guide = pair
    inputs = tok(PROMPTS[:1], return_tensors="pt", return_token_type_ids=False)
    blend = BlendIn(guide, tokenizer=tok)
    collect = Collect()
    seq = base.generate(
        **inputs, max_new_tokens=NEW, custom_generate=blend, blendin_streamer=collect
    )
    assert collect.ended and collect.puts[0] == inputs["input_ids"].tolist()
    assert [p[0] for p in collect.puts[1:]] == seq[0, inputs["input_ids"].shape[1] :].tolist()
    base.generate(
        **inputs,
        max_new_tokens=NEW,
        custom_generate=blend,
        blendin_streamer=TextStreamer(tok, skip_prompt=True),
    )
    printed = capsys.readouterr().out.strip()
    assert printed == blend.last_output[0].text.strip()


@pytest.fixture(scope="module")
def bpe_pair():
    """A byte-level BPE tokenizer (StopStringCriteria needs a real BPE vocab)."""
    tok = trained_byte_level()
    return tok, tiny_llama_for(tok, seed=3), tiny_llama_for(tok, seed=4)


def test_stop_strings_end_a_row_where_our_loop_ends_it(bpe_pair):
    tok, base, guide = bpe_pair
    prompts = ["the cat sat on", "a dog"]
    generator = blendin_ext.BlendInGenerator(base, guide, tok)
    free = generator.generate(prompts, max_new_tokens=NEW)
    stop = free[0].text[len(free[0].text) // 2 :][:3]  # a piece of row 0's own text
    assert stop.strip(), free[0].text
    ours = generator.generate(prompts, max_new_tokens=NEW, stop=stop)
    inputs = left_padded(tok, prompts)
    seq = base.generate(
        **inputs,
        max_new_tokens=NEW,
        eos_token_id=sorted(generator.stop_ids),
        stopping_criteria=[StopStringCriteria(tok, [stop])],
        custom_generate=BlendIn(guide, tokenizer=tok),
    )
    assert ours[0].finish_reason == "stop"
    for row, result in zip(generated(seq, inputs), ours.results):
        assert row[: len(result.token_ids)] == result.token_ids
        assert all(t == tok.pad_token_id for t in row[len(result.token_ids) :])


@pytest.mark.parametrize("guide_sync", ["tokens", "text"])
def test_cross_tokenizer_guide_equals_our_loop(guide_sync):
    base_tok, guide_tok = trained_sentencepiece(), trained_byte_level()
    base, guide = tiny_llama_for(base_tok, seed=5), tiny_llama_for(guide_tok, seed=6)
    prompts = ["the cat sat on", "a dog ran"]
    generator = blendin_ext.BlendInGenerator(base, guide, base_tok, guide_tok)
    ours = generator.generate(
        prompts, max_new_tokens=NEW, strategy="nudging", guide_sync=guide_sync
    )
    inputs = left_padded(base_tok, prompts)
    seq = base.generate(
        **inputs,
        max_new_tokens=NEW,
        eos_token_id=sorted(generator.stop_ids),
        custom_generate=BlendIn(
            guide, guide_tok, tokenizer=base_tok, strategy="nudging", guide_sync=guide_sync
        ),
    )
    for row, result in zip(generated(seq, inputs), ours.results):
        assert row[: len(result.token_ids)] == result.token_ids


@pytest.mark.parametrize(
    "settings, match",
    [
        (dict(num_beams=2), "greedily or by sampling.*beam"),
        (dict(num_return_sequences=2, do_sample=True), "num_return_sequences=2"),
        (dict(repetition_penalty=1.3), "RepetitionPenaltyLogitsProcessor"),
        (dict(return_dict_in_generate=True, output_scores=True), "output_scores"),
        (dict(penalty_alpha=0.6, top_k=4), "contrastive"),
        (dict(prompt_lookup_num_tokens=3), "assisted"),
    ],
)
def test_unsupported_modes_are_refused(pair, settings, match):
    tok, base, guide = pair
    inputs = left_padded(tok, PROMPTS)
    with pytest.raises(ValueError, match=match):
        base.generate(
            **inputs, max_new_tokens=3, custom_generate=BlendIn(guide, tokenizer=tok), **settings
        )


def test_bad_arguments_name_themselves(pair):
    tok, base, guide = pair
    with pytest.raises(ValueError, match="strategy"):
        BlendIn(guide, tokenizer=tok, strategy="magic")
    with pytest.raises(ValueError, match="gamma"):
        BlendIn(guide, tokenizer=tok, gamma=-1)
    with pytest.raises(ValueError, match="alpha"):
        BlendIn(guide, tokenizer=tok, alpha=2)
    with pytest.raises(ValueError, match="guide_sync"):
        BlendIn(guide, tokenizer=tok, guide_sync="bytes")
    with pytest.raises(ValueError, match="tokenizer="):
        base.generate(**left_padded(tok, PROMPTS), max_new_tokens=3, custom_generate=BlendIn(guide))


def test_too_old_transformers_is_named(pair, monkeypatch):
    import transformers

    tok, _, guide = pair
    monkeypatch.setattr(transformers, "__version__", "4.55.4")
    with pytest.raises(ImportError, match="transformers >= 4.57.*found 4.55.4"):
        BlendIn(guide, tokenizer=tok)
