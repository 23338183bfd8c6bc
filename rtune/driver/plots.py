"""Plots the driver writes next to a run's files (PNG, matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

import os
from typing import Optional

from rtune.metrics import read_metrics


def plot_losses(metrics_path: str, out_png: str, title: str) -> Optional[str]:
    """Training and eval loss against step (and, for preference objectives, the held-out reward accuracy
    on a second axis), as a PNG next to the metrics. None if nothing to plot."""
    if not os.path.exists(metrics_path):
        return None
    records = read_metrics(metrics_path)
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    accuracy = [(r["step"], r["eval_reward_accuracy"]) for r in records if "eval_reward_accuracy" in r]
    if not train and not evals:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        ax.plot(*zip(*train), label="train loss", lw=1.2)
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss", lw=1.5)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss" if accuracy else "cross-entropy (nats/token)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if accuracy:
        right = ax.twinx()
        right.plot(*zip(*accuracy), "s--", color="tab:green", label="held-out reward accuracy", lw=1.5)
        right.set_ylim(0, 1.05)
        right.set_ylabel("reward accuracy (chosen > rejected)")
        more_handles, more_labels = right.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    ax.legend(handles, labels, loc="center right")
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
    return out_png
