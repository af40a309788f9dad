"""Tiny random models saved as Hugging Face folders, for engines that load
models from disk (vLLM). Sizes vLLM's CPU attention accepts: head_dim 32."""

from pathlib import Path

from blendin_ext.testing import tiny_llama, tiny_tokenizer

VOCAB = 200
SHAPE = dict(hidden=64, layers=2, heads=2, kv_heads=1)


def save_tiny(folder: Path, *, seed: int, vocab: int = VOCAB, words=None) -> Path:
    """A tiny Llama (random weights from `seed`) and the tiny tokenizer."""
    folder = Path(folder)
    if not (folder / "config.json").exists():
        model = tiny_llama(vocab, seed=seed, **SHAPE)
        model.config.max_position_embeddings = 512
        model.save_pretrained(folder)
        tiny_tokenizer(vocab, words=words).save_pretrained(folder)
    return folder
