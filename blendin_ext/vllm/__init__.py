"""BlendIn inside vLLM: a logits-processor plug-in that guides a vLLM-served
base model with a small aligned guide (user guide: README.md beside this
file).

- ``config.py``: engine settings (``additional_config["blendin"]``) and
  per-request ones (``SamplingParams.extra_args["blendin"]``), checked;
- ``core.py``: the blended requests of the continuous batch, their guide
  rows and one fused BlendIn step over the logits (no vLLM import);
- ``engine.py``: loading the guide and building the core inside a worker;
- ``runner_v2.py``: Model Runner V2's slots and step layout, onto the core
  (no vLLM import);
- ``processor.py``: the ``LogitsProcessor`` vLLM runs, V1 and V2 (imports vllm);
- ``diagnostics.py``: per-request diagnostics by request id.

Everything but the processor works without vLLM installed.
"""
from blendin_ext._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "BlendInLogitsProcessor": "processor", "EngineConfig": "config",
    "RequestConfig": "config", "read_diagnostics": "diagnostics", "read_stats": "stats",
})
__all__ = ["BlendInLogitsProcessor", "EngineConfig", "RequestConfig", "read_diagnostics", "read_stats"]
