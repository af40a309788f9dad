"""Packed linear layers (oneDNN's kernel and blendin's bf16 one): the same
logits and tokens, ties kept, exact unpacking, and clear errors where a
packed model cannot go."""

import copy

import pytest
import torch

from blendin_ext.decode.loop import generate
from blendin_ext.models import bf16_linear, cpu_flags, packing
from blendin_ext.models.compiled import CompiledHFStepModel
from blendin_ext.testing.models import random_prompts, tiny_llama_for, tiny_tokenizer

pytestmark = pytest.mark.skipif(
    not torch.backends.mkldnn.is_available(), reason="this PyTorch has no oneDNN"
)


def tied_model(tokenizer, dtype):
    model = tiny_llama_for(tokenizer, dtype=dtype, hidden=64)
    model.lm_head.weight = model.model.embed_tokens.weight
    model.config.tie_word_embeddings = True
    return model


def logits(model, ids):
    with torch.inference_mode():
        return model(ids).logits.float()


KERNEL_CASES = [(torch.bfloat16, "onednn"), (torch.bfloat16, "blendin"), (torch.float32, "onednn")]


@pytest.mark.parametrize("dtype,kernel", KERNEL_CASES)
def test_packed_logits_match_and_ties_survive(dtype, kernel):
    tok = tiny_tokenizer(120)
    model = tied_model(tok, dtype)
    ids = torch.randint(0, len(tok), (3, 9), generator=torch.Generator().manual_seed(0))
    before = logits(model, ids)
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert packing.pack_linear_weights(model, kernel) == 2 * 7 + 1  # 2 layers of 7, lm_head
    assert isinstance(model.lm_head, packing.PackedLinear) and model.lm_head.kernel == kernel
    assert model.lm_head.tied and model.lm_head.weight is model.model.embed_tokens.weight
    after = logits(model, ids)
    if kernel == "blendin":  # float32 sums in another order: a bf16 rounding step at most
        torch.testing.assert_close(after, before, rtol=2**-7, atol=2**-7)
    elif dtype == torch.bfloat16:  # the same oneDNN kernel, minus the per-call reorder
        assert torch.equal(after, before)
    else:  # oneDNN's float32 GEMM against MKL's: rounding only
        torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    assert packing.unpack_linear_weights(model) == 15
    assert model.lm_head.weight is model.model.embed_tokens.weight
    for name, param in model.named_parameters():
        assert torch.equal(param, weights[name]), name
        assert param.requires_grad, name
    assert torch.equal(logits(model, ids), before)


@pytest.mark.parametrize("kernel", ["onednn", "blendin"])
def test_packed_bf16_generation_gives_the_same_tokens(kernel):
    tok = tiny_tokenizer(150)
    prompts = random_prompts(4, vocab=60, seed=3)
    runs = []
    for pack in (False, True):
        base = tiny_llama_for(tok, seed=1, dtype=torch.bfloat16)
        guide = tiny_llama_for(tok, seed=2, dtype=torch.bfloat16)
        if pack:
            assert packing.pack_linear_weights(base, kernel) and packing.pack_linear_weights(
                guide, kernel
            )
        out = generate(
            base,
            guide,
            prompts,
            tokenizer=tok,
            guide_chat=False,
            max_new_tokens=12,
            strategy="blendin",
            gamma=0.6,
            seed=5,
        )
        runs.append([(r.token_ids, r.diagnostics.interventions) for r in out])
    assert runs[0] == runs[1]
    assert any(interventions for _, interventions in runs[0])  # the mixture ran too


def test_packing_skips_what_it_cannot_pack():
    tok = tiny_tokenizer(80)
    model = tiny_llama_for(tok, dtype=torch.float16)
    assert packing.pack_linear_weights(model) == 0
    assert not packing.packing_supported(torch.float16)
    assert not packing.packing_supported(torch.bfloat16, "meta")
    assert packing.packing_supported(torch.bfloat16, "cpu")


@pytest.mark.parametrize("kernel", ["onednn", "blendin"])
def test_a_packed_model_refuses_to_move_or_cast_but_stays_put(kernel):
    tok = tiny_tokenizer(80)
    model = tiny_llama_for(tok, dtype=torch.bfloat16)
    packing.pack_linear_weights(model, kernel)
    before = logits(model, torch.tensor([[3, 4]]))
    assert model.to("cpu") is model and model.eval() is model  # changes nothing: fine
    with pytest.raises(RuntimeError, match="packed for the CPU.*unpack_linear_weights"):
        model.float()
    with pytest.raises(RuntimeError, match="pack_weights=False"):
        model.to("meta")
    with pytest.raises(RuntimeError, match="packed for the CPU"):
        model.model.layers[0].to(torch.float32)  # a submodule's own move is refused too
    assert torch.equal(logits(model, torch.tensor([[3, 4]])), before)  # nothing moved
    with pytest.raises(TypeError, match="bfloat16 weight, got a torch.float32 input"):
        model.lm_head(torch.zeros(1, model.config.hidden_size))
    assert not hasattr(model.lm_head, "weight")  # nothing reads the opaque layout by mistake
    with pytest.raises(RuntimeError, match="for inference: run the model under"):
        model(torch.tensor([[3, 4]]))  # autograd on: no silently wrong gradients
    with torch.no_grad():
        model(torch.tensor([[3, 4]]))
    assert f"packed={'blendin' if kernel == 'blendin' else 'oneDNN'}" in repr(model.lm_head)
    assert packing.packed_kernels(model) == (
        "blendin bf16 kernel" if kernel == "blendin" else "oneDNN"
    )


@pytest.mark.parametrize(
    "fast, amx, expected",
    [(True, False, "blendin"), (True, True, "onednn"), (False, False, "onednn")],
)
def test_auto_takes_blendins_kernel_for_bf16_with_avx512_bf16_and_no_amx(
    monkeypatch, fast, amx, expected
):
    monkeypatch.setattr(packing, "fast_bf16_linear", lambda: fast)
    monkeypatch.setattr(packing, "cpu_has_amx_bf16", lambda: amx)
    assert packing.linear_kernel(torch.bfloat16) == expected
    assert packing.linear_kernel(torch.float32) == "onednn"


def test_the_kernel_choice():
    expected = (
        "blendin"
        if bf16_linear.fast_bf16_linear() and not cpu_flags.cpu_has_amx_bf16()
        else "onednn"
    )
    assert packing.linear_kernel(torch.bfloat16) == expected
    assert packing.linear_kernel(torch.float32) == "onednn"
    assert packing.linear_kernel(torch.bfloat16, "onednn") == "onednn"
    with pytest.raises(ValueError, match="kernel must be one of auto, blendin, onednn"):
        packing.linear_kernel(torch.bfloat16, "mkl")
    tok = tiny_tokenizer(80)
    with pytest.raises(ValueError, match="kernel 'blendin' takes bfloat16 weights"):
        packing.pack_linear_weights(tiny_llama_for(tok, dtype=torch.float32), "blendin")
    mixed = tiny_llama_for(tok, dtype=torch.bfloat16)
    mixed.lm_head.float()
    packing.pack_linear_weights(mixed)
    assert packing.packed_kernels(mixed) == (
        "14 blendin bf16 kernel, 1 oneDNN" if expected == "blendin" else "oneDNN"
    )


def token_ids(model, tok, prompts):
    out = generate(
        model, model, prompts, tokenizer=tok, guide_chat=False, max_new_tokens=6, strategy="base"
    )
    return [r.token_ids for r in out]


def test_the_compiled_path_keeps_packed_layers_and_the_tokens():
    tok = tiny_tokenizer(80)
    model = tiny_llama_for(tok, dtype=torch.bfloat16)
    prompts = random_prompts(2, seed=4)
    reference = token_ids(model, tok, prompts)
    packing.pack_linear_weights(model)
    static = CompiledHFStepModel(model, backend=None)  # the static cache, not compiled
    assert isinstance(model.lm_head, packing.PackedLinear)
    assert token_ids(static, tok, prompts) == reference


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_packed_linear_op_traces_like_the_layer(dtype):
    layer = torch.nn.Linear(16, 24, dtype=dtype).requires_grad_(False)  # no autograd formula
    packed = packing.PackedLinear(layer)
    x = torch.randn(2, 3, 16, dtype=dtype)
    with torch.no_grad():
        expected = packed(x)
        assert torch.equal(
            packing.packed_linear(x, packed.packed_weight, packed.bias, 24), expected
        )
    # opcheck's schema, autograd and fake-tensor utilities read the inputs'
    # storage, which an opaque oneDNN tensor has none of; the AOT tests trace
    # the op through its fake implementation as torch.compile does.
    torch.library.opcheck(
        torch.ops.blendin_ext.packed_linear.default,
        (x, packed.packed_weight, packed.bias, 24),
        test_utils=("test_aot_dispatch_static", "test_aot_dispatch_dynamic"),
    )


@pytest.mark.slow
@pytest.mark.parametrize("dtype,kernel", [(torch.float32, "onednn"), (torch.bfloat16, "blendin")])
def test_inductor_compiles_packed_layers(dtype, kernel):
    tok = tiny_tokenizer(80)
    model = tiny_llama_for(tok, dtype=dtype)
    packing.pack_linear_weights(model, kernel)
    prompts = random_prompts(2, seed=5)
    reference = token_ids(model, tok, prompts)
    compiled = CompiledHFStepModel(model)
    assert token_ids(compiled, tok, prompts) == reference
    assert isinstance(model.lm_head, packing.PackedLinear)


@pytest.mark.parametrize("kernel", ["onednn", "blendin"])
@pytest.mark.parametrize("tie", [False, True])
def test_state_dict_deepcopy_and_load_see_plain_weights(tie, kernel, tmp_path):
    tok = tiny_tokenizer(90)
    plain = (
        tied_model(tok, torch.bfloat16)
        if tie
        else tiny_llama_for(tok, dtype=torch.bfloat16, hidden=64)
    )
    expected = plain.state_dict()
    ids = torch.tensor([[4, 5, 6, 7]])
    packed = copy.deepcopy(plain)
    packing.pack_linear_weights(packed, kernel)
    before = logits(packed, ids)
    saved = packed.state_dict()
    assert saved.keys() == expected.keys()  # the same checkpoint as the unpacked model
    for name, value in expected.items():
        assert torch.equal(saved[name], value), name
    twin = copy.deepcopy(packed)  # opaque tensors are repacked, not copied
    assert torch.equal(logits(twin, ids), before)
    if tie:
        assert twin.lm_head.weight is twin.model.embed_tokens.weight
    other = tiny_llama_for(tok, seed=9, dtype=torch.bfloat16, hidden=64)
    if tie:
        other.lm_head.weight = other.model.embed_tokens.weight
    packing.pack_linear_weights(other, kernel)
    other.load_state_dict(expected)  # repacks what it loads
    assert torch.equal(logits(other, ids), before)
    with pytest.raises(RuntimeError, match="Missing key.*lm_head.weight" if not tie else "Missing"):
        other.load_state_dict(
            {
                k: v
                for k, v in expected.items()
                if k not in ("lm_head.weight", "model.embed_tokens.weight")
            }
        )
    wrong = dict(expected, **{"model.layers.0.mlp.up_proj.weight": torch.zeros(3, 3)})
    with pytest.raises(RuntimeError, match="size mismatch for model.layers.0.mlp.up_proj.weight"):
        other.load_state_dict(wrong)
    packed.save_pretrained(tmp_path / "saved")  # transformers' own save works as is
    reloaded = type(plain).from_pretrained(tmp_path / "saved", dtype=torch.bfloat16).state_dict()
    assert reloaded.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.equal(reloaded[name], value), name
