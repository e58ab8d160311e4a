"""One training step of a 1-node system: neuromas vs TRL's GRPOTrainer (issue 8, table 3).

Identical settings on both sides: the model, LoRA (rank, alpha, modules, top layers), questions
per step, samples per question, max new tokens, temperature, learning rate, no KL. Each side runs
in its own process, one after the other. Seconds per step are medians over the steps after the
first; tokens per second count generated tokens.

    python benchmarks/vs_trl.py                          # quickstart settings, SmolLM2-135M, 4 steps
    python benchmarks/vs_trl.py --steps 6 --questions 8

Needs trl (pip install trl). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import median_after_first

SETTINGS = {"questions": 4, "samples": 4, "max_new_tokens": 40, "temperature": 0.3, "lr": 3e-4, "rank": 8,
            "alpha": 16, "top_layers": 8, "modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}


def run_neuromas(model: str, steps: int, s: dict, out: Path) -> list[dict]:
    from neuromas.recipe import load_config
    from neuromas.trainer import Trainer

    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "recipes" / "quickstart.yaml", [
        f"model.name={model}", "topology.widths=[1]", f"train.steps={steps}",
        f"train.questions_per_step={s['questions']}",
        f"rollout.samples_per_question={s['samples']}", f"rollout.max_new_tokens={s['max_new_tokens']}",
        f"rollout.temperature={s['temperature']}", f"train.lr={s['lr']}", f"agents.lora.rank={s['rank']}",
        f"agents.lora.alpha={s['alpha']}", f"agents.lora.top_layers={s['top_layers']}", "eval.num_questions=0",
        "tracking.transcripts_every=0", f"tracking.run_dir={out}",
        f"train.micro_batch_size={s['questions'] * s['samples']}"])
    return [{k: m[k] for k in ("time/step", "rollout/tokens")} for m in Trainer(cfg, out).fit()]


def run_trl(model: str, steps: int, s: dict, out: Path) -> list[dict]:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoConfig, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from neuromas.models import resolve_model_path
    from neuromas.tasks import build_task
    from neuromas.config import TaskConfig
    from neuromas.tasks.rewards import exact_match
    from neuromas.tasks.sample import Sample

    path = resolve_model_path(model)
    task = build_task(TaskConfig(name="arithmetic", depth=1, max_value=9,
                                 answer_format="Reply with only the final answer, as \\boxed{number}."))
    rows = [task.source.train_sample(i) for i in range(steps * s["questions"])]
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": f"{r.question} {task.answer_format}"}],
                               "answer": r.answer} for r in rows])

    def reward(prompts, completions, answer, **_):
        return [exact_match(c[0]["content"], Sample("", "", a)) for c, a in zip(completions, answer)]

    layers = AutoConfig.from_pretrained(path).num_hidden_layers
    lora = LoraConfig(r=s["rank"], lora_alpha=s["alpha"], target_modules=s["modules"], lora_dropout=0.0,
                      layers_to_transform=list(range(layers - s["top_layers"], layers)), task_type="CAUSAL_LM")
    batch = s["questions"] * s["samples"]
    args = GRPOConfig(output_dir=str(out), use_cpu=True, bf16=False, max_steps=steps, per_device_train_batch_size=batch,
                      num_generations=s["samples"], generation_batch_size=batch,
                      max_completion_length=s["max_new_tokens"], temperature=s["temperature"], top_k=0,
                      learning_rate=s["lr"], beta=0.0, lr_scheduler_type="constant",
                      warmup_steps=0, logging_steps=1, save_strategy="no", report_to="none", shuffle_dataset=False,
                      disable_dropout=True, seed=0)
    times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *_, **__):
            self.start = time.perf_counter()

        def on_step_end(self, *_, **__):
            times.append(time.perf_counter() - self.start)

    trainer = GRPOTrainer(model=str(path), reward_funcs=reward, args=args, train_dataset=data, peft_config=lora,
                          callbacks=[StepTimer()])
    trainer.train()
    lengths = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h]
    return [{"time/step": t, "rollout/tokens": length * batch} for t, length in zip(times, lengths)]


def child(side: str, model: str, steps: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        result = (run_neuromas if side == "neuromas" else run_trl)(model, steps, SETTINGS, Path(tmp) / "run")
    print("RESULT " + json.dumps(result))


def measure(side: str, model: str, steps: int) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", side, "--model", model, "--steps", str(steps),
                           "--questions", str(SETTINGS["questions"]), "--top-layers", str(SETTINGS["top_layers"])],
                          capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        sys.exit(f"{side} failed:\n{done.stderr[-3000:]}")
    steps = json.loads(lines[-1][len("RESULT "):])
    step, tokens = median_after_first(steps, "time/step"), median_after_first(steps, "rollout/tokens")
    return {"step_s": step, "tokens": tokens, "tokens_per_s": tokens / step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--questions", type=int, default=SETTINGS["questions"])
    parser.add_argument("--top-layers", type=int, default=SETTINGS["top_layers"])
    parser.add_argument("--child", choices=["neuromas", "trl"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    SETTINGS["questions"], SETTINGS["top_layers"] = args.questions, args.top_layers
    if args.child:
        return child(args.child, args.model, args.steps)
    import torch
    import trl

    results = {side: measure(side, args.model, args.steps) for side in ("neuromas", "trl")}
    print(f"\nMachine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
          f"trl {trl.__version__}; model {args.model}; settings {json.dumps(SETTINGS)}; {args.steps} steps each "
          f"(median of steps 2..{args.steps}).\n")
    print("| trainer | s/step | generated tokens/step | tokens/s |")
    print("| --- | --- | --- | --- |")
    for side, r in results.items():
        print(f"| {side} | {r['step_s']:.1f} | {r['tokens']:.0f} | {r['tokens_per_s']:.1f} |")
    n, t = results["neuromas"], results["trl"]
    print(f"\nneuromas / TRL: step time {n['step_s'] / t['step_s']:.2f}x, tokens per second "
          f"{n['tokens_per_s'] / t['tokens_per_s']:.2f}x")
    print(f"\nCommand: python benchmarks/vs_trl.py --steps {args.steps} --questions {args.questions}")


if __name__ == "__main__":
    main()
