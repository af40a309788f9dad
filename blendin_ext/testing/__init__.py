"""Test helpers that ship with the package, for our tests and yours:

- ``models.py``: tiny random-weight models and a word-level tokenizer with a
  chat template, built offline from a config (no download);
- ``op_cases.py``: logits with a controlled spread of confidences, random
  guide maps, and comparisons of a step's result with the reference.
"""

from blendin_ext.testing.models import (
    CHAT_TEMPLATE,
    SPECIAL_TOKENS,
    random_prompts,
    tiny_llama,
    tiny_llama_for,
    tiny_tokenizer,
    word,
)

__all__ = [
    "CHAT_TEMPLATE",
    "SPECIAL_TOKENS",
    "random_prompts",
    "tiny_llama",
    "tiny_llama_for",
    "tiny_tokenizer",
    "word",
]
