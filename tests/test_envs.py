"""Multi-turn environments: the graph runs once per turn on the history, its answer is the action,
the environment's answers drive the next turn, and every turn's tokens are trained."""

from __future__ import annotations

import re

import pytest
import torch

from conftest import tiny_overrides
from neuromas.agents import Generation
from neuromas.config import EnvConfig, PromptsConfig, RolloutConfig, TaskConfig, TopologyConfig
from neuromas.envs import GuessingGame, environment_factory
from neuromas.errors import ConfigError
from neuromas.prompts import PromptBuilder
from neuromas.recipe import load_config
from neuromas.rollout import RolloutEngine
from neuromas.system import System
from neuromas.tasks import build_task
from neuromas.topology import Topology
from neuromas.trainer import Trainer
from test_agents import make_agents
from test_trainer import RECIPE


class Bisecting:
    """A scripted backend: the answering node bisects, reading the history in its prompt; the first
    layer's nodes write a fixed note."""

    def __init__(self, agents, sink: str = "L1N0"):
        self.agents, self.sink, self.prompts = agents, sink, []

    def generate(self, prompts, node_ids, max_new_tokens, temperature=1.0, top_p=1.0, greedy=False):
        out = []
        for ids, node_id in zip(prompts, node_ids):
            text = self.agents.decode(ids)
            self.prompts.append((node_id, text))
            reply = self._guess(text) if node_id == self.sink else "a note"
            tokens = self.agents.tokenizer(reply, add_special_tokens=False)["input_ids"] + self.agents.stop_ids[:1]
            out.append(Generation(torch.tensor(tokens), None if greedy else torch.zeros(len(tokens)), False))
        return out

    @staticmethod
    def _guess(prompt: str) -> str:
        low, high = 1, int(re.search(r"from 1 to (\d+)", prompt).group(1))
        for guess, verdict in re.findall(r"(\d+) is too (low|high)", prompt):
            low, high = (int(guess) + 1, high) if verdict == "low" else (low, int(guess) - 1)
        return f"\\boxed{{{(low + high) // 2}}}"

    def sync(self, agents):
        return None

    last_sync_s = 0.0


def game_engine(agents, max_turns: int, reward: str = "final"):
    task = build_task(TaskConfig(name="guess", max_value=16, num_test=6))
    engine = RolloutEngine(RolloutConfig(), PromptBuilder(PromptsConfig(), task.answer_format), Bisecting(agents),
                           task.vote, environment=environment_factory(EnvConfig(), "guess"), max_turns=max_turns,
                           sum_rewards=reward == "sum")
    return engine, task


def test_the_graph_plays_turn_after_turn_on_its_history(tiny_model_dir):
    topology = Topology.from_config(TopologyConfig(widths=[2, 1]))
    agents = make_agents(tiny_model_dir, nodes=topology.node_ids, randomize=False)
    engine, task = game_engine(agents, max_turns=5)  # bisecting 1..16 takes at most 5 guesses
    episodes = engine.run(System(agents, topology), task.test, 1, greedy=True)
    assert episodes.returns.tolist() == [1.0] * 6 and task.rewards(episodes).tolist() == [1.0] * 6
    for e, sample in enumerate(episodes.samples):
        turns = episodes.turns[e]
        assert turns[-1]["observation"] == f"{sample.answer} is right." and len(turns) <= 5
        assert all(t["reward"] == 0.0 for t in turns[:-1])
        mine = [m for m in episodes.messages if m.episode == e]
        assert len(mine) == 3 * len(turns) and sorted({m.turn for m in mine}) == list(range(len(turns)))
        assert episodes.answers()[e] == mine[-1].text  # the last turn's action
    sink_prompts = [text for node, text in engine.backend.prompts if node == "L1N0"]
    assert any("Turn 1, you: \\boxed{8}" in p and "is too" in p for p in sink_prompts)  # the history is shown
    # too few turns to find some numbers: those episodes end unsolved, with reward 0
    short, _ = game_engine(agents, max_turns=1)
    one = short.run(System(agents, topology), task.test, 1, greedy=True)
    assert one.returns.tolist() == [float(s.answer == "8") for s in task.test]
    assert all(len(t) == 1 for t in one.turns)
    from neuromas.accuracy import majority_vote
    from neuromas.errors import NeuromasError

    with pytest.raises(NeuromasError, match="not one answer to vote on"):
        majority_vote(engine, System(agents, topology), task, task.test, 3, 0)


def test_summed_rewards_and_a_users_environment_class(tiny_model_dir, tmp_path):
    (tmp_path / "my_env.py").write_text(
        "class Counter:\n"
        "    def reset(self, sample):\n        self.n = 0\n        return 'say anything'\n"
        "    def step(self, action):\n        self.n += 1\n        return f'turn {self.n}', 0.5, self.n == 3\n")
    topology = Topology.from_config(TopologyConfig(widths=[1]))
    agents = make_agents(tiny_model_dir, nodes=topology.node_ids, randomize=False)
    task = build_task(TaskConfig(name="arithmetic", num_test=2))
    engine = RolloutEngine(RolloutConfig(), PromptBuilder(PromptsConfig(), "Box it."), Bisecting(agents, "L0N0"),
                           task.vote,
                           environment=environment_factory(EnvConfig(name=f"{tmp_path / 'my_env.py'}:Counter"),
                                                           "arithmetic"), max_turns=5, sum_rewards=True)
    engine.backend._guess = lambda prompt: "ok"
    episodes = engine.run(System(agents, topology), task.test, 2)
    assert episodes.returns.tolist() == [1.5] * 4 and all(len(t) == 3 for t in episodes.turns)
    with pytest.raises(ConfigError, match="has no 'Nope'"):
        environment_factory(EnvConfig(name=f"{tmp_path / 'my_env.py'}:Nope"), "arithmetic")
    with pytest.raises(ConfigError, match="no class with reset"):
        environment_factory(EnvConfig(name="os.path:join"), "arithmetic")
    assert environment_factory(EnvConfig(), "arithmetic") is None  # a one-turn task


def test_the_guessing_game():
    game = GuessingGame()
    sample = build_task(TaskConfig(name="guess", max_value=16, num_test=3)).test[0]
    assert "1 to 16" in game.reset(sample)
    assert game.step("no idea") == ("That was no number. Guess again.", 0.0, False)
    low = str(int(sample.answer) - 1)
    assert game.step(f"I say \\boxed{{{low}}}")[0] == f"{low} is too low." or sample.answer == "1"
    assert game.step(f"it is {sample.answer}") == (f"{sample.answer} is right.", 1.0, True)


@pytest.mark.slow  # about 10 s or more on 2 cores
def test_a_training_step_trains_every_turns_tokens(tiny_model_dir, tmp_path):
    cfg = load_config(RECIPE, tiny_overrides(tiny_model_dir, tmp_path / "run", **{
        "task.name": "guess", "task.max_value": 4, "env.max_turns": 3, "task.reward": "auto",
        "eval.num_questions": 2}))
    trainer = Trainer(cfg, tmp_path / "run")
    made = trainer.train_step(1)
    episodes = made.episodes
    assert episodes.turns is not None and torch.equal(made.rewards, episodes.returns)
    per_episode = [sum(1 for m in episodes.messages if m.episode == e) for e in range(episodes.num_episodes)]
    assert per_episode == [len(t) * len(trainer.topology.node_ids) for t in episodes.turns]
    node_ids = trainer.topology.node_ids
    totals = trainer.steps.policy_update.totals(episodes, torch.ones(episodes.num_episodes, len(node_ids)), node_ids)
    assert float(totals["tokens"]) == sum(len(m.completion_ids) for m in episodes.messages)  # every turn's
    assert made.metrics["train/rows_updated"] >= 0
    trainer.fit()  # the evaluations play too
    trainer.close()
    with pytest.raises(ConfigError, match="branch"):
        load_config(RECIPE, tiny_overrides(tiny_model_dir, tmp_path / "b", **{"task.name": "guess",
                                                                             "algorithm.credit": "branch"}))


def test_an_openenv_style_environment_plugs_in_by_class_name(tiny_model_dir, tmp_path):
    """openenv-core's in-process convention (pydantic Action/Observation, reset(seed, episode_id),
    step(action) -> Observation with done and reward), written here without the package."""
    (tmp_path / "echo_env.py").write_text(
        "from pydantic import BaseModel\n"
        "class EchoAction(BaseModel):\n    message: str\n"
        "class EchoObservation(BaseModel):\n    done: bool = False\n    reward: float | None = None\n"
        "    metadata: dict = {}\n    echoed: str = ''\n"
        "class EchoEnv:\n"
        "    def reset(self, seed=None, episode_id=None):\n        self.n = 0\n"
        "        return EchoObservation(echoed=f'ready {episode_id}')\n"
        "    def step(self, action):\n        self.n += 1\n"
        "        return EchoObservation(echoed=action.message[:5], reward=1.0, done=self.n == 2)\n")
    factory = environment_factory(EnvConfig(name=f"{tmp_path / 'echo_env.py'}:EchoEnv",
                                            action=f"{tmp_path / 'echo_env.py'}:EchoAction"), "arithmetic")
    env = factory()
    sample = build_task(TaskConfig(name="arithmetic", num_test=2)).test[0]
    assert env.reset(sample) == f"ready {sample.id}"
    assert env.step("hello there") == ("hello", 1.0, False) and env.step("x")[2] is True
    topology = Topology.from_config(TopologyConfig(widths=[1]))
    agents = make_agents(tiny_model_dir, nodes=topology.node_ids, randomize=False)
    engine = RolloutEngine(RolloutConfig(), PromptBuilder(PromptsConfig(), "Box it."), Bisecting(agents, "L0N0"),
                           environment=factory, max_turns=4, sum_rewards=True)
    engine.backend._guess = lambda prompt: "ok"
    episodes = engine.run(System(agents, topology), [sample], 2)
    assert episodes.returns.tolist() == [2.0, 2.0] and episodes.turns[0][0]["observation"] == "ok"
