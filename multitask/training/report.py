"""The evaluation report written beside a checkpoint: metrics JSON, a markdown summary and PNG plots."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import ConfusionMatrixDisplay

HISTORY_FILE = "history.json"
"""Per-epoch training loss and validation scores, kept so that a later step (WiSE-FT) can redraw the curves."""


def plot_confusion_matrix(matrix: Sequence[Sequence[int]], labels: Sequence[str], title: str, path: Path) -> Path:
    """Row-normalised confusion matrix with counts; rows are true labels, columns predictions."""
    counts = np.asarray(matrix, dtype=float)
    rates = counts / np.clip(counts.sum(axis=1, keepdims=True), 1, None)
    size = 1.2 + 0.8 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    display = ConfusionMatrixDisplay(rates, display_labels=list(labels)).plot(
        ax=ax,
        cmap="Blues",
        xticks_rotation=35,
        colorbar=False,
        im_kw={"vmin": 0.0, "vmax": 1.0},
        text_kw={"fontsize": 8},
    )
    for (i, j), text in np.ndenumerate(display.text_):  # each cell: its count and its share of the true label
        text.set_text(f"{int(counts[i, j])}\n{rates[i, j]:.0%}")
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.colorbar(display.im_, ax=ax, fraction=0.046, label="share of the true label")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_training_curves(history: list[dict], path: Path) -> Path:
    """Per-epoch training loss and validation macro-F1 of every task."""
    epochs = [entry["epoch"] for entry in history]
    tasks = sorted({task for entry in history for task in entry["validation_macro_f1"]})
    fig, (loss_ax, f1_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for task in tasks:
        loss_ax.plot(epochs, [e["train_loss"].get(task, np.nan) for e in history], marker="o", label=task)
        f1_ax.plot(epochs, [e["validation_macro_f1"][task] for e in history], marker="o", label=task)
    f1_ax.plot(epochs, [e["validation_mean_macro_f1"] for e in history], "k--", marker="s", label="mean")
    loss_ax.set(title="training loss (mean per epoch)", xlabel="epoch", ylabel="cross-entropy")
    f1_ax.set(title="validation macro-F1", xlabel="epoch", ylabel="macro-F1")
    for ax in (loss_ax, f1_ax):
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_xticks(epochs)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_wise_ft(wise_ft: dict, path: Path) -> Path:
    """Each task's validation macro-F1 over the WiSE-FT alphas, the kept alpha and the tolerance band marked."""
    scores = {float(alpha): by_task for alpha, by_task in wise_ft["validation_macro_f1"].items()}
    alphas = sorted(scores)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for task in scores[1.0]:
        line = ax.plot(alphas, [scores[a][task] for a in alphas], marker="o", label=task)[0]
        ax.axhline(scores[1.0][task] - wise_ft["tolerance"], color=line.get_color(), linestyle=":", linewidth=1)
    ax.axvline(wise_ft["alpha"], color="k", linestyle="--", label=f"kept: alpha {wise_ft['alpha']}")
    ax.set(
        title="WiSE-FT: validation macro-F1 (dotted: alpha 1.0 minus the tolerance)",
        xlabel="alpha (0 = pre-trained encoder, 1 = fine-tuned)",
        ylabel="macro-F1",
    )
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(
    directory: Path,
    metrics: dict[str, dict[str, dict]],
    labels: dict[str, Sequence[str]],
    history: list[dict] | None = None,
    calibration: dict | None = None,
    wise_ft: dict | None = None,
) -> Path:
    """Write metrics.json, history.json, report.md and the plots into `directory`; metrics are
    {task: {split: metrics}}."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if history:
        (directory / HISTORY_FILE).write_text(json.dumps(history, indent=2) + "\n")
    lines = ["# Evaluation report", ""]
    lines += [
        "| task | split | examples | accuracy | macro-F1 | macro-recall | ECE |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for task, splits in metrics.items():
        for split, m in splits.items():
            lines.append(
                f"| {task} | {split} | {m['examples']} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} "
                f"| {m['macro_recall']:.4f} | {m['ece']:.4f} |"
            )
    without_test = [task for task, splits in metrics.items() if "test" not in splits]
    if without_test:
        note = (
            f"**No test split for {', '.join(without_test)}**: the numbers above come from the validation split, the "
            "one that chose the kept epoch and fitted the calibration, so they are optimistic. Hold out a test split "
            "(`data.<task>.test` in the config) for an unbiased estimate."
        )
        lines += ["", note]
    if wise_ft:
        plot_wise_ft(wise_ft, directory / "wise_ft.png")
        lines += ["", "## WiSE-FT (alpha chosen on validation)", ""]
        lines += [
            (
                f"Kept alpha **{wise_ft['alpha']}**: the smallest whose every task's validation macro-F1 is within "
                f"{wise_ft['tolerance']} of alpha 1.0 (the fine-tuned encoder)."
            ),
            "",
        ]
        tasks = list(wise_ft["validation_macro_f1"]["1.0"])
        lines += ["| alpha | " + " | ".join(tasks) + " |", "|---:|" + "---:|" * len(tasks)]
        for alpha, by_task in wise_ft["validation_macro_f1"].items():
            lines.append(f"| {alpha} | " + " | ".join(f"{by_task[t]:.4f}" for t in tasks) + " |")
        lines += ["", "![WiSE-FT](wise_ft.png)"]
    if calibration:
        lines += ["", "## Calibration (temperature scaling on validation)", ""]
        lines += ["| task | temperature | ECE before | ECE after |", "|---|---:|---:|---:|"]
        for task, c in calibration.items():
            lines.append(f"| {task} | {c['temperature']:.3f} | {c['ece_before']:.4f} | {c['ece_after']:.4f} |")
    for task, splits in metrics.items():
        for split, m in splits.items():
            name = f"confusion_{task}_{split}.png"
            plot_confusion_matrix(m["confusion_matrix"], labels[task], f"{task} ({split})", directory / name)
            lines += ["", f"## {task} / {split}", "", "| class | precision | recall | F1 | support |"]
            lines.append("|---|---:|---:|---:|---:|")
            for label, row in m["per_class"].items():
                lines.append(
                    f"| {label} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | {row['support']} |"
                )
            lines += ["", f"![confusion matrix]({name})"]
    if history:
        plot_training_curves(history, directory / "training_curves.png")
    if (directory / "training_curves.png").is_file():  # kept from the training run when WiSE-FT is applied later
        lines += ["", "## Training curves", "", "![training curves](training_curves.png)"]
    (directory / "report.md").write_text("\n".join(lines) + "\n")
    return directory / "report.md"
