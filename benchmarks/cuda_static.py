"""Figures of the CUDA kernels that need no GPU, side by side for every
variant: ptxas registers, spills and theoretical occupancy per dtype and
arch, and the bytes of logits each mode reads in the block emulator.
Needs nvcc (and nvdisasm, from the toolkit or `pip install
nvidia-cuda-nvdisasm`, for the streaming loop's local-memory check) and g++.

    python benchmarks/cuda_static.py [--json FILE] [--vocab 16384] [--batch 2]
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.cuda.emulator import build_emulator  # noqa: E402  (after the path set-up)
from tests.cuda.static_figures import as_json, print_tables, ptxas_figures, read_figures  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--vocab", type=int, default=16384, help="emulated vocabulary (float32)")
    parser.add_argument("--batch", type=int, default=2, help="emulated rows")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        kernels = ptxas_figures(Path(tmp))
        reads = read_figures(build_emulator(Path(tmp)), batch=args.batch, vocab=args.vocab)
    print_tables(kernels, reads)
    if args.json:
        Path(args.json).write_text(json.dumps(as_json(kernels, reads), indent=1))


if __name__ == "__main__":
    main()
