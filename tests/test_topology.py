import pytest

from neuromas.config import TopologyConfig
from neuromas.errors import ConfigError
from neuromas.topology import Topology


def build(**kwargs) -> Topology:
    return Topology.from_config(TopologyConfig(**kwargs))


def test_full_connectivity_ids_and_sink():
    topo = build(widths=[2, 1])
    assert topo.node_ids == ["L0N0", "L0N1", "L1N0"]
    assert topo.sink.id == "L1N0" and topo.depth == 2
    assert topo.predecessors("L1N0") == ["L0N0", "L0N1"]
    assert topo.predecessors("L0N0") == [] and topo.successors("L0N1") == ["L1N0"]


def test_full_three_layers():
    topo = build(widths=[4, 2, 1])
    assert topo.predecessors("L1N1") == ["L0N0", "L0N1", "L0N2", "L0N3"]
    assert topo.predecessors("L2N0") == ["L1N0", "L1N1"]
    assert len(topo.edges) == 4 * 2 + 2


def test_skip_reads_every_earlier_layer():
    topo = build(widths=[2, 2, 1], connectivity="skip")
    assert topo.predecessors("L2N0") == ["L0N0", "L0N1", "L1N0", "L1N1"]
    assert topo.predecessors("L1N0") == ["L0N0", "L0N1"]


def test_sparse_fan_in_windows_and_full_sink():
    topo = build(widths=[4, 2, 1], connectivity="sparse", fan_in=2)
    assert topo.predecessors("L1N0") == ["L0N0", "L0N1"]
    assert topo.predecessors("L1N1") == ["L0N2", "L0N3"]
    assert topo.predecessors("L2N0") == ["L1N0", "L1N1"]


def test_sparse_that_strands_a_node_is_an_error():
    with pytest.raises(ConfigError, match="L0N1 feeds no later node"):
        build(widths=[4, 2, 1], connectivity="sparse", fan_in=1)


def test_explicit_edges():
    topo = build(widths=[2, 1, 1], connectivity="edges",
                 edges=[["L0N0", "L1N0"], ["L0N1", "L2N0"], ["L1N0", "L2N0"]])
    assert topo.predecessors("L2N0") == ["L0N1", "L1N0"]
    assert topo.predecessors("L1N0") == ["L0N0"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(widths=[]), "at least one layer"),
    (dict(widths=[2, 0, 1]), "at least one node"),
    (dict(widths=[2, 2]), "single sink"),
    (dict(widths=[2, 1], connectivity="edges", edges=[["L0N0", "L1N0"]]), "L0N1 feeds no later node"),
    (dict(widths=[1, 1, 1], connectivity="edges", edges=[["L0N0", "L2N0"]]), "L1N0 has no inputs"),
    (dict(widths=[2, 1], connectivity="edges", edges=[["L1N0", "L0N0"], ["L0N1", "L1N0"]]), "later layer"),
    (dict(widths=[2, 1], connectivity="edges", edges=[["L0N0", "L0N1"]]), "later layer"),
    (dict(widths=[2, 1], connectivity="edges", edges=[["L0N0", "L1N0"], ["L0N5", "L1N0"]]), "not in widths"),
    (dict(widths=[2, 1], connectivity="edges", edges=[["L0N0", "sink"]]), "not a node id"),
    (dict(widths=[2, 1], connectivity="edges"), "required"),
])
def test_invalid_graphs(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        build(**kwargs)


def test_single_node_system():
    topo = build(widths=[1])
    assert topo.node_ids == ["L0N0"] and topo.sink.id == "L0N0" and topo.edges == []
