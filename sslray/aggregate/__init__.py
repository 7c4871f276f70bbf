"""Second-level SSL: tile embeddings of a spot -> one spot embedding (docs/methods/spot_aggregator.md).

A spot (TMA spot, slide region, any group of tiles sharing ``spot_column``) is laid out on
its tile grid and read by a small ViT with one token per tile and no position embedding,
trained with DINO: the registered method ``spot_dino`` (``sslray.methods.spot_dino``), run on
Ray Train by ``run_aggregate``. Importing this package does not import Ray.
"""

from sslray.aggregate.aggregator import embed_spots, load_aggregator
from sslray.aggregate.config import AggregateConfig
from sslray.aggregate.grids import SpotGrid, build_grids, random_window
from sslray.aggregate.run import run_aggregate
from sslray.methods import METHODS
from sslray.methods.base import EMBEDDING_GRIDS
from sslray.methods.spot_dino import SpotDINOConfig
from sslray.methods.spot_views import SpotViewConfig
from sslray.models.spot_encoder import SpotEncoder, SpotModelConfig

# The registered methods that train on spot grids (sslray aggregate), not on tiles.
AGGREGATORS = {name: METHODS.get(name).summary for name in METHODS.names()
               if METHODS.get(name).input_kind == EMBEDDING_GRIDS}

__all__ = [
    "AGGREGATORS",
    "AggregateConfig",
    "SpotDINOConfig",
    "SpotEncoder",
    "SpotGrid",
    "SpotModelConfig",
    "SpotViewConfig",
    "build_grids",
    "embed_spots",
    "load_aggregator",
    "random_window",
    "run_aggregate",
]
