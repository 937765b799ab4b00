import pytest
import torch

from twocol import ops


@pytest.mark.parametrize("size,k", [(5, 2.0), (3, 1.0), (7, 0.5)])
def test_lrn_reference_equals_torch_with_converted_alpha(size, k):
    x = torch.randn(2, 11, 6, 5, dtype=torch.float64)
    alpha = 1e-2
    ref = torch.nn.LocalResponseNorm(size, alpha=alpha * size, beta=0.75, k=k)(x)
    torch.testing.assert_close(ops.lrn_reference(x, size, k, alpha, 0.75, "sum"), ref, rtol=1e-12, atol=0)
    torch.testing.assert_close(ops.lrn_reference(x, size, k, alpha * size, 0.75, "mean"), ref, rtol=1e-12, atol=0)


def test_papers_alpha_is_torch_alpha_5e_4():
    x = torch.rand(1, 8, 3, 3, dtype=torch.float64) * 50
    ref = torch.nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)(x)
    torch.testing.assert_close(ops.lrn_reference(x), ref, rtol=1e-12, atol=0)


def test_lrn_window_at_an_edge_channel_by_hand():
    x = torch.arange(1.0, 5.0, dtype=torch.float64).view(1, 4, 1, 1)  # channels 1,2,3,4
    out = ops.lrn_reference(x, size=5, k=2.0, alpha=0.1, beta=1.0)
    # channel 0 sees channels 0..2: 1 + 4 + 9 = 14
    assert out[0, 0, 0, 0].item() == pytest.approx(1.0 / (2.0 + 0.1 * 14))
    # channel 3 sees channels 1..3: 4 + 9 + 16 = 29
    assert out[0, 3, 0, 0].item() == pytest.approx(4.0 / (2.0 + 0.1 * 29))


def test_orders_differ_only_through_negative_inputs():
    x = torch.randn(2, 6, 4, 4, dtype=torch.float64)
    a = ops.relu_lrn_reference(x, order="relu_lrn")
    b = ops.relu_lrn_reference(x, order="lrn_relu")
    assert not torch.allclose(a, b)
    torch.testing.assert_close(ops.relu_lrn_reference(x.abs(), order="relu_lrn"),
                               ops.relu_lrn_reference(x.abs(), order="lrn_relu"))
    assert torch.all((b > 0) == (x > 0))


def test_spatial_norm_by_hand():
    x = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    x[0, 0, 2, 2] = 10.0
    out = ops.spatial_norm(x, size=5, scale=1e-3, power=0.75)
    assert out[0, 0, 2, 2].item() == pytest.approx(10.0 / (1 + 1e-3 * 100 / 25) ** 0.75)
