"""The grading configuration: points, time limits and sandbox limits per lab (``weights.toml``)
and the hidden seeds (``keys/hidden_seeds.toml``, never shipped to students)."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

GRADING_DIR = Path(__file__).resolve().parent
WEIGHTS_REL = Path("grading") / "weights.toml"  # inside the course repository
WEIGHTS_FILE = GRADING_DIR / "weights.toml"
HIDDEN_SEEDS_FILE = GRADING_DIR / "keys" / "hidden_seeds.toml"


class ConfigError(Exception):
    """A problem in the grading configuration, in one line."""


MIB = 1 << 20
DEFAULT_MEMORY_MIB = 2048
DEFAULT_MAX_PIDS = 512


@dataclass(frozen=True)
class LabConfig:
    points: float
    timeout_s: float
    lab_budget_s: float
    memory_mib: int = DEFAULT_MEMORY_MIB  # the sandbox's memory limit, all processes together
    max_pids: int = DEFAULT_MAX_PIDS  # the sandbox's limit on processes and threads
    env: tuple[str, ...] = ()  # host variables (globs) passed into the sandbox

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib * MIB


def load_weights(labs: list[str], path: Path = WEIGHTS_FILE) -> dict[str, LabConfig]:
    """One ``LabConfig`` per lab folder; every lab must be listed and every listed lab exist."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the weights ({err})") from None
    defaults = data.get("defaults", {})
    tables = data.get("labs", {})
    missing = sorted(set(labs) - set(tables))
    unknown = sorted(set(tables) - set(labs))
    if missing or unknown:
        raise ConfigError(f"{path}: [labs.*] must name exactly the lab folders {labs}; "
                          f"missing {missing}, unknown {unknown}")
    config = {}
    for lab in labs:
        merged = {**defaults, **tables[lab]}
        try:
            env = [*_names(defaults, "env"), *_names(tables[lab], "env")]  # adds to the defaults
            config[lab] = LabConfig(points=float(merged["points"]),
                                    timeout_s=float(merged["timeout_s"]),
                                    lab_budget_s=float(merged["lab_budget_s"]),
                                    memory_mib=int(merged.get("memory_mib", DEFAULT_MEMORY_MIB)),
                                    max_pids=int(merged.get("max_pids", DEFAULT_MAX_PIDS)),
                                    env=tuple(env))
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"{path}: [labs.{lab}] needs numeric points, timeout_s and "
                              f"lab_budget_s (here or in [defaults]), and integer memory_mib "
                              f"and max_pids if given; {err!r}") from None
        cfg = config[lab]
        if cfg.points < 0 or min(cfg.timeout_s, cfg.lab_budget_s, cfg.memory_mib,
                                 cfg.max_pids) <= 0:
            raise ConfigError(f"{path}: [labs.{lab}] values must be positive, got {cfg}")
    return config


def _names(table: dict, key: str) -> list[str]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{key} must be a list of strings, got {value!r}")
    return value


def hidden_seeds(path: Path = HIDDEN_SEEDS_FILE) -> list[int]:
    """The hidden seeds: ``GRADING_HIDDEN_SEEDS`` (comma-separated), else the keys file, else
    none (a student release has no keys; the hidden-seed pass is then skipped and says so)."""
    raw = os.environ.get("GRADING_HIDDEN_SEEDS")
    if raw is not None:
        try:
            return [int(s) for s in raw.split(",") if s.strip()]
        except ValueError:
            raise ConfigError(f"GRADING_HIDDEN_SEEDS: expected integers separated by commas, "
                              f"got {raw!r}") from None
    if not path.is_file():
        return []
    seeds = tomllib.loads(path.read_text(encoding="utf-8")).get("seeds", [])
    if not all(isinstance(s, int) for s in seeds):
        raise ConfigError(f"{path}: seeds must be a list of integers, got {seeds!r}")
    return seeds


def submission_budget(path: Path = WEIGHTS_FILE) -> float | None:
    """``[defaults] submission_budget_s``: the wall-clock seconds all of one submission's labs
    get together (None: unlimited). When it runs out, the labs not yet run are not run."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the weights ({err})") from None
    value = data.get("defaults", {}).get("submission_budget_s")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{path}: [defaults] submission_budget_s must be a positive number of "
                          f"seconds, got {value!r}")
    return float(value)
