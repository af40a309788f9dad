"""Pure-PyTorch float32 reference of the BlendIn step (the semantics of
README.md beside this file, written out plainly). It is the oracle of the tests and the "eager" baseline of the
benchmarks; it follows the kernels' conventions where the spec leaves a
choice (the Philox stream layout, rank ties, the storage-order CDF walk),
so seeded tokens can be compared one for one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch

from blendin_ext.ops.args import BlendStepResult
from blendin_ext.ops.maps import map_table
from blendin_ext.ops.validate import check_seed

_MASK32 = 0xFFFFFFFF


def philox4x32_10(counter, key):
    """Philox4x32-10 on four 32-bit counter words and two key words."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for _ in range(10):
        p0 = 0xD2511F53 * c0
        p1 = 0xCD9E8D57 * c2
        c0, c1, c2, c3 = (
            ((p1 >> 32) ^ c1 ^ k0) & _MASK32,
            p1 & _MASK32,
            ((p0 >> 32) ^ c3 ^ k1) & _MASK32,
            p0 & _MASK32,
        )
        k0 = (k0 + 0x9E3779B9) & _MASK32
        k1 = (k1 + 0xBB67AE85) & _MASK32
    return c0, c1, c2, c3


def row_uniforms(seed: int, offset: int, stream: int):
    """(component, token) uniforms of one row: Philox4x32-10 with key = seed,
    counter = (offset, stream); 24-bit uniforms from the first two words, as
    csrc/include/blendin/philox.h draws them."""
    seed &= (1 << 64) - 1
    offset &= (1 << 64) - 1
    words = philox4x32_10(
        (offset & _MASK32, offset >> 32, stream & _MASK32, 0), (seed & _MASK32, seed >> 32)
    )
    return (words[0] >> 8) / 16777216.0, (words[1] >> 8) / 16777216.0


# 1 / T saturates here (README "Choosing the token"): a positive temperature
# below 2^-100, subnormal ones included, samples as T = 2^-100 does.
MAX_INVERSE_TEMPERATURE = 2.0**100


def inverse_temperature(temperature: float) -> float:
    """1 / T of a sampled row (T > 0), saturated at 2^100, as the kernels take it."""
    return min(1.0 / temperature, MAX_INVERSE_TEMPERATURE)


def _temperature_rows(value, batch: int) -> torch.Tensor:
    """Per-row temperatures in float32; a positive number stays positive
    (float32 would round one below ~1e-45 to 0, i.e. greedy)."""
    if not isinstance(value, torch.Tensor) and 0 < value < 1 / MAX_INVERSE_TEMPERATURE:
        value = 1 / MAX_INVERSE_TEMPERATURE
    return _rows(value, batch, torch.float32)


def _rows(value, batch: int, dtype) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", dtype).reshape(-1).expand(batch).clone()
    return torch.full((batch,), value, dtype=dtype)


def _ranked(values: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Order of entries: larger value first, ties to the smaller id."""
    by_id = torch.argsort(ids, stable=True)
    by_value = torch.sort(values[by_id], descending=True, stable=True).indices
    return by_id[by_value]


def component_cdf(logits, base_ids, temperature, top_k, top_p):
    """The tempered, top-k/top-p filtered distribution of one component as
    (base ids, normalised CDF) over its kept entries in storage order.
    logits: (n,) float32 with -inf for masked/unmapped; base_ids: (n,)."""
    return component_cdfs(logits, base_ids, temperature, top_k, top_p)[0]


def component_cdfs(logits, base_ids, temperature, top_k, top_p, slack: float = 0.0):
    """component_cdf for every kept set the top-p cut can give when the
    exclusive kept masses within `slack` of top_p may fall on either side
    (sums taken in another order); the first is the exact cut's. A top-k cut
    ranks exactly and has no such ambiguity."""
    valid = torch.nonzero(logits != -math.inf).flatten()
    x = logits[valid].double()
    w = torch.exp((x - x.max()) * inverse_temperature(temperature))
    order = _ranked(logits[valid], base_ids[valid])
    kept = order[:top_k] if 0 < top_k < len(order) else order
    lengths = [len(kept)]
    if top_p < 1.0:
        r = w[kept] / w[kept].sum()
        exclusive = torch.cumsum(r, 0) - r  # non-decreasing: each cut keeps a prefix
        exact = int((exclusive < top_p).sum())
        low, high = int((exclusive < top_p - slack).sum()), int((exclusive < top_p + slack).sum())
        lengths = [exact] + [n for n in range(max(low, 1), high + 1) if n != exact]
    cdfs = []
    for n in lengths:
        prefix = torch.sort(kept[:n]).values  # back to storage order
        cdf = torch.cumsum(w[prefix], 0)
        cdfs.append((base_ids[valid[prefix]], cdf / cdf[-1]))
    return cdfs


def _draw(ids, cdf, u) -> int:
    """Inverse-CDF draw: the first kept entry whose CDF exceeds u."""
    pos = int(torch.searchsorted(cdf, torch.tensor([u], dtype=cdf.dtype), right=True))
    return int(ids[min(pos, len(ids) - 1)])


def row_component(base, guide_raw, guide_to_base, alpha: float, u_component: float):
    """(logits, base ids) of the component a row samples from: the mapped
    guide when u_component < alpha, else the base."""
    return component(base, guide_raw, guide_to_base, use_guide=u_component < alpha)


def component(base, guide_raw, guide_to_base, use_guide: bool):
    """(logits, base ids) of one component of a row: the guide's logits with
    its unmapped tokens masked, or the base's."""
    if use_guide:
        mapped = guide_to_base >= 0
        return torch.where(mapped, guide_raw, torch.tensor(-math.inf)), guide_to_base
    return base, torch.arange(base.numel())


@dataclass(frozen=True)
class SampledRow:
    """How the reference drew one sampled row: its inputs, its uniforms and
    the chosen component's kept ids with their CDF."""

    base: torch.Tensor  # (V,) the row's base logits
    guide: torch.Tensor  # (V_guide,) the row's guide logits, unmapped
    guide_to_base: torch.Tensor  # (V_guide,) base id of each guide token, -1 unmapped
    alpha: float  # weight of the guide (0 where not intervened)
    temperature: float
    top_k: int  # 0: no top-k filter
    top_p: float  # 1: no top-p filter
    u_component: float  # the guide is drawn from when u_component < alpha
    u_token: float  # the inverse-CDF draw
    ids: torch.Tensor  # kept base ids of the chosen component, storage order
    cdf: torch.Tensor  # their normalised CDF (float64)


def blend_step(base_logits: torch.Tensor, guide_logits: torch.Tensor, **kwargs) -> BlendStepResult:
    """The spec in float32 PyTorch; same arguments and result as
    blendin_ext.blend_step (outputs on the logits' device)."""
    result = _evaluate(base_logits, guide_logits, dtype=torch.float32, **kwargs).result
    return BlendStepResult(*(t.to(base_logits.device) for t in result))


class Evaluation(NamedTuple):
    """The reference's result with what it was derived from."""

    result: BlendStepResult
    mixture: torch.Tensor  # (B, V) q = a * p~_g + (1 - a) * p_b at temperature 1
    sampled: dict  # row -> SampledRow, for every sampled (good) row


def evaluate(
    base_logits: torch.Tensor,
    guide_logits: torch.Tensor,
    *,
    dtype: torch.dtype = torch.float32,
    **kwargs,
) -> Evaluation:
    """blend_step's arguments; computes in `dtype` (float32 like the kernels,
    or float64 for the exact mixture that tests judge near ties by). Per-row
    parameters keep the op's float32 values; outputs stay on the CPU."""
    return _evaluate(base_logits, guide_logits, dtype=dtype, **kwargs)


def _evaluate(
    base_logits: torch.Tensor,
    guide_logits: torch.Tensor,
    *,
    dtype: torch.dtype,
    guide_to_base=None,
    gamma=0.4,
    alpha="auto",
    agree_bonus: float = 0.1,
    temperature=0.0,
    top_k: Optional[object] = None,
    top_p: Optional[object] = None,
    seed=0,
    offset=0,
):
    b = base_logits.detach().cpu().to(dtype)
    g_raw = guide_logits.detach().cpu().to(dtype)
    batch, vocab = b.shape
    g2b = map_table(guide_to_base)
    if g2b is None:  # shared vocabulary
        g2b, g = torch.arange(vocab), g_raw
    else:  # guide probabilities moved to base ids, unmapped tokens dropped
        g2b = g2b.detach().cpu().long()
        g = torch.full((batch, vocab), -math.inf, dtype=dtype)
        g[:, g2b[g2b >= 0]] = g_raw[:, g2b >= 0]

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

    temps = _temperature_rows(temperature, batch)
    top_ks = _rows(0 if top_k is None else top_k, batch, torch.int64)
    top_ps = _rows(1.0 if top_p is None else top_p, batch, torch.float32)
    # a Python int is taken modulo 2^64, as the op's wrapper does
    seeds = _rows(seed if isinstance(seed, torch.Tensor) else check_seed(seed), batch, torch.int64)
    offsets = _rows(
        offset if isinstance(offset, torch.Tensor) else check_seed(offset, "offset"),
        batch,
        torch.int64,
    )
    per_row_seed = isinstance(seed, torch.Tensor) and seed.numel() > 1

    q = a[:, None] * p_g + (1 - a[:, None]) * p_b
    tokens = torch.argmax(q, -1)
    sampled = {}
    for row in range(batch):
        if bad[row] or temps[row] <= 0:
            continue
        u_comp, u_tok = row_uniforms(int(seeds[row]), int(offsets[row]), 0 if per_row_seed else row)
        logits, ids = row_component(b[row], g_raw[row], g2b, float(a[row]), u_comp)
        kept, cdf = component_cdf(
            logits, ids, float(temps[row]), int(top_ks[row]), float(top_ps[row])
        )
        sampled[row] = SampledRow(
            base=b[row],
            guide=g_raw[row],
            guide_to_base=g2b,
            alpha=float(a[row]),
            temperature=float(temps[row]),
            top_k=int(top_ks[row]),
            top_p=float(top_ps[row]),
            u_component=u_comp,
            u_token=u_tok,
            ids=kept,
            cdf=cdf,
        )
        tokens[row] = _draw(kept, cdf, u_tok)

    nan = torch.full((batch,), math.nan)
    outputs = BlendStepResult(
        torch.where(bad, -1, tokens),
        intervened & ~bad,
        torch.where(bad, nan, a),
        torch.where(bad, nan, c_b),
        torch.where(bad, nan, c_g),
        torch.where(bad, nan, agree),
    )
    return Evaluation(result=outputs, mixture=q, sampled=sampled)
