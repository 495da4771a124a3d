"""The micro-batch token budget on CPU: ``max_tokens_per_batch`` swept on batches of three shapes.

A colocated reward model scores a batch in length-sorted micro-batches of at most
``max_tokens_per_batch`` padded tokens (``scorers/tokens.py``). On a GPU a bigger forward
fills the device better; on a CPU the activations of a big forward leave the cache, so
per-row cost rises past some rows. This sweeps the budget on the same Llama classifier
(``--hidden 256 --layers 4``, about 3M parameters; ``--hidden 512`` for 12M) over 32
conversations of about 128 tokens, 32 of about 512, and a skewed rollout-like batch (most
short, 1 in 8 long), interleaving the budgets round by round; it prints the median seconds
per batch and each budget's time relative to 16384 (the GPU default). The CPU default
(``scorers/tokens.py``: ``default_max_tokens_per_batch``) is the budget this picked.

    python benchmarks/token_budget.py              # about five minutes on 2 cores
    python benchmarks/token_budget.py --threads 1  # no OpenMP synchronisation: the cache effect alone
"""

from __future__ import annotations

import argparse
import random
import tempfile

import torch

from rounds import interleaved, machine_line, timed

BUDGETS = (1024, 2048, 4096, 8192, 16384)


def batch_of(tokenizer, count: int, tokens: int, seed: int) -> list:
    """``count`` conversations whose rendered length is about ``tokens`` tokens."""
    from rewardbridge import Conversation
    from rewardbridge.testing import CORPUS

    rng = random.Random(seed)
    words = " ".join(CORPUS).split()
    out = []
    for _ in range(count):
        text = ""
        while len(tokenizer(text)["input_ids"]) < tokens:
            text += " " + " ".join(rng.choices(words, k=16))
        out.append(Conversation("Please answer the question.", text))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--conversations", type=int, default=32, help="conversations per batch")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from remote import build_reward

    from rewardbridge import load_reward
    from rewardbridge.scorers.tokens import plan_micro_batches

    with tempfile.TemporaryDirectory() as workdir:
        source = build_reward(workdir, args.hidden, args.layers)
        rewards = {budget: load_reward(source, device="cpu", max_tokens_per_batch=budget) for budget in BUDGETS}
        tokenizer = rewards[BUDGETS[0]].scorer.tokenizer
        rng, n = random.Random(0), args.conversations
        skewed = [c for i in range(n) for c in batch_of(tokenizer, 1, 400 if rng.random() < 0.125 else 40, seed=i)]
        shapes = {"~128 tokens each": batch_of(tokenizer, n, 128, 1), "~512 tokens each": batch_of(tokenizer, n, 512, 2),
                  "skewed (1 in 8 long)": skewed}
        print(f"token budget sweep: {machine_line()}; Llama classifier hidden={args.hidden} layers={args.layers}, "
              f"{torch.get_num_threads()} torch threads, {args.rounds} interleaved rounds (medians)")
        print(f"{'batch':<40}{'budget':>8}{'forwards':>10}{'s/batch':>10}{'vs 16384':>10}")
        for label, conversations in shapes.items():
            lengths = [len(ids) for ids in rewards[BUDGETS[0]].scorer.tokenize(conversations)[0]]
            label = f"{n} x {label} ({min(lengths)}-{max(lengths)})"
            for reward in rewards.values():
                reward.scorer.score(conversations)  # warm-up
            results = interleaved({b: (lambda r=r: timed(lambda: r.scorer.score(conversations))) for b, r in rewards.items()},
                                  args.rounds)
            base = results[16384]["wall_s"]
            for budget in BUDGETS:
                forwards = len(plan_micro_batches(lengths, budget))
                seconds = results[budget]["wall_s"]
                print(f"{label:<40}{budget:>8}{forwards:>10}{seconds:>10.3f}{seconds / base:>9.2f}x")


if __name__ == "__main__":
    main()
