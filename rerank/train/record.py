"""The training record: settings, data counts, what was filtered out, the loss curve, times and versions.

Written next to the model as ``training_record.json`` and ``loss.png``.
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rerank.errors import DataError


@dataclass
class TrainingRecord:
    dataset: str
    settings: dict[str, Any]
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per source: examples made and items filtered out (e.g. ``roundtrip_dropped``)."""
    loss: list[tuple[int, float]] = field(default_factory=list)
    """(step, training loss) as logged by the trainer."""
    seconds: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    model_dir: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    loss_by_source: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    """(step, loss) of each data source's batches, when several are trained on (each has its own loss)."""

    def save(self, folder: str | Path) -> Path:
        """Write ``training_record.json`` and ``loss.png`` into ``folder``; returns the JSON path."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "training_record.json"
        path.write_text(json.dumps(asdict(self), indent=2, default=str), encoding="utf-8")
        if self.loss:
            plot_loss(self.loss_by_source or {"": self.loss}, folder / "loss.png",
                      f"{self.dataset}: {', '.join(self.settings.get('data', []))}")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> TrainingRecord:
        """The record saved in ``folder``; DataError when its file is damaged."""
        path = Path(folder) / "training_record.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            data["loss"] = [tuple(x) for x in data.get("loss", [])]
            data["loss_by_source"] = {n: [tuple(x) for x in c] for n, c in data.get("loss_by_source", {}).items()}
            return cls(**data)
        except (ValueError, TypeError, AttributeError) as e:  # bad JSON or UTF-8, not a record's fields
            raise DataError(f"{path} is damaged ({type(e).__name__}: {e}); delete it or choose another output folder") from None


def plot_loss(curves: dict[str, list[tuple[int, float]]], path: Path, title: str) -> None:
    """One line per curve, labelled by its name where it has one (a data source)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, points in curves.items():
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="." if len(points) < 50 else None, label=name or None)
    if any(curves):
        ax.legend(fontsize=8)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("rerank", "sentence-transformers", "transformers", "torch", "datasets", "faiss-cpu"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out
