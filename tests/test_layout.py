"""The package's shape: layers that import only downwards, no import cycles,
pure-Python parts that work without the compiled extension, and nothing in
the tree that points outside the repository."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "blendin_ext"
# Each layer may import itself and the layers before it, never a later one.
LAYERS = ["ops", "models", "guides", "decode", "eval", "hf", "vllm", "cli"]
# Helpers that ship with the package sit beside the layers and only look down.
HELPERS = {"testing": "guides"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imported_modules(path: Path) -> set:
    """blendin_ext modules a file imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("blendin_ext")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("blendin_ext"):
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                if child != "blendin_ext._C":  # the compiled extension imports nothing
                    found.add(child if child in MODULES else node.module)
    return found


GRAPH = {name: imported_modules(path) & set(MODULES) for name, path in MODULES.items()}


def layer_of(module: str):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS + list(HELPERS) else None


def rank(layer: str) -> int:
    return LAYERS.index(HELPERS.get(layer, layer))


def test_layers_import_only_downwards():
    wrong = []
    for module, imports in GRAPH.items():
        layer = layer_of(module)
        if layer is None:
            continue  # the package face and its lazy loader
        for target in imports - {"blendin_ext._lazy"}:  # the faces' lazy loader
            other = layer_of(target)
            if other is None or (other in HELPERS and layer not in HELPERS):
                wrong.append(f"{module} -> {target}")
            elif other != layer and rank(other) > rank(layer):
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports against the layer order:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles():
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


PURE_CHECK = r"""
import importlib.abc, sys
class NoExtension(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "blendin_ext._C":
            raise ImportError("blocked for this test")
sys.meta_path.insert(0, NoExtension())
import torch
from blendin_ext.ops import reference, strategies, validate
from blendin_ext.ops.maps import guide_map
from blendin_ext.guides import vocab_map
from blendin_ext.eval import scoring, summary, tasks
x = torch.tensor([[0.0, 1.0, 2.0]])
assert int(reference.blend_step(x, x).tokens[0]) == 2
assert scoring.score_math("so 3 + 4 = 7.", "#### 7")["correct"]
assert len(tasks.load_task("gsm8k", limit=2).examples) == 2
assert "blendin_ext._C" not in sys.modules
import blendin_ext
try:
    blendin_ext.blend_step
except ImportError as exc:
    assert "pip install" in str(exc), exc
else:
    raise AssertionError("blend_step resolved without the extension")
print("ok")
"""


def test_pure_parts_import_without_the_compiled_extension():
    done = subprocess.run(
        [sys.executable, "-c", PURE_CHECK], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


OUTSIDE = ["../" + "shared", "/work" + "/", "shared/" + "spec", "shared/" + "data"]


def test_nothing_names_a_file_outside_the_repository():
    files = subprocess.run(
        ["git", "ls-files"], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout.split()
    hits = []
    for name in files:
        path = ROOT / name
        if path.suffix in (".png", ".jsonl", ".csv") or not path.is_file():
            continue
        text = path.read_text(errors="replace")
        hits += [f"{name}: {word}" for word in OUTSIDE if word in text]
    assert not hits, "\n".join(hits)


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines <= 220, f"README.md has {lines} lines; details belong in the folder READMEs"


@pytest.mark.parametrize("layer", LAYERS + list(HELPERS))
def test_every_layer_says_what_it_holds(layer):
    doc = ast.get_docstring(ast.parse((PACKAGE / layer / "__init__.py").read_text()))
    assert doc and len(doc) > 40, f"blendin_ext/{layer}/__init__.py needs a docstring"
