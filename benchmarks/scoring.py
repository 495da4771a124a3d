"""Scoring speed: TRL's built-in reward-model path vs rewardbridge, same model, same batch.

TRL's path (``GRPOTrainer._calculate_rewards`` with an ``nn.Module`` reward) renders every
conversation with the reward tokenizer's chat template and runs ONE right-padded forward
over the whole local batch. Rollout batches are skewed (many short answers, a few long
ones), so most of that forward is padding. rewardbridge sorts by length and splits the
batch into micro-batches that minimise padded tokens.

Both paths are called through real ``GRPOTrainer`` instances. Prints wall time, the speed
ratio, the padding bound (padded tokens / real tokens of TRL's forward: the speed-up that
padding-free scoring could reach if cost were linear in tokens) and the max score difference.

    python benchmarks/scoring.py            # or: make bench
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time

import torch


def skewed_batch(num_prompts: int, generations: int, long_fraction: float, seed: int = 0):
    """Conversational prompts x completions: most completions short, a few long (as in rollouts)."""
    from rewardbridge.testing import CORPUS

    rng = random.Random(seed)
    words = " ".join(CORPUS).split()
    prompts, completions = [], []
    for _ in range(num_prompts):
        question = [{"role": "user", "content": " ".join(rng.choices(words, k=rng.randint(8, 20)))}]
        for _ in range(generations):
            n_words = rng.randint(150, 300) if rng.random() < long_fraction else rng.randint(5, 25)
            prompts.append(question)
            completions.append([{"role": "assistant", "content": " ".join(rng.choices(words, k=n_words))}])
    return prompts, completions


def build_models(workdir: str, hidden: int, layers: int):
    from transformers import LlamaForCausalLM, LlamaForSequenceClassification

    from rewardbridge.testing import build_tokenizer, llama_config, save_model

    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    config = llama_config(
        tokenizer, hidden_size=hidden, intermediate_size=hidden * 11 // 4, num_hidden_layers=layers,
        num_attention_heads=max(hidden // 64, 1), num_key_value_heads=max(hidden // 128, 1), num_labels=1,
    )
    reward_dir = save_model(f"{workdir}/reward", LlamaForSequenceClassification(config), tokenizer)
    policy_dir = save_model(f"{workdir}/policy", LlamaForCausalLM(llama_config(tokenizer)), tokenizer)
    return tokenizer, reward_dir, policy_dir


def grpo_trainer(policy_dir: str, reward_funcs, reward_tokenizers, workdir: str):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(output_dir=workdir, use_cpu=True, bf16=False, report_to="none", per_device_train_batch_size=2, num_generations=2)
    return GRPOTrainer(
        model=policy_dir, reward_funcs=reward_funcs, reward_processing_classes=reward_tokenizers,
        args=args, train_dataset=Dataset.from_dict({"prompt": ["x"]}),
    )


def timed(fn, repeats: int) -> tuple[float, torch.Tensor]:
    fn()  # warm-up
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--long-fraction", type=float, default=0.1)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from transformers import AutoModelForSequenceClassification

    from rewardbridge import Conversation, load_reward

    workdir = tempfile.mkdtemp()
    tokenizer, reward_dir, policy_dir = build_models(workdir, args.hidden, args.layers)
    prompts, completions = skewed_batch(args.prompts, args.generations, args.long_fraction)
    inputs = [{"prompt": p} for p in prompts]
    ids = [[0]] * len(prompts)

    module = AutoModelForSequenceClassification.from_pretrained(reward_dir).eval()
    trl_trainer = grpo_trainer(policy_dir, [module], [tokenizer], workdir)
    ours = load_reward(reward_dir, device="cpu", name="rewardbridge")
    our_trainer = grpo_trainer(policy_dir, [ours], [None], workdir)

    trl_time, trl_scores = timed(lambda: trl_trainer._calculate_rewards(inputs, prompts, completions, ids)[:, 0], args.repeats)
    our_time, our_scores = timed(lambda: our_trainer._calculate_rewards(inputs, prompts, completions, ids)[:, 0], args.repeats)

    conversations = [Conversation.from_trl(p, c) for p, c in zip(prompts, completions)]
    lengths = [len(ids) for ids in ours.scorer.tokenize(conversations)[0]]
    real, padded = sum(lengths), len(lengths) * max(lengths)
    bound = padded / real
    speedup = trl_time / our_time
    max_diff = (trl_scores - our_scores).abs().max().item()
    print(f"batch: {len(lengths)} conversations, {real} real tokens, lengths {min(lengths)}..{max(lengths)}, "
          f"reward model {sum(p.numel() for p in module.parameters()) / 1e6:.1f}M params, {torch.get_num_threads()} threads")
    print(f"{'path':<32}{'seconds':>10}")
    print(f"{'TRL nn.Module (one padded fwd)':<32}{trl_time:>10.3f}")
    print(f"{'rewardbridge (micro-batched)':<32}{our_time:>10.3f}")
    print(f"speed-up:                 {speedup:.2f}x")
    print(f"padding bound:            {bound:.2f}x  (TRL pads {padded} tokens for {real} real)")
    print(f"share of bound reached:   {speedup / bound:.0%}")
    print(f"max |score difference|:   {max_diff:.2e}")


if __name__ == "__main__":
    main()
