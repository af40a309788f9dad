"""Building the core inside a vLLM worker: the guide (our loader), the
base's tokenizer (for the guide's prompt text and the vocabulary map) and
the guide stream that fits the pair (blendin_ext.guides.factory).

A guide that cannot be loaded stops the engine's start-up with our message:
vLLM constructs the processor while it builds the worker.
"""
from __future__ import annotations

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
        model_config.tokenizer, revision=getattr(model_config, "tokenizer_revision", None),
        trust_remote_code=bool(getattr(model_config, "trust_remote_code", False)))


def build_core(config: EngineConfig, vllm_config, device: torch.device) -> BlendCore:
    model_config = vllm_config.model_config
    guide_device = torch.device(config.guide_device) if config.guide_device else device
    try:
        loaded = load_model(config.guide, dtype=config.guide_dtype, device=str(guide_device))
    except Exception as exc:  # noqa: BLE001 - any failure stops start-up with our words
        raise GuideLoadError(
            f"BlendIn: could not load the guide {config.guide!r} "
            f"(additional_config.{ENGINE_KEY}.guide): {type(exc).__name__}: {exc}") from exc
    base_tokenizer = load_base_tokenizer(model_config)
    guide = make_guide_stream(
        loaded.model, base_tokenizer, loaded.tokenizer, system_prompt=config.system_prompt,
        chat=config.guide_chat, device=guide_device,
        base_vocab=model_config.get_vocab_size(), rows_change=True, guide_sync=config.guide_sync)
    logger.info("BlendIn: guide %s (%s, %s) on %s, %s, default strategy %s", config.guide,
                type(guide).__name__, str(loaded.model.dtype).replace("torch.", ""), guide_device,
                "lazy" if config.lazy else "eager", config.strategy)
    return BlendCore(config, guide, base_tokenizer, capacity=model_config.max_model_len)
