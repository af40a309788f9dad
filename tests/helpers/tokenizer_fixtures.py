"""Small offline tokenizers in the two conventions real model pairs use:
byte-level BPE (GPT-2 style, 'Ġ' spaces) and SentencePiece style ('▁'
spaces, <0xNN> byte fallback). Hand-made vocabularies for exact map tests,
and tiny trained ones for decoding with models whose tokenizers differ."""

from __future__ import annotations

import json
import random

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
GUIDE_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
BASE_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]


def _wrap_byte_level(backend: Tokenizer, chat: bool) -> PreTrainedTokenizerFast:
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tok.chat_template = CHAT_TEMPLATE if chat else None
    return tok


def _wrap_sentencepiece(backend: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
    )


def _byte_level_backend(model) -> Tokenizer:
    backend = Tokenizer(model)
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return backend


def _sentencepiece_backend(model) -> Tokenizer:
    # Gemma's layout: spaces become '▁' before the model, and back after.
    backend = Tokenizer(model)
    backend.normalizer = normalizers.Replace(" ", "\u2581")
    backend.pre_tokenizer = pre_tokenizers.Split("\u2581", behavior="merged_with_next")
    backend.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    return backend


def hand_byte_level(pieces, chat: bool = True) -> PreTrainedTokenizerFast:
    """Byte-level BPE whose vocabulary is GUIDE_SPECIALS then `pieces` (token
    strings in GPT-2's byte alphabet, e.g. 'Ġthe'), with no merges."""
    vocab = {t: i for i, t in enumerate(GUIDE_SPECIALS + list(pieces))}
    model = models.BPE(vocab=vocab, merges=[])
    return _wrap_byte_level(_byte_level_backend(model), chat)


def hand_sentencepiece(pieces) -> PreTrainedTokenizerFast:
    """SentencePiece-style BPE whose vocabulary is BASE_SPECIALS then `pieces`
    (e.g. '▁the', '<0x0A>'), with byte fallback and no merges."""
    vocab = {t: i for i, t in enumerate(BASE_SPECIALS + list(pieces))}
    model = models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True)
    return _wrap_sentencepiece(_sentencepiece_backend(model))


WORDS = (
    "the cat sat on a mat and then ran off to see its friend the dog who was "
    "sleeping under an old tree near the river bank while birds sang"
).split()


def corpus(lines: int = 400, seed: int = 0) -> list:
    """Random English-like sentences over a small word list."""
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) + "." for _ in range(lines)
    ]


def trained_byte_level(vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on `corpus()`, with a ChatML template (a guide)."""
    backend = _byte_level_backend(models.BPE())
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=GUIDE_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(corpus(), trainer)
    return _wrap_byte_level(backend, chat=True)


def trained_sentencepiece(vocab_size: int = 200) -> PreTrainedTokenizerFast:
    """A SentencePiece-style BPE trained on `corpus(seed=1)`, then given the
    256 byte-fallback pieces <0x00>..<0xFF> as ordinary tokens (a base)."""
    backend = _sentencepiece_backend(models.BPE(unk_token="<unk>"))
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=BASE_SPECIALS, show_progress=False
    )
    backend.train_from_iterator(corpus(seed=1), trainer)
    trained = json.loads(backend.to_str())["model"]
    vocab = dict(trained["vocab"])
    for b in range(256):
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["merges"]]
    rebuilt = _sentencepiece_backend(
        models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True)
    )
    rebuilt.add_special_tokens(BASE_SPECIALS)
    return _wrap_sentencepiece(rebuilt)
