"""``python -m blendin_ext.cli``: the `blendin` command."""

import sys

from blendin_ext.cli import main

sys.exit(main())
