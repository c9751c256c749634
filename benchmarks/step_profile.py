"""Where a training step's time goes, by kernel family, from `torch.profiler` (`roofline.py`).

Each operator's *self* time (its own, not its callees') is assigned to the first family whose name pattern it
matches, so the families add up to the profiled time without counting a composite op twice; everything run
inside an optimizer's `step` or `zero_grad` is the optimizer's (torch's single-tensor AdamW, its CPU
default, runs plain `mul_`/`add_`).
"""

from __future__ import annotations

import re

import torch
from torch.profiler import ProfilerActivity, profile

FAMILIES = {
    "matmul": r"\b(mm|addmm|bmm|baddbmm|matmul|linear|mkldnn_\w*matmul\w*|_mkldnn\w*)\b",
    "attention": r"(scaled_dot_product|flash_attention|_efficient_attention|_cudnn_attention|softmax)",
    "optimizer": r"(adam|_foreach_|fused_sgd|optimizer)",
    "casts": r"\b(_to_copy|to|copy_|_copy_from\w*|type_as)\b",
    "normalisation": r"(layer_norm|rms_norm|group_norm|batch_norm|native_norm)",
    "elementwise": r".",
}
"""Family -> regular expression on the operator name ("aten::addmm"); the last one takes the rest."""


def family(name: str) -> str:
    """The kernel family of an operator or CUDA kernel name."""
    op = name.removeprefix("aten::")
    return next(f for f, pattern in FAMILIES.items() if re.search(pattern, op))


def step_breakdown(step, steps: int = 2) -> dict[str, float]:
    """Profile `steps` calls of `step()` -> {family: seconds per step}, by self time (CUDA time on a GPU)."""
    cuda = torch.cuda.is_available()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
    seconds = dict.fromkeys(FAMILIES, 0.0)

    def add(event, inside: str | None) -> None:
        inside = inside or ("optimizer" if event.name.startswith("Optimizer.") else None)
        own = event.self_device_time_total if cuda else event.self_cpu_time_total
        seconds[inside or family(event.name)] += own / 1e6 / steps
        for child in event.cpu_children:
            add(child, inside)

    for event in prof.events():
        if event.cpu_parent is None:
            add(event, None)
    return seconds
