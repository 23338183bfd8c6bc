"""Plots the driver writes next to a run's files (PNG, matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

from rtune.metrics import read_metrics


def plot_losses(metrics_path: str, out_png: str, title: str) -> Optional[str]:
    """Training and eval loss against step, and on a second axis the shares that rise as a run learns: held-out
    reward accuracy (preference objectives) and eval_pass@k (trainer.eval_generate_every_steps). A PNG next to
    the metrics; None if nothing to plot."""
    if not os.path.exists(metrics_path):
        return None
    records = read_metrics(metrics_path)
    if any("reward" in r for r in records):
        return plot_rewards(records, out_png, title)
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    shares = {"held-out reward accuracy": "eval_reward_accuracy",
              **{f"eval {k[5:]}": k for k in sorted({k for r in records for k in r if k.startswith("eval_pass@")})}}
    curves = {label: [(r["step"], r[key]) for r in records if key in r] for label, key in shares.items()}
    curves = {label: points for label, points in curves.items() if points}
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
    ax.set_ylabel("loss" if "held-out reward accuracy" in curves else "cross-entropy (nats/token)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if curves:
        right = ax.twinx()
        for (label, points), color in zip(curves.items(), ("tab:green", "tab:purple", "tab:brown", "tab:olive")):
            right.plot(*zip(*points), "s--", color=color, label=label, lw=1.5)
        right.set_ylim(0, 1.05)
        right.set_ylabel("share of held-out pairs / tasks")
        more_handles, more_labels = right.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    ax.legend(handles, labels, loc="center right")
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
    return out_png


def plot_rewards(records: List[Dict[str, Any]], out_png: str, title: str) -> Optional[str]:
    """Online RL: the training reward (each logged window's mean) and eval_reward against step; completion length on a
    second axis (a policy that learns to stop early, or to ramble, shows there first)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["step"], r["reward"]) for r in records if "reward" in r]
    evals = [(r["step"], r["eval_reward"]) for r in records if "eval_reward" in r]
    lengths = [(r["step"], r["completion_tokens"]) for r in records if "completion_tokens" in r]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot(*zip(*train), label="reward (training rollouts)", lw=1.2)
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval_reward (held-out prompts)", lw=1.5)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("mean reward")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    right = ax.twinx()
    right.plot(*zip(*lengths), ":", color="tab:gray", label="tokens per completion", lw=1.2)
    right.set_ylabel("tokens per completion")
    handles, labels = ax.get_legend_handles_labels()
    more_handles, more_labels = right.get_legend_handles_labels()
    ax.legend(handles + more_handles, labels + more_labels, loc="lower right")
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
    return out_png


def plot_pass_at_k(summaries: List[Dict[str, Any]], keys: List[str], out_png: str, title: str) -> Optional[str]:
    """pass@k for each k (bars), one group of bars per model: several checkpoints of a run side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in keys if any(k in s for s in summaries)]
    if not keys:
        return None
    width = 0.8 / len(summaries)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(keys) + 0.4 * len(summaries)), 4), dpi=110)
    for i, summary in enumerate(summaries):
        values = [summary.get(k, 0.0) for k in keys]
        bars = ax.bar([j + i * width for j in range(len(keys))], values, width, label=_short(summary["model"]))
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=8)
    ax.set_xticks([j + width * (len(summaries) - 1) / 2 for j in range(len(keys))], keys)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"share of {summaries[0].get('tasks', '?')} tasks")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
    return out_png


def _short(model: str) -> str:
    parts = model.rstrip("/").split("/")
    return "/".join(parts[-2:]) if len(parts) > 1 and parts[-1].startswith("checkpoint_") else parts[-1]
