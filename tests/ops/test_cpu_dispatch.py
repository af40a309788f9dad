"""The CPU kernel's run-time variant choice (csrc/cpu/cpu_variant.h): the
active variant is the best this CPU supports, a variant it cannot run is
refused, and every variant it can run gives the same tokens and bit-identical
statistics. Each variant runs in its own process (BLENDIN_CPU_VARIANT is read
once per process); this file is also that process's script."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest
import torch

import blendin_ext  # loads the ops

OPS = torch.ops.blendin_ext
X86_VARIANTS = ["avx512", "avx2", "generic"]  # best first, as the dispatcher orders them
# /proc/cpuinfo flags of the x86-64-v3 / -v4 levels the variants are built for (abm: LZCNT).
X86_64_V3 = {"avx", "avx2", "fma", "f16c", "bmi1", "bmi2", "abm", "movbe", "xsave"}
X86_64_V4 = X86_64_V3 | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}


def cpuinfo_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def expected_x86_variants(flags):
    supported = {"avx512": X86_64_V4 <= flags, "avx2": X86_64_V3 <= flags, "generic": True}
    return [v for v in X86_VARIANTS if supported[v]]


def portable_build():
    """True when this build holds the portable default's variants."""
    return set(OPS.cpu_variants()) <= set(X86_VARIANTS) and "generic" in OPS.cpu_variants()


def run_variant(variant, *args, check=True):
    """Runs this file as a script with BLENDIN_CPU_VARIANT=variant, against
    the same blendin_ext build as this process."""
    env = dict(os.environ, BLENDIN_CPU_VARIANT=variant)
    root = os.path.dirname(os.path.dirname(os.path.abspath(blendin_ext.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in [env.get("PYTHONPATH")] if p])
    result = subprocess.run(
        [sys.executable, os.path.abspath(__file__), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check:
        assert result.returncode == 0, f"variant {variant}:\n{result.stdout}\n{result.stderr}"
    return result


def test_active_variant_is_the_best_this_cpu_supports():
    runnable = OPS.cpu_variants()
    assert runnable, "no CPU variant can run here"
    forced = os.environ.get("BLENDIN_CPU_VARIANT", "")
    assert OPS.cpu_variant() == (forced if forced not in ("", "auto") else runnable[0])
    if not portable_build():
        pytest.skip(f"single-variant build ({runnable}): nothing to choose")
    if platform.machine().lower() not in ("x86_64", "amd64"):
        assert runnable == ["generic"]
        return
    flags = cpuinfo_flags()
    if flags is None:
        pytest.skip("no /proc/cpuinfo to compare with")
    assert runnable == expected_x86_variants(flags), f"cpuinfo flags: {sorted(flags)}"
    # torch's own dispatch agrees about the widest ISA (unless ATEN_CPU_CAPABILITY lowers it).
    capability = torch.backends.cpu.get_cpu_capability()
    if capability == "AVX512":
        assert "avx512" in runnable
    if capability in ("AVX2", "AVX512"):
        assert "avx2" in runnable


def test_unknown_variant_is_refused():
    result = run_variant("no-such-variant", "--probe", check=False)
    assert result.returncode != 0
    assert "'no-such-variant' is not a CPU variant of this build" in result.stderr
    assert "blend_step refused" in result.stdout


def test_variant_this_cpu_lacks_is_refused():
    if not portable_build() or platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("only the portable x86-64 build has variants a CPU may lack")
    lacking = [v for v in X86_VARIANTS if v not in OPS.cpu_variants()]
    if not lacking:
        pytest.skip("this CPU runs every variant")
    result = run_variant(lacking[0], "--probe", check=False)
    assert result.returncode != 0 and "which this CPU lacks" in result.stderr


def test_every_runnable_variant_gives_the_same_results(tmp_path):
    runnable = OPS.cpu_variants()
    if len(runnable) < 2:
        pytest.skip(f"only {runnable} can run here")
    results = {}
    for variant in runnable:
        path = tmp_path / f"{variant}.pt"
        run_variant(variant, "--cases", str(path))
        results[variant] = torch.load(path)
        assert results[variant]["variant"] == variant
    reference_name = runnable[-1]  # generic: the portable path
    want = results[reference_name]["outputs"]
    assert len(want) > 50
    for variant in runnable[:-1]:
        got = results[variant]["outputs"]
        assert got.keys() == want.keys()
        for case, outputs in want.items():
            names = ["tokens", "intervened", "alpha", "base_top_prob", "guide_top_prob", "agree"]
            for name, a, b in zip(names, got[case], outputs):
                assert torch.equal(bits(a), bits(b)), (
                    f"{variant} vs {reference_name}, {case}, {name}:\n{a}\n{b}"
                )


def bits(t):
    """Floats as their bit patterns, so NaN compares equal to the same NaN."""
    return t.view(torch.int32) if t.dtype == torch.float32 else t


# ------------------------------------------------ the subprocess's side ----


def logits(batch, vocab, dtype, seed):
    """Peaked rows (some confident, some not), masked entries, and in batches
    of 3+ rows a NaN row, a +inf row and a fully masked row."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, vocab, generator=gen) * 2.0
    peaks = torch.randint(0, vocab, (batch,), generator=gen)
    x[torch.arange(batch), peaks] += torch.linspace(0.0, 12.0, batch)
    x[torch.rand(batch, vocab, generator=gen) < 0.1] = -float("inf")
    if batch >= 3 and vocab >= 2:
        x[1, vocab // 2] = float("nan")
    if batch >= 5:
        x[3, 0] = float("inf")
        x[4] = -float("inf")
    return x.to(dtype)


def guide_map(guide_vocab, vocab, seed):
    """A partial injective guide->base map and its int32 inverse."""
    gen = torch.Generator().manual_seed(seed)
    g2b = torch.randperm(vocab, generator=gen)[:guide_vocab]
    g2b[torch.rand(guide_vocab, generator=gen) < 0.2] = -1
    b2g = torch.full((vocab,), -1, dtype=torch.int32)
    mapped = g2b >= 0
    b2g[g2b[mapped]] = torch.arange(guide_vocab, dtype=torch.int32)[mapped]
    return g2b, b2g


def step(
    base, guide, g2b=None, b2g=None, *, alpha=-1.0, temperature=0.0, top_k=0, top_p=1.0, seed=0
):
    def split(value, default):
        return (value, default) if isinstance(value, torch.Tensor) else (None, value)

    return OPS.blend_step(
        base,
        guide,
        g2b,
        b2g,
        None,
        0.4,
        *split(alpha, -1.0),
        0.1,
        *split(temperature, 0.0),
        *split(top_k, 0),
        *split(top_p, 1.0),
        None,
        seed,
        None,
        7,
    )


SETTINGS = {
    "greedy": {},
    "greedy_alpha_0.5": dict(alpha=0.5),
    "sample": dict(temperature=1.0),
    "top_k": dict(temperature=0.8, top_k=50),
    "top_p": dict(temperature=1.2, top_p=0.9),
    "top_k_top_p": dict(temperature=0.7, top_k=20, top_p=0.8),
}


def per_row_setting(batch):
    """Greedy and filtered sampling rows side by side."""
    rows = torch.arange(batch)
    return dict(
        temperature=torch.where(rows % 2 == 0, 0.0, 0.9).float(),
        top_k=(rows % 3 * 25).int(),
        top_p=torch.where(rows % 4 == 3, 0.7, 1.0).float(),
    )


def all_cases():
    out = {}
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for vocab, batches in ((1, [1, 3]), (7, [1, 5]), (50257, [1, 6]), (128256, [2, 5])):
            for batch in batches:
                base = logits(batch, vocab, dtype, seed=vocab + batch)
                guide = logits(batch, vocab, dtype, seed=vocab + batch + 1)
                settings = dict(SETTINGS, per_row=per_row_setting(batch))
                for name, kwargs in settings.items():
                    key = f"{dtype}/V={vocab}/B={batch}/{name}"
                    out[key] = step(base, guide, seed=batch, **kwargs)
                if vocab > 7:  # a guide with its own, smaller vocabulary
                    g2b, b2g = guide_map(vocab // 2, vocab, seed=vocab)
                    small = logits(batch, vocab // 2, dtype, seed=vocab + 3)
                    for name in ("greedy", "top_k"):
                        key = f"{dtype}/V={vocab}/B={batch}/mapped_{name}"
                        out[key] = step(base, small, g2b, b2g, seed=batch, **SETTINGS[name])
    return out


def main(argv):
    torch.set_num_threads(2)
    if argv[0] == "--probe":  # expected to fail: report how
        x = torch.zeros(1, 4)
        try:
            step(x, x)
        except RuntimeError:
            print("blend_step refused")
        print(OPS.cpu_variant())
    elif argv[0] == "--cases":
        torch.save({"variant": OPS.cpu_variant(), "outputs": all_cases()}, argv[1])


if __name__ == "__main__":
    main(sys.argv[1:])
