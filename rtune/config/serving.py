"""`rtune serve`'s section: the OpenAI-compatible endpoint on Ray Serve (`serve.*`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from rtune.config.checks import _at_least_one, _one_of
from rtune.errors import UserError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class ServeConfig:
    """How `rtune serve` answers: replicas, batching, limits and who may ask.

    Args:
        num_replicas: Model replicas (each one process holding the model); ignored when max_replicas is set.
        min_replicas: Autoscaling: the fewest replicas (used when max_replicas is set).
        max_replicas: Autoscaling: the most replicas (null: a fixed num_replicas).
        target_ongoing_requests: Autoscaling: requests per replica Serve aims for.
        host: Address the HTTP server binds. 127.0.0.1 unless told otherwise; any other address needs api_key_env.
        port: HTTP port.
        api_key_env: Name of an environment variable holding the API key (the key itself never appears in a
            command line, a config or a log): every request must then carry `Authorization: Bearer <key>`.
        backend: `transformers` (the shared engine, CPU and GPU) or `vllm` (GPU, the optional extra).
        max_batch_size: Sequences a replica decodes together (continuous batching: requests join and leave the
            running batch at any step); 1 turns batching off.
        max_tokens: Cap on a request's max_tokens (larger is a 422).
        max_prompt_tokens: Cap on a prompt's tokens (longer is a 413).
        max_concurrent_requests: Requests in flight per replica; more get 429 (the caller should retry).
        max_adapters_per_replica: LoRA adapters a replica keeps loaded; the least recently used is evicted.
        cpus_per_replica: CPU cores each replica reserves (its torch threads).
        gpus_per_replica: GPUs each replica reserves.
    """

    num_replicas: int = 1
    min_replicas: int = 1
    max_replicas: Optional[int] = None
    target_ongoing_requests: float = 8.0
    host: str = "127.0.0.1"
    port: int = 8000
    api_key_env: Optional[str] = None
    backend: str = "transformers"
    max_batch_size: int = 16
    max_tokens: int = 512
    max_prompt_tokens: int = 2048
    max_concurrent_requests: int = 64
    max_adapters_per_replica: int = 4
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 0.0

    def check(self) -> None:
        _at_least_one({f"serve.{k}": getattr(self, k) for k in (
            "num_replicas", "min_replicas", "max_batch_size", "max_tokens", "max_prompt_tokens",
            "max_concurrent_requests", "max_adapters_per_replica")})
        _one_of("serve.backend", self.backend, ("transformers", "vllm"), "transformers or vllm")
        if not 0 < self.port < 65536:
            raise UserError(f"serve.port must be in 1..65535, got {self.port}")
        if self.max_replicas is not None and self.max_replicas < self.min_replicas:
            raise UserError(f"serve.max_replicas={self.max_replicas} is below serve.min_replicas={self.min_replicas}")
        if self.host not in LOOPBACK and not self.api_key_env:
            raise UserError(f"serve.host={self.host} opens the endpoint beyond this machine: set serve.api_key_env="
                            "<VAR> (an environment variable holding the key) as well, or keep serve.host=127.0.0.1")
        if self.cpus_per_replica < 0 or self.gpus_per_replica < 0:
            raise UserError("serve.cpus_per_replica and serve.gpus_per_replica must be >= 0")
