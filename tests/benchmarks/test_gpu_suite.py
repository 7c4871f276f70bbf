"""benchmarks/gpu_suite.py keeps working where a lent GPU machine would run it: without Ray or MLflow.

The GPU path itself needs a GPU; its code is the same as the ``--device cpu --quick`` path at
toy sizes, which runs here in a subprocess where the packages that machine lacks (ray, mlflow,
s3fs, imagecodecs, tiffslide) cannot be imported, at module level or inside any function.
"""

import csv
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HIDDEN = ("ray", "mlflow", "s3fs", "imagecodecs", "tiffslide")

RUN = f"""
import runpy, sys

sys.modules.update(dict.fromkeys({HIDDEN!r}))  # None: importing one (or a submodule) raises ImportError
sys.path[:0] = [{str(ROOT / "benchmarks")!r}, {str(ROOT)!r}]
sys.argv = ["gpu_suite.py", *sys.argv[1:]]
runpy.run_path({str(ROOT / "benchmarks" / "gpu_suite.py")!r}, run_name="__main__")
print("imported:", [name for name in {HIDDEN!r} if sys.modules.get(name) is not None])
"""


def test_quick_cpu_run_writes_every_part_without_ray_or_mlflow(tmp_path):
    out = subprocess.run([sys.executable, "-c", RUN, "--device", "cpu", "--quick", "--out", str(tmp_path)],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "imported: []" in out.stdout
    assert "Ray is not timed" in out.stdout and "Pure torch" in out.stdout
    (path,) = tmp_path.glob("gpu_suite_cpu-*core_quick.csv")
    rows = {(r["part"], r["measure"]): r for r in csv.DictReader(path.open())}
    for key in [("pretrain", "in_memory_images_per_s"), ("pretrain", "loader_images_per_s"),
                ("embed", "end_to_end_tiles_per_s"), ("embed", "model_only_tiles_per_s"),
                ("mil", "mean_trial_seconds")]:
        assert float(rows[key]["value"]) > 0, key
    assert 0 <= float(rows["pretrain", "loader_data_wait_share"]["value"]) < 1
    ratio = float(rows["embed", "end_to_end_over_model_only"]["value"])
    e2e, model = (float(rows["embed", m]["value"]) for m in ("end_to_end_tiles_per_s", "model_only_tiles_per_s"))
    assert abs(ratio - e2e / model) < 1e-3 * ratio + 1e-4
    trials = [r for r in csv.DictReader(path.open()) if r["measure"] == "trial_seconds"]
    assert [t["detail"].split(",")[0] for t in trials] == ["abmil", "mean_pool"]
    assert "Ray is not timed" in path.with_suffix(".md").read_text()


def test_gpu_suite_sh_refuses_to_run_without_zarr_or_wheels_to_install(tmp_path):
    fake = tmp_path / "python3"  # a Python that has no zarr
    fake.write_text(f"#!/bin/sh\nexec {sys.executable} -c 'raise SystemExit(1)'\n")
    fake.chmod(0o755)
    script = tmp_path / "benchmarks" / "gpu_suite.sh"
    script.parent.mkdir()
    script.write_text((ROOT / "benchmarks" / "gpu_suite.sh").read_text())
    out = subprocess.run(["bash", str(script)], capture_output=True, text=True, env={"PYTHON": str(fake),
                                                                                      "PATH": "/usr/bin:/bin"})
    assert out.returncode == 2 and "benchmarks/wheels holds no wheels" in out.stderr
