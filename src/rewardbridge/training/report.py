"""What a training run shows: one line per step, the held-out before/after table, the summary and the plot.

``HeldOut`` answers held-out prompts greedily and scores them with the recipe's own rewards; the
GRPO/RLOO runner (``train.py``) and the DPO/RPO iterations (``iterations.py``) both use it.
"""

from __future__ import annotations

import abc
import math
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from .prompts import read_rows
from .recipe import Recipe


class HeldOut:
    """Greedy answers to held-out prompts, scored by the recipe's own rewards (weighted sum of raw scores)."""

    def __init__(self, trainer, recipe: Recipe):
        spec = recipe.evaluation
        rows = read_rows(spec.prompts)[: spec.limit]
        self.prompts = [row["prompt"] for row in rows]
        self.trainer = trainer
        self.max_new_tokens = spec.max_new_tokens
        self.weights = [r.weight for r in recipe.rewards]
        self.before: list[tuple[str, float]] | None = None
        self.after: list[tuple[str, float]] | None = None

    def score(self) -> list[tuple[str, float]]:
        """[(answer, reward)] per prompt: greedy decoding, then each reward's raw score, weighted."""
        import torch
        from transformers import GenerationConfig

        model, tokenizer = self.trainer.model, self.trainer.processing_class
        messages = [[{"role": "user", "content": p}] if isinstance(p, str) else p for p in self.prompts]
        texts = [tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in messages]
        side = tokenizer.padding_side
        tokenizer.padding_side = "left"  # generation continues at the right edge
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        tokenizer.padding_side = side
        config = GenerationConfig(max_new_tokens=self.max_new_tokens, do_sample=False,
                                  pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        was_training = model.training
        model.eval()
        with torch.no_grad():
            output = model.generate(**batch, generation_config=config)
        model.train(was_training)
        answers = tokenizer.batch_decode(output[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        completions = [[{"role": "assistant", "content": a}] for a in answers]
        total = [0.0] * len(answers)
        for reward, weight in zip(self.trainer.reward_funcs, self.weights):
            if hasattr(reward, "scorer"):  # a rewardbridge reward: its raw score (per-prompt normalization needs a group)
                from ..conversation import conversations_from_trl

                values = reward.combine(reward.scorer.score(conversations_from_trl(messages, completions))).tolist()
            else:
                values = reward(prompts=messages, completions=completions)
            total = [t + weight * float(v) for t, v in zip(total, values)]
        return list(zip(answers, total))

    def mean(self, which: str) -> float:
        values = [score for _, score in getattr(self, which)]
        return sum(values) / len(values)

    def rows(self) -> list[dict[str, Any]]:
        return [
            {"prompt": p if isinstance(p, str) else p[-1]["content"], "answer_before": b[0], "reward_before": b[1],
             "answer_after": a[0], "reward_after": a[1]}
            for p, b, a in zip(self.prompts, self.before, self.after)
        ]

    def print_table(self) -> None:
        print("\nheld-out prompts, greedy answers scored by the same reward (before -> after training):")
        for row in self.rows():
            print(f"  {row['reward_before']:+7.3f} -> {row['reward_after']:+7.3f}  {_clip(row['prompt'], 44)}")
            print(f"      before: {_clip(row['answer_before'], 96)}")
            print(f"      after:  {_clip(row['answer_after'], 96)}")
        print(f"  mean {self.mean('before'):+7.3f} -> {self.mean('after'):+7.3f}")


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def step_rewards(history: list[dict]) -> tuple[list[int], list[float]]:
    points = [(entry["step"], entry["reward"]) for entry in history if "reward" in entry]
    return [s for s, _ in points], [r for _, r in points]


def print_summary(history, train_seconds: float, total_seconds: float, heldout: HeldOut | None, written) -> None:
    steps, rewards = step_rewards(history)
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    lines = [f"\ndone: {len(steps)} logged steps, {train_seconds:.0f} s training ({total_seconds:.0f} s in all, "
             f"{usage.ru_utime + usage.ru_stime:.0f} s of CPU time)"]
    if len(rewards) >= 2:
        half = len(rewards) // 2
        first, last = sum(rewards[:half]) / half, sum(rewards[half:]) / (len(rewards) - half)
        lines.append(f"  reward per step: first half mean {first:+.4f}, second half mean {last:+.4f} ({last - first:+.4f})")
    if heldout is not None and heldout.after is not None:
        before, after = heldout.mean("before"), heldout.mean("after")
        lines.append(f"  held-out reward (greedy, {len(heldout.prompts)} prompts): {before:+.4f} -> {after:+.4f} ({after - before:+.4f})")
    lines.append("  wrote " + ", ".join(str(p) for p in written))
    print("\n".join(lines), flush=True)


def plot_run(history: list[dict], path: Path, title: str, heldout: HeldOut | None = None) -> None:
    """PNG: mean reward per step (and its rolling mean); beside it, the held-out before/after scores."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, rewards = step_rewards(history)
    if not steps:
        return
    panels = 2 if heldout is not None and heldout.after is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(7 * panels, 4), squeeze=False)
    ax = axes[0][0]
    window = max(1, len(rewards) // 4)
    rolling = [sum(rewards[max(0, i - window + 1): i + 1]) / len(rewards[max(0, i - window + 1): i + 1]) for i in range(len(rewards))]
    ax.plot(steps, rewards, "o", alpha=0.4, label="mean reward of the step's rollouts")
    ax.plot(steps, rolling, "-", linewidth=2, label=f"rolling mean ({window} steps)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("reward")
    ax.set_title(title)
    ax.legend()
    if panels == 2:
        ax = axes[0][1]
        before = [s for _, s in heldout.before]
        after = [s for _, s in heldout.after]
        xs = list(range(len(before)))
        ax.bar([x - 0.2 for x in xs], before, width=0.4, label=f"before (mean {heldout.mean('before'):+.2f})")
        ax.bar([x + 0.2 for x in xs], after, width=0.4, label=f"after (mean {heldout.mean('after'):+.2f})")
        ax.set_xticks(xs, [f"P{x + 1}" for x in xs])
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_ylabel("reward of the greedy answer")
        ax.set_title("held-out prompts, same reward model")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


class StepLine(TrainerCallback, abc.ABC):
    """Prints one line per logged step (``line`` says what, None to skip), timed in s/step."""

    last: tuple[int, float] | None = None

    def on_step_begin(self, args, state, control, **kwargs):
        if self.last is None:
            self.last = (state.global_step, time.monotonic())

    def on_log(self, args, state, control, logs=None, **kwargs):
        parts = self.line(state, logs) if state.is_world_process_zero and logs else None
        if parts is None:
            return
        now = time.monotonic()
        if self.last is not None and state.global_step > self.last[0]:
            parts.append(f"{(now - self.last[1]) / (state.global_step - self.last[0]):5.1f} s/step")
        self.last = (state.global_step, now)
        print("  ".join(p for p in parts if p), flush=True)

    @abc.abstractmethod
    def line(self, state, logs: dict) -> list[str] | None:
        """The parts of this step's line, or None when ``logs`` is not a step's (an eval, the run's end)."""


class StepPrinter(StepLine):
    """GRPO/RLOO: step, reward (and each reward's mean when several), the first reward model's raw
    mean, KL, completion length."""

    def __init__(self, reward_names: list[str]):
        self.reward_names = reward_names

    def line(self, state, logs: dict) -> list[str] | None:
        if "reward" not in logs:
            return None
        parts = [f"step {state.global_step:4d}/{state.max_steps}", f"reward {logs['reward']:+.4f}"]
        if len(self.reward_names) > 1:
            parts.append("(" + ", ".join(f"{name} {logs.get(f'rewards/{name}/mean', math.nan):+.3f}" for name in self.reward_names) + ")")
        for name in self.reward_names:
            if f"{name}/normalized_mean" in logs and f"{name}/raw_mean" in logs:
                parts.append(f"raw {logs[f'{name}/raw_mean']:+.4f}")
                break
        if "kl" in logs:
            parts.append(f"kl {logs['kl']:.4f}")
        if "completions/mean_length" in logs:
            parts.append(f"length {logs['completions/mean_length']:5.1f}")
        return parts


class PreferenceStepPrinter(StepLine):
    """DPO/RPO: loss, RPO's gaps and agreement (or DPO's margin), pair accuracy."""

    def __init__(self, label: str = ""):
        self.label = label

    def line(self, state, logs: dict) -> list[str] | None:
        if "loss" not in logs:
            return None
        parts = [self.label, f"step {state.global_step:4d}/{state.max_steps}", f"loss {logs['loss']:.4f}"]
        if "rpo/implicit_gap" in logs:
            parts += [f"implicit {logs['rpo/implicit_gap']:+.3f}", f"target {logs['rpo/target_gap']:+.3f}",
                      f"agree {logs['rpo/agreement']:.2f}"]
        elif "rewards/margins" in logs:
            parts.append(f"margin {logs['rewards/margins']:+.3f}")
        if "rewards/accuracies" in logs and not math.isnan(logs["rewards/accuracies"]):
            parts.append(f"acc {logs['rewards/accuracies']:.2f}")
        return parts
