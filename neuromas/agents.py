"""Agents: one frozen base model with one LoRA adapter per node, named by node id.

Rows of one batch may use different adapters (peft's ``adapter_names``), so a whole layer
generates in one call and the update runs every node's rows in one forward/backward; each
LoRA layer serves all adapters with one batched matmul (``lora_batch.py``). peft
refuses ``adapter_names`` in training mode, so the model stays in eval mode (LoRA dropout
is 0) with gradients on: that pass is exactly the per-adapter passes (tests/test_agents.py).
The KL reference is the same model with adapters disabled (``__base__`` rows): no second copy.
"""

from __future__ import annotations

import functools
import inspect
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

from neuromas.algorithms import gather_logprobs, token_entropy
from neuromas.config import AgentsConfig, LoraSettings, ModelConfig
from neuromas.errors import ConfigError
from neuromas.lora_batch import use_grouped_forward
from neuromas.models import load_base_model


@dataclass
class Generation:
    """One sampled completion: token ids up to and including the stop token."""

    completion_ids: torch.Tensor  # [C] int64, on CPU
    logprobs: torch.Tensor | None  # [C] fp32 sampling log-probs (None when greedy)
    truncated: bool  # hit max_new_tokens before a stop token


@dataclass
class PackedBatch:
    """[left pad | prompt | completion | right pad]: every prompt ends at the same column,
    so the logits of all completions sit in the last T+1 positions."""

    input_ids: torch.Tensor  # [B, P + T]
    attention_mask: torch.Tensor  # [B, P + T]
    position_ids: torch.Tensor  # [B, P + T]
    completion_ids: torch.Tensor  # [B, T]
    completion_mask: torch.Tensor  # [B, T] float, 1 on real tokens


def left_pad(seqs: list[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, L] ids and attention mask, sequences aligned to the right."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, width - len(seq):] = seq
        mask[row, width - len(seq):] = 1
    return ids, mask


def pack(prompts: list[torch.Tensor], completions: list[torch.Tensor], pad_id: int) -> PackedBatch:
    prompt_ids, prompt_mask = left_pad(prompts, pad_id)
    width = max(len(c) for c in completions)
    completion_ids = torch.full((len(completions), width), pad_id, dtype=torch.long)
    completion_mask = torch.zeros((len(completions), width))
    for row, seq in enumerate(completions):
        completion_ids[row, :len(seq)] = seq
        completion_mask[row, :len(seq)] = 1
    attention_mask = torch.cat([prompt_mask, completion_mask.long()], dim=1)
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    return PackedBatch(torch.cat([prompt_ids, completion_ids], dim=1), attention_mask, position_ids,
                       completion_ids, completion_mask)


BASE = "__base__"  # peft's adapter name for "no adapter" in a mixed batch


class Agents:
    """The peft model holding every node's adapter, and the two things done with it:
    sampling completions and teacher-forced log-probs of given completions."""

    share_prefill = True  # one prompt forward per distinct (prompt, adapter) in generate (off: benchmarks)

    def __init__(self, base, tokenizer, cfg: AgentsConfig, node_ids: list[str], all_node_ids: list[str] | None = None,
                 fresh_nodes: set[str] = frozenset()):
        """all_node_ids: every node any stage of the recipe has (overrides may name those);
        fresh_nodes: nodes whose LoRA starts random instead of as the base."""
        self.all_node_ids = sorted(set(all_node_ids or ()) | set(node_ids))
        unknown = sorted(set(cfg.overrides) - set(self.all_node_ids))
        if unknown:
            raise ConfigError(f"agents.overrides: {unknown[0]} is not a node of the topology "
                              f"({', '.join(self.all_node_ids)})")
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.node_ids = list(node_ids)
        num_layers = base.config.num_hidden_layers
        model = None
        for node_id in node_ids:
            lora = _lora_config(cfg.lora, cfg.overrides.get(node_id), num_layers, random_init=node_id in fresh_nodes)
            try:
                if model is None:
                    model = get_peft_model(base, lora, adapter_name=node_id)
                else:
                    model.add_adapter(node_id, lora)
            except ValueError as e:
                raise ConfigError(f"agents.lora ({node_id}): {str(e).splitlines()[0]}") from None
        # add_adapter/set_adapter leave all but one adapter frozen; joint training needs them all.
        for name, param in model.named_parameters():
            param.requires_grad_("lora_" in name)
        model.eval()
        use_grouped_forward(model)  # one batched matmul per layer for all adapters, not a loop
        self.model: PeftModel = model
        eos = model.generation_config.eos_token_id
        self.stop_ids = sorted({tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [eos] if eos else [])})

    @classmethod
    def build(cls, model_cfg: ModelConfig, cfg: AgentsConfig, node_ids: list[str],
              all_node_ids: list[str] | None = None) -> "Agents":
        base, tokenizer = load_base_model(model_cfg)
        return cls(base, tokenizer, cfg, node_ids, all_node_ids)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def parameters(self, node_id: str | None = None) -> list[torch.nn.Parameter]:
        """Trainable LoRA parameters of one node, or of all nodes."""
        tag = f".{node_id}." if node_id else ""
        return [p for n, p in self.model.named_parameters() if "lora_" in n and tag in n]

    def encode(self, messages: list[dict[str, str]]) -> torch.Tensor:
        """Chat messages -> prompt token ids [P] ending with the assistant header."""
        return self.encode_with_spans(messages, [])[0]

    def encode_with_spans(self, messages: list[dict[str, str]], find: list[tuple[str, str]]
                          ) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Prompt ids and, for each (block, part) of `find`, the token span [start, end) of `part`
        inside the next occurrence of `block` in the rendered text (blocks in order)."""
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=bool(find))
        spans, cursor = [], 0
        for block, part in find:
            at = text.find(block, cursor)
            assert at >= 0 and part in block, "an input message must appear verbatim in its reader's prompt"
            start = at + block.index(part)
            end, cursor = start + len(part), at + len(block)
            tokens = [i for i, (a, b) in enumerate(encoded.offset_mapping) if a < end and b > start]
            spans.append((tokens[0], tokens[-1] + 1) if tokens else (0, 0))
        return torch.tensor(encoded.input_ids, dtype=torch.long), spans

    def tool_result_ids(self, result: str) -> torch.Tensor:
        """The tokens that follow a node's tool call: the end of its turn, the result as a tool turn
        and the header of its next turn, as the chat template renders them (inline
        ``<tool_response>`` text for a template without a tool role)."""
        mark = "\x00NEUROMAS-CALL\x00"
        turns = [{"role": "user", "content": "x"}, {"role": "assistant", "content": mark}]
        try:
            full = self.tokenizer.apply_chat_template(turns + [{"role": "tool", "content": result}], tokenize=False,
                                                      add_generation_prompt=True)
            text = full[full.index(mark) + len(mark):]
            if result not in text:
                raise ValueError("the template drops tool turns")
        except Exception:  # no tool role in this template (jinja raises, or the result vanished)
            text = f"\n<tool_response>\n{result}\n</tool_response>\n"
        return torch.tensor(self.tokenizer(text, add_special_tokens=False).input_ids, dtype=torch.long)

    def decode(self, ids: torch.Tensor) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    @torch.no_grad()
    def generate(self, prompts: list[torch.Tensor], node_ids: list[str], max_new_tokens: int,
                 temperature: float = 1.0, top_p: float = 1.0, greedy: bool = False) -> list[Generation]:
        """Sample one completion per prompt, row i with adapter node_ids[i], in one call.

        Sampling log-probs are log softmax(logits / temperature) of the full distribution
        (top-p truncation is not renormalised in), the quantity the update recomputes.
        """
        ids, mask = left_pad(prompts, self.tokenizer.pad_token_id)
        cache = self._shared_prefill(ids, mask, node_ids) if self.share_prefill else None
        out = self.model.generate(
            input_ids=ids.to(self.device), attention_mask=mask.to(self.device), adapter_names=list(node_ids),
            **({self._cache_argument: cache} if cache is not None else {}),
            max_new_tokens=max_new_tokens, do_sample=not greedy, temperature=temperature if not greedy else None,
            top_p=top_p if not greedy else None, top_k=None, eos_token_id=self.stop_ids,
            pad_token_id=self.tokenizer.pad_token_id, return_dict_in_generate=True, output_logits=not greedy)
        completions = out.sequences[:, ids.shape[1]:].cpu()
        logprobs = None
        if not greedy:
            logits = torch.stack(out.logits, dim=1)  # [B, T, V]
            logprobs = gather_logprobs(logits, completions.to(logits.device), temperature).cpu()
        return [self._trim(completions[row], None if logprobs is None else logprobs[row])
                for row in range(len(prompts))]

    def _shared_prefill(self, ids: torch.Tensor, mask: torch.Tensor, node_ids: list[str]):
        """The KV cache of every row's prompt but its last token, computed once for each distinct
        (prompt, adapter) and copied to the rows that repeat it; None when no row repeats.

        A layer's samples of one question are such repeats (samples_per_question of them), and
        on a CPU the prompts' forward is a large part of a short generate call; generate then
        runs the prompts' last tokens and samples as before (benchmarks/rollout.py --prefill)."""
        first: dict[tuple, int] = {}
        rows = [first.setdefault((node, tuple(row.tolist())), len(first)) for node, row in zip(node_ids, ids)]
        if len(first) == len(rows) or ids.shape[1] < 2:
            return None
        pick = [rows.index(i) for i in range(len(first))]  # one row of each distinct prompt
        position = (mask.cumsum(dim=1) - 1).clamp(min=0)
        out = self.model(input_ids=ids[pick, :-1].to(self.device), attention_mask=mask[pick, :-1].to(self.device),
                         position_ids=position[pick, :-1].to(self.device), adapter_names=[node_ids[i] for i in pick],
                         use_cache=True, logits_to_keep=1)
        cache = out[self._cache_argument]
        cache.batch_select_indices(torch.tensor(rows, device=self.device))
        return cache

    @functools.cached_property
    def _cache_argument(self) -> str:
        """What this transformers calls the KV cache, in arguments and outputs: `cache` from 5.2x
        on (`past_key_values` still works there, with a deprecation warning), before it
        `past_key_values`."""
        forward = self.model.get_base_model().forward
        return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"

    def _trim(self, tokens: torch.Tensor, logprobs: torch.Tensor | None) -> Generation:
        stops = torch.isin(tokens, torch.tensor(self.stop_ids)).nonzero()
        length = int(stops[0]) + 1 if len(stops) else len(tokens)
        return Generation(tokens[:length].clone(), None if logprobs is None else logprobs[:length].clone(),
                          truncated=not len(stops))

    def input_salience(self, prompts: list[torch.Tensor], completions: list[torch.Tensor], node_ids: list[str],
                       spans: list[dict[str, tuple[int, int]]], agg: str, temperature: float = 1.0,
                       objective: str = "logprob") -> list[dict[str, float]]:
        """How much each upstream message in a prompt moved the node's own completion: the
        gradient of an objective with respect to the input embeddings, aggregated over each
        message's token span (GBC/AgentChord connection weights). One forward/backward.

        objective: logprob (sum of log p(completion) at `temperature`) | squared_logits
        (AgentChord's: sum over the completion of the squared raw logit of each sampled token).
        agg, per span: l1_mean | l1_max (of the gradient's L1 norm per token), grad_x_input
        (mean |gradient . embedding|), grad_x_input_signed (mean gradient . embedding, signed)."""
        batch = pack(prompts, completions, self.tokenizer.pad_token_id)
        width = batch.completion_ids.shape[1]
        embeds = self.model.get_input_embeddings()(batch.input_ids.to(self.device)).detach().requires_grad_(True)
        logits = self._completion_logits(batch, node_ids, inputs_embeds=embeds)
        ids, mask = batch.completion_ids.to(self.device), batch.completion_mask.to(self.device)
        if objective == "squared_logits":
            per_token = logits.float().gather(-1, ids.unsqueeze(-1)).squeeze(-1).pow(2)
        else:
            per_token = gather_logprobs(logits, ids, temperature)
        (grad,) = torch.autograd.grad((per_token * mask).sum(), embeds)
        out = []
        for row, row_spans in enumerate(spans):
            shift = batch.input_ids.shape[1] - width - len(prompts[row])  # left padding
            out.append({src: _span_salience(grad[row, shift + start:shift + end],
                                            embeds.detach()[row, shift + start:shift + end], agg)
                        for src, (start, end) in row_spans.items()})
        return out

    def completion_logprobs(self, prompts: list[torch.Tensor], completions: list[torch.Tensor],
                            node_ids: list[str] | None, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced log-probs of each completion under its node's adapter.

        node_ids None runs the frozen base (adapters disabled), the KL reference.
        Returns (logprobs [B, T], mask [B, T]); gradients flow when enabled by the caller.
        """
        batch = pack(prompts, completions, self.tokenizer.pad_token_id)
        logits = self._completion_logits(batch, node_ids)
        return gather_logprobs(logits, batch.completion_ids.to(self.device), temperature), \
            batch.completion_mask.to(self.device)

    @torch.no_grad()
    def base_logprobs(self, prompts: list[torch.Tensor], completions: list[torch.Tensor],
                      temperature: float = 1.0) -> torch.Tensor:
        """Log-probs [B, T] of each completion under the frozen base: the KL reference."""
        return self.completion_logprobs(prompts, completions, None, temperature)[0]

    def completion_stats(self, prompts: list[torch.Tensor], completions: list[torch.Tensor], node_ids: list[str],
                         temperature: float = 1.0, entropy_grad: bool = False
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`completion_logprobs` plus the policy's entropy at each completion position [B, T]
        (differentiable only with `entropy_grad`: the full softmax is costly to keep)."""
        batch = pack(prompts, completions, self.tokenizer.pad_token_id)
        logits = self._completion_logits(batch, node_ids)
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            entropy = token_entropy(logits, temperature)
        return (gather_logprobs(logits, batch.completion_ids.to(self.device), temperature),
                batch.completion_mask.to(self.device), entropy)

    def _completion_logits(self, batch: PackedBatch, node_ids: list[str] | None,
                           inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [B, T, V] predicting each completion token, from one mixed-adapter forward
        (over `inputs_embeds` instead of the token ids when given)."""
        # peft's "__base__" rows skip every adapter. Not `disable_adapter()`: leaving it calls
        # set_adapter(), which re-freezes all adapters but one and silently stops joint training.
        names = [BASE] * len(batch.input_ids) if node_ids is None else list(node_ids)
        inputs = {"input_ids": batch.input_ids.to(self.device)} if inputs_embeds is None else \
            {"inputs_embeds": inputs_embeds}
        logits = self.model(**inputs, attention_mask=batch.attention_mask.to(self.device),
                            position_ids=batch.position_ids.to(self.device),
                            logits_to_keep=batch.completion_ids.shape[1] + 1, use_cache=False,
                            adapter_names=names).logits
        return logits[:, :-1]

    def save(self, directory: Path) -> None:
        """One standard peft adapter directory per node: ``directory/<node_id>/``."""
        self.model.save_pretrained(str(directory), selected_adapters=self.node_ids)


def _span_salience(grad: torch.Tensor, embeds: torch.Tensor, agg: str) -> float:
    """One message's salience from its tokens' gradients and embeddings [S, H] (`input_salience`)."""
    if not len(grad):
        return 0.0
    if agg.startswith("grad_x_input"):
        per_token = (grad.float() * embeds.float()).sum(-1)
        per_token = per_token if agg == "grad_x_input_signed" else per_token.abs()
    else:
        per_token = grad.float().abs().sum(-1)
    return float(per_token.max() if agg == "l1_max" else per_token.mean())


def _lora_config(shared: LoraSettings, override, num_layers: int, random_init: bool = False) -> LoraConfig:
    """peft settings of one node. random_init: A and B both random (default: B = 0, the base)."""
    pick = lambda name: getattr(shared, name) if override is None or getattr(override, name) is None \
        else getattr(override, name)  # noqa: E731 - per-node value, else the shared one
    # Which layers is one choice: an override that sets either field replaces both.
    chosen = override if override is not None and (override.top_layers, override.layers) != (None, None) else shared
    top, layers = chosen.top_layers, chosen.layers
    if top is not None:
        if top > num_layers:
            raise ConfigError(f"agents.lora.top_layers: {top} > the model's {num_layers} layers")
        layers = list(range(num_layers - top, num_layers))
    elif layers is not None and any(not 0 <= l < num_layers for l in layers):
        raise ConfigError(f"agents.lora.layers: indices must be in 0..{num_layers - 1}, got {layers}")
    return LoraConfig(r=pick("rank"), lora_alpha=pick("alpha"), target_modules=list(pick("target_modules")),
                      layers_to_transform=layers, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
                      init_lora_weights=not random_init)


# ---- adapter state: what growth, checkpoints and the optimizer move between systems ----

def adapter_states(agents: Agents) -> dict[str, dict[str, torch.Tensor]]:
    """Each node's LoRA weights (peft state-dict keys, adapter name stripped), copied to CPU."""
    return {node_id: {k: v.detach().cpu().clone()
                      for k, v in get_peft_model_state_dict(agents.model, adapter_name=node_id).items()}
            for node_id in agents.node_ids}


def load_adapter_states(agents: Agents, states: dict[str, dict[str, torch.Tensor]]) -> None:
    for node_id, state in states.items():
        try:
            set_peft_model_state_dict(agents.model, state, adapter_name=node_id)
        except RuntimeError as e:
            raise ConfigError(f"cannot load weights into {node_id}: LoRA shapes differ "
                              f"({str(e).splitlines()[-1].strip()})") from None


_ADAPTER_IN_NAME = re.compile(r"\.(lora_[AB])\.(L\d+N\d+)\.")


def rename_adapter(param_name: str, rename: dict[str, str]) -> str | None:
    """The parameter's name after growth, or None if its node did not survive."""
    match = _ADAPTER_IN_NAME.search(param_name)
    if not match or match[2] not in rename:
        return None
    return param_name[:match.start()] + f".{match[1]}.{rename[match[2]]}." + param_name[match.end():]
