"""The typed configuration schema: one source of truth for Hydra, validation and the workers.

The dataclasses (`training.py`: what is trained and how; `operations.py`: trackers, search, evaluation, generation,
debug; `schema.py`: the whole and its validation) are registered in Hydra's ConfigStore as `rtune_schema`;
`conf/config.yaml` lists it first in its defaults, so every group file (`conf/model/*.yaml`, ...) and every
command-line override is merged into a typed node: an unknown key or a wrong type fails at composition. The driver
then runs `validate()` for the rules a type cannot express, and workers receive the resolved config as a plain dict
(`to_dict`) and rebuild the dataclasses with `from_dict`. Everything is imported from `rtune.config`.
"""

from rtune.config.checks import (ENGINES, FORMATS, LOSS_TYPES, OBJECTIVES, PACKINGS, PRECISIONS, RUN_NAME, SCHEDULES,
                                 TRACKERS, TRAIN_ON, TRUNCATIONS)
from rtune.config.operations import DebugConfig, EvalConfig, GenerationConfig, SearchConfig, TrackingConfig
from rtune.config.schema import (RTuneConfig, bf16_base, from_dict, is_uri, max_workers, register_schema, to_dict,
                                 validate, worker_range)
from rtune.config.training import (DataConfig, ModelConfig, ObjectiveConfig, OptimConfig, PeftConfig, StrategyConfig,
                                   TrainerConfig)

__all__ = ["DataConfig", "DebugConfig", "ENGINES", "EvalConfig", "FORMATS", "GenerationConfig", "LOSS_TYPES",
           "ModelConfig", "OBJECTIVES", "ObjectiveConfig", "OptimConfig", "PACKINGS", "PRECISIONS", "PeftConfig",
           "RTuneConfig", "RUN_NAME", "SCHEDULES", "SearchConfig", "StrategyConfig", "TRACKERS", "TRAIN_ON",
           "TRUNCATIONS", "TrackingConfig", "TrainerConfig", "bf16_base", "from_dict", "is_uri", "max_workers",
           "register_schema", "to_dict", "validate", "worker_range"]
