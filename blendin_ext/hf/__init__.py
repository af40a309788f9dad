"""BlendIn through transformers' own ``generate()``.

    from blendin_ext.hf import BlendIn

    blend = BlendIn(guide_model, guide_tokenizer, tokenizer=base_tokenizer)
    out = base_model.generate(**inputs, custom_generate=blend, max_new_tokens=64)

``generate()`` prepares the inputs and the generation config, then hands the
decoding to the callable, which runs our decode loop (`blendin_ext.decode`)
on them: same guide streams, op and diagnostics. See generate.py for what
is honoured and what is refused.
"""

from blendin_ext.hf.generate import BlendIn

__all__ = ["BlendIn"]
