"""The BlendIn decode loop: a base model guided by an aligned guide model.

    out = blendin_ext.generate(base, guide, ["Write a haiku about rain."],
                               tokenizer=tok, max_new_tokens=64)
    print(out[0].text, out[0].diagnostics.intervention_rate)

Each step runs the base one token, the guide one token (eager) or only
when needed (lazy), and one fused ``blend_step`` call for the whole batch
with per-row gamma / alpha / temperature / seed tensors, so a batch can mix
strategies. The host sees each step's tokens once (one small transfer),
which it needs anyway for EOS, stop strings and streaming.

Lazy guidance. Whether a row intervenes (c_b < gamma) depends on the base
alone, and a row that does not intervene gets a = 0, whose token is the
base's argmax / base-only draw whatever the guide says. So a lazy step
first calls the op with the base alone (`run_base_step`); only if a live
row intervened does the guide catch up every skipped token in one forward
and the op run again with its real logits. Tokens equal the eager
ones, up to the floating-point difference between one multi-token forward
and several one-token forwards of the guide (in float32 that is ~1e-6 and
only matters at an exact near-tie).
"""

from __future__ import annotations

import time
from typing import Callable, Iterator, Optional, Sequence, Union

import torch

from blendin_ext.decode.batch import DecodeRun, HostStep, Prompts, StepHook, compact
from blendin_ext.decode.diagnostics import TokenEvent
from blendin_ext.decode.options import DecodeOptions
from blendin_ext.decode.records import (
    GenerationOutput,
    GenerationResult,
    finish_run,
    record_step,
    step_hook_verdict,
)
from blendin_ext.guides.factory import make_guide_stream
from blendin_ext.guides.stream import GuideStream, fit_vocab, pair_logits
from blendin_ext.models.compiled import compiled_step_model
from blendin_ext.models.prompts import base_prompt_ids, pad_token_id
from blendin_ext.models.prompts import stop_token_ids as stop_token_ids_of
from blendin_ext.models.streams import TokenStream
from blendin_ext.ops.fused import run_base_step, run_step
from blendin_ext.ops.maps import GuideMap

# The decode loop's public names; HostStep and fit_vocab are also what the
# vLLM plug-in imports from here.
__all__ = [
    "BlendInGenerator",
    "DecodeOptions",
    "DecodeRun",
    "GenerationOutput",
    "GenerationResult",
    "HostStep",
    "StepHook",
    "TokenEvent",
    "fit_vocab",
    "generate",
]


class BlendInGenerator:
    """Holds a base model, a guide (stream) and their tokenizers; each
    `generate` / `stream` call decodes one batch of prompts. Calls keep
    their state to themselves (each gets its own streams over the shared
    models, a `DecodeRun`), so streams may interleave, from one thread at a
    time.

    base, guide: Hugging Face causal LMs, StepModels, or callables
        ``(input_ids, state) -> (logits, state)`` (see blendin_ext.models.streams);
        `guide` may also be a ready GuideStream.
    tokenizer: the base's tokenizer; guide_tokenizer: the guide's (default:
        the same). Different vocabularies need guide_to_base.
    system_prompt, guide_chat: the guide's prompt is the chat template
        (with this system message) unless guide_chat is False.
    stop_token_ids: extra base ids that end a row (EOS ids of both
        tokenizers / generation configs are always included).
    device: where callables' inputs live (HF models: their own device).
    compile: experimental; True (or a torch.compile backend name) gives each
        HF model a static KV cache and compiles its one-token forward
        (blendin_ext.models.compiled); the first call compiles.

    After a call ends, `last_output` holds its output and `guide` the guide
    stream it ran (its counters and diagnostics, such as ``coverage_by_row``):
    those of the call that finished last.
    """

    def __init__(
        self,
        base,
        guide,
        tokenizer,
        guide_tokenizer=None,
        *,
        guide_to_base: Union[None, torch.Tensor, GuideMap] = None,
        system_prompt: Optional[str] = None,
        guide_chat: bool = True,
        stop_token_ids: Sequence[int] = (),
        device: Optional[torch.device] = None,
        compile: Union[bool, str] = False,
    ):
        if tokenizer is None:
            raise ValueError("tokenizer is required (the base model's tokenizer)")
        self.tokenizer = tokenizer
        self.base_model = base
        self.base = TokenStream(compiled_step_model(base, compile), pad_token_id(tokenizer), device)
        if not isinstance(guide, GuideStream):
            guide = compiled_step_model(guide, compile)
        self.guide: GuideStream = make_guide_stream(
            guide,
            tokenizer,
            guide_tokenizer,
            guide_to_base=guide_to_base,
            system_prompt=system_prompt,
            chat=guide_chat,
            device=self.base.device,
            base_vocab=getattr(getattr(base, "config", None), "vocab_size", None),
        )
        # Tokenizers do not change: collect the EOS conventions once (a vocab scan).
        self.stop_ids = frozenset(
            stop_token_ids_of(tokenizer, base)
            | self.guide.stop_token_ids()
            | {int(t) for t in stop_token_ids}
        )
        self.last_output: Optional[GenerationOutput] = None

    @property
    def time_forwards(self) -> bool:
        return self.base.time_forwards

    @time_forwards.setter
    def time_forwards(self, value: bool) -> None:
        """Time each model forward (syncing CUDA) in later calls; for benchmarks."""
        self.base.time_forwards = value
        self.guide.time_forwards = value

    # ------------------------------------------------------------ public API
    def generate(
        self,
        prompts: Prompts,
        *,
        options: Optional[DecodeOptions] = None,
        on_token: Optional[Callable[[TokenEvent], None]] = None,
        prompt_ids: Optional[Sequence[Sequence[int]]] = None,
        step_hook: Optional[StepHook] = None,
        stop_ids: Optional[Sequence[int]] = None,
        **option_fields,
    ) -> GenerationOutput:
        """Decodes a batch of prompts (a string or a list of them).
        options: a DecodeOptions (blendin_ext.decode.options: max_new_tokens,
        strategy, gamma, alpha, temperature, top_k, top_p, seed, stop, lazy,
        compact, guide_sync); option_fields: its fields by keyword, alone or
        replacing those of `options`.
        on_token: called with every TokenEvent as it comes.
        prompt_ids: the base's prompt token ids per row, when the caller has
            them already (the guide still gets the prompt text).
        step_hook: an extra stop rule, see StepHook.
        stop_ids: the ids that end a row ("eos") in this call, instead of the
            generator's (both models' conventions)."""
        run = self._new_run(
            prompts,
            DecodeOptions.of(options, **option_fields),
            text_deltas=on_token is not None,
            prompt_ids=prompt_ids,
            step_hook=step_hook,
            stop_ids=stop_ids,
        )
        for event in self._decode(run):
            if on_token is not None:
                on_token(event)
        return self._finish(run)

    def stream(
        self,
        prompts: Prompts,
        *,
        options: Optional[DecodeOptions] = None,
        prompt_ids: Optional[Sequence[Sequence[int]]] = None,
        step_hook: Optional[StepHook] = None,
        stop_ids: Optional[Sequence[int]] = None,
        **option_fields,
    ) -> Iterator[TokenEvent]:
        """Like generate, but yields a TokenEvent per generated token (with its
        new text); once it is exhausted, `last_output` holds its results.
        Arguments are checked here, before the first token."""
        run = self._new_run(
            prompts,
            DecodeOptions.of(options, **option_fields),
            text_deltas=True,
            prompt_ids=prompt_ids,
            step_hook=step_hook,
            stop_ids=stop_ids,
        )

        def events() -> Iterator[TokenEvent]:
            yield from self._decode(run)
            self._finish(run)

        return events()

    # --------------------------------------------------------------- the loop
    def _decode(self, run: DecodeRun) -> Iterator[TokenEvent]:
        started = time.perf_counter()
        if run.max_new_tokens > 0:
            self.prefill(run)
            for step in range(run.max_new_tokens):
                host = self.decode_one_token(run, step)
                run.stats.steps += 1
                yield from record_step(run, host, step_hook_verdict(run, host))
                if not any(run.live):
                    break
                run.previous = host
                if run.compact and not all(run.live):
                    compact(run)
        run.stats.seconds = time.perf_counter() - started

    @torch.inference_mode()
    def prefill(self, run: DecodeRun) -> None:
        """Starts both streams; runs the base's prompt (and, eagerly, the
        guide's). A lazy guide prefills at its first catch-up."""
        capacity = run.max_new_tokens
        run.base.start(run.prompt_ids or base_prompt_ids(self.tokenizer, run.prompts), capacity)
        run.guide.start(run.prompts, capacity)
        run.base.logits()
        if not run.lazy:
            run.guide.logits()

    @torch.inference_mode()
    def decode_one_token(self, run: DecodeRun, step: int) -> HostStep:
        """Feeds the previous step's tokens and picks one token per row."""
        if run.previous is not None:
            prev = run.previous
            run.base.push(prev.tokens_device)
            run.guide.push(prev.tokens_device, prev.tokens, list(run.live))
        base_logits = run.base.logits()
        args = run.params.args.at_offset(step)
        base_top = None
        if run.lazy:
            # The base alone: exact for every row that does not intervene
            # (a = 0), and `intervened` is the op's own.
            first = run_base_step(base_logits, args)
            host = HostStep.fetch(first)
            if not any(i and alive for i, alive in zip(host.intervened, run.live)):
                return host
            base_top = first.tokens if args.greedy else None  # a = 0 greedy: the argmax
        base_logits, guide_logits = pair_logits(
            base_logits, run.guide.logits(), run.guide.guide_to_base
        )
        # The op on the batch's prepared arguments (no Python wrapper in the
        # hot path); offset = step, so a row's draws depend only on its seed
        # and step.
        out = run_step(base_logits, guide_logits, run.guide.guide_to_base, args)
        if run.params.top_n_rows is not None:  # rows running the paper's top-N procedure
            out = run.params.top_n_rows.apply(
                out, base_logits, guide_logits, run.guide.guide_to_base, args
            )
        if base_top is None:
            base_top = base_logits.argmax(-1)
        return HostStep.fetch(out, base_top, run.guide.top_base_token(guide_logits))

    # ------------------------------------------------------------- the call
    def _new_run(
        self,
        prompts: Prompts,
        options: DecodeOptions,
        *,
        text_deltas: bool,
        prompt_ids=None,
        step_hook: Optional[StepHook] = None,
        stop_ids: Optional[Sequence[int]] = None,
    ) -> DecodeRun:
        return DecodeRun.create(
            prompts,
            options,
            base=self.base,
            guide=self.guide,
            tokenizer=self.tokenizer,
            stop_ids=self.stop_ids if stop_ids is None else frozenset(int(t) for t in stop_ids),
            text_deltas=text_deltas,
            prompt_ids=prompt_ids,
            step_hook=step_hook,
        )

    def _finish(self, run: DecodeRun) -> GenerationOutput:
        self.last_output, self.guide = finish_run(run, self.tokenizer), run.guide
        return self.last_output

    def __repr__(self) -> str:
        return f"BlendInGenerator(guide={type(self.guide).__name__})"


def generate(
    base,
    guide,
    prompts: Prompts,
    *,
    tokenizer,
    guide_tokenizer=None,
    guide_to_base=None,
    system_prompt: Optional[str] = None,
    guide_chat: bool = True,
    stop_token_ids: Sequence[int] = (),
    device=None,
    compile=False,
    on_token: Optional[Callable[[TokenEvent], None]] = None,
    options: Optional[DecodeOptions] = None,
    **option_fields,
) -> GenerationOutput:
    """BlendIn generation in one call; see BlendInGenerator (models, prompts)
    and BlendInGenerator.generate (decoding options)."""
    generator = BlendInGenerator(
        base,
        guide,
        tokenizer,
        guide_tokenizer,
        guide_to_base=guide_to_base,
        system_prompt=system_prompt,
        guide_chat=guide_chat,
        stop_token_ids=stop_token_ids,
        device=device,
        compile=compile,
    )
    return generator.generate(prompts, on_token=on_token, options=options, **option_fields)
