"""`rtune eval <model> harness=lm_eval tasks=[...]`: EleutherAI's lm-evaluation-harness (the standard benchmarks
users know: MMLU, HellaSwag, ARC, GSM8K, ...) through its Hugging Face model, on the model rtune exports.

A checkpoint is exported first (LoRA merged, FSDP shards consolidated) into `<run_dir>/exported/<model>`; a model
directory or hub id goes as it is. `eval.tasks` holds harness task names, or paths of task YAML files (a task of
your own on a local file: lm-eval's `dataset_path: json` with `data_files`), whose folders are added to the
harness's task search path. The harness fetches its standard data sets from the Hugging Face Hub; a YAML task on
local files runs offline. Results: `<run_dir>/eval_summary.json` (`harness`, `model`, each task's metrics).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List

import yaml

from rtune.checkpoint import MARKER
from rtune.config import RTuneConfig
from rtune.errors import UserError
from rtune.inference import export


def _task_names(tasks: List[str]):
    """(names for the harness, folders holding task YAML files)."""
    names, folders = [], []
    for task in tasks:
        if task.endswith((".yaml", ".yml")):
            path = os.path.abspath(os.path.expanduser(task))
            if not os.path.isfile(path):
                raise UserError(f"eval.tasks: {task} is not a file: give harness task names or task YAML paths")
            with open(path) as f:
                spec = yaml.safe_load(f) or {}
            if not isinstance(spec, dict) or not spec.get("task"):
                raise UserError(f"eval.tasks: {task} has no `task:` name (an lm-eval task YAML names its task)")
            names.append(spec["task"])
            folders.append(os.path.dirname(path))
        else:
            names.append(task)
    return names, sorted(set(folders))


def run_lm_eval(cfg: RTuneConfig, models: List[str]) -> Dict[str, Any]:
    try:
        from lm_eval import simple_evaluate
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise UserError("harness=lm_eval needs lm-evaluation-harness: pip install 'rtune[lm_eval]'") from None
    if len(models) != 1:
        raise UserError("harness=lm_eval evaluates one model at a time: give one checkpoint, model dir or hub id")
    model = models[0]
    run_dir = os.path.join(cfg.storage_path, cfg.run_name)
    os.makedirs(run_dir, exist_ok=True)
    pretrained = model
    if os.path.exists(os.path.join(model, MARKER)):  # an rtune checkpoint: a plain HF directory first
        pretrained = os.path.join(run_dir, "exported", os.path.basename(model.rstrip("/")))
        if not os.path.isdir(pretrained):
            export(model, pretrained)
    names, folders = _task_names(cfg.eval.tasks)
    manager = TaskManager(include_path=folders or None)
    unknown = [n for n in names if n not in manager.all_tasks]
    if unknown:
        raise UserError(f"eval.tasks: unknown lm-eval task(s) {', '.join(unknown)}: see `lm-eval ls tasks`, or give "
                        "the path of a task YAML file")
    dtype = "auto" if cfg.use_gpu else "float32"
    results = simple_evaluate(model="hf", model_args=f"pretrained={pretrained},dtype={dtype}", tasks=names,
                              task_manager=manager, batch_size=cfg.generation.max_batch_size,
                              device="cuda" if cfg.use_gpu else "cpu", limit=cfg.eval.max_tasks,
                              random_seed=cfg.eval.seed)
    scores = {task: {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
              for task, metrics in results["results"].items()}
    summary = {"harness": "lm_eval", "model": model, "evaluated": pretrained, "tasks": scores,
               "limit": cfg.eval.max_tasks, "run_dir": run_dir}
    with open(os.path.join(run_dir, "eval_summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    for task, metrics in scores.items():
        print(f"[rtune] lm_eval {task}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()), flush=True)
    return summary
