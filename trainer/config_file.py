"""Settings from a file (`python -m trainer --config FILE`): an earlier run's config.json,
or a TOML table of settings. The file gives the settings a run starts from; flags override.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from typing import Any

from trainer.config import Config, ConfigError

# Where the earlier run was written and what it resumed: a run from its file is a new run,
# written to its own --save-path (or the default one).
NOT_CARRIED = ("save_path", "resume")


def read_settings(path: str) -> dict[str, Any]:
    """The settings in `path` (.json: a run's config.json; .toml: name = value lines, names
    as the flags' with underscores), without where that run was written."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(f"--config: cannot read {path} ({e.strerror or e})") from e
    if path.endswith(".json"):
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as e:
            raise ConfigError(f"--config: {path} is not valid JSON ({e}); give a run's "
                              "config.json") from e
    elif path.endswith(".toml"):
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError) as e:
            raise ConfigError(f"--config: {path} is not valid TOML ({e})") from e
    else:
        raise ConfigError(f"--config: {path}: give a run's config.json or a .toml file of "
                          "settings")
    if not isinstance(data, dict):
        raise ConfigError(f"--config: {path} holds a {type(data).__name__}, not a table of "
                          "settings")
    settings = {str(k).replace("-", "_"): v for k, v in data.items()}
    known = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigError(f"--config: {path} sets {unknown}, which are not settings of the "
                          f"trainer; the settings are {sorted(known - set(NOT_CARRIED))}")
    return {k: v for k, v in settings.items() if k not in NOT_CARRIED}
