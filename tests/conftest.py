import os
import sys

# Shared test helpers (op_cases.py) live beside the tests.
sys.path.insert(0, os.path.dirname(__file__))
