"""Second-level SSL: tile embeddings of a spot -> one spot embedding (docs/methods/spot_aggregator.md).

A spot (TMA spot, slide region, any group of tiles sharing ``spot_column``) is laid out on
its tile grid and read by a small ViT with one token per tile and no position embedding,
trained with DINO. Pure torch + numpy + pyarrow: no Ray import.
"""

from sslray.aggregate.grids import SpotGrid, build_grids, random_window
from sslray.aggregate.model import SpotEncoder, SpotModelConfig
from sslray.aggregate.train import (
    AggregateConfig,
    SpotDINOConfig,
    SpotOptimConfig,
    SpotViewConfig,
    embed_spots,
    load_aggregator,
    run_aggregate,
    train_aggregator,
)

# Second-level methods, listed by `sslray methods` next to the tile-level ones.
AGGREGATORS = {"spot_dino": "second-level SSL: a small ViT over each spot's grid of tile embeddings, DINO-trained"}

__all__ = [
    "AGGREGATORS",
    "AggregateConfig",
    "SpotDINOConfig",
    "SpotEncoder",
    "SpotGrid",
    "SpotModelConfig",
    "SpotOptimConfig",
    "SpotViewConfig",
    "build_grids",
    "embed_spots",
    "load_aggregator",
    "random_window",
    "run_aggregate",
    "train_aggregator",
]
