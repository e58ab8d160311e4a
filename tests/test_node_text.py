"""Node texts (System.texts): an optional instruction per node, in its prompt, saved beside its
adapter, carried through growth, resume and `neuromas show`."""

import json

import pytest

from conftest import tiny_overrides
from neuromas import checkpoint as ckpt
from neuromas.cli import main
from neuromas.config import PromptsConfig, RolloutConfig, TaskConfig, TopologyConfig
from neuromas.recipe import load_config
from neuromas.errors import ConfigError
from neuromas.prompts import PromptBuilder
from neuromas.rollout import RolloutEngine
from neuromas.checkpoint import load_system
from neuromas.system import System
from neuromas.tasks import build_task
from neuromas.topology import Topology
from neuromas.trainer import Trainer
from test_agents import make_agents
from test_trainer import RECIPE, VARYING_REWARD

TEXT = "Check the sum twice."


def test_a_node_text_goes_before_the_instruction_and_no_text_changes_nothing():
    topology = Topology.from_config(TopologyConfig(widths=[2, 1]))
    builder = PromptBuilder(PromptsConfig(), "Box it.")
    node = topology.layers[0][0]
    plain = builder.messages(topology, node, "1+1?", {})
    assert builder.messages(topology, node, "1+1?", {}, text="  ") == plain
    user = builder.messages(topology, node, "1+1?", {}, text=TEXT)[1]["content"]
    assert user == plain[1]["content"].replace("Write a short", f"Instruction for this node: {TEXT}\n\nWrite a short")


def test_the_engine_prompts_each_node_with_its_own_text(tiny_model_dir):
    topology = Topology.from_config(TopologyConfig(widths=[2, 1]))
    system = System(make_agents(tiny_model_dir, nodes=topology.node_ids), topology).with_texts({"L0N1": TEXT})
    engine = RolloutEngine(RolloutConfig(max_new_tokens=3), PromptBuilder(PromptsConfig(), "Box it."))
    episodes = engine.run(system, build_task(TaskConfig()).train_batch(0, 1), samples_per_question=2)
    decode = system.agents.tokenizer.decode
    has_text = {m.node_id: TEXT in decode(m.prompt_ids) for m in episodes.messages}
    assert has_text == {"L0N0": False, "L0N1": True, "L1N0": False}
    assert system.with_texts({"L0N1": ""}).texts == {}


def text_run(tiny_model_dir, tmp_path, init="copy"):
    stages = f"[{{topology: {{widths: [1]}}, steps: 2}}, {{topology: {{widths: [2, 1]}}, steps: 2, init: {init}}}]"
    return tiny_overrides(tiny_model_dir, tmp_path / "run", **{
        "growth.stages": stages, "checkpoint.every": 1, "tracking.transcripts_every": 1,
        "agents.texts": f"{{L0N0: '{TEXT}', L0N1: 'Seeded for the new node.'}}"}) + [VARYING_REWARD]


@pytest.mark.slow  # about 10 s or more on 2 cores
def test_texts_are_saved_beside_the_adapters_grow_by_the_init_rule_and_resume(tiny_model_dir, tmp_path, capsys):
    overrides = text_run(tiny_model_dir, tmp_path)
    trainer = Trainer(load_config(RECIPE, overrides), tmp_path / "run")
    assert trainer.system.texts == {"L0N0": TEXT}
    trainer.fit()
    trainer.close()
    # copy init: the survivor (now L1N0) keeps its text and both new nodes copy it
    assert trainer.system.texts == {"L1N0": TEXT, "L0N0": TEXT, "L0N1": TEXT}
    run = tmp_path / "run"
    assert (run / "adapters" / "L1N0" / ckpt.TEXT_FILE).read_text() == TEXT
    assert (run / "checkpoints" / "step_4" / "adapters" / "L0N1" / ckpt.TEXT_FILE).read_text() == TEXT
    last = json.loads((run / "transcripts.jsonl").read_text().splitlines()[-1])
    assert last["node_texts"] == trainer.system.texts
    resumed = Trainer(load_config(RECIPE, overrides), run, resume=True)
    assert resumed.system.texts == trainer.system.texts
    resumed.close()
    assert load_system(run)[0].texts == trainer.system.texts
    assert main(["show", str(run)]) == 0
    assert f"L1N0 text: {TEXT}" in capsys.readouterr().out


@pytest.mark.slow  # about 10 s or more on 2 cores
def test_new_nodes_not_copied_take_the_recipes_seed_for_their_id(tiny_model_dir, tmp_path):
    trainer = Trainer(load_config(RECIPE, text_run(tiny_model_dir, tmp_path, init="zero")), tmp_path / "run")
    trainer.fit()
    trainer.close()
    # A seed names an id, in whichever stage has it: the new L0N0 and L0N1 take theirs; the survivor
    # (the first stage's L0N0, L1N0 now) keeps the text it had.
    assert trainer.system.texts == {"L1N0": TEXT, "L0N0": TEXT, "L0N1": "Seeded for the new node."}


def test_a_text_for_a_node_no_stage_has_is_a_config_error(tiny_model_dir, tmp_path):
    overrides = tiny_overrides(tiny_model_dir, tmp_path / "run", **{"agents.texts": "{L3N0: hi}"})
    with pytest.raises(ConfigError, match="agents.texts: L3N0 is not a node of any stage"):
        load_config(RECIPE, overrides)  # refused with the recipe, before any model loads
