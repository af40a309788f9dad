"""A model's tokenizer conventions: its prompt ids (plain or inside its
chat template), padding id, stop ids, and whether two tokenizers share a
vocabulary.

The paper feeds each model the prompt it was trained for: the base model
sees the plain text, the aligned guide sees it wrapped in its tokenizer's
chat template (with an optional system message). Both then continue the
same output.
"""

from __future__ import annotations

import warnings
from typing import Iterable, List, Optional, Sequence, Set

# End-of-turn markers of common chat templates; one that occurs in a guide's
# template is taken as a stop token of the guide's convention.
END_OF_TURN_TOKENS = (
    "<|im_end|>",
    "<|eot_id|>",
    "<end_of_turn>",
    "<|end|>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "</s>",
    "<eos>",
)


def base_prompt_ids(tokenizer, prompts: Sequence[str]) -> List[List[int]]:
    """Plain prompts, with the tokenizer's own special tokens (e.g. BOS)."""
    return [list(tokenizer(text, add_special_tokens=True)["input_ids"]) for text in prompts]


def chat_prompt_ids(
    tokenizer, prompts: Sequence[str], system_prompt: Optional[str] = None
) -> List[List[int]]:
    """Each prompt as one user turn of the tokenizer's chat template, followed
    by the assistant header. Without a template: the plain prompt, and a warning."""
    if not getattr(tokenizer, "chat_template", None):
        warnings.warn(
            "the guide tokenizer has no chat template; the guide gets the plain prompt",
            stacklevel=3,
        )
        return base_prompt_ids(tokenizer, prompts)
    result = []
    for text in prompts:
        messages = [{"role": "user", "content": text}]
        if system_prompt is not None:
            messages.insert(0, {"role": "system", "content": system_prompt})
        chat = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
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
