import pytest
import torch

from sslray.data.transforms import AugmentConfig, augment, normalize, random_resized_crop, resize, to_unit


def test_full_scale_crop_equals_resize():
    ramp = torch.linspace(0, 1, 64)
    x = (ramp.view(1, 1, 1, -1) * ramp.view(1, 1, -1, 1)).repeat(2, 3, 1, 1)  # smooth: both resamplers agree
    crop = random_resized_crop(x, 48, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert crop.shape == (2, 3, 48, 48)
    assert torch.allclose(crop, resize(x, 48), atol=0.01)


def test_crop_keeps_content_in_place():
    x = torch.zeros(1, 1, 64, 64)
    x[..., 10:20, 30:40] = 1
    crop = random_resized_crop(x, 64, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    ys, xs = torch.nonzero(crop[0, 0] > 0.5, as_tuple=True)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (10, 19, 30, 39)


def test_each_sample_gets_its_own_crop():
    x = torch.rand(1, 1, 64, 64).repeat(8, 1, 1, 1)
    crops = random_resized_crop(x, 16, scale=(0.05, 0.2))
    assert not torch.allclose(crops[0], crops[1])


def test_augment_shapes_and_identity_when_disabled():
    x = torch.rand(4, 5, 16, 16)
    off = AugmentConfig(hflip=0, vflip=0, rot90=False, gamma=(1.0, 1.0), shift=0.0)
    assert torch.allclose(augment(x, off), x)
    assert augment(x, AugmentConfig(blur_prob=1.0, noise_std=0.1, channel_dropout=0.5)).shape == x.shape


def test_channel_dropout_never_drops_every_channel():
    x = torch.ones(64, 3, 4, 4)
    cfg = AugmentConfig(hflip=0, vflip=0, rot90=False, gamma=(1.0, 1.0), shift=0.0, channel_dropout=0.99)
    out = augment(x, cfg)
    assert (out.flatten(2).amax(2) > 0).any(1).all()


def test_per_channel_gamma_varies_by_channel():
    x = torch.full((1, 8, 2, 2), 0.5)
    cfg = AugmentConfig(hflip=0, vflip=0, rot90=False, gamma=(0.5, 1.5), shift=0.0)
    assert augment(x, cfg)[0, :, 0, 0].unique().numel() > 1


def test_unit_scaling_and_normalisation():
    x = torch.tensor([[[[0, 65535]]]], dtype=torch.int32)
    unit = to_unit(x, 65535.0)
    assert unit.tolist() == [[[[0.0, 1.0]]]]
    assert normalize(unit, [0.5], [0.5]).tolist() == [[[[-1.0, 1.0]]]]


def test_invalid_augment_config_is_rejected():
    with pytest.raises(ValueError, match="augment.hflip"):
        AugmentConfig(hflip=2.0)
