import pytest
import torch

from mood_detector.models.fpi.network import WideResEncoderDecoder


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_brain_parameter_count_matches_reference():
    assert n_params(WideResEncoderDecoder("brain", out_channels=1, width=1.0)) == 4_164_763


def test_abdomen_has_one_more_stage_each_side():
    brain, abdom = WideResEncoderDecoder("brain", 1), WideResEncoderDecoder("abdom", 1)
    assert len(abdom.encoder) == len(brain.encoder) + 1 and len(abdom.decoder) == len(brain.decoder) + 1
    assert abdom.stride == 32 and brain.stride == 16


@pytest.mark.parametrize("arch,size,c", [("brain", 32, 1), ("brain", 64, 5), ("abdom", 64, 5)])
def test_shapes(arch, size, c):
    m = WideResEncoderDecoder(arch, c, width=0.125).eval()
    x = torch.rand(2, 1, size, size)
    assert m(x).shape == (2, c, size, size)
    assert m.encode(x).shape[-1] == size // m.stride


def test_no_conv_bias_and_no_skip():
    m = WideResEncoderDecoder("brain", 1, width=0.25)
    convs = [mod for mod in m.modules() if isinstance(mod, torch.nn.Conv2d)]
    assert convs and all(c.bias is None for c in convs)


@pytest.mark.parametrize("arch,size", [("brain", 32), ("brain", 64), ("abdom", 64)])
def test_skip_variant_shapes_and_it_sees_fine_detail(arch, size):
    m = WideResEncoderDecoder(arch, 5, width=0.125, skips=True).eval()
    x = torch.rand(2, 1, size, size)
    assert m(x).shape == (2, 5, size, size)
    # a one-pixel change moves the output at that pixel: the full-resolution skip reaches the output
    y = x.clone()
    y[:, :, size // 2 + 1, size // 2 + 1] += 1.0
    with torch.no_grad():
        d = (m(y) - m(x)).abs().sum(1)[0]
    assert d[size // 2 + 1, size // 2 + 1] > 0


def test_out_bias_starts_at_the_class_prior():
    m = WideResEncoderDecoder("brain", 5, width=0.125, out_bias=True)
    m.init_prior(0.05)
    p = torch.softmax(m.out_bias, 0)
    assert torch.allclose(p, torch.tensor([0.95, 0.0125, 0.0125, 0.0125, 0.0125]), atol=1e-6)
    one = WideResEncoderDecoder("brain", 1, width=0.125, out_bias=True)
    one.init_prior(0.05)
    assert torch.allclose(torch.sigmoid(one.out_bias), torch.tensor([0.05]))
    # the paper's plan has no bias at all
    assert WideResEncoderDecoder("brain", 1, width=0.125).out_bias is None
