"""``rewardbridge pairs``: reward-scored preference pairs from a policy's own samples.

For each prompt: N responses from the policy (generate.py: local ``generate``, or an
OpenAI-compatible server), each scored by any reward ``load_reward`` takes, and the pair of
the best and the worst (``select_pair``, selection.py): DPO's and RPO's training data,
Nemotron-4's way. A prompt whose best and worst differ by less than ``min_margin`` (or not at
all) makes no pair and is counted; with ``drop_truncated``, responses cut at
``max_new_tokens`` are left out of the choice. Written as it goes, resumable, never over
another run (pairs_output.py).
"""

from __future__ import annotations

import math
import sys
from typing import Any

from ..conversation import Conversation, text_or_messages
from ..errors import ConfigError, InputError
from .generate import EngineGenerator, EngineSettings, LocalGenerator, Sampling
from .output import check_input_free, followed
from .pairs_output import PairsOutput
from .rows import Row, count_rows, read_rows
from .selection import is_truncated, select_pair

__all__ = ["make_pairs", "read_prompt", "sample_and_score", "select_pair"]


def make_pairs(
    policy: str,
    prompts: str,
    output: str,
    *,
    reward: Any,
    options: dict | None = None,
    n: int = 4,
    min_margin: float = 0.0,
    drop_truncated: bool = False,
    batch_size: int = 8,
    max_new_tokens: int = 256,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    engine: str | None = None,
    engine_settings: EngineSettings | None = None,
    as_chat: bool = False,
    prompt_column: str = "prompt",
    gguf_file: str | None = None,
    resume: bool = False,
    on_bad_row: str = "stop",
    model: Any = None,
    tokenizer: Any = None,
    progress: bool = True,
) -> dict:
    """Sample ``n`` responses per prompt of ``prompts`` with ``policy``, score them, write pairs to ``output``.

    Args:
        policy: the policy's folder or hub id; with ``engine``, the model name the server serves.
        prompts: rows with a ``prompt_column`` (text, or chat messages), in any format rows.py reads.
        reward, options: a reward source and its ``load_reward`` options, or a loaded RewardFunction.
        n, min_margin: responses per prompt; the least reward gap a pair needs.
        drop_truncated: leave responses cut at ``max_new_tokens`` (finish reason ``"length"``) out of
            the choice of the pair; they stay in ``OUTPUT.responses.jsonl`` and are counted.
        batch_size: prompts per ``generate`` call (local) or in flight (engine); n x batch_size
            responses are scored per reward call.
        max_new_tokens, temperature, top_p, seed: sampling. Local batches are seeded with
            ``seed + the batch's first row index``; engine requests with ``seed + row index``.
        engine, engine_settings: an OpenAI-compatible server's URL, its timeout/retries/key.
        as_chat: text prompts become one user message (the chat template; /v1/chat/completions).
        resume, on_bad_row: as ``rewardbridge score``: continue into the same files; ``"stop"``
            at a malformed row, or ``"skip"`` it into ``OUTPUT.rejects.jsonl``.
        model, tokenizer: an already loaded policy (the recipe runner's), instead of loading ``policy``.

    Returns:
        ``{"rows", "done_now", "resumed", "pairs", "recovered", "reselected", "below_margin", "unscored",
        "truncated", "truncated_responses", "rejected", "written", "output"}``; ``written`` is the
        pairs in ``output`` in all; ``truncated`` the prompts left with fewer than 2 complete
        responses (``drop_truncated``), ``truncated_responses`` the responses cut at max_new_tokens.
    """
    from ..reward_fn import RewardFunction

    sampling = Sampling(n=n, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
    sampling.check()
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    if not math.isfinite(min_margin) or min_margin < 0:
        raise ConfigError(f"--min-margin must be a finite number >= 0, got {min_margin}")
    if on_bad_row not in ("stop", "skip"):
        raise ConfigError(f"--on-bad-row {on_bad_row!r} is not one of ('stop', 'skip')")
    total = count_rows(prompts)  # a missing or unknown input fails here, before any file is written
    check_input_free(prompts, "prompts")  # not a file another run (score, pairs) is still writing
    if engine is None and model is None:
        from ..policy import check_policy_config

        check_policy_config(policy, "policy", gguf_file)  # a missing folder, a reward model given as the policy
    if on_bad_row == "stop":
        _check_first_prompt(prompts, prompt_column, as_chat)
    resolved = None
    if isinstance(reward, RewardFunction):
        source, reward_options, chosen = reward.source, _plain(reward.options), reward.options
    else:
        from ..resolve import resolve

        source, reward_options = reward, dict(options or {})
        resolved = resolve(source, **reward_options)  # every weight-free check, before any file is written
        chosen = resolved.options
    if chosen.normalize != "none":
        raise ConfigError(f"normalize={chosen.normalize!r}: pairs keep the reward model's own scores "
                          "(RPO fits eta * (r_chosen - r_rejected) to them); drop normalize and scale with eta instead")
    local = engine is None
    run = {"command": "pairs", "policy": policy, "gguf_file": gguf_file, "engine": engine, "reward": source,
           "reward_options": reward_options, "n": n, "min_margin": min_margin, "drop_truncated": drop_truncated,
           "max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p, "seed": seed,
           # Local samples: seeded per batch, drawn with no top-k and no repetition penalty (generate.py).
           "batch_size": batch_size if local else None, "top_k": sampling.top_k if local else None,
           "repetition_penalty": sampling.repetition_penalty if local else None,
           "as_chat": as_chat, "prompt_column": prompt_column, "prompts": prompts}
    out = PairsOutput(followed(output), run, inputs=[prompts])  # a symlink's side files beside its real file
    done = out.open(resume)
    generator = None
    try:
        if resolved is not None:
            from ..scorers import build_scorer

            reward = RewardFunction(resolved.source, resolved.options, scorer=build_scorer(resolved))
        if engine is not None:
            generator = EngineGenerator(engine, policy, sampling, engine_settings or EngineSettings())
        else:
            generator = LocalGenerator(model if model is not None else policy, sampling, tokenizer=tokenizer, gguf_file=gguf_file)
        stats = _run(prompts, out, done, generator, reward, sampling, (min_margin, drop_truncated), batch_size, as_chat,
                     prompt_column, on_bad_row, total, progress)
    finally:
        out.close()
        if isinstance(generator, EngineGenerator):
            generator.close()
    stats.update(recovered=out.recovered, reselected=out.reselected, written=out.count_pairs(), output=output)
    notes = [f"{out.recovered} rebuilt from the responses file"] if out.recovered else []
    notes += [f"{out.reselected} prompts' pairs chosen again from the responses file"] if out.reselected else []
    print(f"rewardbridge pairs: {stats['rows']} prompts: {stats['done_now']} sampled now, {stats['resumed']} already done "
          f"(resumed), {stats['rejected']} rejected; {stats['pairs']} pairs made from the responses sampled now, "
          f"{stats['below_margin']} below "
          f"--min-margin {min_margin:g}, {stats['unscored']} with fewer than 2 scored responses"
          + (f", {stats['truncated']} with fewer than 2 complete ones (--drop-truncated)" if drop_truncated else "")
          + f"; {stats['truncated_responses']} of the responses sampled now were cut at --max-new-tokens {max_new_tokens}; "
          f"{stats['written']} pairs in {output}" + (f" ({'; '.join(notes)})" if notes else ""), file=sys.stderr)
    return stats


def _check_first_prompt(prompts: str, column: str, as_chat: bool) -> None:
    """The first row's prompt, read before any file is written: a wrong --prompt-column fails here."""
    first = next(iter(read_rows(prompts)), None)
    if first is None:
        return
    try:
        read_prompt(first, column, as_chat)
    except InputError as error:
        raise InputError(f"{prompts} {first.where}: {error}; pass --on-bad-row skip to write such rows to OUTPUT.rejects.jsonl "
                         "(nothing was written)") from None


def _run(prompts, out: PairsOutput, done, generator, reward, sampling, selection, batch_size, as_chat, prompt_column,
         on_bad_row, total, progress) -> dict:
    from tqdm import tqdm

    stats = {"rows": 0, "done_now": 0, "resumed": 0, "pairs": 0, "below_margin": 0, "unscored": 0, "truncated": 0,
             "truncated_responses": 0, "rejected": 0}
    seen_done: set[str] = set()
    batch: list[tuple[Row, Any]] = []
    bar = tqdm(total=total, unit="prompt", desc="pairs", file=sys.stderr, dynamic_ncols=True, disable=not progress)

    def finish_batch():
        for record in sample_and_score(generator, reward, batch, sampling, *selection):
            out.write_row(record)
            stats["done_now"] += 1
            key = "pairs" if record["chosen"] is not None else record["no_pair"]
            stats[key] += 1
            stats["truncated_responses"] += sum(is_truncated(r) for r in record["responses"])
        out.flush()
        bar.update(len(batch))
        bar.set_postfix(pairs=stats["pairs"])
        batch.clear()

    try:
        for row in read_rows(prompts):
            stats["rows"] += 1
            if row.index in done:
                if done[row.index] != row.row_id:
                    raise InputError(f"{prompts} {row.where} differs from what {out.output} holds for it "
                                     f"({done[row.index]}, now {row.row_id}): the input changed since that run; "
                                     "write to another --output or restore the input")
                seen_done.add(row.row_id)
                stats["resumed"] += 1
                bar.update(1)
                continue
            try:
                prompt = read_prompt(row, prompt_column, as_chat)
            except InputError as error:
                if on_bad_row == "stop":
                    raise InputError(f"{prompts} {row.where}: {error}; pass --on-bad-row skip to write such rows to "
                                     f"{out.paths['rejects']}") from None
                out.write_reject({"row_id": row.row_id, "where": row.where, "reason": str(error),
                                  "row": row.data if row.data is not None else row.raw})
                stats["rejected"] += 1
                bar.update(1)
                continue
            batch.append((row, prompt))
            if len(batch) >= batch_size:
                finish_batch()
        if batch:
            finish_batch()
    finally:
        bar.close()
    missing = sorted(set(done.values()) - seen_done)
    if missing:
        raise InputError(f"{out.output} holds {len(missing)} row(s) that {prompts} no longer has (first: {missing[0]}); "
                         "the input changed since that run: write to another --output")
    return stats


def read_prompt(row: Row, column: str, as_chat: bool):
    """The row's prompt as TRL takes it: text, or a list of messages (``as_chat``: text -> one user turn)."""
    if row.error:
        raise InputError(row.error)
    if column not in row.data:
        raise InputError(f"no {column!r} column (the row has {sorted(row.data)}); pass --prompt-column")
    value = text_or_messages(row.data[column], column)
    if isinstance(value, str):
        if not value.strip():
            raise InputError(f"{column!r} is empty")
        return [{"role": "user", "content": value}] if as_chat else value
    if not value:
        raise InputError(f"{column!r} is an empty list of messages")
    return [dict(m) for m in value]


def sample_and_score(generator, reward, batch: list[tuple[Row, Any]], sampling: Sampling, min_margin: float,
                     drop_truncated: bool = False) -> list[dict]:
    """One batch: N samples per prompt, one reward call for all of them, a record per prompt.

    A reward that gives attributes and no single reward (no ``attribute_weights``) is refused; one
    whose scores are all None because its requests failed (``on_error="skip"``) is not: those
    prompts are counted as unscored.
    """
    from .score import score_conversations

    samples = generator.generate([prompt for _, prompt in batch], first_index=batch[0][0].index)
    conversations = [Conversation.from_trl(prompt, s.text if isinstance(prompt, str) else [{"role": "assistant", "content": s.text}])
                     for (_, prompt), group in zip(batch, samples) for s in group]
    values, named = score_conversations(reward, conversations)
    if reward.options.attribute_weights is None and named and named[0] and all(v is None for v in values):
        raise ConfigError(f"the reward returns attributes {sorted(named[0])} but no single reward: pass "
                          "--option attribute_weights=[...] (Nemotron-4-340B-Reward: the card's weights)")
    records = []
    for position, ((row, prompt), group) in enumerate(zip(batch, samples)):
        rewards = values[position * sampling.n:(position + 1) * sampling.n]
        attributes = named[position * sampling.n:(position + 1) * sampling.n]
        truncated = [s.finish_reason == "length" for s in group] if drop_truncated else None
        chosen, rejected, why = select_pair(rewards, min_margin, truncated)
        records.append({
            "row_id": row.row_id, "where": row.where, "prompt": prompt, "chat": not isinstance(prompt, str),
            "responses": [{"text": s.text, "reward": r, "finish_reason": s.finish_reason, **({"attributes": a} if a else {})}
                          for s, r, a in zip(group, rewards, attributes)],
            "chosen": chosen, "rejected": rejected, "no_pair": why,
        })
    return records


def _plain(options) -> dict:
    """A RewardOptions as the keywords that rebuild it (the non-default ones), for OUT.run.json."""
    import dataclasses

    defaults = type(options)()
    return {f.name: getattr(options, f.name) for f in dataclasses.fields(options) if getattr(options, f.name) != getattr(defaults, f.name)}
