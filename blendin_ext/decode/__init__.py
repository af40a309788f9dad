"""The decode loop on top of the op, models and guides.

- ``loop.py``: `BlendInGenerator` / `generate`: prefill, one fused step per
  token for the whole batch, lazy guidance, streaming;
- ``options.py``: `DecodeOptions` and their per-row form for the op;
- ``batch.py``: `DecodeRun`, the state of one call, and `compact` (finished
  rows leave the batch);
- ``records.py``: the host's side of each step (texts, stops, diagnostics)
  and the call's results (`GenerationOutput`);
- ``text.py``: incremental detokenisation and stop strings;
- ``diagnostics.py``: per-sequence intervention diagnostics, token events,
  loop counters.
"""
