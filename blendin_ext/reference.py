"""Pure-PyTorch float32 reference of the BlendIn step (the spec, written out
plainly). It is the oracle of the tests and the "eager" baseline of the
benchmarks; it follows the kernels' conventions where the spec leaves a
choice (the Philox stream layout, rank ties, the storage-order CDF walk),
so seeded tokens can be compared one for one.
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch

from blendin_ext.ops import BlendStepResult, GuideMap

_MASK32 = 0xFFFFFFFF


def philox4x32_10(counter, key):
    """Philox4x32-10 on four 32-bit counter words and two key words."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for _ in range(10):
        p0 = 0xD2511F53 * c0
        p1 = 0xCD9E8D57 * c2
        c0, c1, c2, c3 = ((p1 >> 32) ^ c1 ^ k0) & _MASK32, p1 & _MASK32, \
                         ((p0 >> 32) ^ c3 ^ k1) & _MASK32, p0 & _MASK32
        k0 = (k0 + 0x9E3779B9) & _MASK32
        k1 = (k1 + 0xBB67AE85) & _MASK32
    return c0, c1, c2, c3


def row_uniforms(seed: int, offset: int, stream: int):
    """(component, token) uniforms of one row; see csrc/include/blendin/philox.h."""
    seed &= (1 << 64) - 1
    offset &= (1 << 64) - 1
    words = philox4x32_10((offset & _MASK32, offset >> 32, stream & _MASK32, 0),
                          (seed & _MASK32, seed >> 32))
    return (words[0] >> 8) / 16777216.0, (words[1] >> 8) / 16777216.0


def _rows(value, batch: int, dtype) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", dtype).reshape(-1).expand(batch).clone()
    return torch.full((batch,), value, dtype=dtype)


def _ranked(values: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Order of entries: larger value first, ties to the smaller id."""
    by_id = torch.argsort(ids, stable=True)
    by_value = torch.sort(values[by_id], descending=True, stable=True).indices
    return by_id[by_value]


def _draw(logits, base_ids, temperature, top_k, top_p, u) -> int:
    """Inverse-CDF draw in storage order from the tempered, filtered row.
    logits: (n,) float32 with -inf for masked/unmapped; base_ids: (n,)."""
    valid = torch.nonzero(logits != -math.inf).flatten()
    x = logits[valid].double()
    w = torch.exp((x - x.max()) / temperature)
    order = _ranked(logits[valid], base_ids[valid])
    keep = torch.zeros(len(valid), dtype=torch.bool)
    kept_order = order[: top_k] if 0 < top_k < len(order) else order
    if top_p < 1.0:
        r = w[kept_order] / w[kept_order].sum()
        exclusive = torch.cumsum(r, 0) - r
        kept_order = kept_order[exclusive < top_p]
    keep[kept_order] = True
    w = torch.where(keep, w, torch.zeros_like(w))
    cdf = torch.cumsum(w, 0)
    target = u * cdf[-1].item()
    pos = int(torch.searchsorted(cdf, torch.tensor([target], dtype=cdf.dtype), right=True))
    pos = min(pos, len(valid) - 1)
    while w[pos] == 0:  # never land on a zero-weight entry
        pos -= 1
    return int(base_ids[valid[pos]])


def blend_step(
    base_logits: torch.Tensor,
    guide_logits: torch.Tensor,
    *,
    guide_to_base: Union[None, torch.Tensor, GuideMap] = None,
    gamma=0.4,
    alpha="auto",
    agree_bonus: float = 0.1,
    temperature=0.0,
    top_k: Optional[object] = None,
    top_p: Optional[object] = None,
    seed=0,
    offset=0,
) -> BlendStepResult:
    """The spec in float32 PyTorch; same arguments and result as
    blendin_ext.blend_step (outputs on the logits' device)."""
    device = base_logits.device
    b = base_logits.detach().float().cpu()
    g_raw = guide_logits.detach().float().cpu()
    batch, vocab = b.shape
    g2b = guide_to_base.guide_to_base if isinstance(guide_to_base, GuideMap) else guide_to_base
    if g2b is None:  # shared vocabulary
        g2b, g = torch.arange(vocab), g_raw
    else:  # guide probabilities moved to base ids, unmapped tokens dropped
        g2b = g2b.detach().cpu().long()
        g = torch.full((batch, vocab), -math.inf)
        g[:, g2b[g2b >= 0]] = g_raw[:, g2b >= 0]
    mapped = g2b >= 0

    def has_bad(x):
        return (torch.isnan(x) | (x == math.inf)).any(-1)

    bad = has_bad(b) | has_bad(g_raw) | (b == -math.inf).all(-1) | (g == -math.inf).all(-1)
    p_b, p_g = torch.softmax(b, -1), torch.softmax(g, -1)
    c_b, c_g = p_b.max(-1).values, p_g.max(-1).values
    guide_choice = torch.argmax(p_g, -1)  # first maximum: smallest base id
    agree = p_b.gather(1, guide_choice[:, None]).squeeze(1)

    alpha_rows = _rows(-1.0 if alpha == "auto" else alpha, batch, torch.float32)
    intervened = c_b < _rows(gamma, batch, torch.float32)
    alpha_auto = torch.clamp(c_g / (c_b + c_g) + agree_bonus * agree, 0.0, 1.0)
    a = torch.where(alpha_rows < 0, alpha_auto, alpha_rows)
    a = torch.where(intervened, a, torch.zeros_like(a))

    temps = _rows(temperature, batch, torch.float32)
    top_ks = _rows(0 if top_k is None else top_k, batch, torch.int64)
    top_ps = _rows(1.0 if top_p is None else top_p, batch, torch.float32)
    seeds = _rows(seed, batch, torch.int64)
    offsets = _rows(offset, batch, torch.int64)
    per_row_seed = isinstance(seed, torch.Tensor) and seed.numel() > 1

    q = a[:, None] * p_g + (1 - a[:, None]) * p_b
    tokens = torch.argmax(q, -1)
    for row in range(batch):
        if bad[row] or temps[row] <= 0:
            continue
        u_comp, u_tok = row_uniforms(int(seeds[row]), int(offsets[row]), 0 if per_row_seed else row)
        if u_comp < float(a[row]):
            logits, ids = torch.where(mapped, g_raw[row], -math.inf), g2b
        else:
            logits, ids = b[row], torch.arange(vocab)
        tokens[row] = _draw(logits, ids, float(temps[row]), int(top_ks[row]), float(top_ps[row]), u_tok)

    nan = torch.full((batch,), math.nan)
    outputs = BlendStepResult(
        torch.where(bad, -1, tokens),
        intervened & ~bad,
        torch.where(bad, nan, a),
        torch.where(bad, nan, c_b),
        torch.where(bad, nan, c_g),
        torch.where(bad, nan, agree),
    )
    return BlendStepResult(*(t.to(device) for t in outputs))
