"""Runs the GPU tests (tests/cuda/test_cuda_op.py) for benchmarks/gpu_check.sh.

With pytest installed this is plain pytest. A bare GPU machine may have
torch but no pytest (and no network to install it), so otherwise a minimal
stand-in runs the same test functions: it understands the parts of pytest
those tests use (parametrize, skip marks, importorskip) and nothing more.

    python tests/cuda/gpu_runner.py --json OUT.json [--junit OUT.xml] [--deadline S]
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
import sys
import time
import traceback
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULE = "tests.cuda.test_cuda_op"
MODULE_FILE = ROOT / "tests" / "cuda" / "test_cuda_op.py"


class Skipped(Exception):
    pass


def fake_pytest() -> types.ModuleType:
    """Just enough of pytest for the GPU test module."""

    class Mark:
        def parametrize(self, names, values, ids=None):
            def deco(fn):
                fn.__dict__.setdefault("_params", []).insert(0, (names, list(values)))
                return fn

            return deco

        def skip(self, reason=""):
            return ("skip", reason)

        def skipif(self, condition, reason=""):
            return ("skip", reason) if condition else None

    def importorskip(name):
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            raise Skipped(f"{name} not installed") from exc

    def skip(reason=""):
        raise Skipped(reason)

    module = types.ModuleType("pytest")
    module.mark = Mark()
    module.importorskip = importorskip
    module.skip = skip
    return module


def cases(fn):
    """(label, kwargs) for every parametrization of a test function."""
    layers = []
    for names, values in getattr(fn, "_params", []):
        keys = [n.strip() for n in names.split(",")]
        layers.append([dict(zip(keys, v if len(keys) > 1 else (v,))) for v in values])
    for combo in itertools.product(*layers) if layers else [()]:
        kwargs = {k: v for part in combo for k, v in part.items()}
        yield f"{fn.__name__}[{'-'.join(str(v) for v in kwargs.values())}]", kwargs


def run_without_pytest(deadline_s: float) -> dict:
    sys.modules["pytest"] = fake_pytest()
    sys.path.insert(0, str(ROOT))  # a script: `tests.` imports resolve from the checkout
    module = importlib.import_module(MODULE)
    mark = getattr(module, "pytestmark", None)
    results = {"passed": 0, "failed": 0, "skipped": 0, "not_run": 0, "failures": []}
    started = time.time()
    tests = [getattr(module, n) for n in dir(module) if n.startswith("test_")]
    for fn in sorted(tests, key=lambda f: f.__code__.co_firstlineno):
        for label, kwargs in cases(fn):
            if isinstance(mark, tuple) and mark[0] == "skip":
                results["skipped"] += 1
                continue
            if time.time() - started > deadline_s:
                results["not_run"] += 1
                continue
            try:
                fn(**kwargs)
                results["passed"] += 1
                print(f"PASSED {label}", flush=True)
            except Skipped as exc:
                results["skipped"] += 1
                print(f"SKIPPED {label}: {exc}", flush=True)
            except Exception:  # noqa: BLE001 - a failed assertion or an error: report, go on
                results["failed"] += 1
                results["failures"].append({"test": label, "error": traceback.format_exc()})
                print(f"FAILED {label}\n{traceback.format_exc()}", flush=True)
    print(f"{results['passed']} passed, {results['failed']} failed, {results['skipped']} skipped")
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", required=True)
    parser.add_argument("--junit")
    parser.add_argument(
        "--deadline",
        type=float,
        default=240.0,
        help="seconds after which remaining tests are not started (stand-in only)",
    )
    args = parser.parse_args(argv)
    try:
        import pytest
    except ImportError:
        pytest = None
    if pytest is not None:
        extra = [f"--junitxml={args.junit}"] if args.junit else []
        code = int(pytest.main([str(MODULE_FILE), "-q", "-rs", "-p", "no:cacheprovider", *extra]))
        summary = {"runner": "pytest", "exit_code": code}
    else:
        summary = {"runner": "stand-in (no pytest)", **run_without_pytest(args.deadline)}
        code = 1 if summary["failed"] else 0
        summary["exit_code"] = code
    Path(args.json).write_text(json.dumps(summary, indent=1))
    return code


if __name__ == "__main__":
    sys.exit(main())
