"""BlendIn decoding: a large base model guided by a small aligned model.

Layers, each a subpackage that only imports the ones above it:

    ops/      the fused step op, its argument types, maps, strategy table,
              parameter checks and the pure-PyTorch reference
    models/   one model: step-model adapters and token streams, tokenizer
              conventions (prompts, stop ids), loading and the cache
    guides/   the guide's side of the loop: guide streams, vocabulary maps,
              cross-tokenizer sync
    decode/   the decode loop, its options and diagnostics
    eval/     tasks (with their data), scoring, the runner
    cli/      the `blendin` command line, one module per subcommand
    testing/  tiny offline models and the op test cases, for tests and users

Importing the package loads the compiled extension when it is built
(registering ``torch.ops.blendin_ext.*``); the names below resolve lazily,
so the pure-Python layers (the reference, vocabulary maps, scoring) also
work where it is not.
"""

from blendin_ext._lazy import lazy_exports

try:
    from blendin_ext.ops import fused as _fused  # registers the ops
except ImportError:  # not built: blend_step raises the build hint when used
    _fused = None

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "blend_step": "ops.fused",
        "raise_on_bad_rows": "ops.fused",
        "BlendStepResult": "ops.args",
        "StepArgs": "ops.args",
        "GuideMap": "ops.maps",
        "guide_map": "ops.maps",
        "BlendInGenerator": "decode.loop",
        "GenerationOutput": "decode.records",
        "GenerationResult": "decode.records",
        "generate": "decode.loop",
        "DecodeOptions": "decode.options",
    },
)
__all__ = [
    "blend_step",
    "raise_on_bad_rows",
    "BlendStepResult",
    "StepArgs",
    "GuideMap",
    "guide_map",
    "BlendInGenerator",
    "GenerationOutput",
    "GenerationResult",
    "generate",
    "DecodeOptions",
]
