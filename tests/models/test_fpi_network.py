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
