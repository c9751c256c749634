import pytest
import torch
import torch.nn.functional as F

from mmdit.model.activations import TanhGELU, gelu_tanh_as_sigmoid, mlp_activation


def test_the_sigmoid_form_is_the_tanh_gelu_in_value_and_gradient():
    x = torch.linspace(-8, 8, 2001, dtype=torch.float64, requires_grad=True)
    ours = gelu_tanh_as_sigmoid(x)
    (ours_grad,) = torch.autograd.grad(ours.sum(), x)
    reference = F.gelu(x, approximate="tanh")
    (reference_grad,) = torch.autograd.grad(reference.sum(), x)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-12)
    torch.testing.assert_close(ours_grad, reference_grad, rtol=0, atol=1e-12)


def test_tanh_gelu_uses_atens_kernel_in_eager_and_the_sigmoid_form_when_compiled():
    graphs = []

    def recording_backend(graph_module, example_inputs):
        graphs.append({str(node.target) for node in graph_module.graph.nodes})
        return graph_module.forward

    activation = TanhGELU()
    x = torch.randn(4, 7)
    assert torch.equal(activation(x), F.gelu(x, approximate="tanh"))
    compiled = torch.compile(activation, backend=recording_backend, fullgraph=True)
    torch.testing.assert_close(compiled(x), F.gelu(x, approximate="tanh"), rtol=1e-6, atol=1e-6)
    (ops,) = graphs
    assert any("sigmoid" in op for op in ops) and not any("gelu" in op for op in ops)


def test_mlp_activation_names_the_known_ones():
    assert isinstance(mlp_activation("gelu_tanh"), TanhGELU)
    assert mlp_activation("gelu").approximate == "none"
    with pytest.raises(ValueError, match=r"\['gelu_tanh', 'gelu'\], got 'relu'"):
        mlp_activation("relu")
