"""`python -m rtune <command> [overrides]` (also the `rtune` console script).

The subcommand is taken off the command line before Hydra sees it (Hydra's parser would read it as
an override). A plain `train KEY=VALUE ...` is composed with Hydra's compose API so that every
mistake ends in one line; Hydra's own flags after `train` (`--help`, `--cfg job`, `-m`, ...) are
handed to `@hydra.main`, which implements them.
"""

from __future__ import annotations

import os
import sys
from typing import List, Optional

from rtune.compose import compose_config, conf_dir, normalize_overrides
from rtune.errors import UserError

USAGE = """usage: python -m rtune <command> ...

commands:
  train [KEY=VALUE ...]           fine-tune a causal LM on Ray Train (see `python -m rtune train --help`)
  export <checkpoint> <out_dir>   a standalone HF model dir (LoRA merged), tokenizer and model card
  generate <checkpoint, model dir or hub id> prompt=... [max_new_tokens=64] [temperature=0] [top_p=1] [top_k=0]
                                  [n=1] [seed=0] [chat=true [system=...]]: with chat the prompt is a user turn
  generate <model> prompts=<file.jsonl> output=<file.jsonl> [n=4 temperature=0.8 ... shard_size=16 num_actors=2]
                                  a whole prompt file on the cluster (engine actors), in shards a re-run skips
  eval <checkpoint | model dir | run dir | hub id> [...] [benchmark=rust_eval] [samples=10 k=[1,5,10]
                                  temperature=0.8] [storage_path=results run_name=...]: pass@k by running the
                                  code (rustc, sandboxed); --canonical scores the benchmark's own solutions
  serve <checkpoint | model dir | hub id> [adapter=<name>=<checkpoint> ...] [name=<id>] [port=8000 ...]
                                  an OpenAI-compatible endpoint on Ray Serve (127.0.0.1 unless serve.host and
                                  serve.api_key_env say otherwise); Ctrl-C drains and stops; --stop stops one
                                  running on a cluster (RAY_ADDRESS / rtune up)
  fit [KEY=VALUE ...]             the fit check alone, from the model's config (no Ray, no weights): the expected
                                  peak memory per worker; exit 0 fits, 1 does not (with the change that would fit)
  tune [KEY=VALUE ...] 'search.space={optim.lr: "loguniform(1e-5,1e-3)"}' [search.num_samples=8]
                                  Ray Tune search over runs, early stopping with ASHA; summary + plot
  docs [--write | --check]         the configuration reference (docs/configuration.md), generated from the schema
  submit [--address URL] [--no-wait] -- train [KEY=VALUE ...]
                                  run it as a job on a Ray cluster (Jobs API); exits with the job's status
  up [--num-cpus N] / down        keep a local Ray (127.0.0.1) running: later train / tune runs join it and
                                  skip Ray's start-up; `down` stops it

examples:
  python -m rtune train                                  # tiny GPT-2 on bundled Rust, 2 CPU workers
  python -m rtune train model=gpt2 data=the_stack_smol num_workers=4 use_gpu=true
  python -m rtune train run_name=my-run                  # same name again = resume
  python -m rtune train --cfg job                        # print the composed config
  python -m rtune train -m optim.lr=1e-4,3e-4 peft=none,lora   # a sweep: summary + plot; re-run skips finished
  python -m rtune submit --address http://127.0.0.1:8265 -- train trainer.max_steps=50
errors print one line; set RTUNE_FULL_ERROR=1 for the full traceback."""

HYDRA_FLAGS = {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--multirun", "-m", "--resolve",
               "--package", "-p", "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd",
               "--shell-completion", "-sc", "--version", "--run", "-r"}


def run_train(cfg, keep_ray: bool = False) -> dict:
    from rtune.driver.launch import format_summary, train

    summary = train(cfg, keep_ray=keep_ray)
    print(format_summary(summary), flush=True)
    return summary


def _hydra_entry(rest: List[str]) -> int:
    """Let @hydra.main handle --help, --cfg, -m and friends."""
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from rtune.config import register_schema
    from rtune.driver.sweep import MultirunSweep, sweep_name_for, swept_keys

    register_schema()
    # Multirun jobs run one after another in this process, on one warm Ray cluster, into one sweep dir.
    sweep = MultirunSweep(sweep_name_for(rest), swept_keys(rest)) if _is_multirun(rest) else None

    @hydra.main(config_path=conf_dir(), config_name="config", version_base="1.3")
    def _task(composed) -> None:
        cfg = OmegaConf.to_object(composed)
        if sweep is None:
            _guarded(lambda: run_train(cfg))
            return
        overrides = list(HydraConfig.get().overrides.task)
        _guarded(lambda: sweep.run_job(cfg, overrides, lambda c: run_train(c, keep_ray=True)), exit_on_error=False)

    sys.argv = [sys.argv[0]] + normalize_overrides(rest)
    _task()
    return sweep.report() if sweep is not None else 0


def _is_multirun(args: List[str]) -> bool:
    return "-m" in args or "--multirun" in args


def _guarded(fn, exit_on_error: bool = True) -> int:
    """Run fn; a user-caused error becomes one line on stderr and exit code 2 (1 for failed training)."""
    from rtune.driver.launch import Interrupted, TrainingFailed

    if os.environ.get("RTUNE_FULL_ERROR") == "1":
        result = fn()
        return result if isinstance(result, int) else 0
    try:
        result = fn()
        return result if isinstance(result, int) else 0
    except UserError as err:
        message, code = str(err), 2
    except TrainingFailed as err:
        message, code = str(err), 1
    except Interrupted as err:
        message, code = str(err), 130
    except KeyboardInterrupt:
        message = "interrupted; the checkpoints written so far are kept (re-run with the same run_name to resume)"
        code = 130
    print(f"rtune: error: {message}", file=sys.stderr, flush=True)
    if exit_on_error:
        sys.exit(code)
    return code


def _export(args: List[str]) -> None:
    from rtune.inference import export

    if len(args) != 2:
        raise UserError("usage: python -m rtune export <checkpoint_dir> <out_dir>")
    out = export(os.path.abspath(args[0]), os.path.abspath(args[1]))
    print(f"exported {args[0]} -> {out} (AutoModelForCausalLM.from_pretrained({out!r}))")


def boolean(text: str) -> bool:
    """true/false (also 1/0, yes/no)."""
    if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(text)
    return text.lower() in ("true", "1", "yes")


GENERATE_OPTIONS = {"prompt": str, "prompts": str, "output": str, "max_new_tokens": int, "temperature": float,
                    "top_p": float, "top_k": int, "n": int, "seed": int, "chat": boolean, "system": str,
                    "details": boolean, "backend": str, "max_batch_size": int, "num_actors": int,
                    "cpus_per_actor": int, "shard_size": int, "use_gpu": boolean, "ray_address": str}
_CLUSTER_ONLY = ("prompts", "output", "details", "backend", "max_batch_size", "num_actors", "cpus_per_actor",
                 "shard_size", "use_gpu", "ray_address")


def _generate(args: List[str]) -> None:
    from rtune.inference import generate, parse_kv

    if not args or "=" in args[0]:
        raise UserError("usage: python -m rtune generate <checkpoint, model dir or hub id> prompt=\"fn main() {\" ... "
                        "| prompts=<file.jsonl> output=<file.jsonl> ...")
    model = os.path.abspath(args[0]) if os.path.exists(args[0]) else args[0]
    options = parse_kv(args[1:], GENERATE_OPTIONS)
    if "prompts" in options or "output" in options:
        return _generate_file(model, options)
    if "prompt" not in options:
        raise UserError('generate needs a prompt: prompt="fn main() {" (or prompts=<file.jsonl> output=<file.jsonl>)')
    extra = sorted(k for k in options if k in _CLUSTER_ONLY)
    if extra:
        raise UserError(f"{', '.join(extra)} go with prompts=<file.jsonl> output=<file.jsonl> (generation on the "
                        "cluster); a single prompt= runs here")
    print(generate(model, **options))


def _generate_file(model: str, options: dict) -> None:
    """`generate prompts=... output=...`: the whole file on the cluster, in shards a re-run skips."""
    from rtune.driver.generation import generate_file
    from rtune.engine import Sampling

    if "prompts" not in options or "output" not in options or "prompt" in options:
        raise UserError("generation on the cluster takes prompts=<file.jsonl> and output=<file.jsonl> (not prompt=)")
    overrides = [f"generation.{k}={options.pop(k)}" for k in ("backend", "max_batch_size", "num_actors",
                                                              "cpus_per_actor", "shard_size") if k in options]
    overrides += [f"{k}={options.pop(k)}" for k in ("use_gpu", "ray_address") if k in options]
    cfg = compose_config(overrides)
    cfg.generation.check()
    sampling = Sampling(**{k: options.pop(k) for k in ("max_new_tokens", "temperature", "top_p", "top_k", "n", "seed")
                           if k in options})
    sampling.check()
    report = generate_file(cfg, model, options.pop("prompts"), options.pop("output"), sampling, **options)
    print(f"[rtune] generate: {report['rows']} prompts -> {report['output']} ({report['shards']} shards, "
          f"{report['skipped']} found finished and skipped; {report['generated_tokens']:,} tokens generated by "
          f"{report['actors']} actor(s) in {report['seconds']} s)", flush=True)


def _eval(args: List[str]) -> None:
    from rtune.driver.evaluate import parse_eval_args, print_summary, run_eval

    models, canonical, overrides = parse_eval_args(args)
    print_summary(run_eval(compose_config(overrides), models, canonical))


def _up_down(command: str, args: List[str]) -> None:
    from rtune.driver import local_ray

    if command == "down":
        if args:
            raise UserError("usage: python -m rtune down")
        print(local_ray.down(), flush=True)
        return
    if args and not (len(args) == 2 and args[0] == "--num-cpus" and args[1].isdigit() and int(args[1]) > 0):
        raise UserError("usage: python -m rtune up [--num-cpus N] (N: a positive number of CPUs)")
    print(local_ray.up(int(args[1]) if args else None), flush=True)


def _serve(args: List[str]) -> None:
    import time

    from rtune.driver.cluster import connect
    from rtune.driver.serve import parse_serve_args, start, stop

    model, name, adapters, overrides, stopping = parse_serve_args(args)
    cfg = compose_config(overrides)
    cfg.serve.check()
    if stopping:
        if not (cfg.ray_address or os.environ.get("RAY_ADDRESS")):
            raise UserError("rtune serve --stop stops an endpoint on a running cluster: set RAY_ADDRESS (or "
                            "ray_address=...); one started in a terminal stops with Ctrl-C there")
        connect(cfg, driver_progress=False)
        stop()
        print("[rtune] stopped the endpoint (in-flight requests were drained)", flush=True)
        return
    if model is None:
        raise UserError("usage: python -m rtune serve <checkpoint | model dir | hub id> [adapter=<name>=<checkpoint>]")
    connect(cfg, driver_progress=False)
    url = start(cfg, model, name, adapters)
    print(f"[rtune] serving at {url} (OpenAI-compatible: /v1/models, /v1/completions, /v1/chat/completions; "
          f"/health){' with an API key' if cfg.serve.api_key_env else ''}. Ctrl-C drains and stops.", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("[rtune] draining in-flight requests, then stopping", flush=True)
        stop()


def _fit(args: List[str]) -> int:
    """The fit check alone: 0 when the run fits, 1 (and the refusal) when not, 2 when it cannot tell. No Ray, no
    weights: the estimate comes from the model's config."""
    from rtune.config import validate
    from rtune.driver.preflight import model_config_checked
    from rtune.fit import assess

    cfg = compose_config(args)
    validate(cfg)
    model_config = model_config_checked(cfg)
    result = assess(cfg, model_config, local_cluster=not (cfg.ray_address or os.environ.get("RAY_ADDRESS")))
    print(result.line(), flush=True)
    if result.fits is None:
        print(f"rtune: cannot tell whether it fits: {result.what}", file=sys.stderr)
        return 2
    if not result.fits:
        print(f"rtune: does not fit: {result.refusal(cfg, model_config)}", file=sys.stderr)
        return 1
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command == "export":
        return _guarded(lambda: _export(rest))
    if command == "generate":
        return _guarded(lambda: _generate(rest))
    if command == "eval":
        return _guarded(lambda: _eval(rest))
    if command == "tune":
        from rtune.driver.search import run_search

        if any(arg.split("=")[0] in HYDRA_FLAGS for arg in rest):
            print("rtune: error: tune takes KEY=VALUE overrides only (no Hydra flags); search.* keys are in README",
                  file=sys.stderr)
            return 2
        return _guarded(lambda: run_search(compose_config(rest)))
    if command == "serve":
        return _guarded(lambda: _serve(rest))
    if command == "fit":
        return _guarded(lambda: _fit(rest))
    if command == "docs":
        from rtune.docs import main as docs_main

        return docs_main(rest)
    if command == "submit":
        from rtune.driver.submit import main as submit_main

        return _guarded(lambda: submit_main(rest))
    if command in ("up", "down"):
        return _guarded(lambda: _up_down(command, rest))
    if command != "train":
        print(f"rtune: error: unknown command {command!r}: use train, eval, generate, serve, tune, submit, up, down, "
              "export or docs",
              file=sys.stderr)
        return 2
    if any(arg.split("=")[0] in HYDRA_FLAGS for arg in rest):
        return _hydra_entry(rest)
    return _guarded(lambda: run_train(compose_config(rest)))
