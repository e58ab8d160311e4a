"""Connection weights (GBC/AgentChord): how much each node's answer leans on each message it read.

The one salience loop (`input_scores`: the gradient of a reader's objective with respect to each
input message's embeddings, `Agents.input_salience`), its normalisation into shares that sum to 1
over a reader's inputs, and the propagation of those shares back from the answering node. Used by
attribution credit (`algorithm.credit: attribution`), the textual step's bandwidth (`textual.top_k`)
and the `neuromas attribute` report.
"""

from __future__ import annotations

import torch

from neuromas.rollout import Episodes


def failing_episodes(rewards: torch.Tensor, num_regular: int) -> list[int]:
    """The regular episodes whose reward falls short of correct (1)."""
    return [e for e in range(num_regular) if rewards[e] < 1.0]


def input_scores(agents, episodes: Episodes, episode_ids: set[int] | list[int], agg: str, objective: str,
                 temperature: float, micro_batch_size: int) -> dict[tuple[int, str], dict[str, float]]:
    """(episode, reader) -> {input node: raw salience}, for every reader with inputs in `episode_ids`,
    in chunks of `micro_batch_size` rows."""
    wanted = set(episode_ids)
    readers = [m for m in episodes.messages if m.input_spans and m.episode in wanted]
    scores: dict[tuple[int, str], dict[str, float]] = {}
    for start in range(0, len(readers), micro_batch_size):
        chunk = readers[start:start + micro_batch_size]
        salience = agents.input_salience([m.prompt_ids for m in chunk], [m.completion_ids for m in chunk],
                                         [m.node_id for m in chunk], [m.input_spans for m in chunk], agg,
                                         temperature, objective)
        for m, score in zip(chunk, salience):
            scores[m.episode, m.node_id] = score
    return scores


def normalise_shares(scores: dict[str, float], top_k: int | None) -> dict[str, float]:
    """Scores -> shares summing to 1 over the top-k inputs (equal shares when all are 0). A
    negative score (signed gradient x input) counts as 0."""
    scores = {k: max(v, 0.0) for k, v in scores.items()}
    kept = sorted(scores, key=scores.get, reverse=True)[:top_k] if top_k else list(scores)
    total = sum(scores[k] for k in kept)
    return {k: (scores[k] / total if total > 0 else 1 / len(kept)) if k in kept else 0.0 for k in scores}


def attribution_weights(answer_ids: list[str], order: list[str],
                        shares: dict[str, dict[str, float]]) -> dict[str, float]:
    """Weights of one episode's nodes: each answering node (the sink) 1; any other node the sum
    over its readers of reader weight x the share the reader gave it. `order`: the episode's
    nodes, layer by layer."""
    weights = {node: float(node in answer_ids) for node in order}
    for reader in reversed(order):
        for src, share in shares.get(reader, {}).items():
            weights[src] += weights[reader] * share
    return weights


def failure_shares(agents, episodes: Episodes, failing: list[int], agg: str, objective: str, temperature: float,
                   micro_batch_size: int) -> tuple[dict[int, dict[str, dict[str, float]]], dict[tuple[str, str], list]]:
    """For each failing episode, reader -> {input: connection weight (a share)}; and the raw
    saliences of each edge (source, reader) over those episodes."""
    shares: dict[int, dict[str, dict[str, float]]] = {e: {} for e in failing}
    raw: dict[tuple[str, str], list[float]] = {}
    for (episode, reader), score in input_scores(agents, episodes, failing, agg, objective, temperature,
                                                 micro_batch_size).items():
        shares[episode][reader] = normalise_shares(score, None)
        for src, value in score.items():
            raw.setdefault((src, reader), []).append(value)
    return shares, raw


def node_weights(episodes: Episodes, shares: dict[int, dict[str, dict[str, float]]]) -> dict[str, float]:
    """Each node's connection weight to the answer, mean over the episodes of `shares`: the
    answering nodes 1, any other the sum over its readers of reader weight x share."""
    totals: dict[str, float] = {}
    for e, by_reader in shares.items():
        order = [m.node_id for m in episodes.messages if m.episode == e]
        for node, weight in attribution_weights(episodes.answer_ids, order, by_reader).items():
            totals[node] = totals.get(node, 0.0) + weight / len(shares)
    return totals


def failure_weights(agents, episodes: Episodes, rewards: torch.Tensor, agg: str, objective: str, temperature: float,
                    micro_batch_size: int) -> dict[str, float]:
    """Each node's connection weight to the answer, mean over the failing regular episodes (the
    textual step's bandwidth, `textual.top_k`: the nodes most connected to the failures)."""
    failing = failing_episodes(rewards, episodes.num_regular)
    shares, _ = failure_shares(agents, episodes, failing, agg, objective, temperature, micro_batch_size)
    return node_weights(episodes, shares)


def strongest_path(start: str, shares: dict[str, dict[str, float]]) -> list[str]:
    """From `start`, follow each reader's strongest input (ties: the first listed) until a node
    with no inputs: the path a failure is sent back along. `shares`: reader -> {input: weight}."""
    path = [start]
    while shares.get(path[-1]):
        inputs = shares[path[-1]]
        path.append(max(inputs, key=lambda src: (inputs[src], -list(inputs).index(src))))
    return path
