"""The plug-in's two levels of configuration, parsed and checked here
(pure Python: the frontend checks requests without loading a model).

Engine: ``additional_config={"blendin": {...}}`` (``--additional-config``
for ``vllm serve``) with the keys of `EngineConfig`. Request:
``SamplingParams(extra_args={"blendin": {...}})`` (``"vllm_xargs"`` over
the OpenAI API) with the keys of `RequestConfig`; a request without a
"blendin" entry is left to vLLM. Every error names the field as the user
wrote it, e.g. ``extra_args.blendin.gamma must be a number >= 0, got -1``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any, Mapping, Optional

from blendin_ext.ops.strategies import StrategyChoice, choose
from blendin_ext.ops.validate import (
    AlphaValue,
    check_agree_bonus,
    check_alpha,
    check_gamma,
    check_guide_sync,
)

ENGINE_KEY = "blendin"  # additional_config["blendin"]
REQUEST_KEY = "blendin"  # SamplingParams.extra_args["blendin"]
DTYPES = ("auto", "float32", "bfloat16", "float16")


def has_blendin(extra_args: Optional[Mapping[str, Any]]) -> bool:
    """Whether a request asks for BlendIn (without checking its arguments)."""
    return bool(extra_args) and REQUEST_KEY in extra_args


def _mapping(value, name: str) -> Mapping:
    """A JSON object, or a JSON string holding one (vllm_xargs values may
    arrive as strings from the command line)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"{name} must be a JSON object, got {value!r}") from None
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must be an object with the BlendIn settings, got {value!r}")
    return value


def _unknown_keys(given: Mapping, cls, name: str) -> None:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(given) - known)
    if unknown:
        raise ValueError(
            f"{name}: unknown key(s) {', '.join(unknown)}; expected {', '.join(sorted(known))}"
        )


@dataclass(frozen=True)
class EngineConfig:
    """``additional_config["blendin"]``: the guide and the defaults.

    guide: built-in name (``blendin models``), folder, .gguf file or hub id,
        loaded by blendin_ext.models.loading.load_model. Required.
    guide_dtype: "auto" (default: bfloat16 on a CPU with native bf16 or on
        CUDA, float32 elsewhere, as load_model decides), "float32",
        "bfloat16" or "float16".
    guide_device: e.g. "cpu" or "cuda:0"; default: the engine's device.
    strategy, gamma, alpha, agree_bonus: defaults for requests that do not
        set them (strategy table: blendin_ext.ops.strategies).
    lazy: run the guide only for rows whose base is unsure (default True).
    system_prompt, guide_chat: the guide's prompt is its chat template
        around the request's prompt text, unless guide_chat is False.
    guide_sync: how a guide with another tokenizer follows the chosen
        tokens: "tokens" (feed their twins; default) or "text" (re-tokenise).
    diagnostics: a JSON-lines file; a line per request each time it
        leaves the batch (blendin_ext.vllm.diagnostics.read_diagnostics).
    stats: a JSON-lines file; a line of each rank's counters each time its
        blended requests are all done (blendin_ext.vllm.stats.read_stats).
    """

    guide: str
    guide_dtype: str = "auto"
    guide_device: Optional[str] = None
    strategy: str = "blendin"
    gamma: float = 0.4
    alpha: AlphaValue = "auto"
    agree_bonus: float = 0.1
    lazy: bool = True
    system_prompt: Optional[str] = None
    guide_chat: bool = True
    guide_sync: str = "tokens"
    diagnostics: Optional[str] = None
    stats: Optional[str] = None

    @classmethod
    def parse(cls, additional_config: Optional[Mapping]) -> Optional["EngineConfig"]:
        """The engine's settings, or None when additional_config has no
        "blendin" entry (the plug-in then leaves every request to vLLM)."""
        if not additional_config or ENGINE_KEY not in additional_config:
            return None
        name = f"additional_config.{ENGINE_KEY}"
        given = _mapping(additional_config[ENGINE_KEY], name)
        _unknown_keys(given, cls, name)
        if not isinstance(given.get("guide"), str) or not given["guide"]:
            raise ValueError(
                f"{name}.guide is required: a built-in model name, a folder, a "
                f".gguf file or a Hugging Face id, got {given.get('guide')!r}"
            )
        config = cls(**given)
        if config.guide_dtype not in DTYPES:
            raise ValueError(
                f"{name}.guide_dtype must be one of {', '.join(DTYPES)}, got {config.guide_dtype!r}"
            )
        for flag, value in (("lazy", config.lazy), ("guide_chat", config.guide_chat)):
            if not isinstance(value, bool):
                raise ValueError(f"{name}.{flag} must be true or false, got {value!r}")
        for key, value in (
            ("diagnostics", config.diagnostics),
            ("stats", config.stats),
            ("guide_device", config.guide_device),
            ("system_prompt", config.system_prompt),
        ):
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{name}.{key} must be a string, got {value!r}")
        gamma = check_gamma(config.gamma, f"{name}.gamma")
        alpha = check_alpha(config.alpha, f"{name}.alpha")
        choose(config.strategy, gamma, alpha, name=f"{name}.strategy")
        check_agree_bonus(config.agree_bonus, f"{name}.agree_bonus")
        check_guide_sync(config.guide_sync, f"{name}.guide_sync")
        return config


@dataclass(frozen=True)
class RequestConfig:
    """``extra_args["blendin"]``: per-request choices; None: the engine's.
    ``{}`` or ``true`` means "BlendIn with the engine's defaults".
    request_id: the key of the request's diagnostics (default: made up,
    see blendin_ext/vllm/diagnostics.py)."""

    strategy: Optional[str] = None
    gamma: Optional[float] = None
    alpha: Optional[AlphaValue] = None
    agree_bonus: Optional[float] = None
    request_id: Optional[str] = None

    @classmethod
    def parse(cls, extra_args: Optional[Mapping[str, Any]]) -> Optional["RequestConfig"]:
        """The request's settings, checked, or None for a request without them."""
        if not extra_args or REQUEST_KEY not in extra_args:
            return None
        name = f"extra_args.{REQUEST_KEY}"
        value = extra_args[REQUEST_KEY]
        if value is True:
            return cls()
        given = _mapping(value, name)
        _unknown_keys(given, cls, name)
        config = cls(**given)
        if config.gamma is not None:
            check_gamma(config.gamma, f"{name}.gamma")
        if config.alpha is not None:
            check_alpha(config.alpha, f"{name}.alpha")
        if config.agree_bonus is not None:
            check_agree_bonus(config.agree_bonus, f"{name}.agree_bonus")
        if config.strategy is not None:
            if not isinstance(config.strategy, str):
                raise ValueError(
                    f"{name}.strategy must be a strategy name, got {config.strategy!r}"
                )
            choose(config.strategy, name=f"{name}.strategy")
        if config.request_id is not None and (
            not isinstance(config.request_id, str) or not config.request_id
        ):
            raise ValueError(
                f"{name}.request_id must be a non-empty string, got {config.request_id!r}"
            )
        return config

    def resolve(self, engine: EngineConfig) -> tuple:
        """(StrategyChoice, agree_bonus) with the engine's defaults filled in."""
        gamma = engine.gamma if self.gamma is None else self.gamma
        alpha = engine.alpha if self.alpha is None else self.alpha
        strategy = engine.strategy if self.strategy is None else self.strategy
        choice: StrategyChoice = choose(
            strategy, gamma, alpha, name=f"extra_args.{REQUEST_KEY}.strategy"
        )
        bonus = engine.agree_bonus if self.agree_bonus is None else self.agree_bonus
        return choice, float(bonus)


def validate_request(sampling_params) -> Optional[RequestConfig]:
    """A request's BlendIn arguments, checked against its sampling
    parameters too (the processor's validate_params: a 400 naming the
    field): the paper's top-N procedure (blendin-topN) is greedy only."""
    config = RequestConfig.parse(sampling_params.extra_args)
    if config is not None and config.strategy is not None and sampling_params.temperature:
        if choose(config.strategy).top_n:
            raise ValueError(
                f"extra_args.{REQUEST_KEY}.strategy {config.strategy!r} is the "
                "paper's greedy top-N procedure: it needs temperature 0, got "
                f"{sampling_params.temperature}"
            )
    return config
