"""The grids run's plan and data facts (the Ray Train run itself: tests/aggregate/test_run.py)."""

import numpy as np
import pytest

from sslray.aggregate.config import pretrain_config
from sslray.aggregate.fit import grid_plan
from sslray.config import ConfigError
from sslray.methods.base import EMBEDDING_GRIDS
from tests.aggregate.tables import config_obj


def test_the_plan_trains_on_grids_of_the_embeddings_table_with_every_spot_in_the_buffer():
    cfg = pretrain_config(config_obj(steps=None, epochs=3, batch_size=4), n_spots=10, use_gpu=False)
    plan = grid_plan(cfg, np.zeros((10, 5, 5, 12), np.float32))
    assert plan.input_kind == EMBEDDING_GRIDS and plan.input_column == "grid"
    assert plan.steps_per_epoch == 2 and plan.total_steps == 6 and plan.shuffle_buffer_tiles == 10
    assert plan.data.in_chans == 12 and plan.data.lineage.store == cfg.store
    assert plan.encoder.name == "spot_encoder" and plan.encoder.kwargs["dim"] == 16


def test_too_few_spots_for_a_batch_is_a_config_error():
    cfg = pretrain_config(config_obj(num_workers=2), n_spots=4, use_gpu=False)
    with pytest.raises(ConfigError, match="the embeddings table .* gives 3 training samples"):
        grid_plan(cfg, np.zeros((3, 2, 2, 12), np.float32))
