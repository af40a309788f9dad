"""Progress bars on stderr, drawn only on a terminal.

A bar redraws its line with carriage returns; piped or redirected into a
file (a log, CI, `| less`) those become one long line that runs into the
results printed beside it. So every bar of the package comes from here,
and is off unless stderr is a terminal.
"""

from __future__ import annotations

import sys


def on_terminal() -> bool:
    """Whether stderr is a terminal (where a bar can redraw in place)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced by an object without it, or closed
        return False


def progress_bar(enabled: bool = True, **kwargs):
    """A tqdm bar on stderr (kwargs: total, desc, unit, ...), disabled when
    `enabled` is False or stderr is not a terminal."""
    from tqdm.auto import tqdm

    return tqdm(disable=not (enabled and on_terminal()), file=sys.stderr, **kwargs)
