"""Experiment trackers: TensorBoard, MLflow, Weights & Biases (`tracking.backends`).

Ray Train V2's RunConfig refuses Tune's logger callbacks and Ray's guide says to call the tracker from
rank 0, so rtune does: rank 0 opens the tracker runs when the worker group starts, logs every record
it appends to metrics.jsonl (against the optimizer step), and the driver adds the summary, the loss
curve and the model card as artifacts when the run ends (and the weights with `tracking.log_model`).

    TensorBoard   event files under <run_dir>/tensorboard (`tensorboard --logdir <run_dir>`); a resumed
                  run purges the steps after its checkpoint, so each step appears once
    MLflow        `tracking.mlflow_uri` (default $MLFLOW_TRACKING_URI, else a file store under
                  storage_path/mlruns); experiment = tracking.project; params = the resolved config;
                  sweeps and tune searches get one parent run with a child run per job
    W&B           project = tracking.project; group = the sweep; `tracking.wandb_mode` online/offline

Tracker run ids ride in every checkpoint (trainer_state.pt) and in <run_dir>/tracking.json, so a resumed
run continues the same tracker run, and steps it already logged are not logged again. A tracker that
is unreachable or misconfigured never stops training: one warning line, and that backend is switched
off for the rest of the run; metrics.jsonl stays complete.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import time
from typing import Any, Callable, Dict, List, Optional

from rtune.config import RTuneConfig, is_uri
from rtune.errors import UserError

TRACKING_FILE = "tracking.json"
PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}
_SECRET_WORDS = ("token", "secret", "password", "api_key")


def check_backends(cfg: RTuneConfig) -> None:
    """Driver-side: every chosen backend is installed and has somewhere to write (one line naming the fix)."""
    for backend in cfg.tracking.backends:
        if importlib.util.find_spec(PACKAGES[backend]) is None:
            raise UserError(f"tracking.backends includes {backend}, but the {PACKAGES[backend]} package is not "
                            f"installed: pip install 'rtune[tracking]' (or pip install {PACKAGES[backend]})")
    if "mlflow" in cfg.tracking.backends and not (cfg.tracking.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI")) \
            and is_uri(cfg.storage_path):
        raise UserError(f"tracking.backends includes mlflow and storage_path={cfg.storage_path} is remote, so there "
                        "is no local store to default to: set tracking.mlflow_uri=<your MLflow server> (or "
                        "MLFLOW_TRACKING_URI)")


def project_of(cfg: RTuneConfig) -> str:
    return cfg.tracking.project or cfg.sweep_name or "rtune"


def _store_root(cfg: RTuneConfig) -> str:
    """Where the default MLflow store lives: storage_path, or the directory holding a sweep's directory."""
    return os.path.dirname(cfg.storage_path.rstrip("/")) if cfg.sweep_name else cfg.storage_path


def mlflow_uri(cfg: RTuneConfig) -> str:
    """tracking.mlflow_uri, else $MLFLOW_TRACKING_URI, else a SQLite store beside the runs (MLflow 3 retired
    the plain-file store)."""
    uri = cfg.tracking.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or "sqlite:///" + os.path.join(_store_root(cfg), "mlflow.db")


def redact(uri: str) -> str:
    """A URI fit for a log line: credentials (user:password@) dropped."""
    return re.sub(r"//[^/@]*@", "//", uri)


def _mlflow_client(cfg: RTuneConfig):
    # MLflow retries a failed request 7 times with exponential backoff (minutes); an unreachable server
    # should cost a few seconds, then one warning.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=mlflow_uri(cfg))


def flat_params(tree: Dict[str, Any], prefix: str = "") -> Dict[str, str]:
    """The resolved config as tracker parameters: dotted keys, secrets dropped (as in the model card)."""
    out: Dict[str, str] = {}
    for key, value in tree.items():
        if any(word in key.lower() for word in _SECRET_WORDS):
            continue
        if isinstance(value, dict) and value and key != "from_config":
            out.update(flat_params(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    return out


def _numeric(record: Dict[str, Any]) -> Dict[str, float]:
    return {k: float(v) for k, v in record.items() if k not in ("step", "time") and isinstance(v, (int, float))}


class _Backend:
    """One tracker: `log` a step's metrics, `close` at the end of the worker group's life."""

    name = "?"

    def log(self, step: int, metrics: Dict[str, float]) -> None:
        """Record `metrics` at optimizer step `step`."""

    def close(self) -> None:
        """Flush and release what the backend holds."""


class _TensorBoard(_Backend):
    name = "tensorboard"

    def __init__(self, logdir: str, resume_step: int):
        # torch's writer (tensorboard's event writer underneath): its flush() drains the queue, so what was
        # logged before a worker dies is on disk; tensorboardX's flush() does not wait for its queue.
        from torch.utils.tensorboard import SummaryWriter

        self.logdir = logdir
        # purge_step: TensorBoard drops events at or after it from earlier attempts, so a resumed run's
        # re-trained steps replace what the killed attempt wrote instead of doubling it.
        self.writer = SummaryWriter(logdir, purge_step=resume_step + 1 if resume_step else None, flush_secs=10)

    def log(self, step: int, metrics: Dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class _MLflow(_Backend):
    name = "mlflow"

    def __init__(self, cfg: RTuneConfig, run_id: Optional[str], params: Dict[str, str], tags: Dict[str, str]):
        self.client = _mlflow_client(cfg)
        self.uri = redact(mlflow_uri(cfg))
        experiment = self.client.get_experiment_by_name(project_of(cfg))
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:  # a local store keeps its artifacts beside it, not in the worker's working directory
            local = not (cfg.tracking.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI"))
            artifacts = os.path.join(_store_root(cfg), "mlartifacts") if local else None
            experiment_id = self.client.create_experiment(project_of(cfg), artifact_location=artifacts)
        self.logged_to = 0
        if run_id is None:
            parent = _mlflow_parent(self.client, experiment_id, cfg) if cfg.sweep_name else None
            run_tags = {**tags, "mlflow.runName": cfg.run_name, **({"mlflow.parentRunId": parent} if parent else {})}
            run_id = self.client.create_run(experiment_id, tags=run_tags).info.run_id
            from mlflow.entities import Param

            items = [Param(k, v[:6000]) for k, v in params.items()]
            for i in range(0, len(items), 100):  # MLflow's batch limit
                self.client.log_batch(run_id, params=items[i:i + 100])
        else:  # a resumed run: steps it logged before the interruption are not logged again
            history = self.client.get_metric_history(run_id, "loss")
            self.logged_to = max((m.step for m in history), default=0)
            self.client.update_run(run_id, status="RUNNING")
        self.run_id = run_id

    def log(self, step: int, metrics: Dict[str, float]) -> None:
        from mlflow.entities import Metric

        if step <= self.logged_to and step > 0:
            return
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])


def _mlflow_parent(client, experiment_id: str, cfg: RTuneConfig) -> str:
    """The sweep's parent run: one per sweep directory (created once, atomically, by whichever job is first)."""
    path = _parent_file(cfg, experiment_id)
    try:
        with open(path) as f:
            parent_id = f.read().strip()
        client.update_run(parent_id, status="RUNNING")  # the sweep runs (again)
        return parent_id
    except OSError:
        pass
    parent = client.create_run(experiment_id, tags={"mlflow.runName": cfg.sweep_name, "rtune.sweep": cfg.sweep_name})
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        os.write(fd, parent.info.run_id.encode())
        os.close(fd)
        return parent.info.run_id
    except FileExistsError:  # another job won the race: use its parent, drop ours
        client.delete_run(parent.info.run_id)
        with open(path) as f:
            return f.read().strip()


def _parent_file(cfg: RTuneConfig, experiment_id: str) -> str:
    return os.path.join(cfg.storage_path, f".mlflow_parent_{experiment_id}")


def finish_sweep(cfg: RTuneConfig, files: List[str], failed: bool) -> None:
    """The end of a multirun: the sweep's summary into its MLflow parent run, which is then closed."""
    if "mlflow" not in cfg.tracking.backends or is_uri(cfg.storage_path):
        return
    try:
        client = _mlflow_client(cfg)
        experiment = client.get_experiment_by_name(project_of(cfg))
        path = _parent_file(cfg, experiment.experiment_id) if experiment else None
        if path is None or not os.path.exists(path):
            return
        with open(path) as f:
            parent_id = f.read().strip()
        for name in files:
            if os.path.exists(name):
                client.log_artifact(parent_id, name)
        client.set_terminated(parent_id, status="FAILED" if failed else "FINISHED")
    except Exception as err:
        _warn("mlflow", err)


class _Wandb(_Backend):
    name = "wandb"

    def __init__(self, cfg: RTuneConfig, run_id: Optional[str], run_dir: Optional[str], config: Dict[str, Any],
                 tags: Dict[str, str]):
        import wandb

        mode = cfg.tracking.wandb_mode or os.environ.get("WANDB_MODE") or "online"
        self.run = wandb.init(project=project_of(cfg), name=cfg.run_name, id=run_id, resume="allow" if run_id else None,
                              group=cfg.sweep_name, config=config, tags=[f"{k}={v}" for k, v in tags.items()],
                              dir=run_dir, mode=mode, reinit="finish_previous",
                              settings=wandb.Settings(silent=True, console="off"))  # Ray owns the worker's output
        self.run_id = self.run.id

    def log(self, step: int, metrics: Dict[str, float]) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


class Tracker:
    """Rank 0's trackers. Every call is guarded: a failing backend warns once and is switched off."""

    def __init__(self, cfg: RTuneConfig, config: Dict[str, Any], run_dir: Optional[str], resume_step: int,
                 run_ids: Optional[Dict[str, str]], enabled: bool, warn: Optional[Callable[[str], None]] = None):
        self.backends: List[_Backend] = []
        self.warn = warn or (lambda message: print(f"[rtune] warning: {message}", flush=True))
        self.locations: List[str] = []
        if not enabled:
            return
        ids = dict(run_ids or {})
        if run_dir and os.path.exists(os.path.join(run_dir, TRACKING_FILE)):
            with open(os.path.join(run_dir, TRACKING_FILE)) as f:
                ids = {**json.load(f), **ids}
        tags = {"run": cfg.run_name, "model": cfg.model.name_or_path or cfg.model.from_config.get("model_type", "?"),
                "data": cfg.data.path, "strategy": cfg.strategy.name, "objective": cfg.objective.name}
        for backend in cfg.tracking.backends:
            try:
                if backend == "tensorboard" and run_dir:
                    made = _TensorBoard(os.path.join(run_dir, "tensorboard"), resume_step)
                    self.locations.append(f"TensorBoard: tensorboard --logdir {made.logdir}")
                elif backend == "mlflow":
                    made = _MLflow(cfg, ids.get("mlflow"), flat_params(config), tags)
                    self.locations.append(f"MLflow: run {made.run_id} at {made.uri}")
                elif backend == "wandb":
                    made = _Wandb(cfg, ids.get("wandb"), run_dir, config, tags)
                    self.locations.append(f"W&B: run {made.run_id} ({made.run.settings.mode})")
                else:
                    continue
                self.backends.append(made)
            except Exception as err:  # an unreachable or misconfigured tracker never stops training
                self.warn(_warning(backend, err))
        if run_dir:
            with open(os.path.join(run_dir, TRACKING_FILE), "w") as f:
                json.dump(self.run_ids(), f)

    def run_ids(self) -> Dict[str, str]:
        return {b.name: b.run_id for b in self.backends if getattr(b, "run_id", None)}

    def log(self, step: int, record: Dict[str, Any]) -> None:
        metrics = _numeric(record)
        for backend in list(self.backends):
            try:
                backend.log(step, metrics)
            except Exception as err:
                self.warn(_warning(backend.name, err))
                self.backends.remove(backend)

    def close(self) -> None:
        for backend in self.backends:
            try:
                backend.close()
            except Exception as err:
                self.warn(_warning(backend.name, err))


def _warning(backend: str, err: Exception) -> str:
    first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
    return (f"tracker {backend} is off for this run ({type(err).__name__}: {first}); training goes on and "
            "metrics.jsonl stays complete")


def _warn(backend: str, err: Exception) -> None:
    print(f"[rtune] warning: {_warning(backend, err)}", flush=True)


def read_run_ids(run_dir: Optional[str]) -> Dict[str, str]:
    """The tracker run ids a run directory holds (written by rank 0 when the trackers open)."""
    path = os.path.join(run_dir, TRACKING_FILE) if run_dir else None
    if not path or not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def finish(cfg: RTuneConfig, run_dir: Optional[str], summary: Dict[str, Any], files: List[str],
           model_dir: Optional[str], status: str = "FINISHED") -> None:
    """Driver-side, when fit() returns or fails: artifacts into the tracker runs, which are then closed.

    status: MLflow's FINISHED, FAILED or KILLED (a W&B run ends with exit code 0 or 1)."""
    ids = read_run_ids(run_dir)
    files = [f for f in files if f and os.path.exists(f)]
    if "mlflow" in ids and "mlflow" in cfg.tracking.backends:
        try:
            client = _mlflow_client(cfg)
            for path in files:
                client.log_artifact(ids["mlflow"], path)
            if model_dir and cfg.tracking.log_model:
                client.log_artifacts(ids["mlflow"], model_dir, artifact_path="model")
            client.set_terminated(ids["mlflow"], status=status)
        except Exception as err:
            _warn("mlflow", err)
    if "wandb" in ids and "wandb" in cfg.tracking.backends:
        try:
            import wandb

            mode = cfg.tracking.wandb_mode or os.environ.get("WANDB_MODE") or "online"
            run = wandb.init(project=project_of(cfg), id=ids["wandb"], resume="allow", dir=run_dir, mode=mode,
                             reinit="finish_previous", settings=wandb.Settings(silent=True, console="off"))
            run.summary.update({k: v for k, v in summary.items() if isinstance(v, (int, float, str))})
            if files or (model_dir and cfg.tracking.log_model):
                artifact = wandb.Artifact(f"{cfg.run_name}-results", type="results")
                for path in files:
                    artifact.add_file(path)
                if model_dir and cfg.tracking.log_model:
                    artifact.add_dir(model_dir, name="model")
                run.log_artifact(artifact)
            run.finish(exit_code=0 if status == "FINISHED" else 1)
        except Exception as err:
            _warn("wandb", err)
