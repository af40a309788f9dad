"""Command-line arguments shared by the subcommands: the model pair and the
decoding options, declared once, each checked by the same rule as in the
Python API (blendin_ext.ops.validate) so that a bad value stops argparse
with the option's name (exit status 2) before anything is loaded."""

from __future__ import annotations

import argparse
from typing import Callable

from blendin_ext.decode.options import DecodeOptions
from blendin_ext.ops import validate
from blendin_ext.ops.strategies import NAMES_HELP, choose, choose_many

DEFAULT_BASE = "gemma3-270m"
DEFAULT_GUIDE = "smollm2-135m-instruct"
DTYPES = ("auto", "float32", "bfloat16", "float16")


def checked(parse: Callable, check: Callable) -> Callable:
    """An argparse ``type=``: parse the text, then apply a validate rule;
    its ValueError becomes argparse's "argument --x: must be ..."."""

    def convert(text: str):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid value {text!r}") from None
        try:
            return check(value, "")
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def _alpha_text(text: str):
    return text if text == "auto" else float(text)


def _strategy(text: str, _name: str = "") -> str:
    choose(text)  # raises for an unknown name
    return text


def _stop(text: str, name: str = "") -> str:
    return validate.check_stop(text, name)[0]


COUNT = checked(int, validate.check_count)
STRATEGY = checked(str, _strategy)
STOP = checked(str, _stop)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("models")
    group.add_argument(
        "--base",
        default=DEFAULT_BASE,
        help="base model: built-in name, HF id or folder, or .gguf file (default %(default)s)",
    )
    group.add_argument(
        "--guide",
        default=DEFAULT_GUIDE,
        help="guide (aligned) model, same forms (default %(default)s)",
    )
    group.add_argument(
        "--dtype",
        default="auto",
        choices=DTYPES,
        help="weights and compute dtype; auto (default): bfloat16 on a CPU with "
        "native bf16 (avx512_bf16/AMX) or CUDA, else float32",
    )
    group.add_argument(
        "--no-pack-weights",
        dest="pack_weights",
        action="store_false",
        help="keep plain nn.Linear layers (by default, on a CPU, bf16 and float32 "
        "linear weights are packed once: faster decoding)",
    )
    group.add_argument(
        "--linear-kernel",
        default="auto",
        choices=("auto", "blendin", "onednn"),
        help="kernel of the packed layers; auto (default): blendin's bf16 kernel "
        "for bf16 weights on a CPU with AVX-512 BF16 and no AMX, else oneDNN",
    )
    group.add_argument(
        "--compile",
        action="store_true",
        help="experimental: static KV cache + torch.compile of each model's "
        "one-token forward (the first call compiles, minutes on a CPU, "
        "where it measured about as fast as the default at batch 1, slower "
        "above)",
    )
    group.add_argument("--device", default="cpu", help="torch device (default %(default)s)")
    group.add_argument(
        "--threads",
        type=COUNT,
        default=None,
        help="torch CPU threads (default: torch's choice; 1 is faster on a busy machine)",
    )
    group.add_argument(
        "--system-prompt", default=None, help="system message of the guide's chat prompt"
    )
    group.add_argument("--quiet", action="store_true", help="no progress bars or loading messages")


def add_decode_arguments(
    parser: argparse.ArgumentParser, *, max_new_tokens: int, strategies: str = "", stop: bool = True
) -> argparse._ArgumentGroup:
    """The decoding options. ``strategies`` given: a comma-separated
    --strategies list with that default (demo, eval); else one --strategy.
    ``stop``: whether --stop is offered."""
    group = parser.add_argument_group("decoding")
    if strategies:
        group.add_argument(
            "--strategies",
            default=strategies,
            help=f"comma-separated: {NAMES_HELP} (default %(default)s)",
        )
        parser.set_defaults(strategy=None)  # the command sets one per row
    else:
        group.add_argument(
            "--strategy",
            default="blendin",
            type=STRATEGY,
            help=f"one of {NAMES_HELP} (default %(default)s)",
        )
    group.add_argument(
        "--gamma",
        type=checked(float, validate.check_gamma),
        default=0.4,
        help="the guide joins where the base's top-1 prob < gamma (default 0.4)",
    )
    group.add_argument(
        "--alpha",
        type=checked(_alpha_text, validate.check_alpha),
        default="auto",
        help='guide weight of blend / ensemble: "auto" (their default 0.5) or a number in [0, 1]',
    )
    group.add_argument(
        "--agree-bonus",
        type=checked(float, validate.check_agree_bonus),
        default=0.1,
        help="the auto rule's agreement bonus (default 0.1)",
    )
    group.add_argument(
        "--temperature",
        type=checked(float, validate.check_temperature),
        default=0.0,
        help="0 = greedy (default)",
    )
    group.add_argument("--top-k", type=checked(int, validate.check_top_k), default=None)
    group.add_argument("--top-p", type=checked(float, validate.check_top_p), default=None)
    group.add_argument("--seed", type=checked(int, validate.check_seed), default=0)
    group.add_argument(
        "--max-new-tokens",
        type=COUNT,
        default=max_new_tokens,
        help="tokens per answer at most (default %(default)s)",
    )
    if stop:
        group.add_argument(
            "--stop",
            action="append",
            default=None,
            metavar="TEXT",
            type=STOP,
            help="stop string (repeatable); it is cut from the text",
        )
    else:
        parser.set_defaults(stop=None)  # the command decides
    lazy = group.add_mutually_exclusive_group()
    lazy.add_argument(
        "--lazy",
        dest="lazy",
        action="store_true",
        default=True,
        help="run the guide only at steps where the base is unsure (the default; same tokens)",
    )
    lazy.add_argument(
        "--eager", dest="lazy", action="store_false", help="run the guide at every step"
    )
    group.add_argument(
        "--guide-sync",
        default="tokens",
        choices=validate.GUIDE_SYNC_MODES,
        help="how a guide with another tokenizer follows the chosen tokens: "
        "feed their twins (tokens, the default) or re-tokenise the text",
    )
    return group


def strategy_choices(args) -> list:
    """The resolved --strategies of demo / eval (names as results report them)."""
    try:
        return choose_many(args.strategies, args.gamma, args.alpha, name="--strategies")
    except ValueError as exc:
        args.command_parser.error(str(exc))


def decode_options(args, **overrides) -> DecodeOptions:
    """The parsed decoding options as one DecodeOptions (`overrides`:
    fields the command sets itself)."""
    fields = dict(
        strategy=args.strategy,
        gamma=args.gamma,
        alpha=args.alpha,
        agree_bonus=args.agree_bonus,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        max_new_tokens=args.max_new_tokens,
        stop=args.stop,
        lazy=args.lazy,
        guide_sync=args.guide_sync,
    )
    fields.update(overrides)
    return DecodeOptions(**fields)
