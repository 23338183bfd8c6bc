"""`rtune serve`: a checkpoint (and LoRA adapters of other runs on the same base) as an OpenAI-compatible endpoint on
Ray Serve.

    HTTP (127.0.0.1:8000) -> Ingress (FastAPI: key check, request checks, 429 when full, SSE streaming, metrics)
                          -> ModelReplica x serve.num_replicas (serve_replica.py: the shared engine with continuous
                             batching; @serve.multiplexed loads an adapter on first use and evicts the least recently
                             used)

The ingress asks the replicas through a deployment handle with `multiplexed_model_id` set to the adapter's name,
so Serve routes a request to a replica that has its adapter loaded. `serve.backend=vllm` is another application:
ray.serve.llm's OpenAI server over vLLM (serve_vllm.py).
(No `from __future__ import annotations` here: FastAPI reads the routes' `Request` annotations at runtime.)
"""

import hashlib
import hmac
import os
import time
from dataclasses import asdict, fields
from typing import Any, Dict, List, Optional, Tuple

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve

from rtune.config import RTuneConfig
from rtune.config.serving import ServeConfig
from rtune.driver.serve_replica import BASE, ModelReplica
from rtune.errors import UserError
from rtune.telemetry import SERVE_LATENCY_BUCKETS_S, SERVE_METRICS
from rtune.serving import ApiError, GenerationRequest, StreamChunks, parse_json, parse_request, response, usage

APP = "rtune"


# The ingress lives at module level: Serve pickles the FastAPI app, which must reach its routes' class by reference.
api = FastAPI(title="rtune", docs_url=None, redoc_url=None, openapi_url=None)


@api.exception_handler(Exception)
async def _any_error(request, err):  # noqa: ANN001 - a last resort: an error body, never a traceback
    return JSONResponse(ApiError(500, f"internal error ({type(err).__name__})", kind="server_error").body(),
                        status_code=500)


class Ingress:
    """Checks, routes and answers every HTTP request; never a traceback."""

    def __init__(self, replicas, models: Dict[str, str], settings: Dict[str, Any]):
        from ray.util import metrics

        from rtune.model import load_tokenizer_from

        self.replicas, self.settings = replicas, settings
        self.tokenizers = {name: load_tokenizer_from(path, trust_remote_code=False)
                           for name, path in models.items()}
        self.base_name = next(iter(models))
        self.key_digest = settings.get("api_key_sha256")  # the key itself never leaves the driver
        self.in_flight = 0
        self.limit = settings["max_concurrent_requests"] * settings["replicas"]
        about = {name: description for name, _, description in SERVE_METRICS}
        self.requests = metrics.Counter("rtune_serve_requests", about["rtune_serve_requests"],
                                        tag_keys=("status",))
        self.latency = metrics.Histogram("rtune_serve_latency_s", about["rtune_serve_latency_s"],
                                         boundaries=SERVE_LATENCY_BUCKETS_S)
        self.tokens = metrics.Counter("rtune_serve_generated_tokens", about["rtune_serve_generated_tokens"])
        self.queue = metrics.Gauge("rtune_serve_in_flight", about["rtune_serve_in_flight"])

    def _authorize(self, request: Request) -> None:
        if self.key_digest is None:
            return
        given = request.headers.get("authorization", "").removeprefix("Bearer ").encode()
        if not hmac.compare_digest(hashlib.sha256(given).hexdigest(), self.key_digest):
            raise ApiError(401, "missing or wrong API key: send Authorization: Bearer <key>",
                           kind="authentication_error")

    def _encode(self, req: GenerationRequest) -> List[int]:
        from rtune.engine import encode_prompts

        if req.model not in self.tokenizers:
            raise ApiError(404, f"model {req.model!r} is not served here: GET /v1/models lists "
                                f"{', '.join(self.tokenizers)}", kind="not_found_error", param="model")
        tokenizer = self.tokenizers[req.model]
        try:
            ids = encode_prompts(tokenizer, [req.prompt], chat=req.chat)[0]
        except UserError as err:
            raise ApiError(400, str(err), param="messages" if req.chat else "prompt") from None
        if len(ids) > self.settings["max_prompt_tokens"]:
            raise ApiError(413, f"the prompt has {len(ids)} tokens; this server takes at most "
                                f"{self.settings['max_prompt_tokens']}", param="prompt")
        return ids

    def _handle(self, req: GenerationRequest, stream: bool = False):
        adapter = BASE if req.model == self.base_name else req.model
        return self.replicas.options(multiplexed_model_id=adapter, stream=stream)

    async def answer(self, request: Request, chat: bool):
        started = time.perf_counter()
        status = 200
        try:
            self._authorize(request)
            req = parse_request(parse_json(await request.body()), chat, self.settings["max_tokens"])
            prompt_ids = self._encode(req)
            if self.in_flight >= self.limit:
                raise ApiError(429, "the server is at its limit of requests in flight: retry shortly",
                               kind="rate_limit_error")
            if req.stream:
                return self._stream(req, prompt_ids, started)
            self.in_flight += 1
            self.queue.set(self.in_flight)
            try:
                completions = await self._handle(req).generate.remote(prompt_ids, req.sampling_dict())
            finally:
                self.in_flight -= 1
                self.queue.set(self.in_flight)
            self.tokens.inc(sum(c["tokens"] for c in completions) or 0)
            return JSONResponse(response(req, len(prompt_ids), completions))
        except ApiError as err:
            status = err.status
            return JSONResponse(err.body(), status_code=err.status)
        except Exception as err:  # noqa: BLE001 - a replica lost mid-request: 503 and a body, never a traceback
            status = 503
            return JSONResponse(ApiError(503, f"the model is not available right now ({type(err).__name__}): "
                                              "retry", kind="server_error").body(), status_code=503)
        finally:
            self.requests.inc(tags={"status": str(status)})
            self.latency.observe(time.perf_counter() - started)

    def _stream(self, req: GenerationRequest, prompt_ids: List[int], started: float):
        chunks = StreamChunks(req)

        async def events():
            self.in_flight += 1
            try:
                generated = self._handle(req, stream=True).stream.remote(prompt_ids, req.sampling_dict())
                async for text, end in generated:
                    if end is None:
                        yield chunks.delta(text)
                    else:
                        self.tokens.inc(end["tokens"] or 0)
                        yield chunks.delta(text, end["finish_reason"], usage(len(prompt_ids), end["tokens"]))
                yield chunks.done()
            except Exception as err:  # noqa: BLE001 - the stream's status is sent: end it with an error event
                yield chunks.error(ApiError(503, f"the stream broke off ({type(err).__name__})",
                                            kind="server_error"))
            finally:
                self.in_flight -= 1

        return StreamingResponse(events(), media_type="text/event-stream")


@serve.deployment(name="Ingress", num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=10_000)
@serve.ingress(api)
class Router(Ingress):
    @api.get("/health")
    async def health(self):
        return {"status": "ok"}

    @api.get("/v1/models")
    async def models(self, request: Request):
        try:
            self._authorize(request)
        except ApiError as err:
            return JSONResponse(err.body(), status_code=err.status)
        return {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "rtune"}
                                           for m in self.tokenizers]}

    @api.post("/v1/completions")
    async def completions(self, request: Request):
        return await self.answer(request, chat=False)

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request):
        return await self.answer(request, chat=True)


def build_app(cfg: RTuneConfig, model_path: str, name: str, adapters: Dict[str, str]):
    """The Serve application over the shared engine (not started)."""
    s = cfg.serve
    replica_options: Dict[str, Any] = {
        "ray_actor_options": {"num_cpus": s.cpus_per_replica, "num_gpus": s.gpus_per_replica},
        "max_ongoing_requests": max(s.max_concurrent_requests, s.max_batch_size),
        "health_check_period_s": 2, "health_check_timeout_s": 30}
    if s.max_replicas is not None:
        replica_options["autoscaling_config"] = {"min_replicas": s.min_replicas, "max_replicas": s.max_replicas,
                                                 "target_ongoing_requests": s.target_ongoing_requests}
    else:
        replica_options["num_replicas"] = s.num_replicas

    class Replica(ModelReplica):
        @serve.multiplexed(max_num_models_per_replica=s.max_adapters_per_replica)
        async def adapter(self, adapter_name: str):
            return self._attach(adapter_name)

    Replica.__name__ = "ModelReplica"
    replica_cls = serve.deployment(name="ModelReplica", **replica_options)(Replica)

    models = {name: model_path, **adapters}
    threads = max(1, int(s.cpus_per_replica))
    settings = {**asdict(s), "replicas": s.max_replicas or s.num_replicas, "api_key_sha256": _key_digest(s)}
    return Router.bind(replica_cls.bind(model_path, adapters, threads, s.max_batch_size), models, settings)


def _key_digest(s: ServeConfig) -> Optional[str]:
    """SHA-256 of the API key in $serve.api_key_env (read here, on the driver): replicas compare digests."""
    if not s.api_key_env:
        return None
    key = os.environ.get(s.api_key_env, "")
    if len(key) < 8:
        raise UserError(f"serve.api_key_env={s.api_key_env} but ${s.api_key_env} is "
                        f"{'not set' if not key else 'shorter than 8 characters'}: export {s.api_key_env}=<a key>")
    return hashlib.sha256(key.encode()).hexdigest()


def parse_serve_args(args: List[str]) -> Tuple[Optional[str], Optional[str], Dict[str, str], List[str], bool]:
    """(model, name, adapters, overrides, --stop) from `rtune serve` arguments; short keys mean serve.<key>."""
    short = {f.name for f in fields(ServeConfig)}
    model, name, adapters, overrides, stop = None, None, {}, [], False
    for arg in args:
        if arg == "--stop":
            stop = True
        elif arg.startswith("adapter="):
            adapter, sep, path = arg[len("adapter="):].partition("=")
            if not sep or not adapter or not path:
                raise UserError(f"{arg}: write adapter=<name>=<checkpoint> (the name clients pass as model)")
            adapters[adapter] = os.path.abspath(os.path.expanduser(path))
        elif arg.startswith("name="):
            name = arg[len("name="):]
        elif "=" in arg:
            key = arg.split("=", 1)[0]
            overrides.append(f"serve.{arg}" if key in short else arg)
        elif arg.startswith("-"):
            raise UserError(f"unknown option {arg}: rtune serve takes a model, adapter=<name>=<path>, name=<id>, "
                            "serve.<key>=<value> and --stop")
        elif model is None:
            model = arg
        else:
            raise UserError(f"rtune serve takes one model (got {model!r} and {arg!r}): serve more runs as "
                            "adapter=<name>=<checkpoint>")
    return model, name, adapters, overrides, stop


def served_name(model_path: str) -> str:
    """The id clients pass as `model` for the base: `<run>/checkpoint_N` for a checkpoint, else the last part."""
    path = model_path.rstrip("/")
    if os.path.isdir(path) and os.path.basename(path).startswith("checkpoint_"):
        return f"{os.path.basename(os.path.dirname(path))}/{os.path.basename(path)}"
    return path if not os.path.isdir(path) else os.path.basename(path)


def check_models(model_path: str, adapters: Dict[str, str]) -> str:
    """The base's path, checked; adapters must be LoRA checkpoints (the base itself must not be one)."""
    if os.path.isdir(os.path.expanduser(model_path)):
        model_path = os.path.abspath(os.path.expanduser(model_path))
        if adapters and os.path.exists(os.path.join(model_path, "adapter_config.json")):
            raise UserError(f"{model_path} is a LoRA checkpoint: serve its base model and pass each run as "
                            "adapter=<name>=<checkpoint>")
    for adapter, path in adapters.items():
        if not os.path.exists(os.path.join(path, "adapter_config.json")):
            raise UserError(f"adapter={adapter}={path}: not a LoRA checkpoint (no adapter_config.json); a full "
                            "fine-tune is served on its own: rtune serve <checkpoint>")
    return model_path


def start(cfg: RTuneConfig, model_path: str, name: Optional[str], adapters: Dict[str, str]) -> str:
    """Start (or replace) the application on the connected Ray; returns its base URL."""
    from ray import serve

    model_path = check_models(model_path, adapters)
    name = name or served_name(model_path)
    if name in adapters:
        raise UserError(f"adapter name {name!r} is the base model's name: choose another (or name=<id> for the base)")
    if cfg.serve.backend == "vllm":
        from rtune.driver.serve_vllm import build_vllm_app

        app = build_vllm_app(cfg, model_path, name, adapters)
    else:
        app = build_app(cfg, model_path, name, adapters)
    serve.start(http_options={"host": cfg.serve.host, "port": cfg.serve.port}, detached=True)
    serve.run(app, name=APP, route_prefix="/")
    return f"http://{cfg.serve.host}:{cfg.serve.port}/v1"


def stop() -> None:
    from ray import serve

    serve.delete(APP)  # Serve drains: replicas finish what they hold (graceful_shutdown_timeout_s)
