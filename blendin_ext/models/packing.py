"""Linear layers with weights packed once, for decoding on a CPU.

At decode time every linear layer of a model multiplies one row (or a few)
by its whole weight: the step is a matrix-vector product bound by reading
the weights. PyTorch's `F.linear` on a CPU reorders a bfloat16 weight into
oneDNN's blocked layout on every call and calls MKL's general GEMM for
float32; both read well below the memory bandwidth for a handful of rows.
A `PackedLinear` packs its weight once, at load, for one of two kernels:

- ``"blendin"`` (bfloat16 weights, chosen on CPUs with AVX-512 BF16 and
  no AMX): the project's `blendin_ext::bf16_linear` (bf16_linear.py), which
  streams its own packed copy at close to the memory bandwidth. Logits
  differ from `F.linear`'s by at most a bfloat16 rounding step (float32
  sums in another order), so a near-tie may pick the other token.
- ``"onednn"`` (float32, and bfloat16 elsewhere): oneDNN's linear on a
  copy reordered once (the op inductor's CPU freezing uses). Its bfloat16
  logits equal `F.linear`'s where both run the same kernel (without the
  per-call reorder); float32 ones differ by GEMM rounding (a few 1e-6
  relative).

Packing makes decoding the default pair 1.5-2.0x faster than plain layers
with oneDNN's kernel. On a CPU without AMX, blendin's kernel adds 1.1-1.9x
in bfloat16; on one with AMX, oneDNN multiplies a batch of rows on the AMX
tiles, which blendin's AVX-512 dot products do not match
(`benchmarks/bench_pair.py`, `bench_linear.py`; figures in
benchmarks/README.md). `pack_linear_weights(model, kernel)` /
``load_model(linear_kernel=)`` / ``--linear-kernel`` choose ("auto" by
default).

- A packed layer has no ``weight`` parameter (code that reads one fails
  instead of reading a scrambled layout), and moving or casting a packed
  model raises. A weight tied to the input embeddings stays tied: the
  layer keeps the shared parameter as its ``weight``, and
  `unpack_linear_weights` puts it back. `state_dict` (hence
  `save_pretrained`) and `load_state_dict` see plain weights, as for the
  unpacked model; `copy.deepcopy` repacks. A forward that autograd would
  record raises: neither kernel has a gradient.
- Memory: the packed copies are new memory, and a weight tied to the
  embeddings is held twice (plain for the lookup, packed for the output
  layer). The default pair in bf16 grows by about 0.75 GB of anonymous
  memory (gemma3-270m's 262144 x 640 output layer alone is 335 MB);
  weights that transformers mapped from the checkpoint file stay in the
  page cache, where the kernel can drop them. `pack_weights=False` /
  `--no-pack-weights` keep the plain layers.
- Under torch.compile, blendin's kernel is an op with a fake kernel, and a
  oneDNN layer calls `blendin_ext::packed_linear`, the same kernel as an op
  inductor leaves opaque (its own oneDNN lowering only takes weights it
  packed itself), so the compiled path (`models/compiled.py`) keeps the
  packed weights either way.
"""

from __future__ import annotations

import copy
import types
from typing import Optional

import torch

from blendin_ext.models.bf16_linear import (
    bf16_linear,
    fast_bf16_linear,
    pack_bf16_weight,
    unpack_bf16_weight,
)
from blendin_ext.models.cpu_flags import cpu_has_amx_bf16

PACKED_DTYPES = (torch.bfloat16, torch.float32)
LINEAR_KERNELS = ("auto", "blendin", "onednn")


def _onednn_linear(
    x: torch.Tensor, packed_weight: torch.Tensor, bias: Optional[torch.Tensor]
) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, packed_weight, bias, "none", [], "")


# The same product as an op torch.compile treats as opaque: inductor's oneDNN
# passes reject a packed weight they did not pack themselves, so a compiled
# graph calls this one kernel and fuses everything around it. Eager calls
# skip it (a Python custom op costs a few microseconds per call).
@torch.library.custom_op("blendin_ext::packed_linear", mutates_args=())
def packed_linear(
    x: torch.Tensor, packed_weight: torch.Tensor, bias: Optional[torch.Tensor], out_features: int
) -> torch.Tensor:
    return _onednn_linear(x, packed_weight, bias)


@packed_linear.register_fake
def _packed_linear_fake(x, packed_weight, bias, out_features):
    return x.new_empty(*x.shape[:-1], out_features)


def packing_supported(dtype: torch.dtype, device="cpu") -> bool:
    """Whether `pack_linear_weights` applies: a CPU, a PyTorch built with
    oneDNN, and a bfloat16 or float32 model."""
    return (
        torch.device(device).type == "cpu"
        and dtype in PACKED_DTYPES
        and torch.backends.mkldnn.is_available()
    )


class PackedLinear(torch.nn.Module):
    """`y = x W^T + b` with W packed once for `kernel`: "blendin"
    (`blendin_ext::bf16_linear`, bfloat16 only) or "onednn".

    ``weight`` exists only when it is tied to the input embeddings (then it
    is that shared, plain parameter); `state_dict` always holds the plain
    weight, so a packed model saves and loads like the unpacked one."""

    def __init__(self, linear: torch.nn.Linear, tied: bool = False, kernel: str = "onednn"):
        super().__init__()
        if kernel not in ("blendin", "onednn"):
            raise ValueError(f"kernel must be 'blendin' or 'onednn', got {kernel!r}")
        if kernel == "blendin" and linear.weight.dtype != torch.bfloat16:
            raise ValueError(f"kernel 'blendin' takes bfloat16 weights, got {linear.weight.dtype}")
        self.kernel = kernel
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight_dtype = linear.weight.dtype
        self.weight_requires_grad = linear.weight.requires_grad  # restored by unpacked()
        if tied:
            self.weight = linear.weight
        self.bias = linear.bias
        self._pack(linear.weight)

    def _pack(self, weight: torch.Tensor) -> None:
        if self.kernel == "blendin":
            self.packed_weight = pack_bf16_weight(weight)
            return
        # batch size 1: the decode step; larger batches and prompts run as fast as F.linear
        # or faster
        self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), 1)

    @property
    def tied(self) -> bool:
        return "weight" in self._parameters

    def plain_weight(self) -> torch.Tensor:
        if self.tied:
            return self.weight
        if self.kernel == "blendin":
            return unpack_bf16_weight(self.packed_weight, self.out_features, self.in_features)
        return self.packed_weight.to_dense()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != self.weight_dtype:
            raise TypeError(
                f"PackedLinear holds a {self.weight_dtype} weight, got a {x.dtype} input"
            )
        if torch.is_grad_enabled() and (
            x.requires_grad
            or any(p.requires_grad for p in self._parameters.values() if p is not None)
        ):
            # neither kernel has an autograd formula: backward would run and be silently wrong
            raise RuntimeError(
                "packed linear layers are for inference: run the model "
                "under torch.inference_mode() or torch.no_grad(), or load it with "
                "pack_weights=False (or call blendin_ext.models.packing."
                "unpack_linear_weights) to train it"
            )
        if self.kernel == "blendin":  # an op with a fake kernel: compiles as it is
            return bf16_linear(x, self.packed_weight, self.bias, self.out_features)
        if torch.compiler.is_compiling():  # inductor lowers oneDNN's op only for weights it packed
            return packed_linear(x, self.packed_weight, self.bias, self.out_features)
        return _onednn_linear(x, self.packed_weight, self.bias)

    def unpacked(self) -> torch.nn.Linear:
        """The plain `nn.Linear` with the exact original weight."""
        linear = torch.nn.Linear(
            self.in_features,
            self.out_features,
            bias=self.bias is not None,
            dtype=self.weight_dtype,
            device="meta",
        )
        linear.weight = (
            self.weight
            if self.tied
            else torch.nn.Parameter(self.plain_weight(), requires_grad=self.weight_requires_grad)
        )
        linear.bias = self.bias
        return linear

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if not self.tied:
            destination[prefix + "weight"] = self.plain_weight()

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        weight = None if self.tied else state_dict.pop(prefix + "weight", None)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        if self.tied:
            self._pack(self.weight)  # the tied parameter was loaded in place
        elif weight is None:
            missing_keys.append(prefix + "weight")
        elif weight.shape != (self.out_features, self.in_features):
            error_msgs.append(
                f"size mismatch for {prefix}weight: copying a param with shape "
                f"{tuple(weight.shape)}, the shape in current model is "
                f"{(self.out_features, self.in_features)}."
            )
        else:
            self._pack(weight.to(self.weight_dtype))

    def __deepcopy__(self, memo):
        # an opaque oneDNN tensor has no storage to copy: repack the plain weight
        twin = type(self).__new__(type(self))
        memo[id(self)] = twin
        for name, value in self.__dict__.items():
            if name != "packed_weight":
                twin.__dict__[name] = copy.deepcopy(value, memo)
        twin._pack(self.plain_weight())
        return twin

    def _apply(self, fn, recurse=True):
        _check_move(fn, [self])
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, dtype={self.weight_dtype}, "
            f"packed={'blendin' if self.kernel == 'blendin' else 'oneDNN'}"
            + (", tied to the input embeddings" if self.tied else "")
        )


def _check_move(fn, layers) -> None:
    """`.to()`, `.float()`, `.cuda()` ... pass `fn` to `_apply`: one that changes
    nothing (`.to("cpu")` on a CPU model) is fine, any other needs the plain
    weights back."""
    for layer in layers:
        probe = fn(torch.empty(0, dtype=layer.weight_dtype))
        if probe.device.type != "cpu" or probe.dtype != layer.weight_dtype:
            raise RuntimeError(
                "this model's linear layers are packed for the CPU in "
                f"{layer.weight_dtype}: load it with pack_weights=False, or call "
                "blendin_ext.models.packing.unpack_linear_weights(model) first, "
                "to move or cast it"
            )


def _apply_checked_first(model, fn, recurse=True):
    # the packed model's own `_apply`: refuses a move before any submodule has moved
    _check_move(fn, [m for m in model.modules() if isinstance(m, PackedLinear)])
    return type(model)._apply(model, fn, recurse)


def _replace(model: torch.nn.Module, name: str, module: torch.nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _input_embedding_weight(model) -> Optional[torch.nn.Parameter]:
    get = getattr(model, "get_input_embeddings", None)
    embeddings = get() if callable(get) else None
    return getattr(embeddings, "weight", None)


def linear_kernel(dtype: torch.dtype, kernel: str = "auto") -> str:
    """The kernel a packed layer of `dtype` runs: "blendin" (bfloat16 on a
    CPU with AVX-512 BF16 and no AMX) or "onednn"; `kernel` other than
    "auto" forces one."""
    if kernel not in LINEAR_KERNELS:
        raise ValueError(f"kernel must be one of {', '.join(LINEAR_KERNELS)}, got {kernel!r}")
    if kernel != "auto":
        return kernel
    # With AMX, oneDNN runs a batch of rows on the tiles: there blendin's kernel took 0.9-2.0x
    # oneDNN's time at 8 rows and 2.3-5.3x at 64, and decoded the pair at batch 8 at 0.64x
    # (about even at batch 1); without AMX it was 0.43-0.78x oneDNN's time at 1-8 rows.
    fast = dtype == torch.bfloat16 and fast_bf16_linear() and not cpu_has_amx_bf16()
    return "blendin" if fast else "onednn"


def pack_linear_weights(model: torch.nn.Module, kernel: str = "auto") -> int:
    """Replaces every `nn.Linear` of a CPU model in bfloat16 or float32 by a
    `PackedLinear`, in place; returns how many (0 where packing does not
    apply: another device or dtype, or no oneDNN). `kernel`: see
    `linear_kernel` ("blendin" only takes bfloat16 layers)."""
    embedding = _input_embedding_weight(model)
    linears = [
        (name, module)
        for name, module in model.named_modules()
        if type(module) is torch.nn.Linear
        and packing_supported(module.weight.dtype, module.weight.device)
    ]
    for name, linear in linears:
        _replace(
            model,
            name,
            PackedLinear(
                linear,
                tied=linear.weight is embedding,
                kernel=linear_kernel(linear.weight.dtype, kernel),
            ),
        )
    if linears:
        model._apply = types.MethodType(_apply_checked_first, model)
    return len(linears)


def packed_kernels(model: torch.nn.Module) -> str:
    """What the packed layers of `model` run, for logs: "blendin bf16 kernel",
    "oneDNN", or both with counts."""
    kinds = [m.kernel for m in model.modules() if isinstance(m, PackedLinear)]
    names = {"blendin": "blendin bf16 kernel", "onednn": "oneDNN"}
    if len(set(kinds)) == 1:
        return names[kinds[0]]
    return ", ".join(f"{kinds.count(k)} {names[k]}" for k in sorted(set(kinds)))


def unpack_linear_weights(model: torch.nn.Module) -> int:
    """Undoes `pack_linear_weights` in place (exact weights, ties kept);
    returns how many layers it restored."""
    packed = [
        (name, module) for name, module in model.named_modules() if isinstance(module, PackedLinear)
    ]
    for name, module in packed:
        _replace(model, name, module.unpacked())
    model.__dict__.pop("_apply", None)
    return len(packed)
