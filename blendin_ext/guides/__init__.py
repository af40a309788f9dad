"""The guide's side of the decode loop.

- ``stream.py``: the `GuideStream` contract the loop and the vLLM plug-in
  talk to (every feature declared, with defaults), the token-level stream
  for a guide that shares the base's vocabulary, `guide_row_stats` (a row's
  statistics) and `pair_logits` (the guide's logits fitted to the base's);
- ``synced.py``: `SyncedGuide`, a guide synced row by row to the ids it
  should hold (roll back, feed the rest), whose rows may join and leave
  between steps (the vLLM plug-in's continuous batch);
- ``cross_tokenizer.py``: a guide with its own tokenizer, a SyncedGuide
  whose ids are the base tokens' guide twins, stretches without twins
  re-tokenised;
- ``coverage.py``: per-row map coverage (mass on tokens with a base twin);
- ``token_sync.py``: those ids (``guide_sync="tokens"``, or ``"text"``: the
  whole text re-tokenised);
- ``vocab_map.py``: guide->base token twins from both tokenizers' strings;
- ``factory.py``: `make_guide_stream`, which picks the right stream
  (``rows_change=True``: one that supports add_rows / keep_rows).
"""
