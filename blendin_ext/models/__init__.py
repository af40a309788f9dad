"""One model at a time: what the decode loop needs from a model and how to
get one.

- ``streams.py``: the step-model contract, adapters for Hugging Face models
  and plain callables, and `TokenStream` (prompt, cache, mask, positions);
- ``prompts.py``: tokenizer conventions (prompt ids, chat template, stop ids);
- ``loading.py``, ``builtins.py``, ``cache.py``: loading a built-in name, a
  GGUF file, a folder or a hub id, converting GGUF once into the cache;
- ``packing.py``: linear weights packed once (CPU decoding), for blendin's bf16
  kernel (``bf16_linear.py``) or oneDNN's;
- ``compiled.py``: the optional static-cache, torch.compile'd step model;
- ``progress.py``: progress bars, drawn only on a terminal.
"""
