"""The profiling pictures: each a PNG whose title (in its metadata) says what it shows."""

import pandas as pd
from PIL import Image

from sslray.evaluate.profiling_pictures import channel_bars, map_vs_pvalue, profiles_map
from tests.evaluate.profile_fixtures import synthetic_screen


def title(path):
    return Image.open(path).info["Title"]


def test_the_profiles_map_has_a_panel_per_column_the_table_has(tmp_path):
    df, f = synthetic_screen()
    path = profiles_map(
        df, f, {"MoA": "Metadata_moa", "plate": "Metadata_Plate", "batch": "Metadata_nope"}, str(tmp_path)
    )
    assert path.endswith("profiles_map.png") and title(path).startswith("Well profiles (")
    assert Image.open(path).size[0] == 1000  # two panels of 5 inches at 100 dpi


def test_map_vs_pvalue_counts_the_active_perturbations(tmp_path):
    maps = [
        {"perturbation": "a", "mean_average_precision": 0.9, "p_value": 0.001, "below_corrected_p": True},
        {"perturbation": "b", "mean_average_precision": 0.2, "p_value": 0.6, "below_corrected_p": False},
    ]
    assert title(map_vs_pvalue(maps, 0.05, str(tmp_path))) == "Phenotypic activity: 1 of 2 perturbations"


def test_channel_bars_with_and_without_the_per_perturbation_panel(tmp_path):
    overall = pd.Series({"DNA": 0.7, "ER": 0.3})
    per = pd.DataFrame({"DNA": [0.8, 0.6], "ER": [0.2, 0.4]}, index=["c1", "c2"])
    wide = Image.open(channel_bars(overall, per, str(tmp_path))).size[0]
    narrow = Image.open(channel_bars(overall, per.iloc[:0], str(tmp_path))).size[0]
    assert wide > narrow and title(str(tmp_path / "channel_attribution.png")) == "Channel attribution"
