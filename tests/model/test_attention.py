import torch
import torch.nn.functional as F

from mmdit.model.attention import attend


def test_cpu_bf16_attention_matches_float64_and_keeps_masks():
    """Under bf16 autocast on the CPU (the matmul path), attention returns bf16 within bf16 rounding of the
    float64 result, keys masked out change nothing, and gradients reach q, k and v."""
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 6, 8, generator=generator).bfloat16().requires_grad_() for _ in range(3))
    mask = torch.ones(2, 1, 1, 6, dtype=torch.bool)
    mask[0, ..., 4:] = False
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attend(q, k, v, None, mask)
    reference = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=mask)
    assert out.dtype == torch.bfloat16 and out.shape == (2, 6, 16)
    torch.testing.assert_close(out.double(), reference.transpose(1, 2).flatten(2), rtol=0, atol=2e-2)

    changed = v.detach().clone()
    changed[0, :, 4:] += 100.0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        again = attend(q.detach(), k.detach(), changed, None, mask)
    assert torch.equal(again[0], out[0].detach())

    out.float().sum().backward()
    assert all(t.grad is not None and t.grad.dtype == torch.bfloat16 for t in (q, k, v))
