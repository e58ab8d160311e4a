"""Multi-turn environments: the graph acts, the environment answers, turn after turn.

An environment follows OpenEnv's convention, with text in and out:

    env.reset(sample) -> str                              # the first observation
    env.step(action) -> (observation: str, reward: float, done: bool)

Each turn the whole graph runs once (every layer, one generate call per layer, as in one-turn
tasks) on the task and the history so far; the answering node's reply is the action. An episode
ends when the environment says `done` or after `env.max_turns` turns. Its reward is the last
turn's (`env.reward: final`) or the sum over turns (`sum`). Every node's tokens of every turn are
trained with the episode's advantage (docs/tools.md, "Multi-turn environments"). `play` is that
loop; `RolloutEngine.run` hands it every rollout of an engine built with an environment.

Built in: `guess`, a number-guessing game with higher/lower feedback (task.name: guess). A user's
own: `env.name: pkg.module:Class` or `path/to/file.py:Class`, constructed with no arguments.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace
from typing import Protocol

import torch

from neuromas.config import EnvConfig
from neuromas.errors import ConfigError
from neuromas.plugins import load_named
from neuromas.rollout import Ablation, Episodes, RolloutEngine, plan_rollout
from neuromas.system import System
from neuromas.tasks.sample import Sample


class Environment(Protocol):
    def reset(self, sample: Sample) -> str: ...

    def step(self, action: str) -> tuple[str, float, bool]: ...


class GuessingGame:
    """Find a secret whole number in [1, N] (N from the sample) from higher/lower answers; reward 1
    on the turn the number is guessed. A reply's guess is its boxed number, else its last number."""

    def reset(self, sample: Sample) -> str:
        self.secret, self.high = int(sample.answer), int(sample.meta["high"])
        return f"Guess my number, a whole number from 1 to {self.high}."

    def step(self, action: str) -> tuple[str, float, bool]:
        boxed = re.findall(r"\\boxed\{\s*(-?\d+)\s*\}", action)
        numbers = boxed or re.findall(r"-?\d+", action)
        if not numbers:
            return "That was no number. Guess again.", 0.0, False
        guess = int(numbers[-1])
        if guess == self.secret:
            return f"{guess} is right.", 1.0, True
        return f"{guess} is too {'low' if guess < self.secret else 'high'}.", 0.0, False


# Tasks that are games: the environment each plays in (env.name: auto).
OWN_ENVIRONMENTS = {"guess": GuessingGame}


def environment_factory(cfg: EnvConfig, task_name: str):
    """What makes a fresh environment for each episode, or None for a one-turn task: env.name, or
    with `auto` the task's own environment if it is a game. With `env.action`, env.name is an
    OpenEnv environment class, adapted (`OpenEnvAdapter`)."""
    if cfg.name == "auto":
        return OWN_ENVIRONMENTS.get(task_name)
    if cfg.name in OWN_ENVIRONMENTS:
        return OWN_ENVIRONMENTS[cfg.name]
    found = environment_class(cfg.name)
    if cfg.action is None:
        return found
    action = load_named(cfg.action, "env.action", noun=None)
    return lambda: OpenEnvAdapter(found(), action, cfg.action_field)


class OpenEnvAdapter:
    """An OpenEnv environment (openenv-core's in-process `Environment`: `reset(seed=, episode_id=)`
    and `step(action)` return an `Observation` with `done`, `reward` and its own fields) as a text
    environment: the reply goes into the action's `field`, and the observation's own fields are
    its text (one field: its value; several: JSON)."""

    def __init__(self, env, action_class, field: str):
        self.env, self.action_class, self.field = env, action_class, field

    def reset(self, sample: Sample) -> str:
        seed = int(hashlib.sha256(sample.id.encode()).hexdigest()[:8], 16)
        return _observation_text(self.env.reset(seed=seed, episode_id=sample.id))

    def step(self, action: str) -> tuple[str, float, bool]:
        observation = self.env.step(self.action_class(**{self.field: action}))
        return _observation_text(observation), float(observation.reward or 0.0), bool(observation.done)


def _observation_text(observation) -> str:
    own = observation.model_dump(exclude={"done", "reward", "metadata"}) if hasattr(observation, "model_dump") \
        else {"observation": observation}
    return str(next(iter(own.values()))) if len(own) == 1 else json.dumps(own, default=str)


def environment_class(spec: str):
    found = load_named(spec, "env.name", noun=None)
    if not all(callable(getattr(found, m, None)) for m in ("reset", "step")):
        raise ConfigError(f"env.name: {spec} is no class with reset(sample) and step(action)")
    return found


def play(engine: RolloutEngine, system: System, questions: list[Sample], samples_per_question: int,
         greedy: bool, gate: float, ablation: Ablation | None) -> Episodes:
    """Multi-turn episodes: each turn the graph runs once over every episode still going, on its
    task, its history of actions and observations and the latest observation; the answering
    node's reply is the action. Every turn's messages are kept, numbered by their episode."""
    samples = [q for q in questions for _ in range(samples_per_question)]
    envs = [engine.environment() for _ in samples]
    observations = [env.reset(sample) for env, sample in zip(envs, samples)]
    turns: list[list[dict]] = [[] for _ in samples]
    returns, done = torch.zeros(len(samples)), [False] * len(samples)
    messages, full = [], [True] * len(samples)
    for turn in range(engine.max_turns):
        going = [e for e in range(len(samples)) if not done[e]]
        if not going:
            break
        now = [replace(samples[e], question=_with_history(samples[e].question, turns[e], observations[e]),
                       views={}) for e in going]
        played = engine.execute(system, plan_rollout(system.topology, system.new_nodes, now, 1, gate), greedy,
                                ablation)
        for j, (e, action) in enumerate(zip(going, played.answers())):
            observation, reward, finished = envs[e].step(action)
            returns[e] = returns[e] + reward if engine.sum_rewards else reward
            turns[e].append({"action": action, "observation": observation, "reward": float(reward)})
            observations[e], done[e] = observation, bool(finished)
            full[e] = full[e] and played.full[j]
        for m in played.messages:
            m.episode, m.turn = going[m.episode], turn
            messages.append(m)
    group_ids = torch.arange(len(questions)).repeat_interleave(samples_per_question)
    return Episodes(samples, group_ids, messages, system.topology.answer_ids, full, len(samples), [],
                    returns=returns, turns=turns)


def _with_history(question: str, turns: list[dict], observation: str) -> str:
    """A turn's task text: the task, every earlier turn's action and the answer to it, and the
    latest observation (the first one alone on the first turn)."""
    if not turns:
        return f"{question}\n\n{observation}"
    lines = [f"Turn {t + 1}, you: {_short(turn['action'])}\nAnswer: {turn['observation']}"
             for t, turn in enumerate(turns)]
    return f"{question}\n\n" + "\n".join(lines) + f"\n\nTurn {len(turns) + 1}: your move."


def _short(action: str, limit: int = 200) -> str:
    action = " ".join(action.split())
    return action if len(action) <= limit else action[:limit] + " ..."
