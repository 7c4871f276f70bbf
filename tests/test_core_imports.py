"""The compute core runs without the platform: methods, models and the training step import and
train with torch, timm, numpy and safetensors alone (docs/architecture.md, "The rules").

A lent GPU machine's stock image has torch and timm but no Ray, zarr, mlflow or fsspec; this is
what lets it time the real training code. The subprocess hides those packages with an import
hook placed first on ``sys.meta_path``, so an import of any of them, at module level or inside
a function the step calls, fails as if the package were not installed.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HIDDEN = ("ray", "zarr", "mlflow", "s3fs", "fsspec")

HIDE = f"""
import sys

class Hidden:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {HIDDEN!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (hidden by the test)", name=name)
        return None

sys.meta_path.insert(0, Hidden())
sys.path.insert(0, {str(ROOT)!r})
"""

TRAIN_EVERY_METHOD = """
import torch
import sslray.methods, sslray.models.backbones, sslray.train.loop
from tests.methods.test_registry import TINY, _tiny_step
from sslray.methods import METHODS

torch.set_num_threads(1)
assert set(METHODS) == set(TINY)
for name in sorted(TINY):
    step, raw = _tiny_step(name, 2)
    assert torch.isfinite(torch.tensor(step(raw, 0).loss)), name
print(sorted(set(sys.modules) & set({hidden!r})), "trained", len(TINY))
"""


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", HIDE + code], capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_the_hook_really_hides_the_platform():
    out = _run("import sslray.storage")
    assert out.returncode != 0 and "No module named 'fsspec' (hidden by the test)" in out.stderr


def test_every_method_builds_and_steps_with_the_platform_hidden():
    out = _run(TRAIN_EVERY_METHOD.format(hidden=HIDDEN))
    from sslray.methods import METHODS

    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == f"[] trained {len(METHODS)}"  # nothing hidden was imported, every method stepped
