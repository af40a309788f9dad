"""Python face of ``blendin_ext::bf16_linear``: a bfloat16 linear layer for
decoding on a CPU, over weights packed once into the op's layout.

A decode step multiplies a few rows by every weight, so it runs at the
speed weights are read. The op streams one packed copy of W at close to
the machine's read bandwidth, with AVX-512 BF16's dot products on CPUs
that have them (``bf16_linear_kernels()[0] == "avx512_bf16"``) and portable
C++ elsewhere (correct, not fast: `packing.py` only picks this op where the
fast kernel runs).

Layout: the output columns in blocks of 64; inside a block, inputs 2p and
2p + 1 of each column side by side::

    packed[b, p, j, t] = W[64 * b + j, 2 * p + t]   (zero outside W)

Arithmetic: float32 sums over input pairs in order, plus the bias, rounded
once to bfloat16. oneDNN sums in another order, so a result may differ from
`F.linear`'s by one bfloat16 rounding step.
"""

from __future__ import annotations

from typing import List, Optional

import torch

from blendin_ext.ops import fused as _fused  # noqa: F401  (loads the extension)

BLOCK = 64  # output columns per packed block (csrc/cpu/bf16_linear.h)


def pack_bf16_weight(weight: torch.Tensor) -> torch.Tensor:
    """The (out, in) bfloat16 weight in the op's layout, a new contiguous
    (ceil(out / 64), ceil(in / 2), 64, 2) tensor."""
    if weight.dim() != 2 or weight.dtype != torch.bfloat16:
        raise TypeError(
            f"pack_bf16_weight: weight must be a 2-D bfloat16 tensor, got "
            f"{weight.dtype} of shape {tuple(weight.shape)}"
        )
    out_features, in_features = weight.shape
    blocks, pairs = -(-out_features // BLOCK), -(-in_features // 2)
    padded = weight.detach()
    if padded.shape != (blocks * BLOCK, pairs * 2):  # else no copy beyond the packed one
        padded = padded.new_zeros((blocks * BLOCK, pairs * 2))
        padded[:out_features, :in_features] = weight.detach()
    return padded.reshape(blocks, BLOCK, pairs, 2).permute(0, 2, 1, 3).contiguous()


def unpack_bf16_weight(packed: torch.Tensor, out_features: int, in_features: int) -> torch.Tensor:
    """The exact (out, in) weight back from `pack_bf16_weight`'s layout."""
    blocks, pairs = packed.shape[:2]
    plain = packed.permute(0, 2, 1, 3).reshape(blocks * BLOCK, pairs * 2)
    return plain[:out_features, :in_features].contiguous()


def bf16_linear(
    x: torch.Tensor,
    packed_weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    out_features: int,
    kernel: str = "auto",
) -> torch.Tensor:
    """``x @ W.T + bias`` for a bfloat16 CPU `x` (..., in) and W packed by
    `pack_bf16_weight`; `kernel` "auto" or one of `bf16_linear_kernels()`."""
    return torch.ops.blendin_ext.bf16_linear(x, packed_weight, bias, out_features, kernel)


def bf16_linear_kernels() -> List[str]:
    """The op's kernels this CPU runs, best first ("avx512_bf16", "generic")."""
    return list(torch.ops.blendin_ext.bf16_linear_kernels())


def fast_bf16_linear() -> bool:
    """Whether this CPU runs the op's AVX-512 BF16 kernel."""
    return bf16_linear_kernels()[0] == "avx512_bf16"


@torch.library.register_fake("blendin_ext::bf16_linear")
def _bf16_linear_fake(x, packed_weight, bias, out_features, kernel_name="auto"):
    return x.new_empty(*x.shape[:-1], out_features)
