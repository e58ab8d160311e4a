from pathlib import Path

import pytest

from neuromas.config import Config
from neuromas.recipe import load_config, save_config
from neuromas.errors import ConfigError

RECIPES = sorted([*Path(__file__).parent.parent.glob("recipes/**/*.yaml"),
                  *Path(__file__).parent.parent.glob("experiments/**/*.yaml")])


def test_defaults_round_trip_through_yaml(tmp_path):
    cfg = load_config(None, ["train.steps=7", "topology.widths=[3,1]", "agents.overrides.L0N1.rank=4"])
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg


def test_overrides_are_typed():
    cfg = load_config(None, ["train.steps=5", "topology.widths=[4,2,1]", "train.lr=3e-5", "rollout.top_p=0.9",
                             "topology.edges=[[L0N0,L1N0]]"])
    assert cfg.train.steps == 5 and cfg.topology.widths == [4, 2, 1]
    assert cfg.train.lr == pytest.approx(3e-5) and cfg.rollout.top_p == pytest.approx(0.9)
    assert cfg.topology.edges == [["L0N0", "L1N0"]]


@pytest.mark.parametrize("override, key", [
    ("train.stepz=3", "train.stepz"),
    ("nope=1", "nope"),
    ("train.steps=abc", "train.steps"),
    ("train.steps=2.5", "train.steps"),
    ("topology.widths=3", "topology.widths"),
    ("agents.overrides.L0N0.rnk=2", "agents.overrides.L0N0.rnk"),
    ("algorithm.advantage=ppo", "algorithm.advantage"),
    ("rollout.temperature=0", "rollout.temperature"),
    ("tracking.backend=tensorboard", "tracking.backend"),
])
def test_bad_values_name_the_key_on_one_line(override, key):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    message = str(info.value)
    assert key in message and "\n" not in message


def test_an_override_reaches_into_a_list_by_index():
    recipe = "recipes/growth/grow-1-3-7.yaml"
    cfg = load_config(recipe, ["growth.stages.1.init=zero", "growth.stages.2.steps=4"])
    assert [s.init for s in cfg.growth.stages] == ["copy", "zero", "copy"]
    assert [s.steps for s in cfg.growth.stages] == [8, 8, 4] and cfg.total_steps == 20
    assert load_config(None, ["topology.widths=[3,1]", "topology.widths.0=2"]).topology.widths == [2, 1]
    for override, key in [("growth.stages.3.init=zero", "growth.stages"),
                          ("growth.stages.x.init=zero", "growth.stages"), ("growth.stages.1.inti=zero", "inti"),
                          ("growth.stages.1=5", "FIELD"), ("topology.widths.0=x", "topology.widths.0")]:
        with pytest.raises(ConfigError) as info:
            load_config(recipe, [override])
        assert key in str(info.value) and "\n" not in str(info.value)


def test_override_without_equals_sign():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.steps"])


def test_missing_and_malformed_recipes(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [steps: 3\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- just a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)
    bad.write_text("task: {name: jsonl}\n")
    with pytest.raises(ConfigError, match="task.path"):
        load_config(bad)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_loads(recipe):
    assert isinstance(load_config(recipe), Config)


def test_there_are_recipes():
    assert any(p.name == "quickstart.yaml" for p in RECIPES)


def test_growth_stages_are_the_only_source_of_topology_and_steps(tmp_path):
    recipe = "recipes/growth/grow-1-3-7.yaml"
    cfg = load_config(recipe)
    assert cfg.total_steps == sum(s.steps for s in cfg.growth.stages)
    save_config(cfg, tmp_path / "c.yaml")
    saved = (tmp_path / "c.yaml").read_text()
    assert "\ntopology:" not in saved and "  steps: 24" not in saved  # nothing the stages say twice
    assert load_config(tmp_path / "c.yaml").growth == cfg.growth
    # a config saved while the stages were copied into topology and train.steps still loads
    old = load_config(tmp_path / "c.yaml", ["train.steps=24", "topology.widths=[1]"])
    assert old.total_steps == 24
    for override, key in [("train.steps=25", "train.steps"), ("topology.widths=[2,1]", "topology")]:
        with pytest.raises(ConfigError, match=key):
            load_config(recipe, [override])


def test_renamed_keys_still_load_with_one_warning_naming_the_new_ones(tmp_path, capsys):
    from neuromas.recipe import RENAMED

    old = tmp_path / "old.yaml"
    old.write_text("algorithm:\n  kl_coef: 0.1\n  kl_in: reward\n  branch_shared: true\n"
                   "task:\n  sandbox_wall_s: 3\n")
    cfg = load_config(old, ["algorithm.sampler_cap=3.0"])
    assert (cfg.algorithm.kl.coef, cfg.algorithm.kl.applied_to, cfg.algorithm.branch.shared) == (0.1, "reward", True)
    assert cfg.task.sandbox.wall_s == 3 and cfg.algorithm.off_policy.cap == 3.0
    warning = capsys.readouterr().err.strip()
    assert "\n" not in warning and "algorithm.kl_coef -> algorithm.kl.coef" in warning
    assert "algorithm.sampler_cap -> algorithm.off_policy.cap" in warning
    both = tmp_path / "both.yaml"
    both.write_text("algorithm:\n  kl_coef: 0.1\n  kl: {coef: 0.2}\n")
    with pytest.raises(ConfigError, match="gives both"):
        load_config(both)
    cfg = Config()
    for old_key, new_key in RENAMED.items():  # every new key is a field, no old one still is
        node = cfg
        for part in new_key.split("."):
            node = getattr(node, part)
        section, field = old_key.split(".")
        assert not hasattr(getattr(cfg, section), field), old_key
