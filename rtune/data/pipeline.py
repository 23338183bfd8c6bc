"""Records -> samples -> packed rows, by the engine `data.engine` names; the result is cached, so workers and
re-runs do not redo it.

    datasets   the driver tokenizes and packs in one process (`datasets_engine.py`; every format and packing)
    (prompt)   data.format=prompt (online RL): prompt records kept as records for the workers (`prompt_sets.py`)
    ray        Ray Data tokenizes the corpus files across the cluster and writes token shards to
               `data.cache_uri` (`ray_engine.py` plans on the driver, `ray_tasks.py` runs in tasks and actors)

Both turn records into rows with the same step (`prepared.py`: encode -> fit -> pack -> save) and describe
the result as a `PreparedData`.
"""

from __future__ import annotations

from rtune.config import RTuneConfig
from rtune.data.datasets_engine import prepare_with_datasets
from rtune.data.prompt_sets import prepare_prompts
from rtune.data.ray_engine import prepare_with_ray


def prepare_data(cfg: RTuneConfig):
    """Prepare (or find in the cache) this run's rows; returns (PreparedData, tokenizer)."""
    if cfg.data.format == "prompt":  # online RL's prompts: the workers encode them and sample completions
        return prepare_prompts(cfg)
    if cfg.data.engine == "ray":  # the cluster tokenizes; the driver only plans
        return prepare_with_ray(cfg)
    return prepare_with_datasets(cfg)
