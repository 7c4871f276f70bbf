"""The encoder side: the checkpoint's recipe, per-channel blocks, NaN rows for empty tiles."""

from types import SimpleNamespace

import numpy as np
import torch

from sslray.infer.encoder import Embedder, encode


def test_a_per_channel_checkpoint_encodes_each_channel_as_its_own_image():
    meta = SimpleNamespace(scale=255.0, image_size=8, per_channel=True, mean=[0.0], std=[1.0])
    images = torch.stack([torch.full((3, 8, 8), v) for v in (0.0, 51.0)]).to(torch.uint8)
    images[:, 1] = 255
    features = encode(lambda x: x.mean(dim=(1, 2, 3)).unsqueeze(1), images, meta, torch.device("cpu"))
    assert features.shape == (2, 3)
    torch.testing.assert_close(features, torch.tensor([[0.0, 1.0, 0.0], [0.2, 1.0, 0.2]]))


def test_rows_pass_through_and_tiles_below_empty_below_get_nan_rows_without_being_encoded(checkpoint, tiny_store):
    images = tiny_store.read(0, 4)
    batch = {"image": images, "tile_id": np.arange(4), "tissue_fraction": np.array([0.9, 0.0, 0.5, 0.1])}
    plain = Embedder(checkpoint, l2_normalize=True)({**batch})
    table = Embedder(checkpoint, l2_normalize=True, empty_below=0.3)({**batch})
    assert table.column("tile_id").to_pylist() == [0, 1, 2, 3]
    vectors = np.stack(table.column("embedding").to_numpy(zero_copy_only=False))
    expected = np.stack(plain.column("embedding").to_numpy(zero_copy_only=False))
    assert np.isnan(vectors[[1, 3]]).all() and not np.isnan(vectors[[0, 2]]).any()
    np.testing.assert_allclose(vectors[[0, 2]], expected[[0, 2]], atol=1e-5)  # the others are embedded as usual
    np.testing.assert_allclose(np.linalg.norm(vectors[[0, 2]], axis=1), 1, atol=1e-5)
