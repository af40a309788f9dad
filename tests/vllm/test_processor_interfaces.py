"""The processor class against both of vLLM's processor interfaces: vLLM
loads entry-point plug-ins into every engine, and Model Runner V2 refuses a
class that is not its kind, so ours is both; without BlendIn configured it
is inert in either runner; each runner gets its adapter; registered twice
(entry point and logits_processors=[...]) it blends once."""

import pytest

pytest.importorskip("vllm")

from types import SimpleNamespace

from vllm.v1.sample.logits_processor import LogitsProcessor as V1

from blendin_ext.vllm.processor import BlendInLogitsProcessor
from tests.helpers.vllm_engine import fake_params


def config(additional_config):
    return SimpleNamespace(additional_config=additional_config)


def test_both_interfaces():
    assert issubclass(BlendInLogitsProcessor, V1)
    from vllm.v1.worker.gpu.sample.logits_processor.interface import LogitsProcessor as V2

    assert issubclass(BlendInLogitsProcessor, V2)


def test_inert_without_blendin_config():
    v1 = BlendInLogitsProcessor(config({}), "cpu", False)
    assert v1.core is None and not v1.is_argmax_invariant()
    v1.update_state(None)
    v1.update_state(
        SimpleNamespace(added=[(0, fake_params({"gamma": -1}), [1], [])], removed=[], moved=[])
    )  # even bad arguments: no raise
    logits = object()
    assert v1.apply(logits) is logits
    v2 = BlendInLogitsProcessor(config(None), object())
    assert v2.add_request(0, fake_params({"strategy": "guide"})) is False
    v2.apply_staged_writes()
    assert v2.apply(logits, None) is logits


def test_each_runner_gets_its_adapter(monkeypatch):
    """V1: (vllm_config, device, is_pin_memory); V2: (vllm_config, req_states)."""
    import blendin_ext.vllm.engine as engine
    from blendin_ext.vllm.runner_v1 import BatchRows
    from blendin_ext.vllm.runner_v2 import SlotRows

    built = []
    monkeypatch.setattr(
        engine, "build_core", lambda config, vllm_config, device: built.append(device) or "core"
    )
    engines = [config({"blendin": {"guide": "g"}}) for _ in range(2)]  # alive: ids differ
    v1 = BlendInLogitsProcessor(engines[0], "cpu", False)
    assert isinstance(v1.batch, BatchRows) and v1.slots is None and v1.core == "core"
    states = SimpleNamespace(device="cuda:1")
    v2 = BlendInLogitsProcessor(engines[1], states)
    assert isinstance(v2.slots, SlotRows) and v2.slots.req_states is states
    assert built == ["cpu", "cuda:1"]


def test_validate_params_names_the_field():
    from vllm import SamplingParams

    with pytest.raises(ValueError, match="extra_args.blendin.alpha"):
        BlendInLogitsProcessor.validate_params(SamplingParams(extra_args={"blendin": {"alpha": 3}}))
    BlendInLogitsProcessor.validate_params(SamplingParams())


def test_registered_twice_blends_once(monkeypatch):
    import blendin_ext.vllm.engine as engine

    monkeypatch.setattr(engine, "build_core", lambda config, vllm_config, device: "core")
    shared = config({"blendin": {"guide": "g"}})
    first = BlendInLogitsProcessor(shared, "cpu", False)
    second = BlendInLogitsProcessor(shared, "cpu", False)
    assert first.core == "core" and second.core is None
