"""The aggregator's checkpoint under ``_aggregator/``: a standard checkpoint (checksummed), old
spot tables' format 1 still loads, and the loaded encoder embeds spots as published."""

import dataclasses

import numpy as np
import pytest
import torch
from safetensors.torch import save as save_safetensors

from sslray import storage
from sslray.aggregate.aggregator import embed_spots, load_aggregator, resolve_device, save_aggregator
from sslray.aggregate.grids import build_grids
from sslray.artifacts.checkpoint import CheckpointError
from sslray.artifacts.checkpoint_meta import CheckpointMeta, ModelSpec
from sslray.artifacts.spot_table import AGGREGATOR_DIR
from sslray.config import to_dict
from sslray.models.spot_encoder import SpotEncoder, SpotModelConfig
from tests.aggregate.tables import DIM, tiles_of

MODEL = SpotModelConfig(dim=16, depth=1, num_heads=2)


def _encoder() -> SpotEncoder:
    torch.manual_seed(0)
    return SpotEncoder(DIM, MODEL).eval()


def _meta() -> CheckpointMeta:
    return CheckpointMeta(model=ModelSpec("spot_encoder", to_dict(MODEL)), in_chans=DIM, image_size=1, scale=1.0,
                          mean=[0.0], std=[1.0], method="spot_dino", embed_dim=16,
                          extra={"spot_column": "image_id", "grid_step": [64.0, 64.0]})


def test_a_saved_aggregator_is_a_checksummed_checkpoint_that_loads_back(tmp_path):
    encoder = _encoder()
    save_aggregator(str(tmp_path / "spots" / AGGREGATOR_DIR), encoder, _meta())
    loaded, meta = load_aggregator(str(tmp_path / "spots"))
    assert meta["in_dim"] == DIM and meta["spot_column"] == "image_id" and "encoder.safetensors" in meta["files"]
    tokens = torch.randn(3, 5, DIM)
    torch.testing.assert_close(loaded(tokens), encoder(tokens))
    weights = tmp_path / "spots" / AGGREGATOR_DIR / "encoder.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])  # cut short
    with pytest.raises(CheckpointError, match="does not match the SHA-256"):
        load_aggregator(str(tmp_path / "spots"))


def test_spot_tables_of_format_1_still_load(tmp_path):
    encoder = _encoder()
    directory = str(tmp_path / "old" / AGGREGATOR_DIR)
    state = {k: v.contiguous() for k, v in encoder.state_dict().items()}
    storage.write_bytes(storage.join(directory, "aggregator.safetensors"), save_safetensors(state))
    storage.write_json(storage.join(directory, "aggregator.json"),
                       {"format_version": 1, "in_dim": DIM, "model": dataclasses.asdict(MODEL), "spot_column": "s"})
    loaded, meta = load_aggregator(str(tmp_path / "old"))
    assert meta["spot_column"] == "s" and meta["in_dim"] == DIM
    tokens = torch.randn(2, 4, DIM)
    torch.testing.assert_close(loaded(tokens), encoder(tokens))


def test_embed_spots_is_normalised_in_grid_order_and_independent_of_batching():
    tiles = tiles_of(6)
    grids, _ = build_grids(tiles["image_id"], tiles["x"], tiles["y"])
    encoder, embeddings = _encoder(), torch.from_numpy(tiles["embedding"])
    out = embed_spots(encoder, embeddings, grids, batch_size=4)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out, embed_spots(encoder, embeddings, grids, batch_size=1), atol=1e-5)
    one = encoder(embeddings[grids[2].rows].unsqueeze(0))
    np.testing.assert_allclose(out[2], torch.nn.functional.normalize(one, dim=-1)[0].detach().numpy(), atol=1e-5)


def test_device_auto_is_cpu_without_cuda_and_a_missing_cuda_is_named():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(ValueError, match="no CUDA device"):
        resolve_device("cuda")
