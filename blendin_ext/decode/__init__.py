"""The decode loop on top of the op, models and guides.

- ``loop.py``: `BlendInGenerator` / `generate`: prefill, one fused step per
  token for the whole batch, lazy guidance, streaming;
- ``options.py``: `DecodeOptions` and their per-row form for the op;
- ``text.py``: incremental detokenisation and stop strings;
- ``diagnostics.py``: per-sequence intervention diagnostics, token events,
  loop counters.
"""
