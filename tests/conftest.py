"""Fixtures: a tiny random Llama and a byte-level BPE tokenizer with a chat template, built
offline and saved as a model directory, so tests load it through the real loading path."""

from __future__ import annotations

import os

# Tests are offline: set before transformers/huggingface_hub read it at import time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CORPUS = [
    "You are node 1 of 2 in layer 1 of 2 in a network of language models that work on one task together.",
    "Task: Compute (3 + 4) * 2. Message from layer 1, node 2: the answer is 14. Put the final answer in \\boxed{}.",
    "Write a short message that helps the next layer solve the task. 0 1 2 3 4 5 6 7 8 9 + - * ( ) = .",
]


def build_tiny_model(directory: Path, seed: int = 0, init_std: float = 0.02, hidden: int = 64, heads: int = 4) -> Path:
    """Save a 2-layer, `hidden`-wide Llama and its tokenizer to `directory`. `init_std` is the
    weights' initial std: at the default 0.02 its next-token distribution is nearly uniform and
    no adapter can make it peaked (the final norm caps the logits), larger values let it learn.
    hidden / heads is the head size (16 by default; vLLM's CPU attention needs at least 32)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(CORPUS * 4, trainers.BpeTrainer(
        vocab_size=512, special_tokens=["<|pad|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|pad|>")
    tokenizer.chat_template = CHATML
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=2, num_attention_heads=heads, num_key_value_heads=heads // 2,
                         max_position_embeddings=4096,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=None, tie_word_embeddings=False, initializer_range=init_std)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


def tiny_overrides(model_dir: Path, run_dir: Path, **extra: object) -> list[str]:
    """Overrides that shrink a recipe to seconds on the tiny model. float32 on any device: the
    tests check exact math (on a GPU, `auto` would be bf16)."""
    base = {
        "model.name": str(model_dir), "model.dtype": "float32", "tracking.run_dir": str(run_dir), "train.steps": 2,
        "train.questions_per_step": 2, "rollout.samples_per_question": 2, "rollout.max_new_tokens": 6,
        "eval.num_questions": 2, "task.num_test": 4, "agents.lora.top_layers": "null",
    }
    base.update(extra)
    if "growth.stages" in extra:  # the stages set the steps
        del base["train.steps"]
    return [f"{k}={v}" for k, v in base.items()]


@pytest.fixture(scope="session")
def learnable_model_dir(tmp_path_factory) -> Path:
    """The tiny model with weights large enough (std 0.3) for a peaked next-token distribution,
    so training can move its sampled reward (tests/test_learning.py)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama-learnable"), init_std=0.3)


@pytest.fixture(scope="session")
def vllm_model_dir(tmp_path_factory) -> Path:
    """A tiny model vLLM's CPU build can serve (head size 64), peaked like the learnable one so
    that each adapter's greedy tokens differ (tests/test_vllm.py)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama-vllm"), init_std=0.3, hidden=128, heads=2)
