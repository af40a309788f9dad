"""The processor class against both of vLLM's processor interfaces: vLLM
loads entry-point plug-ins into every engine, and Model Runner V2 refuses a
class that is not its kind, so ours is both; without BlendIn configured it
is inert in either runner, and under V2 a BlendIn engine stops with our
message (V2 is not implemented)."""
import pytest

pytest.importorskip("vllm")

from vllm.v1.sample.logits_processor import LogitsProcessor as V1  # noqa: E402

from blendin_ext.vllm.processor import BlendInLogitsProcessor  # noqa: E402
from blendin_ext.vllm.runner_v2 import SlotRequests  # noqa: E402


class Config:
    def __init__(self, additional_config):
        self.additional_config = additional_config


def test_both_interfaces():
    assert issubclass(BlendInLogitsProcessor, V1)
    try:
        from vllm.v1.worker.gpu.sample.logits_processor.interface import LogitsProcessor as V2
    except ImportError:
        pytest.skip("this vLLM has no Model Runner V2 interface")
    assert issubclass(BlendInLogitsProcessor, V2)


def test_inert_without_blendin_config():
    v1 = BlendInLogitsProcessor(Config({}), "cpu", False)
    assert v1.core is None and not v1.is_argmax_invariant()
    v1.update_state(None)
    logits = object()
    assert v1.apply(logits) is logits
    v2 = BlendInLogitsProcessor(Config(None), object())
    assert v2.add_request(0, None) is False and v2.apply(logits, None) is logits


def test_each_runner_gets_its_adapter(monkeypatch):
    """V1: (vllm_config, device, is_pin_memory); V2: (vllm_config, req_states)."""
    import blendin_ext.vllm.processor as processor

    built = []
    monkeypatch.setattr(processor, "build_core",
                        lambda config, vllm_config, device: built.append(device) or "core")
    engines = [Config({"blendin": {"guide": "g"}}) for _ in range(2)]   # alive: ids differ
    v1 = BlendInLogitsProcessor(engines[0], "cpu", False)
    assert v1.core == "core" and v1.slots is None
    states = type("States", (), {"device": "cuda:1"})()
    v2 = BlendInLogitsProcessor(engines[1], states)
    assert isinstance(v2.slots, SlotRequests) and v2.slots.req_states is states
    assert built == ["cpu", "cuda:1"]


def test_validate_params_names_the_field():
    from vllm import SamplingParams

    with pytest.raises(ValueError, match="extra_args.blendin.alpha"):
        BlendInLogitsProcessor.validate_params(
            SamplingParams(extra_args={"blendin": {"alpha": 3}}))
    BlendInLogitsProcessor.validate_params(SamplingParams())


def test_registered_twice_blends_once(monkeypatch):
    """The entry point and logits_processors=[...] both construct it."""
    import blendin_ext.vllm.processor as processor

    monkeypatch.setattr(processor, "build_core", lambda config, vllm_config, device: "core")
    config = Config({"blendin": {"guide": "g"}})
    first = BlendInLogitsProcessor(config, "cpu", False)
    second = BlendInLogitsProcessor(config, "cpu", False)
    assert first.core == "core" and second.core is None
