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


def test_hed_round_trip_and_stain_jitter_moves_only_the_stains():
    from sslray.data.transforms import hed_jitter, hed_to_rgb, rgb_to_hed

    torch.manual_seed(0)
    rgb = torch.rand(2, 3, 16, 16) * 0.8 + 0.1
    torch.testing.assert_close(hed_to_rgb(rgb_to_hed(rgb)), rgb, atol=1e-5, rtol=1e-4)
    assert torch.equal(hed_jitter(rgb, 0.0), rgb)
    jittered = hed_jitter(rgb, 0.05, torch.Generator().manual_seed(1))
    assert not torch.allclose(jittered, rgb) and (jittered - rgb).abs().mean() < 0.1
    # a pure-haematoxylin image stays on the haematoxylin axis: its E and D stay ~0
    hed = torch.zeros(1, 3, 4, 4)
    hed[:, 0] = 0.5
    out = rgb_to_hed(hed_jitter(hed_to_rgb(hed), 0.1, torch.Generator().manual_seed(2)))
    assert out[:, 1:].abs().max() < 1e-4 and not torch.allclose(out[:, 0], hed[:, 0])


def test_colour_jitter_is_rgb_only_keeps_grey_grey_and_stays_in_range():
    from sslray.data.transforms import colour_jitter

    with pytest.raises(ValueError, match="H&E"):
        augment(torch.rand(2, 2, 8, 8), AugmentConfig(hed=0.05))
    grey = torch.rand(4, 1, 8, 8).expand(-1, 3, -1, -1) * 0.5
    jittered = colour_jitter(grey, AugmentConfig(brightness=0.3, contrast=0.3, saturation=0.5),
                             torch.Generator().manual_seed(0))
    torch.testing.assert_close(jittered[:, 0], jittered[:, 1])  # no hue appears from nowhere
    assert not torch.allclose(jittered, grey)
    x = torch.rand(4, 3, 8, 8)
    out = augment(x, AugmentConfig(hed=0.05, brightness=0.2, contrast=0.2, saturation=0.2, gamma=(1, 1), shift=0))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1


def test_crops_of_a_sparse_field_contain_cells_when_asked():
    from sslray.data.transforms import otsu_foreground

    x = torch.zeros(16, 1, 128, 128)
    x[:, :, 100:110, 10:20] = 1.0  # one small cell per field, 0.6% of the pixels
    mask = otsu_foreground(x)
    assert mask.sum() == 16 * 100 and mask[:, 100:110, 10:20].all()
    g = torch.Generator().manual_seed(0)
    plain = random_resized_crop(x, 32, (0.05, 0.1), generator=g)
    with_cells = random_resized_crop(x, 32, (0.05, 0.1), generator=g, min_foreground=0.01)
    has_cell = lambda crops: (crops.flatten(1).max(1).values > 0.5).float().mean()  # noqa: E731
    assert has_cell(with_cells) > has_cell(plain) and has_cell(with_cells) >= 0.75
