"""``rewardbridge train | score``: the command line."""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rewardbridge", description="Reward models in the loop of TRL's RL trainers.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="run a recipe (wrap in `accelerate launch` for several processes)")
    train.add_argument("recipe", help="a YAML recipe, e.g. recipes/quickstart.yaml")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a recipe key, e.g. --set training.max_steps=5 (repeatable)")

    score = commands.add_parser("score", help="score prompt/response pairs from a JSONL file")
    score.add_argument("source", help="reward model directory or hub id")
    score.add_argument("jsonl", help='lines of {"prompt": str | messages, "completion": str | messages}')
    score.add_argument("--option", dest="options", action="append", default=[], metavar="KEY=VALUE",
                       help="a load_reward option, e.g. --option token_id=0 (value parsed as YAML; repeatable)")

    args = parser.parse_args(argv)
    if args.command == "train":
        from .train import load_recipe, run

        run(load_recipe(args.recipe, args.overrides))
        return 0
    if args.command == "score":
        import yaml

        from .reward_fn import load_reward

        options = {}
        for item in args.options:
            key, sep, value = item.partition("=")
            if not sep:
                parser.error(f"--option {item!r} is not KEY=VALUE")
            options[key] = yaml.safe_load(value)
        reward = load_reward(args.source, **options)
        with open(args.jsonl) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        scores = reward(prompts=[r["prompt"] for r in rows], completions=[r["completion"] for r in rows])
        for row, value in zip(rows, scores):
            print(json.dumps({**row, "reward": value}))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
