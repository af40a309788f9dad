"""Token-level guide sync (blendin_ext.guides.token_sync): twins fed as
they are, stretches without twins re-tokenised, open stretches redone as
they grow, UTF-8 characters split across tokens, the text fallback where a
stretch would not round-trip, and the "text" mode."""

import pytest

from blendin_ext.decode.options import DecodeOptions
from blendin_ext.guides.factory import make_guide_stream
from blendin_ext.guides.token_sync import RowSync, TwinSync, decodable
from blendin_ext.guides.vocab_map import TokenBytes
from blendin_ext.ops.validate import check_guide_sync
from blendin_ext.testing import tiny_llama
from tests.helpers.tokenizer_fixtures import hand_byte_level, hand_sentencepiece

# A toy pair given as bytes. Base ids 0..; guide ids 100.. . Twins spell the same bytes.
BASE = {
    0: b" the",
    1: b" cat",
    2: b" Paris",
    3: b"\n",
    4: b"\xc3",
    5: b"\xa9",
    6: b"!",
    7: b"",
    8: b" caf",
}
GUIDE = {
    100: b" the",
    101: b" cat",
    102: b" Par",
    103: b"is",
    104: b"\n",
    105: b"\n\n",
    106: b"\xa9",
    107: b"\xc3\xa9",
    108: b"!",
    109: b" ",
    110: b"c",
    111: b"a",
    112: b"f",
}


def toy_bytes(table):
    lookup = table.get
    fake = lambda token_id: lookup(token_id, b"")  # noqa: E731
    fake.join = lambda ids: b"".join(fake(i) for i in ids)
    return fake


def greedy_tokenise(text: str, prefix: bytes = b""):
    """Longest match over GUIDE: a stand-in for the guide's tokenizer."""
    data, ids = prefix + text.encode("utf-8"), []
    by_bytes = {v: k for k, v in GUIDE.items()}
    while data:
        for size in range(len(data), 0, -1):
            if data[:size] in by_bytes:
                ids.append(by_bytes[data[:size]])
                data = data[size:]
                break
        else:
            raise AssertionError(f"cannot tokenise {data!r}")
    return ids


def toy_sync(mode="tokens", tokenise=greedy_tokenise):
    by_bytes = {v: k for k, v in GUIDE.items()}
    base_to_guide = [by_bytes.get(BASE[b], -1) if BASE[b] else -1 for b in range(len(BASE))]
    return TwinSync(base_to_guide, toy_bytes(BASE), toy_bytes(GUIDE), tokenise, mode)


def test_twins_are_fed_as_they_are_not_re_tokenised():
    # "\n" "\n" stays two tokens: re-tokenising the text would give "\n\n".
    sync, row = toy_sync(), RowSync()
    assert sync.update(row, [0, 3, 3]) == [100, 104, 104]
    assert row.twin_share == 1.0 and row.done == 3
    assert toy_sync("text").update(RowSync(), [0, 3, 3]) == [100, 105]


def test_a_stretch_without_twins_is_re_tokenised_then_final():
    sync, row, ids = toy_sync(), RowSync(), [0, 2]
    assert sync.update(row, ids) == [100, 102, 103]  # " Paris" -> " Par" "is", open
    assert row.done == 1 and row.tail == [102, 103]
    ids.append(6)
    assert sync.update(row, ids) == [100, 102, 103, 108]  # "!" is a twin: stretch final
    assert row.done == 3 and row.tail == [] and row.twins == 2
    assert row.twin_share == pytest.approx(2 / 4)


def test_only_new_tokens_are_looked_at():
    calls = []

    def counting(text):
        calls.append(text)
        return greedy_tokenise(text)

    sync, row, ids = toy_sync(tokenise=counting), RowSync(), [2, 0]
    sync.update(row, ids)
    ids += [1, 3, 0]
    sync.update(row, ids)
    assert calls == [" Paris"]  # the closed stretch is not redone
    assert sync.update(row, ids) == [102, 103, 100, 101, 104, 100]


def test_a_character_split_across_a_twin_stays_in_the_stretch():
    # 0xC3 has no twin; 0xA9 has one, but it ends the character "é" that
    # 0xC3 began, so both go through text and come back as one guide token.
    sync, row, ids = toy_sync(), RowSync(), [8, 4]
    assert sync.update(row, ids) == [109, 110, 111, 112]  # " caf" and no half character
    ids.append(5)
    assert sync.update(row, ids) == [109, 110, 111, 112, 107]
    ids.append(6)
    assert sync.update(row, ids) == [109, 110, 111, 112, 107, 108]
    assert row.done == 4 and row.twins == 1


def test_special_tokens_without_twins_add_nothing():
    sync, row = toy_sync(), RowSync()
    assert sync.update(row, [0, 7, 1]) == [100, 101]


def test_a_stretch_that_would_not_round_trip_falls_back_to_the_text_path():
    # A tokenizer that puts a space before every text it is given (as some
    # SentencePiece ones do): the stretch alone spells " ! " bytes, so the
    # row is re-tokenised from its first token instead.
    spaced = lambda text: greedy_tokenise(text, prefix=b" ")  # noqa: E731
    base_to_guide = [-1, 101, -1, 104, -1, -1, -1, -1, -1]  # only " cat" and "\n" have twins
    sync = TwinSync(base_to_guide, toy_bytes(BASE), toy_bytes(GUIDE), spaced)
    row = RowSync()
    assert sync.update(row, [1, 2, 3]) == greedy_tokenise(" cat Paris", prefix=b" ") + [104]
    assert row.twins == 1


def test_text_mode_re_tokenises_the_whole_text():
    sync, row, ids = toy_sync("text"), RowSync(), [0, 2, 6]
    assert sync.update(row, ids) == greedy_tokenise(" the Paris!")
    assert row.twin_share == 0.0


def test_decodable_leaves_out_only_an_unfinished_character():
    assert decodable(b"ab") == ("ab", True)
    assert decodable(b"a\xc3") == ("a", False)
    assert decodable(b"a\xff b") == ("a\ufffd b", True)


@pytest.mark.parametrize("bad", ["token", "", None, 1, "TEXT"])
def test_bad_guide_sync_is_refused_by_name(bad):
    with pytest.raises(ValueError, match="guide_sync"):
        check_guide_sync(bad)
    with pytest.raises(ValueError, match="guide_sync"):
        DecodeOptions(guide_sync=bad)


def test_make_guide_stream_checks_guide_sync():
    from blendin_ext.testing import tiny_tokenizer

    with pytest.raises(ValueError, match="guide_sync"):
        make_guide_stream(tiny_llama(40), tiny_tokenizer(40), guide_sync="bytes")


def test_token_bytes_of_both_conventions():
    base = hand_sentencepiece(["\u2581the", "<0x0A>", "cat"])
    guide = hand_byte_level(["\u0120the", "\u010a", "cat"])
    base_bytes, guide_bytes = TokenBytes(base), TokenBytes(guide)
    assert [base_bytes(i) for i in (4, 5, 6)] == [b" the", b"\n", b"cat"]
    assert [guide_bytes(i) for i in (3, 4, 5)] == [b" the", b"\n", b"cat"]
    assert base_bytes(base.eos_token_id) == b"" and guide_bytes(guide.eos_token_id) == b""
    assert base_bytes.join([4, 6]) == b" thecat"
