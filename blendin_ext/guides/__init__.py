"""The guide's side of the decode loop.

- ``stream.py``: the `GuideStream` contract the loop talks to, and the
  token-level stream for a guide that shares the base's vocabulary;
- ``cross_tokenizer.py``: a guide with its own tokenizer, kept in sync at
  the text level (re-tokenise, roll back, feed the rest);
- ``vocab_map.py``: guide->base token twins from both tokenizers' strings;
- ``factory.py``: `make_guide_stream`, which picks the right stream.
"""
