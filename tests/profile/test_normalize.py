"""Each normalisation step against pycytominer (or scikit-learn for TVN) on one small table, and bad input."""

import numpy as np
import pandas as pd
import pytest

from sslray.config import ConfigError
from sslray.profile.normalize import DEFAULT_PIPELINE, NORMALIZERS, apply_pipeline, control_mask, parse_pipeline
from sslray.profile.profiles import PLATE

pycytominer = pytest.importorskip("pycytominer")
CONTROLS = "Metadata_control == True"
FEATURES = [f"f{i}" for i in range(6)]


def _table(seed: int = 0, n_per_plate: int = 12) -> pd.DataFrame:
    """Two plates, 12 wells each, a third of them controls, 6 correlated features with plate offsets."""
    rng = np.random.default_rng(seed)
    rows = []
    for p, offset in (("P1", 0.0), ("P2", 3.0)):
        mix = rng.normal(size=(6, 6))
        values = rng.normal(size=(n_per_plate, 6)) @ mix + offset
        for i in range(n_per_plate):
            rows.append({PLATE: p, "Metadata_Well": f"A{i + 1:02d}", "Metadata_control": i % 3 == 0,
                         **dict(zip(FEATURES, values[i]))})
    return pd.DataFrame(rows)


def _reference(df: pd.DataFrame, by_plate: bool, **kwargs) -> pd.DataFrame:
    meta = [c for c in df.columns if c.startswith("Metadata_")]
    if not by_plate:
        return pycytominer.normalize(df, features=FEATURES, meta_features=meta, **kwargs)
    parts = [pycytominer.normalize(part, features=FEATURES, meta_features=meta, **kwargs)
             for _, part in df.groupby(PLATE, sort=False)]
    return pd.concat(parts).loc[df.index]


@pytest.mark.parametrize("method", ["ZCA-cor", "ZCA"])
@pytest.mark.parametrize("by", [None, PLATE])
def test_spherize_matches_pycytominer(method, by):
    df = _table()
    ours = apply_pipeline(df, [{"name": "spherize", "method": method, "by": by}], CONTROLS)
    ref = _reference(df, by is not None, method="spherize", samples=CONTROLS, spherize_method=method)
    assert np.allclose(ours[FEATURES].to_numpy(), ref[FEATURES].to_numpy(), atol=1e-6)


def test_spherize_matches_pycytominer_with_fewer_controls_than_features():
    df = _table(1, n_per_plate=9)  # 3 controls per plate, 6 controls in all for 6 features: n <= d
    ours = apply_pipeline(df, [{"name": "spherize"}], CONTROLS)
    ref = _reference(df, False, method="spherize", samples=CONTROLS)
    assert np.allclose(ours[FEATURES].to_numpy(), ref[FEATURES].to_numpy(), atol=1e-6)


@pytest.mark.parametrize("fit, samples", [("all", "all"), ("controls", CONTROLS)])
def test_mad_robustize_per_plate_matches_pycytominer(fit, samples):
    df = _table()
    ours = apply_pipeline(df, [{"name": "mad_robustize", "fit": fit}], CONTROLS)
    ref = _reference(df, True, method="mad_robustize", samples=samples)
    assert np.allclose(ours[FEATURES].to_numpy(), ref[FEATURES].to_numpy(), atol=1e-6)


def test_standardize_per_plate_on_controls_matches_pycytominer():
    df = _table()
    ours = apply_pipeline(df, [{"name": "standardize"}], CONTROLS)
    ref = _reference(df, True, method="standardize", samples=CONTROLS)
    assert np.allclose(ours[FEATURES].to_numpy(), ref[FEATURES].to_numpy(), atol=1e-6)


def test_tvn_is_pca_whitening_of_the_controls_then_plate_centring():
    from sklearn.decomposition import PCA

    df = _table(2)
    controls = df["Metadata_control"].to_numpy()
    pca = PCA(whiten=True, n_components=5).fit(df.loc[controls, FEATURES].to_numpy())
    expected = pca.transform(df[FEATURES].to_numpy())
    for plate in ("P1", "P2"):
        rows = (df[PLATE] == plate).to_numpy()
        expected[rows] -= expected[rows & controls].mean(axis=0)
    ours = apply_pipeline(df, [{"name": "tvn", "n_components": 5}], CONTROLS)
    got = ours[[f"PC_{i:03d}" for i in range(5)]].to_numpy()
    signs = np.sign((got * expected).sum(axis=0))  # principal axes are defined up to their sign
    assert np.allclose(got * signs, expected, atol=1e-6)
    assert not set(FEATURES) & set(ours.columns)
    default = apply_pipeline(df, [{"name": "tvn", "center_by": None}], CONTROLS)
    assert default.filter(like="PC_").shape[1] == 6  # min(8 controls - 1, 6 features)
    whitened = default.loc[controls].filter(like="PC_").to_numpy()
    assert np.allclose(np.cov(whitened, rowvar=False), np.eye(6), atol=1e-6)


def test_variance_filter_drops_near_constant_features_and_the_default_pipeline_runs():
    df = _table().assign(f6=1.0, f7=np.linspace(0, 1e-4, 24))
    filtered = apply_pipeline(df, [{"name": "variance_filter"}], CONTROLS)
    assert "f6" not in filtered and "f7" not in filtered and set(FEATURES) <= set(filtered.columns)
    out = apply_pipeline(df, DEFAULT_PIPELINE, CONTROLS)
    assert list(out.columns) == [c for c in df.columns if c not in ("f6", "f7")]
    assert np.isfinite(out[FEATURES].to_numpy()).all()
    assert np.allclose(out.groupby(PLATE)[FEATURES].median().to_numpy(), 0, atol=1e-9)


def test_an_empty_pipeline_leaves_the_profiles_as_they_are():
    df = _table()
    assert apply_pipeline(df, [], "no_such_column == 1").equals(df)  # no step fits on controls: query unused


@pytest.mark.parametrize("step", [{"name": "spherize", "by": PLATE}, {"name": "standardize"},
                                  {"name": "mad_robustize", "fit": "controls"}, {"name": "tvn"}])
def test_a_plate_without_control_wells_is_an_error_naming_the_plate_and_step(step):
    df = _table()
    df.loc[df[PLATE] == "P2", "Metadata_control"] = False
    with pytest.raises(ValueError, match=f"{step['name']}: Metadata_Plate P2 has no control profiles"):
        apply_pipeline(df, [step], CONTROLS)


@pytest.mark.parametrize("step", ["spherize", "standardize", "mad_robustize", "tvn"])
def test_a_constant_feature_without_variance_filter_is_an_error_naming_it(step):
    df = _table().assign(f_const=2.0)
    with pytest.raises(ValueError, match=rf"{step}: 1 feature\(s\) are constant .*\['f_const'\]; put variance_filter"):
        apply_pipeline(df, [{"name": step}], CONTROLS)


def test_control_queries_that_select_nothing_or_fail_are_errors():
    df = _table()
    with pytest.raises(ValueError, match="selects no profile"):
        control_mask(df, "Metadata_Well == 'Z99'")
    with pytest.raises(ValueError, match="control query 'Metadata_perturbation == 1' fails"):
        control_mask(df, "Metadata_perturbation == 1")
    assert control_mask(df, CONTROLS).sum() == 8


def test_unknown_steps_and_options_are_config_errors_naming_them():
    assert NORMALIZERS.names() == ["mad_robustize", "spherize", "standardize", "tvn", "variance_filter"]
    with pytest.raises(ConfigError, match="unknown normalisation step 'whiten'"):
        parse_pipeline([{"name": "whiten"}])
    with pytest.raises(ConfigError, match=r"normalize\[0\] \(spherize\).*'eps'"):
        parse_pipeline([{"name": "spherize", "eps": 1}])
    with pytest.raises(ConfigError, match="method: must be one of"):
        parse_pipeline([{"name": "spherize", "method": "PCA"}])
    with pytest.raises(KeyError, match="already registered"):
        NORMALIZERS.register("spherize")(NORMALIZERS.get("spherize"))
