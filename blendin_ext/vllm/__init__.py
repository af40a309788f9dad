"""BlendIn inside vLLM: a logits-processor plug-in that guides a vLLM-served
base model with a small aligned guide (user guide: README.md beside this
file).

- ``config.py``: engine settings (``additional_config["blendin"]``) and
  per-request ones (``SamplingParams.extra_args["blendin"]``), checked;
- ``requests.py``: one blended request, from what vLLM hands a processor;
- ``core.py``: the blended requests of the batch by index, one step per
  call, composed of ``guide_rows.py`` (the guide's rows), ``step.py`` (the
  fused op over the step's rows), ``diagnostics.py`` (request keys and
  records) and ``stats.py`` (each rank's counters);
- ``runner_v1.py`` / ``runner_v2.py``: the V1 runner's persistent batch and
  Model Runner V2's slots and step layout, onto the core (no vLLM import);
- ``engine.py``: loading the guide and building the core inside a worker;
- ``processor.py``: the ``LogitsProcessor`` vLLM loads, for both runners.

Everything but the processor's base classes works without vLLM installed.
"""

from blendin_ext._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "BlendInLogitsProcessor": "processor",
        "EngineConfig": "config",
        "RequestConfig": "config",
        "read_diagnostics": "diagnostics",
        "read_stats": "stats",
    },
)
__all__ = [
    "BlendInLogitsProcessor",
    "EngineConfig",
    "RequestConfig",
    "read_diagnostics",
    "read_stats",
]
