"""rollout.engine=actors, from a learner rank's side: its prompts go to actor `rank mod num_actors`, and the
learner's weights go to every actor every `rollout.sync_every_steps` steps (and before the first rollout).

Ray orders the calls of one caller to one actor, not the calls of different callers, so a sync is a barrier: rank
0 puts the weights in the object store once, every actor loads them (the load waits for the generation it is
running), and only then does any rank ask for rollouts made with them. With `rollout.max_staleness=1` the source
asks for step s+1's groups before it trains step s: they come from the weights of the sync before step s.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

from rtune.engine import Completion, Sampling
from rtune.worker.collectives import all_reduce_sum


class ActorRollouts:
    """The actor pool's client on one learner rank.

    Args:
        handles: The pool's actors (started by the driver, `rollout_pool.py`).
        weights: Returns the learner's trainable weights on rank 0 (None elsewhere); a collective.
    """

    def __init__(self, handles: Sequence[Any], rank: int, sync_every_steps: int, max_staleness: int,
                 weights: Callable[[], Optional[Dict[str, Any]]], device):
        self.handles, self.rank, self.every = list(handles), rank, sync_every_steps
        self.weights, self.device = weights, device
        self.actor = self.handles[rank % len(self.handles)]
        self.ahead = max_staleness == 1
        self.pending: Dict[int, Any] = {}
        self.synced: Optional[int] = None  # the step whose weights the actors hold
        self.stats: Dict[str, float] = {}

    def sync(self, step: int) -> None:
        """Send the weights the learner has before `step` when due (always the first time); every rank calls it."""
        import time

        import ray

        if self.synced is not None and step % self.every:
            self.stats["sync_s"] = 0.0
            return
        started = time.perf_counter()
        weights = self.weights()
        if self.rank == 0:
            ref = ray.put(weights)
            ray.get([h.load_weights.remote(ref, step) for h in self.handles])
        all_reduce_sum([0.0], self.device)  # the barrier: no rank asks for rollouts before every actor has them
        self.synced = step
        self.stats["sync_s"] = time.perf_counter() - started

    def request(self, step: int, prompt_ids: List[List[int]], sampling: Sampling) -> None:
        self.pending[step] = self.actor.generate.remote(prompt_ids, sampling)

    def collect(self, step: int, prompt_ids: List[List[int]], sampling: Sampling) -> List[List[Completion]]:
        import ray

        ref = self.pending.pop(step, None)
        if ref is None:
            ref = self.actor.generate.remote(prompt_ids, sampling)
        completions, version, seconds = ray.get(ref)
        self.stats.update({"staleness": float(step - version), "actor_generate_s": seconds})
        return completions
