"""The deployment's values: infra/values.yaml is both the defaults and the schema. A values file of
one's own overrides its keys (mappings merge, lists replace); a key infra/values.yaml does not have,
or a value of another type than its default's, is refused with one line naming the key.

    >>> merged({"a": {"b": 1, "c": [1]}}, {"a": {"c": [2]}}, "mine.yaml")
    {'a': {'b': 1, 'c': [2]}}
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

DEFAULTS = Path(__file__).resolve().parents[1] / "values.yaml"
# Mappings whose keys are the user's (layout names, node labels, Prometheus labels): any string
# key, string values.
FREE_MAPS = {"ingest.milvus_index", "resources.gpu_workers.node_selector", "monitoring.labels"}
CHOICES = {"monitoring.ray_scrape": ("pod-monitor", "annotations", "none"), "ingest.weights": ("hub", "random")}
REQUIRED = ("stores.source", "stores.out", "stores.vectors", "stores.collection", "ingest.model", "schedule.cron",
            "schedule.time_zone", "image.repository", "weights_cache.mount")
TYPE_NAMES = {str: "a string (quote it)", int: "an integer", bool: "true or false", list: "a list", dict: "a mapping"}


class ValuesError(Exception):
    """A values file that cannot be rendered; the message is one line naming the key."""


def read(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ValuesError(f"{path}: cannot read it ({e.strerror})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ValuesError(f"{path}: not YAML{where}: {getattr(e, 'problem', None) or e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValuesError(f"{path}: a mapping of values expected at the top, got {type(data).__name__}")
    return data


def merged(defaults: dict, mine: dict, source: str, prefix: str = "") -> dict:
    out = dict(defaults)
    for key, value in mine.items():
        where = f"{prefix}{key}"
        if key not in defaults:
            known = ", ".join(sorted(map(str, defaults)))
            raise ValuesError(f"{source}: {where}: not a values key (known here: {known})")
        default = defaults[key]
        if isinstance(default, dict) and where not in FREE_MAPS and isinstance(value, dict):
            out[key] = merged(default, value, source, f"{where}.")
        else:
            out[key] = value
    return out


def _type_error(value, default, where: str) -> str | None:
    expected = type(default)
    if isinstance(value, bool) != (expected is bool) or not isinstance(value, expected):
        return f"{where}: {TYPE_NAMES[expected]} expected, got {value!r}"
    if expected is list:
        bad = [i for i, v in enumerate(value) if not isinstance(v, str)]
        if bad:
            return f"{where}[{bad[0]}]: a string expected (quote it), got {value[bad[0]]!r}"
    return None


def problems(values: dict, defaults: dict, prefix: str = "") -> list[str]:
    found = []
    for key, default in defaults.items():
        where, value = f"{prefix}{key}", values[key]
        error = _type_error(value, default, where)
        if error:
            found.append(error)
        elif isinstance(default, dict) and where in FREE_MAPS:
            found += [f"{where}.{k}: a string value expected (quote it), got {v!r}" for k, v in value.items()
                      if not isinstance(v, str) or not isinstance(k, str)]
        elif isinstance(default, dict):
            found += problems(value, default, f"{where}.")
    return found


def get(values: dict, dotted: str):
    for part in dotted.split("."):
        values = values[part]
    return values


def checked(values: dict) -> dict:
    """The values, or ValuesError naming the first key that is wrong."""
    found = problems(values, read(DEFAULTS))
    found += [f"{k}: must not be empty" for k in REQUIRED if not get(values, k)]
    found += [f"{k}: {get(values, k)!r} is not one of {', '.join(c)}" for k, c in CHOICES.items()
              if get(values, k) not in c]
    if found:
        raise ValuesError(found[0])
    if len(values["schedule"]["cron"].split()) != 5:
        raise ValuesError(f"schedule.cron: five fields expected (minute hour day month weekday), "
                          f"got {values['schedule']['cron']!r}")
    for group in ("cpu_workers", "gpu_workers"):
        g = values["resources"][group]
        if not 0 <= g["min"] <= g["replicas"] <= g["max"]:
            raise ValuesError(f"resources.{group}: 0 <= min <= replicas <= max expected, got "
                              f"min {g['min']}, replicas {g['replicas']}, max {g['max']}")
    for key in ("schedule.run_deadline_s", "schedule.keep", "resources.gpu_workers.gpus",
                "monitoring.ray_metrics_port", "ingest.progress_interval_s"):
        if get(values, key) <= 0:
            raise ValuesError(f"{key}: must be > 0, got {get(values, key)}")
    if values["schedule"]["retries"] < 0:
        raise ValuesError(f"schedule.retries: must be >= 0, got {values['schedule']['retries']}")
    for key, value in [*((f"ingest.{k}", v) for k, v in values["ingest"].items()),
                       ("monitoring.pushgateway", values["monitoring"]["pushgateway"])]:
        words = value if isinstance(value, list) else list(value.values()) if isinstance(value, dict) else [value]
        if any("'" in str(w) for w in words):
            raise ValuesError(f"{key}: a single quote cannot pass through the RayJob's entrypoint (sh -c '...')")
    for i, repo in enumerate(values["weights_cache"]["repos"]):
        if not re.fullmatch(r"[\w.-]+/[\w.-]+(@[\w./-]+)?", repo):
            raise ValuesError(f"weights_cache.repos[{i}]: a hub id expected (owner/name or owner/name@revision), "
                              f"got {repo!r}")
    return values


def load(path: Path | None) -> dict:
    """infra/values.yaml with the file at ``path`` over it, checked."""
    values = read(DEFAULTS)
    if path is not None and Path(path).resolve() != DEFAULTS:
        values = merged(values, read(Path(path)), str(path))
    return checked(values)
