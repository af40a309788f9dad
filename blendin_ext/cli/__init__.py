"""The `blendin` command line, one module per subcommand.

    blendin generate --base gemma3-270m --guide smollm2-135m-instruct \\
        --prompt "Question: What is the capital of France?\\nAnswer:"
    blendin demo                  # the default offline pair, three strategies side by side
    blendin eval --task gsm8k --limit 2
    blendin bench step --quick
    blendin models                # built-in model names and whether they are installed

Models are built-in names (see `blendin models`), Hugging Face ids or
folders, or .gguf files (converted once into a cache). Shared options live
in ``args.py``; optional packages are checked in ``extras.py`` before any
work starts.
"""

from __future__ import annotations

import argparse
import sys

from blendin_ext.cli import bench, demo, generate, models
from blendin_ext.cli import eval as eval_command
from blendin_ext.cli.extras import MissingExtra
from blendin_ext.models.builtins import MissingModelPackage

SUBCOMMANDS = (generate, demo, eval_command, bench, models)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blendin",
        description="BlendIn decoding: a base model guided by a small aligned "
        "model where the base is unsure.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in SUBCOMMANDS:
        module.add_parser(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (MissingModelPackage, MissingExtra) as exc:
        print(f"blendin {args.command}: {exc}", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError) as exc:
        print(f"blendin {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
