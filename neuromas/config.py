"""Typed configuration, the schema alone: a recipe YAML maps 1:1 onto these dataclasses.

Every field is documented once, here, beside its default; each dataclass checks its own ranges
and choices. Reading a recipe and its overrides is `neuromas.recipe`. Each component receives
only its own section (``RolloutEngine(cfg.rollout)``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional


from neuromas.aggregation import AGGREGATIONS
from neuromas.errors import ConfigError


# The names of the choices whose owners need torch (so the schema, read before torch loads, cannot
# import them). Each owner checks its own table against these (tests/test_style.py), and the
# command line offers them from here.
CONNECTIVITIES = ("full", "sparse", "skip", "edges")  # topology.py
ADVANTAGES = ("rloo", "grpo", "dr_grpo", "reinforce")  # algorithms.ADVANTAGES, and reinforce's moving baseline
CREDITS = ("shared", "per_node", "branch", "attribution")  # credit.py
ATTRIBUTION_AGGS = ("l1_mean", "l1_max", "grad_x_input", "grad_x_input_signed")  # agents.input_salience
ATTRIBUTION_OBJECTIVES = ("logprob", "squared_logits")  # agents.input_salience
KL_ESTIMATORS = ("k1", "k3")  # algorithms.KL_ESTIMATORS
BACKENDS = ("hf", "vllm")  # rollout.build_generator
ABLATIONS = ("empty", "shuffled")  # rollout.Ablation


def _check_choice(section: str, name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{section}.{name}: {value!r} is not one of {', '.join(map(str, choices))}")


def _check_positive(section: str, obj: Any, *names: str, allow_zero: bool = False) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is not None and (value < 0 or (value == 0 and not allow_zero)):
            bound = ">= 0" if allow_zero else "> 0"
            raise ConfigError(f"{section}.{name}: must be {bound}, got {value}")


@dataclass
class ModelConfig:
    name: str = "smollm2-135m-instruct"  # built-in name, local model directory, or hub id
    dtype: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16 | float16
    device: str = "auto"  # auto (cuda if available) | cpu | cuda | cuda:N

    def __post_init__(self) -> None:
        _check_choice("model", "dtype", self.dtype, ("auto", "float32", "bfloat16", "float16"))
        if not re.fullmatch(r"auto|cpu|mps|(cuda|xpu)(:\d+)?", self.device):
            raise ConfigError(f"model.device: {self.device!r} is not one of auto, cpu, cuda, cuda:N, mps, xpu")


@dataclass
class LoraSettings:
    rank: int = 8  # LoRA rank r
    alpha: float = 16.0  # LoRA scaling numerator (scale = alpha / rank)
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    top_layers: Optional[int] = None  # adapt only the last N transformer layers (cheaper backward)
    layers: Optional[list[int]] = None  # or adapt exactly these layer indices

    def __post_init__(self) -> None:
        _check_positive("agents.lora", self, "rank", "alpha", "top_layers")
        if self.top_layers is not None and self.layers is not None:
            raise ConfigError("agents.lora: set at most one of top_layers and layers")


@dataclass
class LoraOverride:
    """Per-node LoRA settings; a field left null keeps the shared value."""

    rank: Optional[int] = None
    alpha: Optional[float] = None
    target_modules: Optional[list[str]] = None
    top_layers: Optional[int] = None
    layers: Optional[list[int]] = None


@dataclass
class AgentsConfig:
    lora: LoraSettings = field(default_factory=LoraSettings)  # shared by every node
    overrides: dict[str, LoraOverride] = field(default_factory=dict)  # node id -> changes
    # node id -> its starting instruction text, shown in its prompt (prompts.text_block). None by
    # default: nodes stay role-free unless a recipe seeds a text or a textual optimiser writes one
    texts: dict[str, str] = field(default_factory=dict)


@dataclass
class TopologyConfig:
    widths: list[int] = field(default_factory=lambda: [2, 1])  # nodes per layer; last 1 unless it is combined
    connectivity: str = "full"  # full | sparse | skip | edges
    fan_in: int = 2  # sparse: how many nodes of the previous layer each node reads
    edges: Optional[list[list[str]]] = None  # edges: explicit [source_id, target_id] pairs
    # layer -> how its messages are combined before later layers read them (neuromas.aggregation):
    # concat (default) | vote | select:majority | select:shortest | select:longest | select:judge.
    # A negative layer counts from the end, so {-1: vote} stays on the last layer as growth deepens.
    aggregation: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_choice("topology", "connectivity", self.connectivity, CONNECTIVITIES)
        _check_positive("topology", self, "fan_in")
        for how in self.aggregation.values():
            _check_choice("topology", "aggregation", how, AGGREGATIONS)


DEFAULT_SYSTEM = (
    "You are node {index} of {width} in layer {layer} of {num_layers} in a network of language "
    "models that work on one task together. {place}"
)
DEFAULT_USER = "{task}{inputs}{instruction}"


@dataclass
class PromptsConfig:
    """Role-free templates: they say where a node sits and what it received, never a role.

    Fields available to `system` and `user`: {index} {width} {layer} {num_layers} {widths}
    {place} {task} {inputs} {instruction}. Positions are 1-based in the text.
    """

    task_to: str = "all"  # all | first_layer: which nodes see the task itself
    system: str = DEFAULT_SYSTEM
    user: str = DEFAULT_USER
    task_block: str = "Task: {question}\n\n"  # how {task} is rendered
    input_block: str = "Message from layer {layer}, node {index}:\n{text}\n\n"  # one per upstream message
    # a combined layer's one message (topology.aggregation); {how}: vote, select:majority, ...
    combined_block: str = "Message from layer {layer}, its {width} nodes combined by {how}:\n{text}\n\n"
    # select:judge: what the frozen base reads to pick one of a layer's messages
    judge: str = "Task: {question}\n\n{candidates}Which candidate answers the task best? Reply with its number only."
    judge_candidate: str = "Candidate {number}:\n{text}\n\n"
    empty_message: str = "(no text)"  # stands in for an empty upstream message
    text_block: str = "Instruction for this node: {text}\n\n"  # a node's own text (System.texts), before {instruction}
    hidden_place: str = "Your message is read by nodes of a later layer."
    sink_place: str = "You are the last node: your reply is the network's answer."
    hidden_instruction: str = "Write a short message that helps the next layer solve the task."
    sink_instruction: str = "Solve the task. {answer_format}"

    def __post_init__(self) -> None:
        _check_choice("prompts", "task_to", self.task_to, ("all", "first_layer"))


@dataclass
class SandboxSettings:
    """The limits of one program run in the code sandbox (task.name: code; tasks/sandbox.py)."""

    wall_s: float = 10.0
    cpu_s: int = 5
    memory_mb: int = 1024

    def __post_init__(self) -> None:
        _check_positive("task.sandbox", self, "wall_s", "cpu_s", "memory_mb")


@dataclass
class TaskConfig:
    # Kinds. Generated, with a `depth` knob: arithmetic (nested expressions), lookup (multi-hop
    # chains through a table), countdown (reach a target from given numbers). From data (task.path
    # JSONL or a Hugging Face task.dataset): math (GSM8K / MATH), choice (MMLU-style multiple
    # choice), code (HumanEval / MBPP, run in a sandbox), jsonl (your own {"question", "answer"}
    # rows, scored by task.reward). Split, where each first-layer node is given its own part of the
    # input and the answering node only what it must combine: split_arithmetic, split_lookup (the
    # table's rows shared out; `depth` hops, `table_size` names). BBH Navigate,
    # generated (Yes/No, balanced; `depth` step instructions): navigate. A task library:
    # reasoning_gym (task.dataset: one of reasoning-gym's generators, e.g. chain_sum; its knobs in
    # task.generator_config; scored by the generator's own checker; pip install 'neuromas[reasoning-gym]').
    name: str = "arithmetic"
    # auto (the kind's own) | exact_match | boxed_match | math_match | choice_match | lookup_match | countdown_match
    # | yes_no_match | yes_no_boxed | code_tests | "pkg.module:function"
    reward: str = "auto"
    # exact_match and yes_no_match: how the answer is read. last_number: the last \boxed{}, else the last
    # number (Yes/No) in the reply, so an echoed operand or a cut-off reply can score; boxed: only a
    # \boxed{} (boxed_match, yes_no_boxed).
    extract: str = "last_number"
    answer_format: str = "auto"  # told to the answering node; auto: the kind's own
    format_weight: float = 0.0  # reward += format_weight when the answer is in the required form
    seed: int = 0  # data seed; the test split uses a seed disjoint from the train stream
    # The train stream's own seed: null keeps the stream task.seed gives. Set it (e.g. to train.seed)
    # so that training seeds see different questions; the test and validation splits stay the same.
    stream_seed: Optional[int] = None
    # generated kinds
    depth: int = 2  # arithmetic: operators; lookup: hops; countdown: numbers - 1; navigate: step instructions
    max_value: int = 9  # arithmetic, countdown: numbers are drawn from 1..max_value
    table_size: int = 8  # lookup: names in the table
    num_test: int = 64  # size of the held-out test (and validation) split
    # data kinds: JSONL files, or a Hugging Face dataset (needs `datasets` and the hub)
    path: Optional[str] = None  # training file
    test_path: Optional[str] = None  # optional test file
    validation_path: Optional[str] = None  # optional validation file (growth gates); generated kinds make their own
    dataset: Optional[str] = None  # e.g. openai/gsm8k
    dataset_config: Optional[str] = None  # e.g. main
    generator_config: dict[str, Any] = field(default_factory=dict)  # reasoning_gym: the generator's knobs
    # verifiers: the Taskset class (pkg.module:Cls or path/to/file.py:Cls) and its config's fields
    taskset: Optional[str] = None
    taskset_config: dict[str, Any] = field(default_factory=dict)
    split: str = "train"
    test_split: Optional[str] = "test"
    validation_split: Optional[str] = None
    # code
    code_score: str = "all"  # all: 1 if every test passes | fraction: the share that pass
    sandbox: SandboxSettings = field(default_factory=SandboxSettings)  # each program run's limits

    def __post_init__(self) -> None:
        from neuromas.tasks import KINDS  # the one table of task kinds (no torch)

        _check_choice("task", "name", self.name, tuple(KINDS))
        if self.name == "reasoning_gym" and not self.dataset:
            raise ConfigError("task.dataset: name a reasoning-gym generator for task.name=reasoning_gym "
                              "(e.g. chain_sum)")
        if self.name == "reasoning_gym" and (self.path or self.test_path or self.validation_path):
            raise ConfigError("task.path: a reasoning_gym task is generated by task.dataset's generator and reads "
                              "no data files")
        if self.name == "verifiers" and not self.taskset:
            raise ConfigError("task.taskset: name the verifiers Taskset class for task.name=verifiers "
                              "(pkg.module:Cls or path/to/file.py:Cls)")
        if (self.taskset or self.taskset_config) and self.name != "verifiers":
            raise ConfigError(f"task.taskset: only task.name=verifiers reads it (this task is {self.name})")
        if self.generator_config and self.name != "reasoning_gym":
            raise ConfigError(f"task.generator_config: only task.name=reasoning_gym reads it (this task is "
                              f"{self.name})")
        _check_positive("task", self, "depth", "max_value", "num_test", "table_size")
        _check_positive("task", self, "format_weight", allow_zero=True)
        _check_choice("task", "code_score", self.code_score, ("all", "fraction"))
        _check_choice("task", "extract", self.extract, ("last_number", "boxed"))
        if not KINDS[self.name].generated and not (self.path or self.dataset):
            raise ConfigError(f"task.path: required when task.name is {self.name} (or give task.dataset)")
        if self.path and self.dataset:
            raise ConfigError("task.path and task.dataset: give one source of data, not both")
        if KINDS[self.name].generated and self.name != "reasoning_gym":
            data = [k for k in ("path", "test_path", "validation_path", "dataset") if getattr(self, k)]
            if data:
                data_kinds = ", ".join(n for n, kind in KINDS.items() if not kind.generated)
                raise ConfigError(f"task.{data[0]}: the {self.name} task is generated and reads no data (data "
                                  f"kinds: {data_kinds})")


@dataclass
class VLLMSettings:
    """rollout.backend=vllm: one in-process vLLM engine per training process (docs/vllm.md)."""

    gpu_memory_utilization: float = 0.3  # GPU: the engine's share of the device; training keeps the rest
    kv_cache_gb: float = 1.0  # CPU: KV-cache space in GiB (VLLM_CPU_KVCACHE_SPACE)
    max_model_len: int = 4096  # prompt + completion tokens of one row
    sync_dir: Optional[str] = None  # where adapters are written for the engine; null: /dev/shm, else a temp dir

    def __post_init__(self) -> None:
        _check_positive("rollout.vllm", self, "kv_cache_gb", "max_model_len")
        if not 0 < self.gpu_memory_utilization < 1:
            raise ConfigError("rollout.vllm.gpu_memory_utilization: must be in (0, 1), "
                              f"got {self.gpu_memory_utilization}")


@dataclass
class RolloutConfig:
    backend: str = "hf"  # hf (transformers generate, grouped LoRA: the exact reference) | vllm
    vllm: VLLMSettings = field(default_factory=VLLMSettings)
    samples_per_question: int = 4  # K full-system samples per question (the advantage group)
    max_new_tokens: int = 64  # per node message
    answer_max_new_tokens: Optional[int] = None  # the answering (sink) node's limit; null: max_new_tokens
    # The quickstart's setting, verified end to end on 2 seeds (docs/results.md). In the sweep at
    # lr 3e-3, 0.3 and 0.7 tied over 2 seeds; 1.0 left 17% of rows with a gradient (0.7: 34%).
    temperature: float = 0.7
    top_p: float = 1.0
    micro_batch_size: int = 32  # rows per generate call (bounds memory)
    judge_max_new_tokens: int = 8  # select:judge (topology.aggregation): the base's greedy reply naming a candidate

    def __post_init__(self) -> None:
        _check_choice("rollout", "backend", self.backend, BACKENDS)
        _check_positive("rollout", self, "samples_per_question", "max_new_tokens", "answer_max_new_tokens",
                        "temperature", "top_p", "micro_batch_size", "judge_max_new_tokens")
        if self.top_p > 1:
            raise ConfigError(f"rollout.top_p: must be in (0, 1], got {self.top_p}")


@dataclass
class KLSettings:
    """A KL penalty to the base model (the adapters disabled)."""

    coef: float = 0.0  # its weight (0: off)
    estimator: str = "k3"  # k1 | k3
    applied_to: str = "loss"  # loss (per-token penalty) | reward (episode penalty before advantages)

    def __post_init__(self) -> None:
        _check_choice("algorithm.kl", "estimator", self.estimator, KL_ESTIMATORS)
        _check_choice("algorithm.kl", "applied_to", self.applied_to, ("loss", "reward"))
        _check_positive("algorithm.kl", self, "coef", allow_zero=True)


@dataclass
class OffPolicySettings:
    """When the sampler is not the trainer (rollout.backend=vllm, or bf16), their log-probs differ a
    little and the samples are slightly off-policy. The gap is logged either way (train/sampler_kl,
    node/*/sampler_gap_*); docs/algorithms.md."""

    # none: ignore it (right for the hf backend in fp32, where they agree to ~1e-5); truncate: weight
    # each token by min(p_train / p_sample, cap) (truncated importance sampling); mask: drop tokens
    # whose ratio exceeds cap or is below 1/cap.
    correction: str = "none"
    cap: float = 2.0

    def __post_init__(self) -> None:
        _check_choice("algorithm.off_policy", "correction", self.correction, ("none", "truncate", "mask"))
        if self.cap <= 1:
            raise ConfigError(f"algorithm.off_policy.cap: must be > 1, got {self.cap}")


@dataclass
class BranchSettings:
    """credit: branch: counterfactual resamples of one node's message (docs/algorithms.md)."""

    per_question: int = 1  # how many (episode, node) pairs are branched per question
    samples: int = 2  # resamples of the branched node (M)
    shared: bool = False  # also train un-branched messages with the shared advantage

    def __post_init__(self) -> None:
        _check_positive("algorithm.branch", self, "per_question", "samples")


@dataclass
class AttributionSettings:
    """credit: attribution, GBC's bandwidth (textual.top_k) and `neuromas attribute`: how much each
    upstream message moved a node's output, from the gradient."""

    # per message, l1_mean | l1_max of the gradient's per-token L1 norm, or the mean of the gradient .
    # embedding per token: grad_x_input (absolute) | grad_x_input_signed (AgentChord's signed variant; a
    # message that pushed against the output gets no share of the credit)
    agg: str = "l1_mean"
    # what is differentiated: logprob (sum of log p of the message) | squared_logits (AgentChord: sum
    # of the squared raw logits of the sampled tokens)
    objective: str = "logprob"
    top_k: Optional[int] = None  # keep each node's k most salient inputs

    def __post_init__(self) -> None:
        _check_choice("algorithm.attribution", "agg", self.agg, ATTRIBUTION_AGGS)
        _check_choice("algorithm.attribution", "objective", self.objective, ATTRIBUTION_OBJECTIVES)
        _check_positive("algorithm.attribution", self, "top_k")


@dataclass
class AlgorithmConfig:
    advantage: str = "rloo"  # rloo | grpo (mean/std) | dr_grpo (mean only) | reinforce (moving-average baseline)
    baseline_decay: float = 0.9  # reinforce: EMA decay of the baseline
    reward_scale: float = 1.0  # rewards are scaled, then clipped, before advantages
    reward_clip: Optional[float] = None  # clip rewards to [-c, c]
    loss: str = "pg"  # pg (plain policy gradient) | clip (PPO clipped surrogate)
    epochs: int = 1  # optimizer steps over each rollout batch (inner epochs; > 1 wants loss: clip)
    clip_low: float = 0.2  # clip: ratio floor 1 - clip_low
    clip_high: float = 0.2  # clip: ratio ceiling 1 + clip_high (e.g. 0.28 for "clip-higher")
    loss_agg: str = "node"  # node (each node's token mean, summed) | token (one token mean) | sequence
    entropy_coef: float = 0.0  # entropy bonus in the loss (entropy is logged either way)
    kl: KLSettings = field(default_factory=KLSettings)
    off_policy: OffPolicySettings = field(default_factory=OffPolicySettings)
    credit: str = "shared"  # shared | per_node | branch | attribution (docs/algorithms.md)
    branch: BranchSettings = field(default_factory=BranchSettings)
    attribution: AttributionSettings = field(default_factory=AttributionSettings)
    # A message cut off at its token limit costs its node this much reward, against the other
    # samples of the same question (leave-one-out, added to the node's advantage; branch copies
    # excluded). It pulls a node back from running away to the limit even in groups where every
    # answer is wrong, which the task reward alone cannot (DAPO's overlong penalty, per node).
    # 0: off. Built after the equal-budget rerun (docs/results.md, section 1), where the [2, 1]
    # nodes' messages ran away to the limit after growth; not yet measured.
    cutoff_penalty: float = 0.0

    def __post_init__(self) -> None:
        sec = "algorithm"
        _check_choice(sec, "advantage", self.advantage, ADVANTAGES)
        _check_choice(sec, "loss", self.loss, ("pg", "clip"))
        _check_choice(sec, "loss_agg", self.loss_agg, ("node", "token", "sequence"))
        _check_choice(sec, "credit", self.credit, CREDITS)
        _check_positive(sec, self, "epochs", "reward_scale", "reward_clip")
        _check_positive(sec, self, "entropy_coef", "clip_low", "clip_high", "cutoff_penalty", allow_zero=True)
        if self.cutoff_penalty and self.credit == "branch" and not self.branch.shared:
            raise ConfigError("algorithm.cutoff_penalty: not with credit: branch alone, which trains only branched "
                              "messages (set branch.shared: true, or cutoff_penalty: 0)")
        if not 0 <= self.baseline_decay < 1:
            raise ConfigError(f"algorithm.baseline_decay: must be in [0, 1), got {self.baseline_decay}")


@dataclass
class TrainConfig:
    steps: int = 20  # optimizer steps
    questions_per_step: int = 4  # distinct questions per step (x samples_per_question episodes)
    # Swept on the built-in 135M model (docs/results.md): 1e-4..3e-4 barely move LoRA in tens of
    # steps. Larger bases usually want less (1e-4..5e-4 is common for LoRA RL on 1-8B models).
    lr: float = 3e-3
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # clip the global norm over all adapters
    micro_batch_size: int = 8  # rows per forward/backward in the update
    seed: int = 0
    init_from: Optional[str] = None  # start from saved adapters: a checkpoint, or the output of `neuromas grow`
    # Nodes whose messages the loss leaves out, so their adapters stay as they are (a diagnosis
    # probe: e.g. [L0N0, L0N1] trains only the sink of [2, 1]). Node ids of any stage.
    frozen_nodes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check_positive("train", self, "steps", "questions_per_step", "lr", "max_grad_norm", "micro_batch_size")


@dataclass
class EvalConfig:
    num_questions: int = 32  # greedy test questions before and after training; 0 turns eval off
    every: int = 0  # also evaluate every N steps (0: only before and after)
    transcripts: int = 4  # full transcripts of the first N questions of each evaluation (eval_transcripts.jsonl)
    # Evaluate at step 0 too (the untrained system; the change since step 0 is paired with it).
    # Off saves an evaluation where step 0 is known: fresh LoRA adapters leave the base unchanged,
    # so every seed's untrained system is the same one.
    before: bool = True
    # Message ablations at each evaluation: empty (nodes read nothing where a message was) and/or
    # shuffled (the message the same node wrote for another question); logs eval/accuracy_<mode>
    # and eval/real_minus_<mode>, how much the system uses its messages.
    ablations: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check_positive("eval", self, "num_questions", "every", "transcripts", allow_zero=True)
        for mode in self.ablations:
            _check_choice("eval", "ablations", mode, ABLATIONS)


@dataclass
class TrackingConfig:
    backend: str = "jsonl"  # jsonl | wandb | none (metrics.jsonl is written in every case)
    project: str = "neuromas"  # wandb project (WANDB_PROJECT wins when set)
    run_dir: Optional[str] = None  # default: runs/<recipe name>-<time>
    transcripts_every: int = 5  # every N steps, full transcripts of a few episodes (0: never)
    transcripts_per_step: int = 2  # how many episodes each time

    def __post_init__(self) -> None:
        _check_choice("tracking", "backend", self.backend, ("jsonl", "wandb", "none"))


@dataclass
class CheckpointConfig:
    every: int = 0  # save step_N/ every N steps (0: only the final adapters)
    keep_last: int = 2  # how many step_N/ directories to keep

    def __post_init__(self) -> None:
        _check_positive("checkpoint", self, "every", allow_zero=True)
        _check_positive("checkpoint", self, "keep_last")


@dataclass
class EnvConfig:
    """Multi-turn environments (neuromas.envs): the graph runs once per turn, its answer is the
    action, the environment answers with the next observation, a reward and whether it is done."""

    # auto: the task's own environment if it is a game (task.name: guess), else none (one turn) |
    # guess | pkg.module:Class | path/to/file.py:Class (reset(sample) -> str, step(action) -> (str, float, bool))
    name: str = "auto"
    max_turns: int = 4  # an episode ends when the environment says done, or after this many turns
    reward: str = "final"  # final: the last turn's reward | sum: the sum over turns
    # An OpenEnv environment class as env.name (openenv-core's Environment: reset(seed=, episode_id=) and
    # step(action) return an Observation): its Action class, and the field the reply goes into.
    action: Optional[str] = None  # pkg.module:Action | path/to/file.py:Action
    action_field: str = "message"

    def __post_init__(self) -> None:
        _check_positive("env", self, "max_turns")
        _check_choice("env", "reward", self.reward, ("final", "sum"))


@dataclass
class ToolsConfig:
    """Tools a node may call while it writes its message (neuromas.tools, docs/tools.md). Off
    while `use` is empty."""

    # python (runs the code in the sandbox) | pkg.module:function | path/to/file.py:function; a function
    # needs type hints and a docstring with an Args section (its JSON schema is made from them)
    use: list[str] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)  # the nodes that may call them; empty: every node
    max_calls: int = 2  # tool calls per node per turn; a call after the last is not run
    timeout_s: float = 10.0  # per call; a call that takes longer gets an error result
    max_result_chars: int = 1000  # a longer result is cut, saying how much was left out

    def __post_init__(self) -> None:
        _check_positive("tools", self, "max_calls", "timeout_s", "max_result_chars")


@dataclass
class DistributedConfig:
    """How N processes share the work (one process needs none of this).

    Launch with torchrun, the deepspeed launcher or SLURM (launch/); each rank rolls out its
    shard of every step's questions and DeepSpeed reduces the adapters' gradients.
    """

    # DeepSpeed config: a name shipped with neuromas (zero2, zero2-offload, zero0) or a JSON path;
    # default zero2 when launched with N > 1 processes
    deepspeed: Optional[str] = None

    def __post_init__(self) -> None:
        if self.deepspeed is not None and not self.deepspeed.strip():
            raise ConfigError("distributed.deepspeed: give a config name (e.g. zero2) or a JSON path")


@dataclass
class StageConfig:
    """One stage of a growth recipe: a topology trained for some steps."""

    topology: TopologyConfig = field(default_factory=TopologyConfig)
    steps: int = 10  # steps in this stage (the most, when `patience` is set)
    init: str = "copy"  # how nodes new in this stage start: copy | zero (= the base) | fresh (random LoRA)
    copy_from: dict[str, str] = field(default_factory=dict)  # copy: new node -> previous-stage node to copy
    noise: float = 0.0  # copy: std of Gaussian noise added to the copied LoRA weights
    gate_steps: int = 0  # new nodes enter through a gate ramping 0 -> 1 over this many steps (0: open)
    patience: Optional[int] = None  # end early after this many validations without improvement

    def __post_init__(self) -> None:
        _check_choice("growth.stages[]", "init", self.init, INITS)
        _check_positive("growth.stages[]", self, "steps", "patience")
        _check_positive("growth.stages[]", self, "noise", "gate_steps", allow_zero=True)


INITS = ("copy", "zero", "fresh")


@dataclass
class GrowthConfig:
    """Progressive growth: train a small system, grow it, train again. With `stages` set, the
    stages are the only source of the run's topology and step count (`Config.stages()`,
    `Config.total_steps`); a recipe's `topology` and `train.steps` beside them must agree or go."""

    stages: list[StageConfig] = field(default_factory=list)
    margin: Optional[float] = None  # roll back a grown stage whose validation accuracy falls below its parent's by more
    retry_inits: list[str] = field(default_factory=list)  # after a rollback, retry with these inits in turn, then stop
    validation_questions: int = 32  # validation split size used by `margin` and `patience`

    def __post_init__(self) -> None:
        for init in self.retry_inits:
            _check_choice("growth", "retry_inits", init, INITS)
        _check_positive("growth", self, "margin", "validation_questions", allow_zero=True)


@dataclass
class TextualConfig:
    """The textual backward pass (ANN; neuromas.textual): an optimiser model critiques the system's
    episodes and edits node texts (and, optionally, a layer's aggregation); an edit is kept only if
    it beats the current system on the fixed validation split. Off unless `every` or `only` is set."""

    every: int = 0  # a textual step after every N policy-gradient steps (0: none)
    only: bool = False  # every step is a textual step and the adapters are never updated (the text alone)
    optimizer_model: str = "base"  # base (the frozen base, adapters off) | a local model directory or built-in name
    edit: str = "text"  # text (node texts) | text+aggregation (the global critique may also set a layer's)
    episodes: int = 4  # episodes of the step's rollout the optimiser reads: failing first, at most half passing
    beta: float = 0.5  # G_local = beta * G_global + (1 - beta) * the node's own critique
    alpha: float = 0.7  # momentum: the new critique's weight against the node's earlier ones (1 - alpha)
    history: int = 3  # earlier critiques kept per node (bounded)
    top_k: Optional[int] = None  # GBC bandwidth: edit only the k nodes with the largest connection weight on failures
    validation_questions: int = 32  # the fixed validation split the gate scores on (greedy)
    margin: float = 0.0  # commit only if validation accuracy beats the current system's by more than this
    # joint: all of a step's edits are one candidate | per_node: each edit is scored alone first and only
    # those that beat the current system are combined (one validation pass per edit more)
    gate: str = "joint"
    max_new_tokens: int = 96  # each critique and edit the optimiser writes
    max_text_chars: int = 400  # format check: the longest node text accepted

    def __post_init__(self) -> None:
        _check_choice("textual", "edit", self.edit, ("text", "text+aggregation"))
        _check_choice("textual", "gate", self.gate, ("joint", "per_node"))
        _check_positive("textual", self, "episodes", "history", "top_k", "validation_questions", "max_new_tokens",
                        "max_text_chars")
        _check_positive("textual", self, "every", "margin", allow_zero=True)
        for name in ("beta", "alpha"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"textual.{name}: must be in [0, 1], got {getattr(self, name)}")


@dataclass
class Config:
    name: str = "run"  # names the run directory
    model: ModelConfig = field(default_factory=ModelConfig)
    topology: TopologyConfig = field(default_factory=TopologyConfig)
    agents: AgentsConfig = field(default_factory=AgentsConfig)
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    growth: GrowthConfig = field(default_factory=GrowthConfig)
    textual: TextualConfig = field(default_factory=TextualConfig)
    tools: ToolsConfig = field(default_factory=ToolsConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)

    def __post_init__(self) -> None:
        if self.algorithm.advantage != "reinforce" and self.rollout.samples_per_question < 2:
            raise ConfigError(f"rollout.samples_per_question: algorithm.advantage {self.algorithm.advantage} "
                              "compares samples of a question, so it needs at least 2")
        if self.algorithm.credit == "branch" and (self.env.name != "auto" or self.task.name == "guess"):
            raise ConfigError("algorithm.credit: branch resamples one turn's node; multi-turn episodes (env) "
                              "take shared, per_node or attribution")
        all_ids = self.node_ids()
        for key, ids in (("agents.texts", self.agents.texts), ("train.frozen_nodes", self.train.frozen_nodes),
                         ("tools.nodes", self.tools.nodes)):
            unknown = sorted(set(ids) - set(all_ids))
            if unknown:
                raise ConfigError(f"{key}: {unknown[0]} is not a node of any stage ({', '.join(all_ids)})")

    def node_ids(self) -> list[str]:
        """Every node of every stage, sorted."""
        from neuromas.topology import Topology  # no torch; it imports this module

        return sorted({i for stage in self.stages() for i in Topology.from_config(stage.topology).node_ids})

    def stages(self) -> list[StageConfig]:
        """The stages to run: the recipe's, or one stage of `topology` for `train.steps`."""
        return self.growth.stages or [StageConfig(topology=self.topology, steps=self.train.steps)]

    @property
    def total_steps(self) -> int:
        """The run's optimizer steps, over every stage."""
        return sum(stage.steps for stage in self.stages())
