"""Hub ids, checked once before anything loads.

A name that is no built-in name, no .gguf file and no folder is taken as a
Hugging Face hub id. Left to transformers, an unknown or unreachable id
retries the hub several times and ends in a traceback after most of a
minute. So `hub_source` asks the hub once, with a short timeout, and:

- the hub has the id: transformers loads it as usual (its own cache first);
- the hub says there is no such repository: `UnknownModel`, naming every
  form a model name may take;
- the hub cannot be reached (or ``HF_HUB_OFFLINE`` is set): the id's cached
  snapshot folder if the local hub cache has one, else `UnknownModel`
  saying, once, that the hub was unreachable.
"""

from __future__ import annotations

import os
from typing import Optional

HUB_TIMEOUT = 5.0  # seconds for the one look-up
_checked: dict = {}  # repo id -> what from_pretrained reads, per process


class UnknownModel(ValueError):
    """A model name that names nothing loadable; the message lists the forms
    a name may take."""


def name_forms() -> str:
    """What a model name may be, for error messages."""
    from blendin_ext.models.builtins import BUILTIN_MODELS

    return (
        "A model name is a built-in name ("
        + ", ".join(BUILTIN_MODELS)
        + "; `blendin models` lists them), a Hugging Face model folder, a .gguf file, "
        "or a Hugging Face hub id such as org/name."
    )


def unknown(name: str, why: str) -> UnknownModel:
    return UnknownModel(f"model {name!r} was not found: {why}.\n{name_forms()}")


def hub_offline() -> bool:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE, as the hub libraries read them."""
    return any(
        os.environ.get(var, "").strip().lower() in ("1", "on", "yes", "true")
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def cached_snapshot(repo_id: str) -> Optional[str]:
    """The folder of the id's snapshot in the local hub cache, if it holds one."""
    from huggingface_hub import try_to_load_from_cache

    try:
        config = try_to_load_from_cache(repo_id, "config.json")
    except ValueError:  # not a valid repo id
        return None
    return os.path.dirname(config) if isinstance(config, str) else None


def hub_source(repo_id: str, timeout: float = HUB_TIMEOUT) -> str:
    """What from_pretrained should read for a hub id (module docstring);
    raises UnknownModel."""
    if repo_id not in _checked:
        _checked[repo_id] = _look_up(repo_id, timeout)
    return _checked[repo_id]


def _look_up(repo_id: str, timeout: float) -> str:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError

    if hub_offline():
        return _from_cache(repo_id, "HF_HUB_OFFLINE is set, so the hub was not asked")
    try:
        HfApi().model_info(repo_id, timeout=timeout)
    except GatedRepoError:
        return repo_id  # it exists; transformers explains the access it needs
    except RepositoryNotFoundError:
        raise unknown(
            repo_id,
            "it is no built-in name, folder or .gguf file, and the Hugging "
            "Face hub has no such model",
        ) from None
    except HFValidationError:
        raise unknown(
            repo_id, "it is no built-in name, folder, .gguf file or valid hub id"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any failure to reach the hub: try the cache
        return _from_cache(
            repo_id,
            f"the Hugging Face hub could not be reached to look it up "
            f"({type(exc).__name__}: {exc})",
        )
    return repo_id


def _from_cache(repo_id: str, why: str) -> str:
    folder = cached_snapshot(repo_id)
    if folder is None:
        raise unknown(
            repo_id,
            "it is no built-in name, folder or .gguf file, the local "
            f"Hugging Face cache does not hold it, and {why}",
        )
    return folder
