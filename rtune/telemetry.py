"""Training metrics as Ray metrics, so the Ray dashboard, Prometheus and Grafana can show them.

Rank 0 sets one gauge per quantity, tagged with the run name; Ray's metrics agent on each node exports
them in Prometheus format (with a `ray_` prefix) at the node's metrics export port, next to Ray's own
metrics. `deploy/grafana/rtune_dashboard.json` plots them per run.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

# (name, description, key in a metrics.jsonl record). Prometheus shows each as ray_<name>{run="..."}.
GAUGES = (
    ("rtune_step", "Optimizer steps completed.", "step"),
    ("rtune_train_loss", "Training loss (nats/token), averaged over the last logging window.", "loss"),
    ("rtune_eval_loss", "Validation loss (nats/token) at the last evaluation.", "eval_loss"),
    ("rtune_tokens_per_second", "Non-padding tokens per second over all workers, last logging window.",
     "tokens_per_s"),
    ("rtune_learning_rate", "Learning rate of the last logged step.", "lr"),
    ("rtune_mfu", "Model FLOPs utilisation (fraction of the device peak), last logging window.", "mfu"),
    ("rtune_restarts", "Times the worker group started again for this run (worker failures and resumes).",
     "restarts"),
    ("rtune_eval_reward_accuracy", "Preference objectives: share of held-out pairs whose chosen reply gets the "
     "higher reward, at the last evaluation.", "eval_reward_accuracy"),
    ("rtune_eval_reward_margin", "Preference objectives: mean reward of the chosen minus the rejected reply on "
     "held-out pairs, at the last evaluation.", "eval_reward_margin"),
    ("rtune_eval_pass_at_1", "trainer.eval_generate_every_steps: share of the benchmark's sampled completions "
     "that pass their checks (pass@1), at the last generation evaluation.", "eval_pass@1"),
    ("rtune_reward", "Online RL: mean reward of the training rollouts, last logging window.", "reward"),
    ("rtune_eval_reward", "Online RL: mean reward on held-out prompts, at the last evaluation.", "eval_reward"),
)
# `rtune serve`'s metrics (set by its ingress): (name, kind, description). Prometheus adds _total to counters and
# _bucket / _sum / _count to histograms.
SERVE_METRICS = (
    ("rtune_serve_requests", "counter", "HTTP requests answered, by status."),
    ("rtune_serve_latency_s", "histogram", "Seconds from a request's arrival to its last byte."),
    ("rtune_serve_generated_tokens", "counter", "Completion tokens generated."),
    ("rtune_serve_in_flight", "gauge", "Requests being answered now."),
)
SERVE_LATENCY_BUCKETS_S = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]
TAG_KEYS = ("run",)


class RayMetrics:
    """Gauges for one run, set from rank 0's metric records; a no-op where Ray metrics are unavailable."""

    def __init__(self, run_name: str, enabled: bool = True):
        self.tags = {"run": run_name}
        self.gauges: Dict[str, Any] = {}
        if not enabled:
            return
        try:
            from ray.util.metrics import Gauge

            self.gauges = {key: Gauge(name, description=description, tag_keys=TAG_KEYS)
                           for name, description, key in GAUGES}
        except Exception as err:  # metrics are a view, never a reason for training to fail
            print(f"[rtune] warning: Ray metrics are off ({type(err).__name__}: {err})", flush=True)

    def update(self, record: Dict[str, Any]) -> None:
        for key, gauge in self.gauges.items():
            value: Optional[float] = record.get(key)
            if value is not None:
                gauge.set(float(value), tags=self.tags)
