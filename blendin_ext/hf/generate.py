"""`BlendIn`, a ``custom_generate`` callable for transformers' ``generate()``
(transformers 4.57 or newer: 4.56 first took a callable, 4.57 first hands a
callable the extra keyword arguments it declares, such as
``blendin_streamer=``; tested here with 4.57.6 and 5.24).

What it takes from the generation config: ``max_new_tokens`` / ``max_length``,
``do_sample`` with ``temperature``, ``top_k`` and ``top_p`` (applied by the
fused op to each model on its own, not a second time to the mixture), the EOS
ids (which alone end a row with "eos", as in ``generate()``), the pad id,
``return_dict_in_generate``. ``stopping_criteria`` (``StopStringCriteria``
included) are checked after every step on the sequences so far.

What it refuses, with an error naming the setting: beam search, contrastive
search, prompt lookup and other modes than greedy / sampling,
``num_return_sequences > 1``, logits processors other than the temperature /
top-k / top-p warpers (they cannot act on a mixture), and per-token outputs
(scores, logits, attentions, hidden states).

Limits of transformers (4.57 to 5.x) with a callable: it does not hand over
``streamer=`` or ``tokenizer=`` (so ``stop_strings=`` fails inside
``generate()``, before BlendIn runs) nor ``assistant_model=`` (do not combine
assisted generation with BlendIn: BlendIn cannot see it). Pass the streamer
as ``blendin_streamer=`` and stop strings as
``stopping_criteria=[StopStringCriteria(tokenizer, [...])]``.
"""

from __future__ import annotations

from typing import List, Optional

import torch

from blendin_ext.decode.loop import BlendInGenerator, GenerationOutput
from blendin_ext.decode.options import DecodeOptions
from blendin_ext.ops.strategies import choose

OLDEST_TRANSFORMERS = (4, 57)  # generate() calls the callable with its declared extra kwargs
# The warpers generate() builds from temperature / top_k / top_p: the op
# applies those settings per model itself.
OWN_WARPERS = ("TemperatureLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper")
PER_TOKEN_OUTPUTS = ("output_scores", "output_logits", "output_attentions", "output_hidden_states")
# Model inputs generate() prepares for its own loop; ours keeps its own cache.
OWN_MODEL_KWARGS = {
    "attention_mask",
    "cache",
    "past_key_values",
    "use_cache",
    "logits_to_keep",
    "position_ids",
    "cache_position",
}


class BlendIn:
    """``base_model.generate(**inputs, custom_generate=BlendIn(guide, ...))``.

    guide_model: the aligned guide (a transformers causal LM, or anything the
        decode loop accepts); guide_tokenizer: its tokenizer (default: the
        base's, for a guide that shares it).
    tokenizer: the base model's tokenizer; needed to give the guide the
        prompt text (inside its chat template) and, for a guide with another
        tokenizer, to map the vocabularies.
    strategy, gamma, alpha, agree_bonus, lazy, system_prompt, guide_chat:
        as for `blendin_ext.generate`; guide_sync: "tokens" or "text", see
        blendin_ext.decode.options.DecodeOptions.
    After each call `last_output` holds our loop's results (texts, finish
    reasons, per-sequence diagnostics); a dict output also carries them as
    ``output.blendin``.
    """

    def __init__(
        self,
        guide_model,
        guide_tokenizer=None,
        *,
        tokenizer=None,
        strategy: str = "blendin",
        gamma: float = 0.4,
        alpha="auto",
        agree_bonus: float = 0.1,
        lazy: bool = True,
        system_prompt: Optional[str] = None,
        guide_chat: bool = True,
        guide_to_base=None,
        guide_sync: str = "tokens",
    ):
        _check_transformers()
        choose(strategy, gamma, alpha)  # every decoding argument is checked here, once
        # Each call adds the generation config's length and sampling settings.
        self.options = DecodeOptions(
            strategy=strategy,
            gamma=gamma,
            alpha=alpha,
            lazy=bool(lazy),
            agree_bonus=agree_bonus,
            guide_sync=guide_sync,
        )
        self.guide_model, self.guide_tokenizer, self.tokenizer = (
            guide_model,
            guide_tokenizer,
            tokenizer,
        )
        self.pair = dict(
            system_prompt=system_prompt, guide_chat=guide_chat, guide_to_base=guide_to_base
        )
        self._generator: Optional[BlendInGenerator] = None
        self.last_output: Optional[GenerationOutput] = None

    def __call__(
        self,
        model,
        input_ids: torch.LongTensor,
        logits_processor=None,
        stopping_criteria=None,
        generation_config=None,
        synced_gpus: bool = False,
        streamer=None,
        blendin_streamer=None,
        tokenizer=None,
        **model_kwargs,
    ):
        config = generation_config if generation_config is not None else model.generation_config
        _check_supported(config, logits_processor, model_kwargs, synced_gpus)
        generator = self.generator_for(model, tokenizer)
        rows = _prompt_rows(input_ids, model_kwargs.get("attention_mask"))
        if streamer is None and blendin_streamer is not None:
            streamer = blendin_streamer
            streamer.put(input_ids.cpu())  # generate() does this for the streamer it hands over
        stops = _StopCriteria(input_ids, stopping_criteria, _pad_id(config), streamer)
        self.last_output = generator.generate(
            generator.tokenizer.batch_decode(rows, skip_special_tokens=True),
            prompt_ids=rows,
            step_hook=stops,
            stop_ids=_eos_ids(config),
            options=self.options,
            **_sampling(config, max_new_tokens=config.max_length - input_ids.shape[1]),
        )
        if stops.streamer is not None:
            stops.streamer.end()
        if not config.return_dict_in_generate:
            return stops.sequences
        from transformers.generation.utils import GenerateDecoderOnlyOutput

        output = GenerateDecoderOnlyOutput(sequences=stops.sequences)
        output.blendin = self.last_output
        return output

    def generator_for(self, model, tokenizer=None) -> BlendInGenerator:
        """Our loop over this base model, built once (it scans the vocabularies).
        Its ``stop_ids`` are the ids our own loop ends rows at (both models'
        conventions); generate() ends rows at its EOS ids only."""
        tokenizer = self.tokenizer or tokenizer
        if tokenizer is None:
            raise ValueError(
                "BlendIn needs tokenizer= (the base model's tokenizer): the guide "
                "gets the prompt as text"
            )
        if self._generator is None or self._generator.base_model is not model:
            self._generator = BlendInGenerator(
                model, self.guide_model, tokenizer, self.guide_tokenizer, **self.pair
            )
        return self._generator


def _check_transformers() -> None:
    import transformers

    found = tuple(int(p) for p in transformers.__version__.split(".")[:2])
    if found < OLDEST_TRANSFORMERS:
        raise ImportError(
            f"blendin_ext.hf.BlendIn needs transformers >= 4.57 (custom_generate "
            f"as a callable with its own arguments), found "
            f"{transformers.__version__}; "
            "pip install 'blendin_ext[hf]'"
        )


def _check_supported(config, processors, model_kwargs, synced_gpus) -> None:
    mode = str(config.get_generation_mode()).rsplit(".", 1)[-1]
    if mode not in ("GREEDY_SEARCH", "SAMPLE"):
        raise ValueError(
            f"BlendIn decodes greedily or by sampling; this generation config asks "
            f"for {mode.lower()} (num_beams={config.num_beams}, penalty_alpha="
            f"{config.penalty_alpha}, prompt_lookup_num_tokens="
            f"{config.prompt_lookup_num_tokens})"
        )
    if config.num_return_sequences != 1:
        raise ValueError(
            f"BlendIn returns one sequence per prompt; num_return_sequences="
            f"{config.num_return_sequences} is not supported"
        )
    asked = [name for name in PER_TOKEN_OUTPUTS if getattr(config, name, False)]
    if asked:
        raise ValueError(
            f"BlendIn has no per-token tensors to return: {', '.join(asked)} must be False"
        )
    foreign = [type(p).__name__ for p in processors or () if type(p).__name__ not in OWN_WARPERS]
    if foreign:
        raise ValueError(
            f"BlendIn cannot apply these logits processors to a mixture of two "
            f"models: {', '.join(foreign)}"
        )
    extra = sorted(set(model_kwargs) - OWN_MODEL_KWARGS)
    if extra:
        raise ValueError(f"BlendIn takes input_ids and attention_mask only; got {', '.join(extra)}")
    if synced_gpus:
        raise ValueError("BlendIn does not support synced_gpus=True")


def _prompt_rows(input_ids: torch.Tensor, mask: Optional[torch.Tensor]) -> List[List[int]]:
    """Each row's prompt ids without its (left) padding."""
    ids = input_ids.tolist()
    if mask is None:
        return ids
    keep = mask.bool().tolist()
    return [[t for t, k in zip(row, kept) if k] for row, kept in zip(ids, keep)]


def _ids(value) -> List[int]:
    if value is None:
        return []
    if isinstance(value, torch.Tensor):
        return [int(v) for v in value.flatten().tolist()]
    return [int(v) for v in (value if isinstance(value, (list, tuple)) else [value])]


def _eos_ids(config) -> List[int]:
    return _ids(config.eos_token_id)


def _pad_id(config) -> int:
    pads = _ids(config.pad_token_id) or _eos_ids(config) or [0]
    return pads[0]


def _sampling(config, max_new_tokens: int) -> dict:
    """The loop's sampling options from the generation config."""
    if not config.do_sample:
        return dict(max_new_tokens=max_new_tokens, temperature=0.0)
    # A fresh seed from torch's generator: torch.manual_seed makes runs repeat.
    seed = int(torch.randint(0, 2**62, (1,)))
    top_p = config.top_p if config.top_p is not None and config.top_p < 1.0 else None
    return dict(
        max_new_tokens=max_new_tokens,
        temperature=float(config.temperature or 1.0),
        top_k=int(config.top_k) if config.top_k else None,
        top_p=top_p,
        seed=seed,
    )


class _StopCriteria:
    """The step hook: grows the sequences tensor as generate() would (pad
    after a row's end), feeds the streamer, applies stopping_criteria."""

    def __init__(self, input_ids, criteria, pad_id: int, streamer):
        self.sequences, self.criteria, self.pad_id = input_ids, criteria, pad_id
        self.streamer = streamer

    def __call__(self, tokens: List[int], live: List[bool]) -> Optional[List[bool]]:
        step = torch.tensor(
            [t if alive else self.pad_id for t, alive in zip(tokens, live)],
            dtype=self.sequences.dtype,
            device=self.sequences.device,
        )
        self.sequences = torch.cat([self.sequences, step[:, None]], dim=1)
        if self.streamer is not None:
            self.streamer.put(step.cpu())
        if not self.criteria:
            return None
        return self.criteria(self.sequences, None).tolist()
