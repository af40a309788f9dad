"""Prompt construction, stop conditions and incremental detokenisation.

The paper feeds each model the prompt it was trained for: the base model
sees the plain text, the aligned guide sees it wrapped in its tokenizer's
chat template (with an optional system message). Both then continue the
same output.
"""
from __future__ import annotations

import warnings
from typing import Iterable, List, Optional, Sequence, Set, Tuple

# End-of-turn markers of common chat templates; one that occurs in a guide's
# template is taken as a stop token of the guide's convention.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>",
                      "<|end_of_text|>", "</s>", "<eos>")


def base_prompt_ids(tokenizer, prompts: Sequence[str]) -> List[List[int]]:
    """Plain prompts, with the tokenizer's own special tokens (e.g. BOS)."""
    return [list(tokenizer(text, add_special_tokens=True)["input_ids"]) for text in prompts]


def chat_prompt_ids(tokenizer, prompts: Sequence[str],
                    system_prompt: Optional[str] = None) -> List[List[int]]:
    """Each prompt as one user turn of the tokenizer's chat template, followed
    by the assistant header. Without a template: the plain prompt, and a warning."""
    if not getattr(tokenizer, "chat_template", None):
        warnings.warn("the guide tokenizer has no chat template; the guide gets the plain prompt",
                      stacklevel=3)
        return base_prompt_ids(tokenizer, prompts)
    result = []
    for text in prompts:
        messages = [{"role": "user", "content": text}]
        if system_prompt is not None:
            messages.insert(0, {"role": "system", "content": system_prompt})
        chat = tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=True)
        # The template writes its own BOS; do not add another.
        result.append(list(tokenizer(chat, add_special_tokens=False)["input_ids"]))
    return result


def pad_token_id(tokenizer) -> int:
    """Padding id for left padding (masked out, so any valid id works)."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def _ids(value) -> Iterable[int]:
    if value is None:
        return ()
    return (int(v) for v in (value if isinstance(value, (list, tuple, set)) else [value]))


def stop_token_ids(tokenizer, model=None, *, chat: bool = False) -> Set[int]:
    """Token ids that end a row under this tokenizer's / model's convention:
    its EOS, the model's generation-config EOS ids, and (chat=True) the
    end-of-turn markers its chat template uses."""
    ids = set(_ids(tokenizer.eos_token_id))
    generation_config = getattr(model, "generation_config", None)
    ids.update(_ids(getattr(generation_config, "eos_token_id", None)))
    template = getattr(tokenizer, "chat_template", None) if chat else None
    if isinstance(template, str):
        vocab = tokenizer.get_vocab()
        ids.update(vocab[t] for t in END_OF_TURN_TOKENS if t in template and t in vocab)
    return ids


def same_vocabulary(tokenizer_a, tokenizer_b) -> bool:
    """Whether two tokenizers give every token string the same id."""
    return tokenizer_a is tokenizer_b or tokenizer_a.get_vocab() == tokenizer_b.get_vocab()


def _held_back(text: str, stop_strings: Sequence[str]) -> int:
    """Length of the longest suffix of `text` that could still grow into a
    stop string; streaming holds it back until that is decided."""
    longest = 0
    for stop in stop_strings:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


class RowText:
    """Incremental text of one generated row: streaming deltas that never end
    inside a multi-byte character or a possible stop string, and the
    position of the first stop string."""

    def __init__(self, tokenizer, stop_strings: Sequence[str] = ()):
        self.tokenizer = tokenizer
        self.stop_strings = tuple(stop_strings)
        self.ids: List[int] = []
        self.text = ""        # decoded so far (may end with a held-back tail)
        self.emitted = 0      # characters of `text` already handed out
        self.stop_at: Optional[int] = None  # index in `text` of the first stop string
        self._prefix = 0      # ids[_prefix:_read] decode to the context of the next delta
        self._read = 0

    def _decode(self, ids) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def add(self, token: int) -> Tuple[str, bool]:
        """Appends a token; returns (new visible text, whether a stop string
        has now appeared)."""
        self.ids.append(token)
        context = self._decode(self.ids[self._prefix: self._read])
        full = self._decode(self.ids[self._prefix:])
        if len(full) > len(context) and not full.endswith("\ufffd"):
            self.text += full[len(context):]
            self._prefix, self._read = self._read, len(self.ids)
        if self.stop_strings and self.stop_at is None:
            self._find_stop()
        end = len(self.text) if self.stop_at is None else self.stop_at
        if self.stop_at is None and self.stop_strings:
            end -= _held_back(self.text, self.stop_strings)
        delta = self.text[self.emitted: end] if end > self.emitted else ""
        self.emitted = max(self.emitted, end)
        return delta, self.stop_at is not None

    def _find_stop(self) -> None:
        longest = max(len(s) for s in self.stop_strings)
        # Only the tail can hold a new match: earlier text was searched before.
        start = max(0, self.emitted - longest)
        hits = [i for i in (self.text.find(s, start) for s in self.stop_strings) if i >= 0]
        if hits:
            self.stop_at = min(hits)

    def flush(self) -> str:
        """Whatever is still held back once the row has finished."""
        end = len(self.text) if self.stop_at is None else self.stop_at
        delta = self.text[self.emitted: end]
        self.emitted = max(self.emitted, end)
        return delta
