"""Channel attribution: a screen whose treatment moves only one channel's block is attributed to that channel."""

import numpy as np
import pytest

from sslray.evaluate.channel_attribution import channel_attribution, channel_blocks
from tests.evaluate.profile_fixtures import synthetic_screen


def test_blocks_need_channel_named_features_over_two_channels():
    assert channel_blocks(["DNA_000", "DNA_001", "Mito_000"]) == {"DNA": ["DNA_000", "DNA_001"], "Mito": ["Mito_000"]}
    assert channel_blocks(["emb_000", "emb_001"]) == {}
    assert channel_blocks(["DNA_000", "Cells_AreaShape_Area"]) == {}


@pytest.mark.parametrize("channel", ["ER", "RNA"])
def test_only_the_changed_channel_carries_the_separation(channel):
    df, f = synthetic_screen(channels=("DNA", "ER", "RNA", "Mito"), effect_channels=(channel,), controls_per_batch=8)
    controls = (df["Metadata_pert"] == "DMSO").to_numpy()
    out = channel_attribution(df, f, controls, "Metadata_pert", n_estimators=100)
    assert out["overall"].idxmax() == channel and out["overall"][channel] > 0.6
    assert out["overall"].sum() == pytest.approx(1.0)
    per = out["per_perturbation"]
    assert len(per) == 6 and (per.idxmax(axis=1) == channel).all()
    assert list(per.columns) == ["DNA", "ER", "RNA", "Mito"]


def test_bad_input_is_named():
    df, f = synthetic_screen()
    controls = (df["Metadata_pert"] == "DMSO").to_numpy()
    with pytest.raises(ValueError, match="named <channel>_<index>"):
        channel_attribution(
            df.rename(columns={c: f"f{i}" for i, c in enumerate(f)}), [f"f{i}" for i in range(len(f))], controls
        )
    with pytest.raises(ValueError, match="both control and treated"):
        channel_attribution(df, f, np.zeros(len(df), bool))
    with pytest.raises(ValueError, match=r"perturbation column\(s\) \['Metadata_x'\]"):
        channel_attribution(df, f, controls, "Metadata_x")
