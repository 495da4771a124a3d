"""``rewardbridge train | score | pairs | eval | inspect | serve``: the command line.

Each command parses its flags here and calls one library function; errors come out as one
line, ``rewardbridge: error: ...`` (exit 2 for a usage or option mistake, 1 for a failure),
with the traceback behind ``--debug``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from .errors import ConfigError

OPTION_HELP = "a load_reward option, e.g. --option token_id=0 (value parsed as YAML; repeatable)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rewardbridge", description="Reward models in the loop of TRL's RL trainers.")
    parser.add_argument("--debug", action="store_true", help="print the full traceback on errors")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="run a recipe (wrap in `accelerate launch` for several processes)")
    train.add_argument("recipe", help="a YAML recipe, e.g. recipes/quickstart.yaml")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a recipe key, e.g. --set training.max_steps=5 (repeatable)")
    train.add_argument("--resume", action="store_true",
                       help="continue from the last checkpoint in training.output_dir (dpo/rpo iterations: the first unfinished one)")

    score = commands.add_parser("score", help="score a dataset of responses (JSONL, JSON, CSV, Parquet, save_to_disk folder)")
    score.add_argument("source", help="reward model: directory, hub id, or http(s):// URL")
    score.add_argument("input", help="rows of prompt/completion, prompt/chosen/rejected, prompt/response, or NeMo-Aligner conversations")
    score.add_argument("--output", "-o", required=True, help="where scored rows go (JSONL, written as it goes)")
    score.add_argument("--option", dest="options", action="append", default=[], metavar="KEY=VALUE", help=OPTION_HELP)
    score.add_argument("--batch-size", type=int, default=64, help="rows scored per reward call (default 64)")
    score.add_argument("--best-of-n", type=int, default=None, metavar="K", help="keep the best response per prompt")
    score.add_argument("--min-zscore", type=float, default=None, metavar="X",
                       help="drop rows whose per-prompt z-score is below X")
    score.add_argument("--steerlm-labels", action="store_true",
                       help="NeMo-Aligner conversations: write labels as name:value rounded and clamped to 0-4")
    score.add_argument("--resume", action="store_true", help="continue an interrupted run into the same --output")
    score.add_argument("--on-bad-row", choices=("stop", "skip"), default="stop",
                       help="stop at a malformed row (default), or skip it into OUTPUT.rejects.jsonl")

    pairs = commands.add_parser("pairs", help="sample N responses per prompt, score them, write best/worst preference pairs")
    pairs.add_argument("policy", help="the policy: a model folder or hub id (with --engine: the model name the server serves)")
    pairs.add_argument("prompts", help="rows with a 'prompt' (text or chat messages): JSONL, JSON, CSV, Parquet, save_to_disk folder")
    pairs.add_argument("--reward", required=True, help="reward model: directory, hub id, or http(s):// URL (with --option protocol=...)")
    pairs.add_argument("--option", dest="options", action="append", default=[], metavar="KEY=VALUE", help=OPTION_HELP)
    pairs.add_argument("-n", type=int, default=4, help="responses per prompt (default 4)")
    pairs.add_argument("--output", "-o", required=True, help="pairs JSONL (prompt, chosen, rejected, chosen_reward, rejected_reward)")
    pairs.add_argument("--min-margin", type=float, default=0.0, help="least reward gap between best and worst for a pair (default 0)")
    pairs.add_argument("--drop-truncated", action="store_true",
                       help="leave responses cut at --max-new-tokens out of the pairs (counted; kept in OUTPUT.responses.jsonl)")
    pairs.add_argument("--batch-size", type=int, default=8, help="prompts per generate call, or in flight with --engine (default 8)")
    pairs.add_argument("--max-new-tokens", type=int, default=256)
    pairs.add_argument("--temperature", type=float, default=1.0)
    pairs.add_argument("--top-p", type=float, default=1.0)
    pairs.add_argument("--seed", type=int, default=0)
    pairs.add_argument("--engine", default=None, metavar="URL",
                       help="generate on an OpenAI-compatible server (vLLM, NIM): /v1/completions for text, /v1/chat/completions for chat")
    pairs.add_argument("--engine-key-env", default=None, metavar="NAME", help="environment variable holding the server's key")
    pairs.add_argument("--engine-timeout", type=float, default=600.0, help="seconds per generation request (default 600)")
    pairs.add_argument("--engine-concurrency", type=int, default=16, help="generation requests in flight (default 16)")
    pairs.add_argument("--as-chat", action="store_true", help="text prompts become one user message (chat template / chat endpoint)")
    pairs.add_argument("--prompt-column", default="prompt")
    pairs.add_argument("--gguf-file", default=None, help="a GGUF checkpoint inside the policy folder")
    pairs.add_argument("--resume", action="store_true", help="continue an interrupted run into the same --output")
    pairs.add_argument("--on-bad-row", choices=("stop", "skip"), default="stop",
                       help="stop at a malformed row (default), or skip it into OUTPUT.rejects.jsonl")

    evaluate = commands.add_parser("eval", help="RewardBench / RewardBench 2 scores on prompt/chosen/rejected/subset rows")
    evaluate.add_argument("source", help="reward model: directory, hub id, or http(s):// URL (a GenRM compares directly)")
    evaluate.add_argument("data", help="rows of {prompt, chosen, rejected, subset}; RewardBench 2: chosen/rejected are lists")
    evaluate.add_argument("--benchmark", choices=("auto", "rewardbench", "rewardbench2"), default="auto",
                          help="which protocol scores the rows (default: told by the first row)")
    evaluate.add_argument("--output", "-o", default=None, help="write the JSON report here")
    evaluate.add_argument("--option", dest="options", action="append", default=[], metavar="KEY=VALUE", help=OPTION_HELP)
    evaluate.add_argument("--batch-size", type=int, default=64, help="rows scored per reward call (default 64)")

    inspect = commands.add_parser("inspect", help="say what rewardbridge will do with a reward source, without loading its weights")
    inspect.add_argument("source", help="reward model: directory, hub id, or http(s):// URL")
    inspect.add_argument("--option", dest="options", action="append", default=[], metavar="KEY=VALUE", help=OPTION_HELP)

    serve = commands.add_parser("serve", help="serve a local reward model over HTTP (NIM, OpenRLHF, vLLM, Triton, native)")
    serve.add_argument("source", help="reward model directory or hub id")
    serve.add_argument("--option", dest="options", action="append", default=[], metavar="KEY=VALUE", help=OPTION_HELP)
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--max-batch-size", type=int, default=64, help="conversations coalesced into one scorer call")
    serve.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a request waits for others to batch with")
    serve.add_argument("--api-key-env", default="REWARDBRIDGE_API_KEY",
                       help="environment variable holding the key; when set, requests need 'Authorization: Bearer <key>'")
    serve.add_argument("--policy-tokenizer", default=None,
                       help="/get_reward: recover responses from OpenRLHF's decoded queries and render them with the reward model's template")
    serve.add_argument("--max-body-bytes", type=int, default=16 * 2**20, help="largest request body (default 16 MiB)")
    serve.add_argument("--max-body-bytes-in-flight", type=int, default=256 * 2**20,
                       help="request body bytes being read or held at once, over all connections; past it 503 + Retry-After "
                            "(default 256 MiB)")
    serve.add_argument("--max-conversations", type=int, default=1024, help="conversations per request")
    serve.add_argument("--max-chars", type=int, default=200_000, help="characters per conversation")
    serve.add_argument("--model-name", default="reward_model",
                       help="the model name clients send (NIM/vLLM 'model', Triton's model; default reward_model)")
    serve.add_argument("--max-batch-chars", type=int, default=256 * 1024,
                       help="characters per scoring round, shared fairly between waiting requests (default 262144)")
    serve.add_argument("--read-timeout", type=float, default=30.0, metavar="SECONDS",
                       help="a request's headers, then its body, must arrive within this long (default 30)")
    serve.add_argument("--graceful-timeout", type=float, default=30.0, metavar="SECONDS",
                       help="on SIGTERM, how long requests in flight may take to finish (default 30)")
    for command in commands.choices.values():  # --debug after the subcommand too, as the error hint says
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="print the full traceback on errors")
    return parser


def check_key_value_flags(argv: list[str]) -> None:
    """``--option normalize zscore`` (a space, not ``=``) would pass ``zscore`` as a positional
    (the input file, the data) and fail far from the mistake: refuse it here, naming the fix.

    >>> check_key_value_flags(["score", "m", "d", "--option", "normalize", "zscore"])
    Traceback (most recent call last):
    ...
    rewardbridge.errors.ConfigError: --option normalize zscore: write --option normalize=zscore (KEY=VALUE, no space)
    """
    for flag, value, following in zip(argv, argv[1:], argv[2:] + [None]):
        if flag in ("--option", "--set") and "=" not in value and not value.startswith("-"):
            # A negative number is a value, not a flag (argparse would say "unrecognized arguments: -1").
            if following is not None and (not following.startswith("-") or _is_number(following)):
                raise ConfigError(f"{flag} {value} {following}: write {flag} {value}={following} (KEY=VALUE, no space)")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_options(items: list[str]) -> dict[str, Any]:
    """``--option KEY=VALUE`` items -> load_reward keywords (``yaml12.parse_setting``, as ``--set``).

    ``null`` clears an option; a prompt or a template (judge_prompt, chat_template, ...) is taken
    as typed; the others are parsed as YAML 1.2 scalars and lists, so ``token_id=[Yes,No]`` stays
    two strings (YAML 1.1 would read yes/no/on/off as booleans, ``1:30`` as 90).

    >>> parse_options(["token_id=[Yes,No]", "max_length=4096", "judge_prompt=Q: {prompt} A: {response}", "gguf_file=null"])
    {'token_id': ['Yes', 'No'], 'max_length': 4096, 'judge_prompt': 'Q: {prompt} A: {response}', 'gguf_file': None}
    """
    from .yaml12 import parse_setting

    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--option {item!r} is not KEY=VALUE (for example --option normalize=zscore)")
        options[key] = parse_setting(key, value, f"--option {item!r}")
    return options


def leave_process_group() -> None:
    """Under `accelerate launch` or `torchrun` (train, a ZeRO-3 serve), every rank meets, then closes the
    process group, before exiting.

    Without it the group is torn down by interpreter exit, while its peers may still be connected,
    and a rank can abort there after its work is done ("terminate called without an active
    exception", SIGABRT; seen with gloo under `accelerate launch`): a finished run exits non-zero
    and a scheduler calls it failed. Accelerate asks scripts to end so (``Accelerator.end_training``).
    """
    if "torch" not in sys.modules:  # nothing imported torch, so no process group was started
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def run_command(args: argparse.Namespace) -> int:
    if args.command == "train":
        from .training.recipe import load_recipe  # checked before the runner's imports (transformers, TRL)

        recipe = load_recipe(args.recipe, args.overrides)
        if recipe.trainer in ("dpo", "rpo"):
            from .training.iterations import run_preference

            run_preference(recipe, resume=args.resume)
        else:
            from .training.train import run

            run(recipe, resume=args.resume)
        return 0
    if args.command == "score":
        options = parse_options(args.options)
        from .jobs.score import score_file

        score_file(
            args.source, args.input, args.output, options=options, batch_size=args.batch_size,
            best_of_n=args.best_of_n, min_zscore=args.min_zscore, steerlm_labels=args.steerlm_labels,
            resume=args.resume, on_bad_row=args.on_bad_row,
        )
        return 0
    if args.command == "pairs":
        options = parse_options(args.options)
        from .jobs.generate import EngineSettings
        from .jobs.pairs import make_pairs

        make_pairs(
            args.policy, args.prompts, args.output, reward=args.reward, options=options, n=args.n, min_margin=args.min_margin,
            drop_truncated=args.drop_truncated,
            batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
            seed=args.seed, engine=args.engine, as_chat=args.as_chat, prompt_column=args.prompt_column, gguf_file=args.gguf_file,
            engine_settings=EngineSettings(timeout=args.engine_timeout, max_concurrency=args.engine_concurrency,
                                           api_key_env=args.engine_key_env),
            resume=args.resume, on_bad_row=args.on_bad_row,
        )
        return 0
    if args.command == "eval":
        options = parse_options(args.options)
        from .jobs.evaluate import evaluate_file

        evaluate_file(args.source, args.data, output=args.output, options=options, batch_size=args.batch_size,
                      benchmark=args.benchmark)
        return 0
    if args.command == "inspect":
        from .resolve import resolve

        print(resolve(args.source, **parse_options(args.options)).format())
        return 0
    if args.command == "serve":
        options = parse_options(args.options)
        from .server import ServerSettings, serve

        settings = ServerSettings(
            host=args.host, port=args.port, max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms,
            api_key_env=args.api_key_env, policy_tokenizer=args.policy_tokenizer, max_body_bytes=args.max_body_bytes,
            max_body_bytes_in_flight=args.max_body_bytes_in_flight,
            max_conversations=args.max_conversations, max_chars=args.max_chars, model_name=args.model_name,
            max_batch_chars=args.max_batch_chars, read_timeout_s=args.read_timeout, graceful_timeout_s=args.graceful_timeout,
        )
        serve(args.source, options, settings)
        return 0
    raise ConfigError(f"unknown command {args.command!r}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        check_key_value_flags(argv)
    except ConfigError as error:
        if "--debug" in argv:
            raise
        print(f"rewardbridge: error: {error}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)  # argparse itself prints usage and exits 2 on bad flags
    try:
        code = run_command(args)
        leave_process_group()
        return code
    except KeyboardInterrupt:
        print("rewardbridge: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # one line for users; the traceback behind --debug
        if args.debug:
            raise
        if lost_peer(error):
            print(f"rewardbridge: error: rank {os.environ.get('RANK')} lost its connection to another process, which "
                  f"stopped first (its own error, printed above, is the cause): {one_line(error)[:200]}", file=sys.stderr)
            return 1
        print(f"rewardbridge: error: {one_line(error)}", file=sys.stderr)
        if not isinstance(error, ConfigError):
            print("rewardbridge: run with --debug for the traceback", file=sys.stderr)
        return 2 if isinstance(error, ConfigError) else 1


PEER_GONE = ("Connection closed by peer", "Connection reset by peer")  # gloo's words for a rank that is gone


def lost_peer(error: BaseException) -> bool:
    """Under a launcher: a collective failed because another rank exited (its error is the cause).
    torch raises these as RuntimeError (DistBackendError); our own errors (a remote reward's) never."""
    from .errors import RewardBridgeError

    return (int(os.environ.get("WORLD_SIZE", "1")) > 1 and isinstance(error, RuntimeError)
            and not isinstance(error, RewardBridgeError) and any(words in str(error) for words in PEER_GONE))


def one_line(error: BaseException) -> str:
    """The error's message on one line; the exception type is named unless it is our own."""
    from .errors import RewardBridgeError

    text = " ".join(str(error).split()) or type(error).__name__
    return text if isinstance(error, RewardBridgeError) else f"{type(error).__name__}: {text}"


if __name__ == "__main__":
    sys.exit(main())
