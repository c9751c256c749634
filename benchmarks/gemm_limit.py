"""The machine's own matrix-product throughput at the shapes a training step multiplies: the roofline that a
step's achieved FLOP/s is measured against (`roofline.py`).

`recorded_gemms` watches one training step through a `TorchFunctionMode` and keeps every matrix product of
its forward pass (linear layers, `matmul`/`@`, `bmm`, scaled-dot-product attention as its two products);
each forward product [M, K] x [K, N] implies two of the backward (the gradients of both operands), so a
step's products are the forward ones in three layouts. `gemm_limit` times each distinct shape alone, in the
step's dtype, on the step's device, in this process.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode


@dataclass(frozen=True)
class Gemm:
    """`batch` independent products [M, K] x [K, N] (2·batch·M·K·N FLOPs)."""

    batch: int
    m: int
    k: int
    n: int

    @property
    def flops(self) -> int:
        return 2 * self.batch * self.m * self.k * self.n

    def with_gradients(self) -> tuple[Gemm, Gemm, Gemm]:
        """This forward product and the two of its backward: dA = dC Bᵀ [M, N] x [N, K], dB = Aᵀ dC [K, M] x
        [M, N]."""
        b, m, k, n = self.batch, self.m, self.k, self.n
        return self, Gemm(b, m, n, k), Gemm(b, k, m, n)


def _rows(shape: torch.Size) -> int:
    """Rows of a linear layer's input [..., K]: every leading dimension."""
    return shape[:-1].numel()


class GemmRecorder(TorchFunctionMode):
    """Records the matrix products of the torch functions called inside it (not those of autograd's
    backward, which `Gemm.with_gradients` derives)."""

    def __init__(self):
        super().__init__()
        self.forward: list[Gemm] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            x, weight = args[0], args[1]
            self.forward.append(Gemm(1, _rows(x.shape), weight.shape[1], weight.shape[0]))
        elif func in (torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.bmm, torch.mm):
            a, b = args[0], args[1]
            if a.dim() >= 2 and b.dim() >= 2:
                batch = int(torch.broadcast_shapes(a.shape[:-2], b.shape[:-2]).numel())
                self.forward.append(Gemm(batch, a.shape[-2], a.shape[-1], b.shape[-1]))
        elif func is F.scaled_dot_product_attention:
            q, k, v = [*args[:3], *(kwargs[name] for name in ("query", "key", "value")[len(args) :])]
            batch, queries, keys = q.shape[:-2].numel(), q.shape[-2], k.shape[-2]
            self.forward += [Gemm(batch, queries, q.shape[-1], keys), Gemm(batch, queries, keys, v.shape[-1])]
        return func(*args, **kwargs)


def recorded_gemms(step) -> Counter[Gemm]:
    """Run `step()` once and return the matrix products of its forward and backward: {Gemm: count}. Compiled
    regions run eagerly for it: the products are the same, and dynamo would otherwise trace the recorder."""
    recorder = GemmRecorder()
    with torch.compiler.set_stance("force_eager"), recorder:
        step()
    return Counter(g for forward in recorder.forward for g in forward.with_gradients())


@dataclass
class GemmLimit:
    """What the step's products cost alone. `seconds`: all of them once, back to back (a step can be no
    faster); `mix_flops_per_s` = their FLOPs / `seconds`; `best_flops_per_s`: the fastest shape's rate."""

    flops: int
    seconds: float
    best_flops_per_s: float

    @property
    def mix_flops_per_s(self) -> float:
        return self.flops / self.seconds


def gemm_seconds(gemm: Gemm, dtype: torch.dtype, device: torch.device, repeats: int = 5) -> float:
    """Median seconds of one `gemm` in `dtype` (after a warm-up call): `mm` for a single product, as a linear
    layer runs, else `bmm`."""
    a = torch.randn(gemm.batch, gemm.m, gemm.k, device=device).to(dtype)
    b = torch.randn(gemm.batch, gemm.k, gemm.n, device=device).to(dtype)
    product = torch.bmm
    if gemm.batch == 1:
        a, b, product = a[0], b[0], torch.mm
    times = []
    for _ in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        product(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def gemm_limit(gemms: Counter[Gemm], dtype: torch.dtype, device: torch.device) -> GemmLimit:
    """Time every distinct shape of `gemms` alone in `dtype` -> the step's matmul roofline."""
    seconds = {g: gemm_seconds(g, dtype, device) for g in gemms}
    total = sum(count * seconds[g] for g, count in gemms.items())
    flops = sum(count * g.flops for g, count in gemms.items())
    return GemmLimit(flops, total, max(g.flops / s for g, s in seconds.items()))
