"""The op layer: the fused BlendIn step and everything that describes it.

- ``blend_step`` (typed wrapper), ``run_step`` (the raw call), the fake
  kernel for torch.compile: ``fused.py``, the only module here that
  loads the compiled extension;
- ``StepArgs`` (the op's argument order) and ``BlendStepResult``: ``args.py``;
- ``GuideMap`` / ``guide_map`` (vocabulary maps): ``maps.py``;
- the strategy table: ``strategies.py``; parameter checks: ``validate.py``;
- the pure-PyTorch float32 reference of the semantics: ``reference.py``.

The semantics in full: README.md beside this file.
"""

from blendin_ext._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "blend_step": "fused",
        "run_step": "fused",
        "raise_on_bad_rows": "fused",
        "BlendStepResult": "args",
        "StepArgs": "args",
        "GuideMap": "maps",
        "guide_map": "maps",
        "STRATEGIES": "strategies",
        "choose": "strategies",
        "choose_many": "strategies",
    },
)
__all__ = [
    "blend_step",
    "run_step",
    "raise_on_bad_rows",
    "BlendStepResult",
    "StepArgs",
    "GuideMap",
    "guide_map",
    "STRATEGIES",
    "choose",
    "choose_many",
]
