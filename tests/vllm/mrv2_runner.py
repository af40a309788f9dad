"""A Model Runner V2 stand-in for the contract tests, built on vLLM's own
objects: the runner's ``RequestState`` (slots from its free list, per-slot
token buffers, prompt/prefill/total lengths), the processors vLLM's
``build_custom_logits_processors`` instantiates (entry point and FQCN
paths), its params validator, and a real ``LogitsContext`` per step laid
out as ``vllm/v1/worker/gpu/model_runner.py`` and ``input_batch.py`` lay it
out: rows grouped by request in a shuffled request order, one row per
draft position (``expanded_local_pos``), ``pos`` the position of each row's
input token, ``input_ids`` that token (the last sampled one at local
position 0, then the draft tokens).

What the GPU does in the real runner is done here on the CPU: the staged
writes of ``RequestState.apply_staged_writes`` (a Triton kernel there), the
model's forward (a full forward of a tiny Hugging Face model per row),
greedy sampling with speculative-decoding acceptance (a draft is accepted
while it equals the row's argmax) and ``post_update`` (sampled tokens
written after ``total_len``, which then grows). A grammar mask, when set,
is applied before the processors, as MRV2 does.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import torch
import vllm.v1.worker.gpu.buffer_utils as buffer_utils
from vllm.v1.worker.gpu.sample.logits_processor import (
    LogitsContext,
    build_custom_logits_processors,
    build_custom_logits_processors_params_validator,
)
from vllm.v1.worker.gpu.states import RequestState

# The CPU has no pinned memory: plain host buffers, as vLLM's CPU worker uses.
buffer_utils.is_uva_available = lambda: False


def flush(staged) -> None:
    """`StagedWriteTensor.apply_write` without its Triton kernel."""
    ends = staged._staged_write_cu_lens
    begin = 0
    for index, start, end in zip(staged._staged_write_indices, staged._staged_write_starts, ends):
        values = torch.tensor(staged._staged_write_contents[begin:end], dtype=staged.gpu.dtype)
        if staged.gpu.dim() == 1:
            staged.gpu[index] = values[0]
        else:
            staged.gpu[index, start : start + len(values)] = values
        begin = end
    staged.clear_staged_writes()


@dataclass
class Running:
    slot: int
    prompt_len: int
    computed: int  # tokens the model has seen (its KV cache)
    drafts: List[int] = field(default_factory=list)  # proposed for the next step


class MRV2Runner:
    """Requests by id; `step()` runs one scheduler step over all of them."""

    def __init__(
        self,
        vllm_config,
        base,
        *,
        custom=(),
        max_num_reqs=8,
        max_model_len=128,
        num_speculative_steps=0,
        chunk=None,
        seed=0,
        grammar=None,
    ):
        self.base = base
        vocab = base.config.vocab_size
        self.req_states = RequestState(
            max_num_reqs,
            max_model_len,
            4 * max_model_len,
            num_speculative_steps,
            vocab,
            torch.device("cpu"),
        )
        self.processors = build_custom_logits_processors(
            vllm_config, self.req_states, False, custom
        )
        self.validate = build_custom_logits_processors_params_validator(custom)
        self.needs_processing = np.zeros(max_num_reqs, dtype=bool)
        self.running: Dict[str, Running] = {}
        self.chunk = chunk  # prefill tokens per step (None: all at once)
        self.order = random.Random(seed)
        self.grammar = grammar  # (vocab,) bool: allowed tokens, or None
        self.logits_seen: List[tuple] = []  # (logits in, logits out, rows that prefill)

    # ------------------------------------------------------------ requests
    def add(self, req_id: str, prompt_ids: List[int], params, output_ids=()) -> int:
        """A new or resumed request; the params validator runs first (as the
        frontend does), then the runner's add_requests path."""
        self.validate(params)
        tokens = list(prompt_ids) + list(output_ids)
        self.req_states.add_request(req_id, len(prompt_ids), tokens, 0, params.max_tokens)
        slot = self.req_states.req_id_to_index[req_id]
        needs = False
        for processor in self.processors:
            needs |= processor.add_request(slot, params)
        self.needs_processing[slot] = needs
        self.running[req_id] = Running(slot, len(prompt_ids), 0)
        return slot

    def flush(self) -> None:
        """The runner's apply_staged_writes, then the sampler's."""
        states = self.req_states
        states.prompt_len.copy_to_uva()
        states.prefill_len.copy_to_uva()
        flush(states.total_len)
        flush(states.all_token_ids)
        flush(states.num_computed_tokens)
        for processor in self.processors:
            processor.apply_staged_writes()

    def remove(self, req_id: str):
        """Finished or preempted: (prompt ids, output ids) it had."""
        prompt, output = self.tokens(req_id)
        self.req_states.remove_request(req_id)
        del self.running[req_id]
        return prompt, output

    def tokens(self, req_id: str):
        slot = self.running[req_id].slot
        total = int(self.req_states.total_len.gpu[slot])
        ids = self.req_states.all_token_ids.gpu[slot, :total].tolist()
        prompt = self.running[req_id].prompt_len
        return ids[:prompt], ids[prompt:]

    def outputs(self) -> Dict[str, List[int]]:
        return {req_id: self.tokens(req_id)[1] for req_id in self.running}

    # ----------------------------------------------------------------- step
    @torch.no_grad()
    def step(self, drafts: Optional[Dict[str, List[int]]] = None) -> None:
        """One step; drafts: req_id -> draft tokens to verify this step."""
        self.flush()
        order = list(self.running)
        self.order.shuffle(order)  # MRV2 reorders rows every step
        states = self.req_states
        rows = []  # (req_id, local position, position, input token)
        prefilling = set()
        for req_id in order:
            run = self.running[req_id]
            total = int(states.total_len.gpu[run.slot])
            prefill = int(states.prefill_len.np[run.slot])
            ids = states.all_token_ids.gpu[run.slot, :total].tolist()
            if run.computed < prefill:
                end = prefill if self.chunk is None else min(prefill, run.computed + self.chunk)
                rows.append((req_id, 0, end - 1, ids[end - 1]))
                if end < prefill:
                    prefilling.add(len(rows) - 1)
                run.computed = end
                continue
            run.drafts = list((drafts or {}).get(req_id, ()))
            rows.append((req_id, 0, total - 1, ids[total - 1]))
            for j, token in enumerate(run.drafts, start=1):
                rows.append((req_id, j, total - 1 + j, token))
        logits = torch.stack([self._logits(r) for r in rows])
        if self.grammar is not None:
            logits[:, ~self.grammar] = float("-inf")
        slots = [self.running[r[0]].slot for r in rows]
        idx_np = np.array([self.running[r].slot for r in order], dtype=np.intp)
        ctx = LogitsContext(
            expanded_idx_mapping=torch.tensor(slots, dtype=torch.int64),
            idx_mapping=torch.tensor(idx_np, dtype=torch.int64),
            idx_mapping_np=idx_np,
            expanded_local_pos=torch.tensor([r[1] for r in rows], dtype=torch.int32),
            input_ids=torch.tensor([r[3] for r in rows], dtype=torch.int32),
            pos=torch.tensor([r[2] for r in rows], dtype=torch.int64),
            seq_lens_upper_bound_np=np.array([0] * len(order), dtype=np.int32),
        )
        given = logits.clone()
        if np.any(self.needs_processing[idx_np]):  # the Sampler's own gate
            for processor in self.processors:
                logits = processor.apply(logits, ctx)
        self.logits_seen.append((given, logits.clone(), prefilling))
        self._post_update(rows, logits.argmax(-1).tolist(), prefilling)

    def _logits(self, row) -> torch.Tensor:
        """The base's next-token logits after the row's context: committed
        tokens up to its position, then its request's drafts."""
        req_id, _, position, _ = row
        slot = self.running[req_id].slot
        total = int(self.req_states.total_len.gpu[slot])
        seen = position + 1
        context = (
            self.req_states.all_token_ids.gpu[slot, : min(total, seen)].tolist()
            + self.running[req_id].drafts[: max(seen - total, 0)]
        )
        return self.base(torch.tensor([context])).logits[0, -1]

    def _post_update(self, rows, chosen, prefilling) -> None:
        """Greedy acceptance per request, then post_update."""
        by_request: Dict[str, list] = {}
        for i, (row, token) in enumerate(zip(rows, chosen)):
            by_request.setdefault(row[0], []).append((i, row, token))
        for req_id, entries in by_request.items():
            run = self.running[req_id]
            if any(i in prefilling for i, _, _ in entries):
                continue  # a prefill chunk: nothing sampled
            sampled = []
            for k, (_, _, token) in enumerate(entries):
                sampled.append(token)
                if k >= len(run.drafts) or run.drafts[k] != token:
                    break  # the draft after this row is rejected (or none is left)
            total = int(self.req_states.total_len.gpu[run.slot])
            self.req_states.all_token_ids.gpu[run.slot, total : total + len(sampled)] = (
                torch.tensor(sampled, dtype=torch.int32)
            )
            self.req_states.total_len.gpu[run.slot] = total + len(sampled)
            run.computed = total + len(sampled) - 1
