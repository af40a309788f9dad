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
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Sequence, Union

import torch

from blendin_ext.decode.batch import (HostStep, StepHook, _Run, compact,  # noqa: F401 (re-exported)
                                      per_call_guide, save_guide_stats)
from blendin_ext.decode.diagnostics import LoopStats, SequenceDiagnostics, TokenEvent
from blendin_ext.decode.options import DecodeOptions, RowParams
from blendin_ext.decode.text import RowText
from blendin_ext.guides.factory import make_guide_stream
from blendin_ext.guides.stream import GuideStream
from blendin_ext.models.compiled import compiled_step_model
from blendin_ext.models.prompts import base_prompt_ids, pad_token_id
from blendin_ext.models.prompts import stop_token_ids as stop_token_ids_of
from blendin_ext.models.streams import TokenStream
from blendin_ext.ops.fused import run_base_step, run_step
from blendin_ext.ops.maps import GuideMap

Prompts = Union[str, Sequence[str]]


@dataclass
class GenerationResult:
    prompt: str
    text: str                 # generated text, without the stop token / stop string
    token_ids: List[int]      # generated base ids, a final EOS included
    finish_reason: str        # "eos", "stop" (a stop string) or "length"
    diagnostics: SequenceDiagnostics
    # Cross-tokenizer guide: mean share of its probability on tokens with a
    # base twin, over the guide runs while the row was live (else None).
    map_coverage: Optional[float] = None


@dataclass
class GenerationOutput:
    results: List[GenerationResult]
    stats: LoopStats

    def __getitem__(self, i) -> GenerationResult:
        return self.results[i]

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self):
        return iter(self.results)

    @property
    def texts(self) -> List[str]:
        return [r.text for r in self.results]


def fit_vocab(logits: torch.Tensor, vocab: int) -> torch.Tensor:
    """Guide logits of a model whose output layer is padded differently from
    the base's (same tokenizer): drop extra columns or pad with -inf."""
    if logits.shape[-1] > vocab:
        return logits[:, :vocab].contiguous()
    pad = logits.new_full((logits.shape[0], vocab - logits.shape[-1]), float("-inf"))
    return torch.cat([logits, pad], -1)


class BlendInGenerator:
    """Holds a base model, a guide (stream) and their tokenizers; each
    `generate` / `stream` call decodes one batch of prompts. Calls keep
    their state to themselves (each gets its own streams over the shared
    models), so streams may interleave, from one thread at a time.

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

    def __init__(self, base, guide, tokenizer, guide_tokenizer=None, *,
                 guide_to_base: Union[None, torch.Tensor, GuideMap] = None,
                 system_prompt: Optional[str] = None, guide_chat: bool = True,
                 stop_token_ids: Sequence[int] = (), device: Optional[torch.device] = None,
                 compile: Union[bool, str] = False):
        if tokenizer is None:
            raise ValueError("tokenizer is required (the base model's tokenizer)")
        self.tokenizer = tokenizer
        self.base_model = base
        self.base = TokenStream(compiled_step_model(base, compile), pad_token_id(tokenizer),
                                device)
        if not isinstance(guide, GuideStream):
            guide = compiled_step_model(guide, compile)
        self.guide: GuideStream = make_guide_stream(
            guide, tokenizer, guide_tokenizer, guide_to_base=guide_to_base,
            system_prompt=system_prompt, chat=guide_chat, device=self.base.device,
            base_vocab=getattr(getattr(base, "config", None), "vocab_size", None))
        # Tokenizers do not change: collect the EOS conventions once (a vocab scan).
        self.stop_ids = frozenset(stop_token_ids_of(tokenizer, base) | self.guide.stop_token_ids()
                                  | {int(t) for t in stop_token_ids})
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
    def generate(self, prompts: Prompts, *, on_token: Optional[Callable[[TokenEvent], None]] = None,
                 prompt_ids: Optional[Sequence[Sequence[int]]] = None,
                 step_hook: Optional[StepHook] = None, stop_ids: Optional[Sequence[int]] = None,
                 **options) -> GenerationOutput:
        """Decodes a batch of prompts (a string or a list of them).
        options: see blendin_ext.decode.options.DecodeOptions (max_new_tokens,
        strategy, gamma, alpha, temperature, top_k, top_p, seed, stop, lazy,
        compact, guide_sync).
        on_token: called with every TokenEvent as it comes.
        prompt_ids: the base's prompt token ids per row, when the caller has
            them already (the guide still gets the prompt text).
        step_hook: an extra stop rule, see StepHook.
        stop_ids: the ids that end a row ("eos") in this call, instead of the
            generator's (both models' conventions)."""
        run = self._new_run(prompts, DecodeOptions(**options), text_deltas=on_token is not None,
                            prompt_ids=prompt_ids, step_hook=step_hook, stop_ids=stop_ids)
        for event in self._decode(run):
            if on_token is not None:
                on_token(event)
        return self._finish(run)

    def stream(self, prompts: Prompts, *, prompt_ids: Optional[Sequence[Sequence[int]]] = None,
               step_hook: Optional[StepHook] = None, stop_ids: Optional[Sequence[int]] = None,
               **options) -> Iterator[TokenEvent]:
        """Like generate, but yields a TokenEvent per generated token (with its
        new text); once it is exhausted, `last_output` holds its results.
        Arguments are checked here, before the first token."""
        run = self._new_run(prompts, DecodeOptions(**options), text_deltas=True,
                            prompt_ids=prompt_ids, step_hook=step_hook, stop_ids=stop_ids)

        def events() -> Iterator[TokenEvent]:
            yield from self._decode(run)
            self._finish(run)
        return events()

    # --------------------------------------------------------------- the loop
    def _decode(self, run: _Run) -> Iterator[TokenEvent]:
        started = time.perf_counter()
        if run.max_new_tokens > 0:
            self.prefill(run)
            for step in range(run.max_new_tokens):
                host = self.decode_one_token(run, step)
                run.stats.steps += 1
                yield from self._record(run, host, self._hooked(run, host))
                if not any(run.live):
                    break
                run.previous = host
                if run.compact and not all(run.live):
                    compact(run)
        run.stats.seconds = time.perf_counter() - started

    @torch.inference_mode()
    def prefill(self, run: _Run) -> None:
        """Starts both streams; runs the base's prompt (and, eagerly, the
        guide's). A lazy guide prefills at its first catch-up."""
        capacity = run.max_new_tokens
        run.base.start(run.prompt_ids or base_prompt_ids(self.tokenizer, run.prompts), capacity)
        run.guide.start(run.prompts, capacity)
        run.base.logits()
        if not run.lazy:
            run.guide.logits()

    @torch.inference_mode()
    def decode_one_token(self, run: _Run, step: int) -> HostStep:
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
            base_top = first.tokens if args.greedy else None   # a = 0 greedy: the argmax
        guide_logits = run.guide.logits()
        if run.guide.guide_to_base is None and guide_logits.shape[-1] != base_logits.shape[-1]:
            guide_logits = fit_vocab(guide_logits, base_logits.shape[-1])
        if guide_logits.dtype != base_logits.dtype or guide_logits.device != base_logits.device:
            base_logits = base_logits.float()
            guide_logits = guide_logits.to(base_logits.device, torch.float32)
        # The op on the batch's prepared arguments (no Python wrapper in the
        # hot path); offset = step, so a row's draws depend only on its seed
        # and step.
        out = run_step(base_logits, guide_logits, run.guide.guide_to_base, args)
        if run.params.top_n_rows is not None:   # rows running the paper's top-N procedure
            out = run.params.top_n_rows.apply(out, base_logits, guide_logits,
                                              run.guide.guide_to_base, args)
        if base_top is None:
            base_top = base_logits.argmax(-1)
        return HostStep.fetch(out, base_top, run.guide.top_base_token(guide_logits))

    # ------------------------------------------------------- host bookkeeping
    @staticmethod
    def _hooked(run: _Run, host: HostStep) -> Optional[List[bool]]:
        """The step hook's verdict per batch position; the hook itself sees
        every prompt (finished ones not live), whatever the batch holds."""
        if run.step_hook is None:
            return None
        tokens = [0] * len(run.prompts)
        for pos, row in enumerate(run.rows):
            tokens[row] = host.tokens[pos]
        live = [reason is None for reason in run.finish]
        hooked = run.step_hook(tokens, live)
        return None if hooked is None else [bool(hooked[row]) for row in run.rows]

    def _record(self, run: _Run, host: HostStep,
                hooked: Optional[List[bool]] = None) -> Iterator[TokenEvent]:
        """Per live row: bad-row check, diagnostics, text, stop conditions
        (`hooked`: rows the step hook stopped)."""
        for pos, alive in enumerate(run.live):
            if not alive:
                continue
            row, token = run.rows[pos], host.tokens[pos]
            if token < 0:
                raise ValueError(
                    f"prompt {row}: the models' logits held NaN/+inf or were fully masked at "
                    f"generated position {run.diagnostics[row].tokens}")
            diag = run.diagnostics[row]
            event = diag.record(token, host.base_confidence[pos], host.intervened[pos],
                                host.alpha[pos], host.agree[pos], host.base_top[pos],
                                host.guide_top[pos])
            text = run.texts[row]
            if run.needs_text:
                delta, stopped = text.add(token)
            else:
                text.ids.append(token)
                delta, stopped = "", False
            stopped = stopped or bool(hooked and hooked[pos])
            reason = ("eos" if token in run.stop_ids else "stop" if stopped
                      else "length" if diag.tokens >= run.max_new_tokens else None)
            if reason is not None:
                run.live[pos], run.finish[row] = False, reason
                if run.needs_text:
                    delta += text.flush()
            run.stats.generated_tokens += 1
            yield TokenEvent(row, diag.tokens - 1, token, delta, event, reason is not None)

    def _finish(self, run: _Run) -> GenerationOutput:
        save_guide_stats(run, range(len(run.rows)))
        results = []
        for row, prompt in enumerate(run.prompts):
            ids = run.texts[row].ids
            reason = run.finish[row] or "length"
            kept = ids[:-1] if reason == "eos" else ids
            text = self.tokenizer.decode(kept, skip_special_tokens=True)
            cuts = [i for i in (text.find(s) for s in run.stop_strings) if i >= 0]
            if cuts:
                text = text[: min(cuts)]
            results.append(GenerationResult(prompt, text, list(ids), reason,
                                            run.diagnostics[row], run.coverage[row]))
        stats = run.stats
        stats.base_forwards, stats.base_tokens = run.base.forwards, run.base.tokens_fed
        stats.guide_forwards, stats.guide_tokens = run.guide.forwards, run.guide.tokens_fed
        stats.forward_seconds = run.base.forward_seconds + run.guide.forward_seconds
        self.last_output, self.guide = GenerationOutput(results, stats), run.guide
        return self.last_output

    # ------------------------------------------------------------- arguments
    def _new_run(self, prompts: Prompts, options: DecodeOptions, text_deltas: bool,
                 prompt_ids=None, step_hook: Optional[StepHook] = None,
                 stop_ids: Optional[Sequence[int]] = None) -> _Run:
        prompts = [prompts] if isinstance(prompts, str) else prompts
        if not isinstance(prompts, (list, tuple)) or not prompts:
            raise ValueError("prompts must be a non-empty list of strings")
        for i, p in enumerate(prompts):
            if not isinstance(p, str):
                raise TypeError(f"prompts[{i}] must be a string, got {type(p).__name__}")
        n = len(prompts)
        if prompt_ids is not None:
            prompt_ids = [[int(t) for t in ids] for ids in prompt_ids]
            if len(prompt_ids) != n or any(not ids for ids in prompt_ids):
                raise ValueError(f"prompt_ids must hold one non-empty id list per prompt ({n})")
        params = RowParams.build(n, self.base.device, options)
        guide = per_call_guide(self.guide)
        if hasattr(guide, "guide_sync"):   # a guide with another tokenizer
            guide.guide_sync = options.guide_sync
        stops = options.stop_strings
        return _Run(list(prompts), self.base.fresh(), guide, params,
                    options.max_new_tokens, bool(options.lazy), bool(options.compact), stops,
                    self.stop_ids if stop_ids is None else frozenset(int(t) for t in stop_ids),
                    [RowText(self.tokenizer, stops) for _ in prompts],
                    [SequenceDiagnostics() for _ in prompts], list(range(n)), [True] * n,
                    [None] * n, needs_text=text_deltas or bool(stops), coverage=[None] * n,
                    prompt_ids=prompt_ids,
                    step_hook=step_hook)

    def __repr__(self) -> str:
        return f"BlendInGenerator(guide={type(self.guide).__name__})"


def generate(base, guide, prompts: Prompts, *, tokenizer, guide_tokenizer=None,
             guide_to_base=None, system_prompt: Optional[str] = None, guide_chat: bool = True,
             stop_token_ids: Sequence[int] = (), device=None, compile=False,
             on_token: Optional[Callable[[TokenEvent], None]] = None,
             **options) -> GenerationOutput:
    """BlendIn generation in one call; see BlendInGenerator (models, prompts)
    and BlendInGenerator.stream (decoding options)."""
    generator = BlendInGenerator(base, guide, tokenizer, guide_tokenizer,
                                 guide_to_base=guide_to_base, system_prompt=system_prompt,
                                 guide_chat=guide_chat, stop_token_ids=stop_token_ids,
                                 device=device, compile=compile)
    return generator.generate(prompts, on_token=on_token, **options)
