"""The guide->base token map on hand-made vocabularies in the byte-level BPE
and SentencePiece conventions, its disk cache, and the coverage statistic."""

import pytest
import torch

from blendin_ext.guides import vocab_map as vm
from tests.helpers.tokenizer_fixtures import (
    hand_byte_level,
    hand_sentencepiece,
    trained_byte_level,
    trained_sentencepiece,
)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BLENDIN_CACHE", str(tmp_path / "cache"))


def ids_of(tokenizer, *tokens):
    vocab = tokenizer.get_vocab()
    return [vocab[t] for t in tokens]


def test_byte_level_alphabet_is_gpt2s():
    alphabet = vm.byte_level_alphabet()
    assert sorted(alphabet.values()) == list(range(256))
    assert alphabet["\u0120"] == ord(" ") and alphabet["\u010a"] == ord("\n")
    assert alphabet["a"] == ord("a") and alphabet["\u00c3"] == 0xC3


@pytest.mark.parametrize(
    "token,convention,expected",
    [
        ("\u0120the", vm.BYTE_LEVEL, (b" the", vm.NORMAL)),
        ("\u00c3\u00a9", vm.BYTE_LEVEL, ("é".encode(), vm.NORMAL)),
        ("\u2581the", vm.SENTENCEPIECE, (b" the", vm.NORMAL)),
        ("<0x0A>", vm.SENTENCEPIECE, (b"\n", vm.BYTE)),
        ("<0xc3>", vm.SENTENCEPIECE, (b"\xc3", vm.BYTE)),
        ("é", vm.SENTENCEPIECE, ("é".encode(), vm.NORMAL)),
        ("\u2581the", vm.PLAIN, ("\u2581the".encode(), vm.NORMAL)),
    ],
)
def test_token_bytes(token, convention, expected):
    assert vm.token_bytes(token, convention) == expected


def test_detect_convention_from_backend_and_from_vocabulary():
    assert vm.detect_convention(hand_byte_level(["\u0120a"])) == vm.BYTE_LEVEL
    assert vm.detect_convention(hand_sentencepiece(["\u2581a"])) == vm.SENTENCEPIECE

    class VocabOnly:  # no fast backend: guessed from the space markers
        def __init__(self, vocab):
            self.vocab = vocab

        def get_vocab(self):
            return self.vocab

    assert vm.detect_convention(VocabOnly({"\u0120a": 0, "b": 1})) == vm.BYTE_LEVEL
    assert vm.detect_convention(VocabOnly({"\u2581a": 0, "b": 1})) == vm.SENTENCEPIECE
    assert vm.detect_convention(VocabOnly({"a": 0})) == vm.PLAIN


def test_hand_made_byte_level_guide_to_sentencepiece_base():
    guide = hand_byte_level(
        ["\u0120the", "the", "\u010a", "\u0120", "\u00c3\u00a9", "\u00c3", "\u00a9", "xyz"]
    )
    base = hand_sentencepiece(
        ["\u2581the", "the", "<0x0A>", "<0x20>", "\u2581", "é", "<0xC3>", "<0xA9>"]
    )
    table, report = vm.vocab_map(guide, base)
    g = table.guide_to_base.tolist()
    expect = {  # guide token -> base token
        "\u0120the": "\u2581the",
        "the": "the",
        "\u010a": "<0x0A>",  # no plain "\n": the byte
        "\u0120": "\u2581",  # the ordinary piece wins over <0x20>
        "\u00c3\u00a9": "é",
        "\u00c3": "<0xC3>",
        "\u00a9": "<0xA9>",
        "<|im_end|>": "<eos>",  # EOS -> EOS
    }
    for guide_token, base_token in expect.items():
        (gid,), (bid,) = ids_of(guide, guide_token), ids_of(base, base_token)
        assert g[gid] == bid, guide_token
    for unmapped in ("xyz", "<|endoftext|>", "<|im_start|>"):
        assert g[ids_of(guide, unmapped)[0]] == -1, unmapped
    assert report.mapped == len(expect)
    assert report.guide_convention == vm.BYTE_LEVEL
    assert report.base_convention == vm.SENTENCEPIECE
    assert report.specials_mapped == {"<|im_end|>": "<eos>"}
    assert "8/11" in report.summary()


def test_duplicate_spellings_keep_the_map_injective():
    # Guide side: "▁" and "<0x20>" both spell b" "; only the ordinary piece maps.
    guide = hand_sentencepiece(["\u2581", "<0x20>", "a"])
    base = hand_byte_level(["\u0120", "a"])
    table, _ = vm.vocab_map(guide, base)
    g = table.guide_to_base
    assert g[ids_of(guide, "\u2581")[0]] == ids_of(base, "\u0120")[0]
    assert g[ids_of(guide, "<0x20>")[0]] == -1
    mapped = g[g >= 0]
    assert mapped.numel() == torch.unique(mapped).numel()


def test_specials_map_only_to_same_spelling():
    guide = hand_sentencepiece(["a"])
    base = hand_sentencepiece(["a", "<pad>x"])
    table, report = vm.vocab_map(guide, base)
    for special in ("<pad>", "<bos>", "<eos>", "<unk>"):
        assert table.guide_to_base[ids_of(guide, special)[0]] == ids_of(base, special)[0]
    assert set(report.specials_mapped) == {"<pad>", "<bos>", "<eos>", "<unk>"}


def test_trained_pair_maps_tokens_that_decode_to_the_same_text():
    guide, base = trained_byte_level(), trained_sentencepiece()
    table, report = vm.vocab_map(guide, base)
    assert report.mapped_share > 0.9
    checked = 0
    for gid, bid in enumerate(table.guide_to_base.tolist()):
        if bid < 0 or gid in guide.all_special_ids:
            continue
        text = guide.decode([gid])
        if "\ufffd" not in text:  # a lone byte of a multi-byte character decodes to U+FFFD
            assert base.decode([bid]) == text, (gid, bid)
            checked += 1
    assert checked > 100


def test_logit_widths_pad_the_map():
    guide, base = hand_byte_level(["a"]), hand_sentencepiece(["a"])
    table, _ = vm.vocab_map(guide, base, guide_vocab=len(guide) + 3, base_vocab=len(base) + 5)
    assert table.guide_to_base.shape == (len(guide) + 3,)
    assert table.guide_to_base[-3:].tolist() == [-1, -1, -1]
    assert table.base_to_guide.shape == (len(base) + 5,)
    with pytest.raises(ValueError, match="guide_vocab"):
        vm.vocab_map(guide, base, guide_vocab=1)


def test_map_is_cached_on_disk_per_tokenizer_pair(tmp_path, monkeypatch):
    guide, base = hand_byte_level(["a", "b"]), hand_sentencepiece(["a"])
    first, _ = vm.vocab_map(guide, base)
    files = list((tmp_path / "cache" / "vocab_maps").glob("*.pt"))
    assert len(files) == 1

    def no_build(*args):
        raise AssertionError("the cached map should have been used")

    monkeypatch.setattr(vm, "build_map", no_build)
    second, report = vm.vocab_map(guide, base)
    assert torch.equal(first.guide_to_base, second.guide_to_base)
    assert report.mapped == 2  # "a" and EOS
    with pytest.raises(AssertionError, match="cached"):  # another base: another key
        vm.vocab_map(guide, hand_sentencepiece(["b"]))


def test_mapped_mass_is_the_guide_probability_on_mapped_tokens():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0], [5.0, -1.0, 0.0, float("-inf")]])
    mask = torch.tensor([True, False, True, True])
    expected = (torch.softmax(logits, -1) * mask).sum(-1)
    torch.testing.assert_close(vm.mapped_mass(logits, mask), expected)
    # A mask shorter than the logits (padded embeddings): the rest is unmapped.
    torch.testing.assert_close(vm.mapped_mass(logits, mask[:2]), torch.softmax(logits, -1)[:, 0])
    assert vm.mapped_mask(torch.tensor([3, -1, 0])).tolist() == [True, False, True]
