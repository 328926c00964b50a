"""The project configuration: `kernelgen.toml`, or `[tool.kernelgen]` in pyproject.toml.

```toml
username = "me"                    # Kaggle user that owns kernels and datasets
competition = "my-competition"
profile = "full"                   # default profile: full (seed values) or smoke
data = "data/my-competition"       # local competition folder for --local runs
pipeline = "../my-pipeline"        # project folder to use (default: the current one, else the bundled one)

[profiles.quick.stage4]            # a profile of your own, or additions to a built-in one
epochs = 3

[stages.stage4]                    # overrides applied in every profile
epochs = 30
```
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kernelgen.errors import ConfigError
from kernelgen.spec.tomlfile import read_toml

CONFIG_FILE = "kernelgen.toml"
BUILTIN_PROFILES = ("best", "full", "smoke")
_TOP_KEYS = {"username", "competition", "profile", "data", "pipeline", "profiles", "stages"}
_STAGE_KEY = re.compile(r"^stage(\d+)$")


@dataclass(frozen=True)
class Config:
    path: Path | None = None
    username: str | None = None
    competition: str | None = None
    profile: str = "full"
    data: Path | None = None
    pipeline: Path | None = None
    profiles: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    stages: dict[int, dict[str, Any]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.path.name if self.path else "config"


def _stage_tables(value: Any, where: str, path: Path) -> dict[int, dict[str, Any]]:
    if not isinstance(value, dict):
        raise ConfigError(f"[{where}] must be a table of [stageN] tables", source=path)
    tables: dict[int, dict[str, Any]] = {}
    for key, body in value.items():
        match = _STAGE_KEY.match(key)
        if not match or not isinstance(body, dict):
            raise ConfigError(f"[{where}.{key}] must be a table named stageN", source=path)
        tables[int(match.group(1))] = dict(body)
    return tables


def parse_config(raw: dict[str, Any], path: Path) -> Config:
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise ConfigError(
            f"unknown key {unknown[0]!r} (known: {', '.join(sorted(_TOP_KEYS))})", source=path
        )
    for key in ("username", "competition", "profile", "data", "pipeline"):
        if key in raw and (not isinstance(raw[key], str) or not raw[key]):
            raise ConfigError(f"{key!r} must be a non-empty string", source=path)
    profiles_raw = raw.get("profiles", {})
    if not isinstance(profiles_raw, dict):
        raise ConfigError("[profiles] must be a table", source=path)
    profiles = {name: _stage_tables(body, f"profiles.{name}", path) for name, body in profiles_raw.items()}
    profile = raw.get("profile", "full")
    if profile not in BUILTIN_PROFILES and profile not in profiles:
        raise ConfigError(f"profile {profile!r} is not defined", source=path)
    data, pipeline = (_relative_to(path, raw.get(key)) for key in ("data", "pipeline"))
    return Config(
        path=path,
        username=raw.get("username"),
        competition=raw.get("competition"),
        profile=profile,
        data=data,
        pipeline=pipeline,
        profiles=profiles,
        stages=_stage_tables(raw.get("stages", {}), "stages", path),
    )


def _relative_to(config: Path, value: str | None) -> Path | None:
    """A folder named in the config, relative to the config file's own folder."""
    if value is None:
        return None
    folder = Path(value)
    return folder if folder.is_absolute() else config.parent / folder


def _read_config(path: Path) -> dict[str, Any]:
    return read_toml(path, lambda message: ConfigError(message, source=path))


def load_config(explicit: Path | None = None, start: Path | None = None) -> Config:
    """The config named on the command line, else the first one found in `start` (the cwd)."""
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError("config file not found", source=explicit)
        raw = _read_config(explicit)
        if explicit.name == "pyproject.toml":
            raw = raw.get("tool", {}).get("kernelgen", {})
        return parse_config(raw, explicit)
    folder = start or Path.cwd()
    own = folder / CONFIG_FILE
    if own.is_file():
        return parse_config(_read_config(own), own)
    pyproject = folder / "pyproject.toml"
    if pyproject.is_file():
        section = _read_config(pyproject).get("tool", {}).get("kernelgen")
        if section is not None:
            return parse_config(section, pyproject)
    return Config()


def kaggle_config_dir() -> Path:
    return Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle")


def resolve_username(cli_user: str | None, config: Config) -> str:
    """`--user`, then the config file, then `KAGGLE_USERNAME`, then `~/.kaggle/kaggle.json`."""
    for candidate in (cli_user, config.username, os.environ.get("KAGGLE_USERNAME")):
        if candidate:
            return candidate
    token_file = kaggle_config_dir() / "kaggle.json"
    if token_file.is_file():
        try:
            name = json.loads(token_file.read_text(encoding="utf-8")).get("username")
        except (ValueError, AttributeError):
            raise ConfigError("not valid JSON with a 'username'", source=token_file) from None
        if isinstance(name, str) and name:
            return name
    raise ConfigError(
        "no Kaggle username: pass --user, set 'username' in kernelgen.toml, "
        f"set KAGGLE_USERNAME, or create {token_file}"
    )
