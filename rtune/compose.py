"""Hydra composition: `conf/` plus command-line overrides -> the typed `RTuneConfig`.

The command line, the docs generator and the tests all compose through `compose_config`, so each sees
exactly the config `python -m rtune train` runs. Every composition mistake (an unknown key, a wrong type, a
group option that does not exist) becomes one `UserError` line that names the fix.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import List

from rtune.config import RTuneConfig, register_schema, to_dict
from rtune.errors import UserError

# dicts whose keys the schema leaves open (a search space, an architecture's config fields)
_FREE_FORM = ("search.space=", "model.from_config=", "model.from_config.")


def conf_dir() -> str:
    """`conf/` of the checkout (or RTUNE_CONF_DIR)."""
    return os.environ.get("RTUNE_CONF_DIR", str(Path(__file__).resolve().parent.parent / "conf"))


def schema_keys() -> List[str]:
    """Every dotted key of the schema (for "did you mean" hints)."""
    def walk(node: dict, prefix: str):
        for key, value in node.items():
            if isinstance(value, dict) and key != "from_config":
                yield from walk(value, f"{prefix}{key}.")
            else:
                yield prefix + key

    return list(walk(to_dict(RTuneConfig()), ""))


def explain_hydra_error(err: Exception) -> str:
    """One line for a Hydra/OmegaConf composition error, with the fix."""
    text = str(err)
    missing = re.search(r"Could not find '([^/']+)/([^']+)'", text)
    if missing:
        group, name = missing.groups()
        options = re.findall(r"^\t(\S+)$", text.split("Config search path")[0], flags=re.M)
        return f"unknown {group} {name!r}: choose one of {', '.join(options) or '(none)'} ({group}=<name>)"
    override = re.search(r"Could not override '([^']+)'", text)
    if override:
        key = override.group(1)
        close = difflib.get_close_matches(key, schema_keys(), n=2, cutoff=0.75)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        return f"unknown config key {key!r}: {hint}see `python -m rtune train --cfg job` for all keys"
    merging = re.search(r"Error merging override (\S+)", text)
    if merging:
        cause = str(err.__cause__ or "").splitlines()
        key = merging.group(1).split("=")[0]
        return f"bad value in {merging.group(1)}: {cause[0] if cause else 'wrong type'} (check the type of {key})"
    if "Error parsing override" in text:
        return f"{text.splitlines()[0]}: overrides look like key=value (e.g. trainer.max_steps=100)"
    return text.strip().splitlines()[0]


def normalize_overrides(overrides: List[str]) -> List[str]:
    """`search.space={...}` and `model.from_config...` set keys the schema does not list: Hydra wants `++`."""
    return [f"++{o}" if o.startswith(_FREE_FORM) else o for o in overrides]


def compose_config(overrides: List[str]) -> RTuneConfig:
    """Compose conf/ + overrides into the typed RTuneConfig (UserError on any mistake)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    register_schema()
    try:
        with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
            composed = compose(config_name="config", overrides=normalize_overrides(overrides))
        return OmegaConf.to_object(composed)
    except (HydraException, OmegaConfBaseException) as err:
        raise UserError(explain_hydra_error(err)) from err
