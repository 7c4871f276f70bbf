"""``ProfileConfig``: the defaults a Cell Painting screen gets, and bad keys refused before any work."""

import pytest

from sslray.config import ConfigError, from_dict, load_config
from sslray.profile.config import ProfileConfig
from tests.conftest import ROOT


def test_the_defaults_are_cellpaintssl_s_pipeline_on_control_wells():
    cfg = ProfileConfig(embeddings="e", out="o")
    assert [step["name"] for step in cfg.normalize] == ["variance_filter", "spherize", "mad_robustize"]
    assert cfg.control == "Metadata_control == True" and cfg.level == "well" and cfg.min_foreground == 0.0
    cfg.normalize.append({"name": "tvn"})
    assert len(ProfileConfig(embeddings="e", out="o").normalize) == 3  # each config its own copy


def test_the_shipped_config_loads_with_overrides():
    cfg = load_config(ProfileConfig, ROOT / "configs" / "profile" / "cellpainting.yaml",
                      ["embeddings=e", "out=o", "level=perturbation", "normalize=[]"])
    assert cfg.level == "perturbation" and cfg.normalize == []


@pytest.mark.parametrize("data, message", [
    ({"out": "o"}, "embeddings is required"),
    ({"embeddings": "e", "out": "o", "min_foreground": 2}, "between 0 and 1"),
    ({"embeddings": "e", "out": "o", "level": "plate"}, "level: must be one of"),
    ({"embeddings": "e", "out": "o", "normalize": [{"name": "sphere"}]}, "unknown normalisation step 'sphere'"),
    ({"embeddings": "e", "out": "o", "normalize": [{"name": "spherize", "bye": 1}]}, r"normalize\[0\]"),
])
def test_bad_keys_are_config_errors_naming_them(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(ProfileConfig, data)
