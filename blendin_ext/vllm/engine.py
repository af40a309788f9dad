"""Building the core inside a vLLM worker: the guide (our loader), the
base's tokenizer (for the guide's prompt text and the vocabulary map) and
the guide stream that fits the pair (blendin_ext.guides.factory).

A guide that cannot be loaded stops the engine's start-up with our message:
vLLM constructs the processor while it builds the worker.

Tensor parallelism: every worker (rank) runs vLLM's sampler on the full
logits and builds its own processor, so each rank loads its own copy of
the guide and runs the same op on the same inputs: they all decide the
same tokens (the op is deterministic, seeds are per request). The first
rank of each tensor-parallel group writes the diagnostics file.
"""

from __future__ import annotations

import itertools
import logging

import torch

from blendin_ext.guides.factory import make_guide_stream
from blendin_ext.models.loading import load_model
from blendin_ext.vllm.config import ENGINE_KEY, EngineConfig
from blendin_ext.vllm.core import BlendCore

logger = logging.getLogger("blendin_ext.vllm")


class GuideLoadError(RuntimeError):
    """The guide named in additional_config could not be loaded."""


def load_base_tokenizer(model_config):
    """The base model's Hugging Face tokenizer, as vLLM was told to load it."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(
        model_config.tokenizer,
        revision=model_config.tokenizer_revision,
        trust_remote_code=model_config.trust_remote_code,
    )


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of a model's weights: parameters, buffers, and the packed copies
    that packed linear layers keep as plain tensor attributes (each tensor
    once)."""
    tensors = {}
    for module in model.modules():
        held = itertools.chain(
            module.parameters(recurse=False),
            module.buffers(recurse=False),
            (v for v in vars(module).values() if isinstance(v, torch.Tensor)),
        )
        for tensor in held:
            tensors[id(tensor)] = tensor
    return sum(t.numel() * t.element_size() for t in tensors.values())


def cache_bytes_per_token(model: torch.nn.Module) -> int:
    """KV-cache bytes one token of one row costs (keys and values, every
    layer), from a Hugging Face config."""
    config = model.config
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads  # HF: optional
    kv_heads = getattr(config, "num_key_value_heads", None) or heads  # HF: optional
    element = torch.finfo(model.dtype).bits // 8
    return 2 * config.num_hidden_layers * kv_heads * head_dim * element


def build_core(config: EngineConfig, vllm_config, device: torch.device) -> BlendCore:
    model_config = vllm_config.model_config
    parallel = vllm_config.parallel_config
    guide_device = torch.device(config.guide_device) if config.guide_device else device
    try:
        loaded = load_model(config.guide, dtype=config.guide_dtype, device=str(guide_device))
    except Exception as exc:
        raise GuideLoadError(
            f"BlendIn: could not load the guide {config.guide!r} "
            f"(additional_config.{ENGINE_KEY}.guide): {type(exc).__name__}: {exc}"
        ) from exc
    base_tokenizer = load_base_tokenizer(model_config)
    guide = make_guide_stream(
        loaded.model,
        base_tokenizer,
        loaded.tokenizer,
        system_prompt=config.system_prompt,
        chat=config.guide_chat,
        device=guide_device,
        base_vocab=model_config.get_vocab_size(),
        rows_change=True,
        guide_sync=config.guide_sync,
    )
    eos = base_tokenizer.eos_token_id
    rank = parallel.rank
    logger.info(
        "BlendIn: guide %s (%s, %s, %.1f MB) on %s, rank %d, %s, default strategy %s",
        config.guide,
        type(guide).__name__,
        str(loaded.model.dtype).replace("torch.", ""),
        weight_bytes(loaded.model) / 1e6,
        guide_device,
        rank,
        "lazy" if config.lazy else "eager",
        config.strategy,
    )
    return BlendCore(
        config,
        guide,
        base_tokenizer,
        capacity=model_config.max_model_len,
        eos_ids=frozenset() if eos is None else frozenset([eos]),
        rank=rank,
        writes_diagnostics=rank % parallel.tensor_parallel_size == 0,
        guide_param_bytes=weight_bytes(loaded.model),
        cache_bytes_per_token=cache_bytes_per_token(loaded.model),
    )
