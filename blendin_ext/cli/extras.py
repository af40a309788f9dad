"""Optional dependencies, checked before a subcommand does any work: a
missing one stops it at once with the pip command that installs it (or,
for an optional part such as plots, skips that part with a one-line note)
instead of a traceback after minutes of decoding."""

from __future__ import annotations

import importlib.util
import sys

from blendin_ext.models.loading import check_model_name, pending_conversion

# What each optional part imports, and the extra of pyproject.toml that brings it.
LOADING = (("transformers", "tqdm"), "demo")
CONVERSION = (("gguf", "accelerate"), "demo")
PROGRESS = (("tqdm",), "eval")
PLOTS = (("matplotlib",), "eval")


class MissingExtra(RuntimeError):
    """Packages an optional part needs are not installed; the message holds
    the pip command."""


def missing(modules) -> list:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def _install_hint(absent: list, extra: str) -> str:
    return f"pip install 'blendin_ext[{extra}]' (or: pip install {' '.join(absent)})"


def require(part: tuple, what: str) -> None:
    """Raises MissingExtra naming the install command when `part` is not installed."""
    modules, extra = part
    absent = missing(modules)
    if absent:
        verb = "is" if len(absent) == 1 else "are"
        raise MissingExtra(
            f"{what} needs {', '.join(absent)}, which {verb} not installed; "
            f"install with:\n    {_install_hint(absent, extra)}"
        )


def require_models(names, what: str) -> None:
    """Everything loading these models needs, checked before either loads:
    transformers, each name (the packages of a built-in name, raising
    MissingModelPackage with their pip command; a file, folder or hub id
    that exists, else UnknownModel or FileNotFoundError), and gguf where a
    GGUF conversion is still to come."""
    require(LOADING, what)
    for name in names:
        check_model_name(name)
    if any(pending_conversion(name) for name in names):
        require(CONVERSION, f"{what} (converting a GGUF model)")


def optional(part: tuple, what: str) -> bool:
    """Whether an optional part can run; prints a one-line note when not."""
    modules, extra = part
    absent = missing(modules)
    if absent:
        print(
            f"[blendin] note: skipping {what} ({', '.join(absent)} not installed; "
            f"{_install_hint(absent, extra)})",
            file=sys.stderr,
        )
    return not absent
