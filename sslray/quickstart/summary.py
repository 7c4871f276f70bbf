"""What ``sslray quickstart`` found: the probe of the SSL model against its baseline, as summary.json.

Typed so the CLI prints fields rather than picking dict items; the JSON keeps the shape the README
shows (the two scores under their encoders' names, then the run facts).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sslray.credentials import redact_url


@dataclass
class ProbeScores:
    balanced_accuracy: float
    macro_auc: float


@dataclass
class QuickstartSummary:
    model: str  # the SSL encoder's name: "ssl", or the second stage's ("aggregator")
    scores: ProbeScores
    baseline: str  # what it is compared with: "random_init", or "mean_pooling"
    baseline_scores: ProbeScores
    tracking_uri: str
    n_tiles: int
    method: str
    checkpoint: str
    steps: int
    seconds: float
    mil: dict[str, dict[str, float]] | None = field(default=None)  # encoder -> "<head>/<metric>" -> mean

    def __post_init__(self) -> None:
        self.tracking_uri = redact_url(self.tracking_uri)  # printed and written: never a credential

    def to_json(self) -> dict[str, Any]:
        return {self.model: asdict(self.scores), self.baseline: asdict(self.baseline_scores),
                "tracking_uri": self.tracking_uri, "n_tiles": self.n_tiles, "method": self.method,
                "checkpoint": self.checkpoint, "steps": self.steps, "seconds": self.seconds,
                **({"mil": self.mil} if self.mil is not None else {})}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> QuickstartSummary:
        (model, scores), (baseline, base) = [(k, v) for k, v in data.items() if isinstance(v, dict) and k != "mil"]
        facts = {k: v for k, v in data.items() if not isinstance(v, dict)}
        return cls(model=model, scores=ProbeScores(**scores), baseline=baseline,
                   baseline_scores=ProbeScores(**base), mil=data.get("mil"), **facts)

    def write(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2))

    @classmethod
    def read(cls, path: str | Path) -> QuickstartSummary:
        return cls.from_json(json.loads(Path(path).read_text()))

    def headline(self) -> str:
        ours, base = self.scores, self.baseline_scores
        line = (f"linear probe balanced accuracy: {self.model} {ours.balanced_accuracy:.3f} vs {self.baseline} "
                f"{base.balanced_accuracy:.3f} (macro AUC {ours.macro_auc:.3f} vs {base.macro_auc:.3f})")
        if self.mil and self.model in self.mil and self.baseline in self.mil:
            ours_mil, base_mil = self.mil[self.model], self.mil[self.baseline]
            line += "\nslide-level MIL AUC: " + ", ".join(
                f"{key.split('/')[0]} {ours_mil[key]:.3f} vs {base_mil.get(key, float('nan')):.3f}"
                for key in ours_mil if key.endswith("/auc"))
        return line
