"""Tiny offline models and tokenizers for tests, examples and benchmarks.

Everything here is built from a config with random weights: no download, no
network. The tokenizer is a word-level one ("w0 w1 ..." plus a few special
tokens) with a chat template, so the base / guide prompt split of the decode
loop can be exercised exactly as with a real instruct model.
"""

from __future__ import annotations

from typing import Sequence

import torch

SPECIAL_TOKENS = (
    "<pad>",
    "<s>",
    "</s>",
    "<unk>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
)
CHAT_TEMPLATE = (
    "<s>{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def word(i: int) -> str:
    """The i-th ordinary word of a tiny tokenizer's vocabulary."""
    return f"w{i}"


def tiny_tokenizer(
    vocab_size: int = 200,
    *,
    words: Sequence[str] | None = None,
    chat_template: str | None = CHAT_TEMPLATE,
):
    """A fast word-level tokenizer: the special tokens first (pad 0, bos 1,
    eos 2, unk 3, then the chat markers, "<|end|>" ends a turn), then the
    words ("w0", "w1", ... unless `words` is given) up to `vocab_size` ids.
    Encoding adds "<s>"; decoding joins words with spaces."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    n_words = vocab_size - len(SPECIAL_TOKENS)
    if n_words < 1:
        raise ValueError(f"vocab_size must exceed {len(SPECIAL_TOKENS)}, got {vocab_size}")
    words = list(words) if words is not None else [word(i) for i in range(n_words)]
    vocab = {token: i for i, token in enumerate(list(SPECIAL_TOKENS) + words[:n_words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece(prefix="##")  # joins words with single spaces
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", vocab["<s>"])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=list(SPECIAL_TOKENS[4:]),
    )
    tokenizer.chat_template = chat_template
    return tokenizer


def tiny_llama(
    vocab_size: int = 200,
    *,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    seed: int = 0,
    init_std: float = 0.7,
    logit_std: float | None = None,
    dtype: torch.dtype = torch.float32,
    eos_token_id=2,
    pad_token_id: int = 0,
):
    """A random-weight LlamaForCausalLM in eval mode. A large `init_std`
    makes its next-token distributions peaked enough that a threshold of
    0.4 on the top-1 probability splits the steps into sure and unsure ones
    (small inits give near-uniform logits and near-ties). `logit_std`
    re-draws the output layer so that logits have about that spread
    whatever the width (large vocabularies need a larger one)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=4096,
        initializer_range=init_std,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        attn_implementation="sdpa",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    if logit_std is not None:  # hidden states leave the final RMSNorm with unit scale
        torch.nn.init.normal_(model.lm_head.weight, std=logit_std / hidden**0.5)
    model = model.to(dtype).eval()
    model.generation_config.eos_token_id = eos_token_id
    model.generation_config.pad_token_id = pad_token_id
    return model


def tiny_llama_for(tokenizer, *, seed: int = 0, **kwargs):
    """A tiny_llama sized for `tokenizer`, with its EOS and pad ids."""
    return tiny_llama(
        len(tokenizer),
        seed=seed,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **kwargs,
    )


def random_prompts(
    count: int, *, min_words: int = 2, max_words: int = 8, vocab: int = 50, seed: int = 0
) -> list:
    """`count` prompts of random words w0..w{vocab-1}, ragged lengths."""
    gen = torch.Generator().manual_seed(seed)
    prompts = []
    for _ in range(count):
        n = int(torch.randint(min_words, max_words + 1, (1,), generator=gen))
        ids = torch.randint(0, vocab, (n,), generator=gen).tolist()
        prompts.append(" ".join(word(i) for i in ids))
    return prompts
