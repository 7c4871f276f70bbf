from dataclasses import dataclass, field

import pytest

from sslray.config import ConfigError, apply_override, flatten, from_dict, load_config, to_dict


@dataclass
class Inner:
    steps: int = 10
    lr: float = 0.1
    scale: tuple[float, float] = (0.4, 1.0)


@dataclass
class Outer:
    name: str = "run"
    flag: bool = False
    maybe: int | None = None
    inner: Inner = field(default_factory=Inner)


def test_yaml_then_overrides_win(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: a\ninner:\n  steps: 5\n")
    cfg = load_config(Outer, path, ["inner.steps=7", "inner.lr=1e-3", "flag=true"])
    assert cfg.name == "a" and cfg.inner.steps == 7 and cfg.inner.lr == pytest.approx(1e-3) and cfg.flag is True


def test_unknown_key_is_named_with_its_path():
    with pytest.raises(ConfigError, match=r"inner\.'stepz'|'stepz'") as err:
        from_dict(Outer, {"inner": {"stepz": 3}})
    assert "inner" in str(err.value) and "steps" in str(err.value)


def test_wrong_type_names_the_dotted_key():
    with pytest.raises(ConfigError, match=r"inner\.steps: expected an integer"):
        load_config(Outer, None, ["inner.steps=abc"])
    with pytest.raises(ConfigError, match=r"flag: expected true/false"):
        from_dict(Outer, {"flag": "yes please"})


def test_tuple_and_optional_round_trip():
    cfg = from_dict(Outer, {"maybe": None, "inner": {"scale": [0.2, 0.5]}})
    assert cfg.inner.scale == (0.2, 0.5) and cfg.maybe is None
    assert from_dict(Outer, to_dict(cfg)) == cfg


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="key.sub=value"):
        apply_override({}, "no-equals-sign")
    data = {"inner": 3}
    with pytest.raises(ConfigError, match="not a section"):
        apply_override(data, "inner.steps=2")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml does not exist"):
        load_config(Outer, tmp_path / "nope.yaml")


def test_flatten_for_mlflow_params():
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": None}) == {"a.b": 1, "a.c": "[1, 2]", "d": None}


def test_shipped_configs_load():
    from pathlib import Path

    from sslray.evaluate.protocols import get_protocol
    from sslray.train.config import PretrainConfig

    root = Path(__file__).resolve().parents[1] / "configs"
    for path in sorted(root.glob("methods/*.yaml")) + [root / "quickstart.yaml"]:
        load_config(PretrainConfig, path, ["store=somewhere"])
    for path in sorted(root.glob("evaluate/*.yaml")):  # each protocol's file is named after it
        load_config(get_protocol(path.stem).Config, path, ["embeddings=somewhere"])
    from sslray.features.run import ImportConfig

    load_config(ImportConfig, root / "features" / "import.yaml", ["src=somewhere", "out=elsewhere"])



def test_quickstart_yaml_is_the_quickstart_recipe():
    """configs/quickstart.yaml documents exactly what `sslray quickstart` trains."""
    from pathlib import Path

    from sslray.config import read_yaml
    from sslray.quickstart import quickstart_batch_size, quickstart_recipe, quickstart_steps
    from sslray.train.config import PretrainConfig

    batch = quickstart_batch_size(768)
    recipe = quickstart_recipe(64, "dino", quickstart_steps(768, batch), batch, 768)
    shipped = read_yaml(Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml")
    assert from_dict(PretrainConfig, {**shipped, "store": "s"}) == from_dict(PretrainConfig, {**recipe, "store": "s"})
