"""A grouped forward for mixed-adapter batches of LoRA layers.

peft's mixed-batch forward (``adapter_names=``) loops over the adapters present in a batch
in every LoRA layer: for each it gathers that adapter's rows, runs A and B, and scatters the
result back. Its cost grows with the number of adapters, and on a GPU those many small
kernels are the bottleneck (docs/benchmarks.md: 0.32x of the single-adapter speed at 7 nodes
on an H100). Here each layer stacks its adapters' A and B weights once, picks each row's pair
by index and runs two batched matmuls, whatever the number of adapters.

It covers plain LoRA on Linear layers, the only kind neuromas builds: where a batch has
anything else (a ``__base__`` row, an adapter missing from this layer, adapters of different
ranks or scalings, a LoRA variant such as DoRA, active dropout, inputs that are not
[batch, sequence, features]), that layer falls back to peft's own forward.
"""

from __future__ import annotations

import types

import torch
from peft.tuners.lora import layer as lora_layer

_VARIANT_KWARGS = getattr(lora_layer, "VARIANT_KWARG_KEYS", ())
_ROWS: dict[tuple, tuple[tuple[str, ...], torch.Tensor]] = {}


def use_grouped_forward(model: torch.nn.Module, enabled: bool = True) -> int:
    """Give every LoRA Linear layer of `model` the grouped mixed-batch forward (or, with
    `enabled=False`, peft's own back); returns how many layers."""
    count = 0
    for module in model.modules():
        if isinstance(module, lora_layer.Linear):
            if enabled:
                module._mixed_batch_forward = types.MethodType(_grouped_mixed_batch_forward, module)
            else:
                module.__dict__.pop("_mixed_batch_forward", None)
            count += 1
    return count


def _rows(adapter_names: list[str], device: torch.device) -> tuple[tuple[str, ...], torch.Tensor]:
    """The batch's adapters (in order of first use) and each row's index among them, on `device`.
    Cached: every layer of one forward, and every decoding step of one generate, asks again."""
    key = (tuple(adapter_names), device)
    hit = _ROWS.get(key)
    if hit is None:
        unique = tuple(dict.fromkeys(adapter_names))
        position = {name: i for i, name in enumerate(unique)}
        hit = (unique, torch.tensor([position[n] for n in adapter_names], device=device))
        if len(_ROWS) >= 256:
            _ROWS.clear()
        _ROWS[key] = hit
    return hit


def _groupable(layer, unique: tuple[str, ...], x: torch.Tensor) -> bool:
    if x.dim() != 3 or any(n not in layer.lora_A or n in layer.lora_variant for n in unique):
        return False
    first = unique[0]
    if layer.training and any(not isinstance(layer.lora_dropout[n], torch.nn.Identity) for n in unique):
        return False
    return all(layer.r[n] == layer.r[first] and layer.scaling[n] == layer.scaling[first]
               and layer.lora_A[n].weight.dtype == layer.lora_A[first].weight.dtype for n in unique)


def _grouped_mixed_batch_forward(self, x: torch.Tensor, *args, adapter_names: list[str], **kwargs) -> torch.Tensor:
    unique, rows = _rows(adapter_names, x.device)
    if any(kwargs.get(k) is not None for k in _VARIANT_KWARGS) or not _groupable(self, unique, x):
        return type(self)._mixed_batch_forward(self, x, *args, adapter_names=adapter_names, **kwargs)
    for k in _VARIANT_KWARGS:  # not arguments of the base layer
        kwargs.pop(k, None)
    result = self.base_layer(x, *args, **kwargs)
    a_weights = [self.lora_A[n].weight for n in unique]  # [r, in] each
    b_weights = [self.lora_B[n].weight for n in unique]  # [out, r] each
    x = x.to(a_weights[0].dtype)
    if len(unique) == 1:
        lora = x @ a_weights[0].T @ b_weights[0].T
    else:
        a = torch.stack(a_weights)[rows]  # [B, r, in]: each row's own adapter
        b = torch.stack(b_weights)[rows]  # [B, out, r]
        lora = torch.bmm(torch.bmm(x, a.transpose(1, 2)), b.transpose(1, 2))
    return result + (lora * self.scaling[unique[0]]).to(result.dtype)
