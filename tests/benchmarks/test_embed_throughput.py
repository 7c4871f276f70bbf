"""benchmarks/embed_throughput.py at toy sizes: every leg embeds the same tiles, and the CSV's
ratios are each pipeline's tiles/s over the model-only baseline's."""

import csv
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _benchmark():
    spec = importlib.util.spec_from_file_location("embed_throughput", ROOT / "benchmarks" / "embed_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.ray
def test_quick_run_embeds_the_same_tiles_on_every_leg(ray_session, tmp_path):
    _benchmark().main(["--model", "vit_tiny_patch16_224", "--image-size", "32", "--tile-size", "64", "--tiles", "6",
                       "--slides", "2", "--batch-size", "4", "--repeats", "1", "--device", "test",
                       "--out", str(tmp_path)])
    (path,) = tmp_path.glob("embed_throughput_test_ray*_torch*.csv")
    rows = {r["path"].split(":")[0].split(" ")[0]: r for r in csv.DictReader(path.open())}
    assert {"model-only", "store", "slides"} <= set(rows)
    baseline = float(rows["model-only"]["tiles_per_s"])
    for leg in ("store", "slides"):
        row = rows[leg]
        assert int(row["tiles"]) == 6  # the rows run_embed wrote: the slides' tissue tiles, as ingested
        rate = float(row["tiles_per_s"])
        assert rate == pytest.approx(6 / float(row["seconds"]), rel=0.01)
        assert float(row["ratio_vs_model_only"]) == pytest.approx(rate / baseline, rel=0.01, abs=1e-4)
        assert 0 < float(row["tiles_per_s_incl_ray_start"]) <= rate
