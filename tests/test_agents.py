import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from neuromas.agents import BASE, Agents, pack
from neuromas.config import AgentsConfig, LoraOverride, LoraSettings, ModelConfig
from neuromas.errors import ConfigError, NeuromasError
from neuromas.lora_batch import use_grouped_forward
from neuromas.models import load_base_model

NODES = ["L0N0", "L0N1", "L1N0"]


def make_agents(model_dir, cfg: AgentsConfig | None = None, nodes=NODES, randomize: bool = True) -> Agents:
    agents = Agents.build(ModelConfig(name=str(model_dir), dtype="float32"), cfg or AgentsConfig(), nodes)
    if randomize:  # LoRA B starts at 0 (= the base); give each adapter its own non-trivial weights
        torch.manual_seed(1)
        for param in agents.parameters():
            param.data.normal_(0, 0.2)
    return agents


def prompts_of(agents: Agents, n: int) -> list[torch.Tensor]:
    return [agents.encode([{"role": "user", "content": "Compute " + "1 + " * (i + 1) + "2."}]) for i in range(n)]


def test_one_trainable_adapter_per_node_and_a_frozen_base(tiny_model_dir):
    agents = make_agents(tiny_model_dir, randomize=False)
    assert set(agents.model.peft_config) == set(NODES)
    trainable = {n for n, p in agents.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    for node in NODES:
        assert agents.parameters(node) and all(p.requires_grad for p in agents.parameters(node))
    assert sum(p.numel() for p in agents.parameters()) == 3 * sum(p.numel() for p in agents.parameters("L0N0"))


def test_mixed_adapter_pass_equals_per_adapter_passes(tiny_model_dir):
    agents = make_agents(tiny_model_dir)
    prompts = prompts_of(agents, 4)
    completions = [torch.tensor([5, 6, 7]), torch.tensor([8, 9]), torch.tensor([10, 11, 12]), torch.tensor([13])]
    names = ["L0N0", "L1N0", "L0N1", "L0N0"]
    logprobs, mask = agents.completion_logprobs(prompts, completions, names)
    (logprobs * mask).sum().backward()
    mixed = {id(p): p.grad.clone() for p in agents.parameters()}
    agents.model.zero_grad()
    for row in range(4):  # one row at a time, each through its own adapter
        lp, m = agents.completion_logprobs([prompts[row]], [completions[row]], [names[row]])
        assert torch.allclose(lp[0, :len(completions[row])], logprobs[row, :len(completions[row])], atol=1e-5)
        (lp * m).sum().backward()
    for p in agents.parameters():
        assert torch.allclose(p.grad, mixed[id(p)], atol=1e-5)


@pytest.mark.parametrize("case", ["same ranks", "a base row", "different ranks"])
def test_grouped_lora_forward_equals_peft_loop(tiny_model_dir, monkeypatch, case):
    """One batched matmul per layer for all adapters gives peft's per-adapter loop, values and
    gradients; what it does not cover (a __base__ row, unequal ranks) falls back to peft."""
    from peft.tuners.lora import layer as lora_layer

    cfg = AgentsConfig(overrides={"L1N0": LoraOverride(rank=2)}) if case == "different ranks" else None
    agents = make_agents(tiny_model_dir, cfg)
    prompts = prompts_of(agents, 5)
    completions = [torch.tensor([5, 6, 7]), torch.tensor([8, 9]), torch.tensor([10, 11, 12]), torch.tensor([13]),
                   torch.tensor([14, 15])]
    names = ["L0N0", "L1N0", "L0N1", "L0N0", BASE if case == "a base row" else "L1N0"]
    peft_calls = []
    loop = lora_layer.Linear._mixed_batch_forward
    monkeypatch.setattr(lora_layer.Linear, "_mixed_batch_forward",
                        lambda self, *a, **k: peft_calls.append(1) or loop(self, *a, **k))

    def run() -> tuple[torch.Tensor, list[torch.Tensor]]:
        agents.model.zero_grad()
        logprobs, mask = agents.completion_logprobs(prompts, completions, names)
        (logprobs * mask).sum().backward()
        return logprobs.detach(), [p.grad.clone() for p in agents.parameters()]

    grouped, grouped_grads = run()
    assert bool(peft_calls) == (case != "same ranks")  # fell back exactly where it must
    use_grouped_forward(agents.model, enabled=False)
    looped, looped_grads = run()
    assert torch.allclose(grouped, looped, atol=1e-5)
    assert all(torch.allclose(g, h, atol=1e-6) for g, h in zip(grouped_grads, looped_grads))


def test_adapters_change_outputs_and_disabling_them_gives_the_base(tiny_model_dir):
    agents = make_agents(tiny_model_dir)
    prompt, completion = prompts_of(agents, 1), [torch.tensor([5, 6, 7, 8])]
    with torch.no_grad():
        a, _ = agents.completion_logprobs(prompt, completion, ["L0N0"])
        b, _ = agents.completion_logprobs(prompt, completion, ["L0N1"])
        ref, _ = agents.completion_logprobs(prompt, completion, None)
        base, _ = load_base_model(ModelConfig(name=str(tiny_model_dir), dtype="float32"))
        batch = pack(prompt, completion, agents.tokenizer.pad_token_id)
        logits = base(input_ids=batch.input_ids.to(base.device)).logits[:, -5:-1]
        expected = torch.log_softmax(logits, -1).gather(-1, completion[0].to(base.device).view(1, -1, 1)).squeeze(-1)
    assert not torch.allclose(a, b, atol=1e-3) and not torch.allclose(a, ref, atol=1e-3)
    assert torch.allclose(ref, expected, atol=1e-5)
    # the reference pass must leave every adapter trainable (peft's disable_adapter does not)
    assert all(p.requires_grad for p in agents.parameters())


def test_sampling_logprobs_equal_teacher_forced_ones(tiny_model_dir):
    agents = make_agents(tiny_model_dir)
    prompts = prompts_of(agents, 6)
    names = ["L0N0", "L0N1", "L1N0"] * 2
    torch.manual_seed(0)
    generations = agents.generate(prompts, names, max_new_tokens=8, temperature=0.8)
    completions = [g.completion_ids for g in generations]
    with torch.no_grad():
        forced, mask = agents.completion_logprobs(prompts, completions, names, temperature=0.8)
        wrong, _ = agents.completion_logprobs(prompts, completions, names[1:] + names[:1], temperature=0.8)
    for row, g in enumerate(generations):
        n = len(g.completion_ids)
        assert mask[row, :n].all() and not mask[row, n:].any()
        sampled = g.logprobs.to(forced.device)
        assert (sampled - forced[row, :n]).abs().max() <= 1e-4
        assert (sampled - wrong[row, :n]).abs().max() > 1e-3  # a row's own adapter, not a neighbour's


def test_repeated_prompts_share_one_prefill_and_sample_as_without_it(tiny_model_dir, monkeypatch):
    """Rows repeating a (prompt, adapter) get their prompt's cache from one forward; each row
    still decodes with its own adapter from its own prompt, and its sampling log-probs are the
    teacher-forced ones."""
    agents = make_agents(tiny_model_dir)
    a, b = prompts_of(agents, 2)
    prompts = [a, b, a, a, b, b, a]
    names = ["L0N0", "L0N0", "L0N0", "L0N1", "L1N0", "L1N0", BASE]
    prefill_rows, forward = [], agents.model.forward

    def counting_forward(*args, **kwargs):  # the shared prefill is the one forward keeping 1 logit
        if kwargs.get("logits_to_keep") == 1:
            prefill_rows.append(len(kwargs["input_ids"]))
        return forward(*args, **kwargs)

    monkeypatch.setattr(agents.model, "forward", counting_forward)
    alone = [agents.generate([p], [n], max_new_tokens=8, greedy=True)[0].completion_ids for p, n in zip(prompts, names)]
    together = agents.generate(prompts, names, max_new_tokens=8, greedy=True)
    assert [g.completion_ids.tolist() for g in together] == [c.tolist() for c in alone]
    assert len({tuple(c.tolist()) for c in alone}) >= 3  # the rows do differ: a wrong copy would show
    assert prefill_rows == [5]  # one prompt forward, of the 5 distinct (prompt, adapter) pairs of 7 rows
    torch.manual_seed(0)
    sampled = agents.generate(prompts, names, max_new_tokens=8, temperature=0.8)
    with torch.no_grad():
        forced, _ = agents.completion_logprobs(prompts, [g.completion_ids for g in sampled], names, temperature=0.8)
    for row, g in enumerate(sampled):
        assert (g.logprobs.to(forced.device) - forced[row, :len(g.completion_ids)]).abs().max() <= 1e-4


def test_trim_stops_after_the_first_stop_token(tiny_model_dir):
    agents = make_agents(tiny_model_dir, randomize=False)
    stop = agents.stop_ids[0]
    g = agents._trim(torch.tensor([4, 5, stop, stop, stop]), torch.arange(5.0))
    assert g.completion_ids.tolist() == [4, 5, stop] and g.logprobs.tolist() == [0, 1, 2] and not g.truncated
    g = agents._trim(torch.tensor([4, 5, 6]), None)
    assert g.completion_ids.tolist() == [4, 5, 6] and g.truncated


def test_saved_adapters_load_with_plain_peft(tiny_model_dir, tmp_path):
    agents = make_agents(tiny_model_dir)
    agents.save(tmp_path)
    prompt, completion = prompts_of(agents, 1), [torch.tensor([5, 6, 7])]
    for node in NODES:
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        loaded = PeftModel.from_pretrained(base, tmp_path / node).eval().to(agents.device)
        batch = pack(prompt, completion, agents.tokenizer.pad_token_id)
        with torch.no_grad():
            ours, _ = agents.completion_logprobs(prompt, completion, [node])
            logits = loaded(input_ids=batch.input_ids.to(agents.device)).logits[:, -4:-1]
        theirs = torch.log_softmax(logits, -1).gather(-1, completion[0].to(agents.device).view(1, -1, 1)).squeeze(-1)
        assert torch.allclose(ours, theirs, atol=1e-5), node


def test_per_node_overrides_and_layer_choice(tiny_model_dir):
    cfg = AgentsConfig(lora=LoraSettings(rank=4, top_layers=1),
                       overrides={"L1N0": LoraOverride(rank=2, target_modules=["q_proj"], layers=[0])})
    agents = make_agents(tiny_model_dir, cfg, randomize=False)
    config = agents.model.peft_config
    assert config["L0N0"].r == 4 and config["L0N0"].layers_to_transform == [1]
    assert config["L1N0"].r == 2 and config["L1N0"].layers_to_transform == [0]
    names = [n for n, _ in agents.model.named_parameters() if ".L1N0." in n]
    assert names and all("layers.0.self_attn.q_proj" in n for n in names)


@pytest.mark.parametrize("cfg, match", [
    (AgentsConfig(overrides={"L5N0": LoraOverride(rank=2)}), "L5N0 is not a node"),
    (AgentsConfig(lora=LoraSettings(target_modules=["no_such_proj"])), "agents.lora"),
    (AgentsConfig(lora=LoraSettings(top_layers=9)), "top_layers"),
    (AgentsConfig(lora=LoraSettings(layers=[7])), "layers"),
])
def test_bad_agent_settings(tiny_model_dir, cfg, match):
    with pytest.raises(ConfigError, match=match):
        make_agents(tiny_model_dir, cfg, randomize=False)


def test_unknown_model_is_a_clear_error(tmp_path):
    with pytest.raises(NeuromasError, match="cannot load"):
        load_base_model(ModelConfig(name="no-such-org/no-such-model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(NeuromasError, match="no config.json"):
        load_base_model(ModelConfig(name=str(tmp_path / "empty")))
