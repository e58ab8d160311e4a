"""Reading a recipe: defaults <- recipe YAML <- dotted command-line overrides
(``train.steps=5 topology.widths=[3,1]``), checked against the schema in `neuromas.config`;
unknown keys, wrong types and out-of-range values raise `ConfigError` naming the key. And the
way back: a config as a plain dict or a YAML file (what a run directory keeps)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf import errors as oc_errors

from neuromas.config import Config
from neuromas.errors import ConfigError

# Keys that moved when the flat sections were grouped by concept: old -> new. A recipe, a saved
# run's config or an override with an old key still loads, with one warning naming the new keys;
# the old keys go in the release after 0.4.
RENAMED = {
    "algorithm.kl_coef": "algorithm.kl.coef",
    "algorithm.kl_estimator": "algorithm.kl.estimator",
    "algorithm.kl_in": "algorithm.kl.applied_to",
    "algorithm.sampler_correction": "algorithm.off_policy.correction",
    "algorithm.sampler_cap": "algorithm.off_policy.cap",
    "algorithm.branch_per_question": "algorithm.branch.per_question",
    "algorithm.branch_samples": "algorithm.branch.samples",
    "algorithm.branch_shared": "algorithm.branch.shared",
    "algorithm.attribution_agg": "algorithm.attribution.agg",
    "algorithm.attribution_objective": "algorithm.attribution.objective",
    "algorithm.attribution_top_k": "algorithm.attribution.top_k",
    "task.sandbox_wall_s": "task.sandbox.wall_s",
    "task.sandbox_cpu_s": "task.sandbox.cpu_s",
    "task.sandbox_memory_mb": "task.sandbox.memory_mb",
}


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"recipe not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    if data is None:
        raise ConfigError(f"{path}: the recipe is empty (start from recipes/quickstart.yaml)")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of sections, got {type(data).__name__}")
    return data


def _migrate(data: dict) -> dict[str, str]:
    """Move every old key of `data` (a recipe's nested mapping) to its new place, in place; returns
    the moves made. An old key beside its new one is an error: which one counts would be a guess."""
    moved = {}
    for old, new in RENAMED.items():
        section, _, key = old.partition(".")
        if not isinstance(data.get(section), dict) or key not in data[section]:
            continue
        node = data
        for part in new.split(".")[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{old}: renamed {new}, but the recipe's {part} is not a mapping")
        if new.rsplit(".", 1)[1] in node:
            raise ConfigError(f"{old}: renamed {new}, and the recipe gives both; keep {new}")
        node[new.rsplit(".", 1)[1]] = data[section].pop(key)
        moved[old] = new
    return moved


def _migrated_override(override: str, moved: dict[str, str]) -> str:
    key, _, value = override.partition("=")
    if key in RENAMED:
        moved[key] = RENAMED[key]
        return f"{RENAMED[key]}={value}"
    return override


def _one_line(e: oc_errors.OmegaConfBaseException, key: str | None = None) -> str:
    msg = (getattr(e, "msg", None) or str(e)).splitlines()[0]
    key = key or getattr(e, "full_key", None)
    return f"{key}: {msg}" if key else msg


def load_config(recipe: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Defaults <- recipe YAML <- ``key=value`` overrides, checked against the dataclasses."""
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"override {bad[0]!r} must look like key=value (e.g. train.steps=5)")
    data = _read_yaml(Path(recipe)) if recipe is not None else {}
    moved = _migrate(data)
    overrides = [_migrated_override(o, moved) for o in overrides]
    if moved:
        where = f"{recipe}: " if recipe is not None else ""
        print(f"neuromas: {where}renamed keys (the old ones go in the next release): "
              + ", ".join(f"{old} -> {new}" for old, new in moved.items()), file=sys.stderr)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.create(data))
        for override in overrides:
            try:
                _apply_override(merged, override)
            except yaml.YAMLError as e:  # the value is parsed as YAML: `[1,` or an unclosed quote
                problem = str(getattr(e, "problem", None) or e).strip()
                raise ConfigError(f"{override.split('=', 1)[0]}: the value is not valid YAML ({problem})") from None
        cfg = OmegaConf.to_object(merged)
    except oc_errors.OmegaConfBaseException as e:
        raise ConfigError(_one_line(e)) from None
    _check_set_by_stages(cfg, merged, data, overrides)
    return cfg


def _apply_override(merged, override: str) -> None:
    """`key=value` onto `merged`; a list's entries are reached by index (`growth.stages.1.init=zero`)."""
    key, _, text = override.partition("=")
    parts, node = key.split("."), merged
    for i, part in enumerate(parts):
        if isinstance(node, ListConfig):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"{'.'.join(parts[:i])}: has {len(node)} entries, so {part!r} is no index of it "
                                  f"(0..{len(node) - 1}); to add entries, give the whole list")
            if i + 1 == len(parts) and isinstance(node[int(part)], DictConfig):
                raise ConfigError(f"{key}: set its fields ({key}.FIELD=VALUE), or give the whole list")
            rest = ".".join(parts[i + 1:]) or "value"
            value = OmegaConf.from_dotlist([f"{rest}={text}"])
            try:
                node[int(part)] = OmegaConf.merge(node[int(part)], value) if i + 1 < len(parts) else value.value
            except oc_errors.OmegaConfBaseException as e:
                raise ConfigError(_one_line(e, key)) from None  # the entry's own message knows no list
            return
        if i + 1 == len(parts) or not (isinstance(node, DictConfig) and part in node):
            break  # a plain key, or a new or unknown one: the merge below sets, creates or names it
        node = node[part]
    merged.merge_with(OmegaConf.from_dotlist([override]))


def _check_set_by_stages(cfg: Config, merged, data: dict, overrides) -> None:
    """With growth stages, the topology and step count come from them alone: a different value
    given explicitly beside or after the stages (the recipe's with the recipe's stages, or on the
    command line) would be ignored, so it is an error; the same value (as configs saved before
    stages were the only source hold) is accepted. Stages given on the command line win over the
    recipe's own topology and steps."""
    if not cfg.growth.stages:
        return
    keys = {o.split("=", 1)[0] for o in overrides}
    if not any(k.startswith("growth.stages") for k in keys):  # the recipe's stages: its own values count too
        keys |= {"train.steps"} if "steps" in data.get("train", {}) else set()
        keys |= {"topology"} if "topology" in data else set()
    if "train.steps" in keys and merged.train.steps != cfg.total_steps:
        raise ConfigError(f"train.steps: growth.stages set the run's steps ({cfg.total_steps} in all); change the "
                          "stages' steps instead, or set growth.stages=[] to train one topology for train.steps")
    topology_given = any(k == "topology" or k.startswith("topology.") for k in keys)
    if topology_given and OmegaConf.to_object(merged.topology) != cfg.growth.stages[0].topology:
        raise ConfigError("topology: growth.stages set the topology (the first stage's); change the stages "
                          "instead, or set growth.stages=[] to train one topology")


def to_dict(cfg: Any) -> dict:
    """A plain dict of a config (or one section of it), for YAML and trackers. A run with growth
    stages has no `topology` or `train.steps` of its own: the stages say both."""
    data = dataclasses.asdict(cfg)
    if isinstance(cfg, Config) and cfg.growth.stages:
        del data["topology"], data["train"]["steps"]
    return data


def save_config(cfg: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False, width=100))
