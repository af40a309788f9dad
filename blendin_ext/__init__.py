"""BlendIn decoding: a large base model guided by a small aligned model."""
from blendin_ext.ops import (
    BlendStepResult,
    GuideMap,
    blend_step,
    guide_map,
    raise_on_bad_rows,
)
from blendin_ext.generate import BlendInGenerator, GenerationOutput, GenerationResult, generate

__all__ = ["BlendStepResult", "GuideMap", "blend_step", "guide_map", "raise_on_bad_rows",
           "BlendInGenerator", "GenerationOutput", "GenerationResult", "generate"]
