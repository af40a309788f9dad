"""Guide->base token maps for model pairs whose tokenizers differ.

Two tokens are twins when they stand for the same bytes. Token strings are
turned into bytes by their tokenizer's convention:

- byte-level BPE (GPT-2, SmolLM, Qwen, Llama 3): each character stands for
  one byte through GPT-2's byte<->unicode table ('Ġ' is a space);
- SentencePiece (Gemma, Llama 2, Mistral): '▁' is a space, ``<0xNN>`` is the
  raw byte NN, every other character is itself in UTF-8;
- plain: the string itself in UTF-8.

Special tokens (BOS, EOS, chat markers) are never twins of text: they map
only to a base special token of the same spelling, and the guide's EOS maps
to the base's EOS so that a guide wanting to stop can make the blend stop.
The op needs the map injective, so where several tokens spell the same
bytes the ordinary piece wins over a byte-fallback one, then the smaller id.

Maps are cached on disk (``<cache>/vocab_maps/``), keyed by both
tokenizers' vocabularies and conventions.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Dict, Optional, Tuple

import torch

from blendin_ext.models.cache import cache_dir
from blendin_ext.ops.maps import GuideMap, guide_map, map_table

BYTE_LEVEL, SENTENCEPIECE, PLAIN = "byte_level", "sentencepiece", "plain"
NORMAL, BYTE, SPECIAL = "normal", "byte", "special"  # kinds of tokens, in order of preference

_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


@lru_cache(maxsize=1)
def byte_level_alphabet() -> Dict[str, int]:
    """GPT-2's table from the printable stand-in character back to its byte:
    printable Latin-1 bytes stand for themselves, the other 68 bytes for
    the characters from U+0100 on, in byte order."""
    printable = (
        set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAC + 1)) | set(range(0xAE, 0xFF + 1))
    )
    alphabet, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            alphabet[chr(byte)] = byte
        else:
            alphabet[chr(256 + extra)] = byte
            extra += 1
    return alphabet


def token_bytes(token: str, convention: str) -> Tuple[bytes, str]:
    """(bytes, kind) of an ordinary (non-special) token string."""
    if convention == BYTE_LEVEL:
        alphabet = byte_level_alphabet()
        if all(ch in alphabet for ch in token):
            return bytes(alphabet[ch] for ch in token), NORMAL
        return token.encode("utf-8"), NORMAL  # an added token stored as plain text
    if convention == SENTENCEPIECE:
        match = _BYTE_TOKEN.match(token)
        if match:
            return bytes([int(match.group(1), 16)]), BYTE
        return token.replace("\u2581", " ").encode("utf-8"), NORMAL
    return token.encode("utf-8"), NORMAL


def detect_convention(tokenizer) -> str:
    """The tokenizer's spelling of spaces and bytes: read from its fast
    backend's decoder when it has one, else guessed from the vocabulary."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # The components' reprs name their types, e.g. "ByteLevel(...)" or
        # "Sequence(decoders=[Replace(pattern=String("▁"), ...), ByteFallback(), ...])".
        described = " ".join(
            repr(part) for part in (backend.decoder, backend.pre_tokenizer, backend.normalizer)
        )
        if "ByteLevel(" in described:
            return BYTE_LEVEL
        if "Metaspace(" in described or "ByteFallback(" in described or "\u2581" in described:
            return SENTENCEPIECE
    vocab = tokenizer.get_vocab()
    spaced_g = sum(1 for t in vocab if t.startswith("\u0120"))
    spaced_s = sum(1 for t in vocab if t.startswith("\u2581"))
    if max(spaced_g, spaced_s) == 0:
        return PLAIN
    return BYTE_LEVEL if spaced_g > spaced_s else SENTENCEPIECE


def special_tokens(tokenizer) -> Dict[str, int]:
    """Special token strings -> ids (named specials and added tokens flagged special)."""
    vocab = tokenizer.get_vocab()
    found = {t: vocab[t] for t in getattr(tokenizer, "all_special_tokens", []) if t in vocab}
    for token_id, added in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        if getattr(added, "special", False):
            found[str(added)] = int(token_id)
    return found


def piece_of(token: str, token_id: int, added: dict, convention: str) -> Tuple[bytes, str]:
    """(bytes, kind) of a non-special token; non-special added tokens are
    stored as plain text."""
    if token_id in added:
        return str(added[token_id]).encode("utf-8"), NORMAL
    return token_bytes(token, convention)


class TokenBytes:
    """The bytes each token of one tokenizer stands for, looked up one id at
    a time (special tokens stand for no bytes: decoding skips them)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.convention = detect_convention(tokenizer)
        self.specials = set(special_tokens(tokenizer).values())
        self.added = dict(getattr(tokenizer, "added_tokens_decoder", None) or {})
        self._cache: Dict[int, bytes] = {}

    def __call__(self, token_id: int) -> bytes:
        piece = self._cache.get(token_id)
        if piece is None:
            token = self.tokenizer.convert_ids_to_tokens(token_id)
            if token_id in self.specials or token is None:
                piece = b""
            else:
                piece = piece_of(token, token_id, self.added, self.convention)[0]
            self._cache[token_id] = piece
        return piece

    def join(self, ids) -> bytes:
        return b"".join(self(int(t)) for t in ids)


@dataclass
class VocabEntries:
    """A tokenizer's vocabulary as bytes: what the map is built from."""

    size: int
    convention: str
    pieces: Dict[int, Tuple[bytes, str]]  # id -> (bytes, NORMAL or BYTE)
    specials: Dict[str, int]
    eos: Optional[str]

    @classmethod
    def of(cls, tokenizer) -> "VocabEntries":
        convention = detect_convention(tokenizer)
        vocab = tokenizer.get_vocab()
        specials = special_tokens(tokenizer)
        added = getattr(tokenizer, "added_tokens_decoder", None) or {}
        pieces = {
            token_id: piece_of(token, token_id, added, convention)
            for token, token_id in vocab.items()
            if token not in specials
        }
        size = max(len(tokenizer), max(vocab.values(), default=-1) + 1)
        eos = getattr(tokenizer, "eos_token", None)
        return cls(size, convention, pieces, specials, eos if eos in specials else None)

    def identity(self) -> str:
        """Hash of everything the map depends on."""
        digest = hashlib.sha256(f"{self.size}|{self.convention}|{self.eos}".encode())
        for token_id in sorted(self.pieces):
            piece, kind = self.pieces[token_id]
            digest.update(token_id.to_bytes(4, "little") + kind[0].encode() + piece + b"\0")
        digest.update(json.dumps(sorted(self.specials.items())).encode())
        return digest.hexdigest()


@dataclass
class MapReport:
    """How much of the guide's vocabulary found a base twin."""

    guide_vocab: int
    base_vocab: int
    mapped: int
    mapped_share: float  # mapped / guide_vocab
    guide_convention: str
    base_convention: str
    specials_mapped: Dict[str, str]  # guide special -> base special
    unmapped_examples: list

    def summary(self) -> str:
        return (
            f"guide->base map: {self.mapped}/{self.guide_vocab} guide tokens have a base twin "
            f"({100 * self.mapped_share:.1f}%), {self.guide_convention} -> "
            f"{self.base_convention}; specials {self.specials_mapped}"
        )


def _preference(entry: Tuple[int, Tuple[bytes, str]]):
    token_id, (_, kind) = entry
    return (kind != NORMAL, token_id)


def build_map(guide: VocabEntries, base: VocabEntries) -> Tuple[torch.Tensor, MapReport]:
    """(Vg,) int32 guide->base map (-1 where no twin) and its report."""
    base_by_bytes: Dict[bytes, int] = {}
    for token_id, (piece, _) in sorted(base.pieces.items(), key=_preference):
        base_by_bytes.setdefault(piece, token_id)
    result = torch.full((guide.size,), -1, dtype=torch.int32)
    taken = set()
    for token_id, (piece, _) in sorted(guide.pieces.items(), key=_preference):
        target = base_by_bytes.get(piece)
        if target is not None and target not in taken:
            result[token_id] = target
            taken.add(target)
    specials = {t: t for t in guide.specials if t in base.specials}
    if guide.eos is not None and base.eos is not None:
        specials.setdefault(guide.eos, base.eos)
    for guide_token, base_token in specials.items():
        target = base.specials[base_token]
        if target not in taken and result[guide.specials[guide_token]] < 0:
            result[guide.specials[guide_token]] = target
            taken.add(target)
    unmapped = [tid for tid in sorted(guide.pieces) if result[tid] < 0][:10]
    mapped = int((result >= 0).sum())
    report = MapReport(
        guide.size,
        base.size,
        mapped,
        mapped / max(guide.size, 1),
        guide.convention,
        base.convention,
        specials,
        [(tid, guide.pieces[tid][0].decode("utf-8", "replace")) for tid in unmapped],
    )
    return result, report


def vocab_map(
    guide_tokenizer,
    base_tokenizer,
    *,
    guide_vocab: Optional[int] = None,
    base_vocab: Optional[int] = None,
    cache: bool = True,
) -> Tuple[GuideMap, MapReport]:
    """The validated guide->base map of two tokenizers (a ``GuideMap`` for
    ``blend_step``) and its report; built once per pair, then read from disk.
    `guide_vocab` / `base_vocab` are the models' logit widths where their
    embedding matrices are padded past the tokenizers (padding maps to -1)."""
    guide, base = VocabEntries.of(guide_tokenizer), VocabEntries.of(base_tokenizer)
    for name, width, entries in (
        ("guide_vocab", guide_vocab, guide),
        ("base_vocab", base_vocab, base),
    ):
        if width is not None and width < entries.size:
            raise ValueError(
                f"{name}={width} is smaller than its tokenizer's {entries.size} tokens"
            )
    path = cache_dir() / "vocab_maps" / f"{guide.identity()[:20]}-{base.identity()[:20]}.pt"
    if cache and path.is_file():
        stored = torch.load(path, weights_only=True)
        table, report = stored["guide_to_base"], MapReport(**stored["report"])
    else:
        table, report = build_map(guide, base)
        if cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{id(table)}")
            torch.save({"guide_to_base": table, "report": asdict(report)}, tmp)
            tmp.replace(path)
    if guide_vocab is not None and guide_vocab > table.numel():
        table = torch.cat([table, table.new_full((guide_vocab - table.numel(),), -1)])
    return guide_map(table, base_vocab or base.size), report


def mapped_mask(guide_to_base) -> torch.Tensor:
    """(Vg,) bool: guide tokens with a base twin."""
    return map_table(guide_to_base) >= 0


def mapped_mass(guide_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) float32 share of each row's guide probability (temperature 1) on
    tokens that have a base twin: the map's coverage at this step. Rows whose
    mask is shorter than the logits (padded embeddings) count the padding as
    unmapped. Computed as 1 - the mass of the few unmapped tokens: one pass
    over the row (its logsumexp) instead of three."""
    logits = guide_logits.float()
    vocab = logits.shape[-1]
    width = min(mask.numel(), vocab)
    unmapped = (~mask[:width].to(logits.device)).nonzero().flatten()
    if width < vocab:
        unmapped = torch.cat([unmapped, torch.arange(width, vocab, device=logits.device)])
    total = torch.logsumexp(logits, dim=-1, keepdim=True)
    outside = torch.exp(logits.index_select(-1, unmapped) - total).sum(-1)
    return (1.0 - outside).clamp_(min=0.0)
