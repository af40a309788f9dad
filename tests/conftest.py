"""Test-run settings shared by every test folder.

Tests write only to temporary folders: hypothesis keeps a cache of the
constants it found in the code under test (``.hypothesis/`` in the working
directory by default), so each run points its home at a temporary folder,
removed at the end.
"""

import shutil
import tempfile

_hypothesis_home = None


def pytest_configure(config):
    global _hypothesis_home
    try:
        from hypothesis.configuration import set_hypothesis_home_dir
    except ImportError:  # hypothesis is a test extra; without it nothing is written
        return
    _hypothesis_home = tempfile.mkdtemp(prefix="blendin-hypothesis-")
    set_hypothesis_home_dir(_hypothesis_home)


def pytest_unconfigure(config):
    if _hypothesis_home is not None:
        shutil.rmtree(_hypothesis_home, ignore_errors=True)
