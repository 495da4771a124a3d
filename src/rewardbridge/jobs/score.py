"""``rewardbridge score``: score a dataset offline, filter it, resume it after a crash.

Rows are read by ``rows.py`` and told apart by ``formats.py`` (TRL prompt/completion,
preference pairs, HelpSteer2, NeMo-Aligner conversations). A multi-attribute model also
writes ``attributes`` {name: value} (without attribute_weights the ``reward`` is null:
labelling needs no single reward). Scored rows are appended to OUT as each batch finishes,
with a ``row_id`` (index + content hash); ``resume`` skips the rows OUT already holds, found
by that identity. ``best_of_n``, ``min_zscore`` and the ``normalize`` option
(``normalized_reward``) need every response of a prompt, so they score into
``OUT.scored.jsonl`` and write OUT from it at the end (``filters.py``). ``output.py`` keeps the
output safe: checked before the model loads, locked while the job runs, resumed only by the
same run (and model: ``fingerprint.py``).

A row whose scoring failed under ``on_error='skip'`` (a remote failure) is not written: the
summary counts it as failed, and ``--resume`` scores it again. A row the model scores NaN or
infinite is a bad row: ``--on-bad-row skip`` writes it to the rejects file with the reason.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any

import torch

from ..conversation import Conversation
from ..errors import ConfigError, InputError, ScoreError
from .filters import select_rows, write_filtered  # noqa: F401 (select_rows: its old home)
from .formats import Parsed, json_line, parse_row
from .output import JobOutput, RunRecord, check_input_free, followed
from .rows import Row, count_rows, first_row, read_rows

USAGE = "rewardbridge score MODEL DATA -o OUT"


def score_file(
    source: str,
    input: str,
    output: str,
    *,
    options: dict | None = None,
    batch_size: int = 64,
    best_of_n: int | None = None,
    min_zscore: float | None = None,
    steerlm_labels: bool = False,
    resume: bool = False,
    on_bad_row: str = "stop",
    reward: Any = None,
) -> dict:
    """Score every row of ``input`` with the reward model ``source`` into the JSONL ``output``.

    Args:
        source, options: what :func:`rewardbridge.load_reward` takes (a local model or a URL).
        batch_size: rows per scorer call.
        best_of_n: per prompt, keep the best-scored of its first ``best_of_n`` responses.
        min_zscore: drop rows whose z-score among their prompt's responses is below this.
        steerlm_labels: NeMo-Aligner rows: labels rounded and clamped to 0-4.
        resume: continue an interrupted run into the same ``output``; refused when the source,
            options, input, settings or the model's files differ from the run that wrote it (``OUT.run.json``).
        on_bad_row: ``"stop"`` raises InputError at a malformed row, or one the model scores NaN or
            infinite (naming its line); ``"skip"`` writes it with the reason to ``OUTPUT.rejects.jsonl``.
        reward: an already loaded RewardFunction (tests, notebooks); else loaded from ``source``.

    Every output path is checked before the model loads (``jobs/output.py``): its folder exists,
    it is not the input, it holds no data unless ``resume``; the input is not a file another run
    is writing; its first row is read (format, columns, the filters' needs); and the output is
    locked while the job runs, so a second run on it stops at once.

    Returns:
        ``{"rows", "scored", "failed", "resumed", "rejected", "written", "output"}``: rows in the input,
        rows scored now, rows whose scoring failed (on_error='skip'; not written), rows found already done,
        rows rejected, rows in ``output``.
    """
    from tqdm import tqdm

    from ..options import RewardOptions

    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    if best_of_n is not None and best_of_n < 1:
        raise ConfigError(f"--best-of-n must be at least 1, got {best_of_n}")
    if min_zscore is not None and not math.isfinite(min_zscore):
        raise ConfigError(f"--min-zscore must be a finite number of standard deviations, got {min_zscore}")
    if on_bad_row not in ("stop", "skip"):
        raise ConfigError(f"--on-bad-row {on_bad_row!r} is not one of ('stop', 'skip')")
    chosen = reward.options if reward is not None else RewardOptions.from_kwargs(**dict(options or {}))
    normalize = chosen.normalize
    if normalize == "reference" or chosen.normalize_target != "reward":
        raise ConfigError(
            f"score normalizes the reward per prompt over the whole file (center, zscore, rank); "
            f"normalize={normalize!r} with normalize_target={chosen.normalize_target!r} is for training"
        )
    # Per-prompt statistics and filters need every response of a prompt: score first, write OUT at the end.
    filtering = best_of_n is not None or min_zscore is not None or normalize != "none"
    output = followed(output)  # a symlink's side files beside its real file, as its locks are
    scored_path = output + ".scored.jsonl" if filtering else output
    rejects_path = output + ".rejects.jsonl"
    job = JobOutput(output, input, [scored_path, rejects_path], final=output if filtering else None, resume=resume)
    job.check()  # every path, before anything loads
    total = count_rows(input, USAGE)  # a missing or unknown input fails here, before any file is written
    check_input_free(input)  # not a file another run is still writing
    writes = ("row_id",) + (("normalized_reward",) if normalize != "none" else ()) + (("zscore",) if min_zscore is not None else ())
    job_settings = JobRows(input, filtering, steerlm_labels, writes, on_bad_row, rejects_path)
    job_settings.check_first(first_row(input))  # format, columns, filters: before the model loads
    resolved = None
    if reward is None:
        from ..resolve import resolve

        resolved = resolve(source, **dict(options or {}))  # every weight-free check
    if (resolved.needs_groups if resolved is not None else getattr(reward.scorer, "needs_groups", False)):
        raise ConfigError(
            f"score writes rows batch by batch, but protocol={chosen.protocol!r} compares each prompt's responses "
            "with each other and needs all of them at once; evaluate a pairwise judge with `rewardbridge eval`, or score "
            "with a pointwise reward (a reward model, or protocol='principle')"
        )
    if filtering:
        check_single_reward((resolved or reward).options, resolved.kind if resolved is not None else chosen.kind,
                            "--best-of-n" if best_of_n is not None else "--min-zscore" if min_zscore is not None else f"normalize={normalize!r}")
    settings = {"best_of_n": best_of_n, "min_zscore": min_zscore, "steerlm_labels": steerlm_labels}
    record = RunRecord.of("rewardbridge score", (resolved or reward).source, (resolved or reward).options, input, settings,
                          model=fingerprint_of(resolved, reward))
    with job.locked():
        done = job.start(record)
        if reward is None:
            from ..reward_fn import RewardFunction
            from ..scorers import build_scorer

            reward = RewardFunction(resolved.source, resolved.options, scorer=build_scorer(resolved))
        stats = _score_rows(reward, job_settings, total, scored_path, done, batch_size, tqdm)
        if filtering:
            stats["written"] = write_filtered(scored_path, output, reward.options, best_of_n, min_zscore, steerlm_labels)
        else:
            stats["written"] = _count_lines(output)
    stats["output"] = output
    failed = (f"{stats['failed']} failed (scoring failed under on_error='skip'; not written: --resume scores them again), "
              if stats["failed"] else "")
    print(
        f"rewardbridge score: {stats['rows']} rows: {stats['scored']} scored, {failed}{stats['resumed']} already in the "
        f"output (resumed), {stats['rejected']} rejected; {stats['written']} rows in {output}",
        file=sys.stderr,
    )
    return stats


def check_single_reward(options: Any, kind: str | None, what: str) -> None:
    """Filters and normalization need one reward per row: a multi-output model without attribute_weights
    has only attributes (every row would be dropped, or normalized to null)."""
    if options.attributes and len(options.attributes) > 1 and options.attribute_weights is None and kind != "custom":
        raise ConfigError(
            f"{what} needs one reward per row, but the model gives attributes {list(options.attributes)} and no single reward "
            "(every row would be dropped, or normalized to null); pass --option attribute_weights=[...] to combine them"
        )


def fingerprint_of(resolved: Any, reward: Any) -> dict:
    """The model's fingerprint (``fingerprint.py``) from what resolve decided, or from a loaded reward."""
    from .fingerprint import model_fingerprint

    if resolved is not None:
        return model_fingerprint(resolved.source, resolved.options, resolved.remote, resolved.dtype)
    model = getattr(reward.scorer, "model", None)
    remote = reward.source.lower().startswith(("http://", "https://"))
    return model_fingerprint(reward.source, reward.options, remote, getattr(model, "dtype", None))


class JobRows:
    """How one run reads its rows: the format checks, the columns it writes, where bad rows go."""

    def __init__(self, input: str, filtering: bool, steerlm_labels: bool, writes: tuple[str, ...], on_bad_row: str, rejects: str):
        self.input, self.filtering, self.steerlm_labels, self.writes = input, filtering, steerlm_labels, writes
        self.on_bad_row, self.rejects_path = on_bad_row, rejects

    def parse(self, row: Row) -> Parsed:
        """The row's conversations, or InputError (a bad row); ConfigError for what no row of this run could be."""
        if row.error:
            raise InputError(row.error)
        parsed = parse_row(row.data, self.steerlm_labels)
        if self.filtering and parsed.group_key is None:
            raise ConfigError(
                f"--best-of-n, --min-zscore and normalize compare one response per row among its prompt's; "
                f"{self.input} {row.where} is a {parsed.format} row"
            )
        clash = [c for c in (*self.writes, *parsed.writes) if c in row.data]
        if clash:  # it would be replaced without a word
            raise InputError(
                f"has a column {clash[0]!r}, which rewardbridge score writes and would replace; rename it (or drop it) "
                "in the input"
            )
        return parsed

    def check_first(self, row: Row | None) -> None:
        """The first row read before any weights load: a file of another format or columns fails in seconds."""
        if row is None:
            return
        try:
            self.parse(row)
        except InputError as error:
            if self.on_bad_row == "stop":
                raise InputError(f"{self.input} {row.where}: {error}; pass --on-bad-row skip to write such rows to "
                                 f"{self.rejects_path}") from None

    def bad(self, error: Exception, row: Row, rejects, stats: dict) -> None:
        """A bad row: raised under --on-bad-row stop, else written to the rejects file."""
        if self.on_bad_row == "stop":
            raise type(error)(f"{self.input} {row.where}: {error}; pass --on-bad-row skip to write such rows to "
                              f"{self.rejects_path}") from None
        rejects.write(json_line({"row_id": row.row_id, "where": row.where, "reason": str(error),
                                 "row": row.data if row.data is not None else row.raw}))
        rejects.flush()
        stats["rejected"] += 1


def _score_rows(reward, job: JobRows, total, scored_path, done, batch_size, tqdm):
    """Score the rows not in ``done`` into ``scored_path`` (rejects into the job's rejects file); returns the counts."""
    stats = {"rows": 0, "scored": 0, "failed": 0, "resumed": 0, "rejected": 0}
    seen_done: set[str] = set()
    batch: list[tuple[Row, Parsed]] = []
    progress = tqdm(total=total, unit="row", desc="scoring", file=sys.stderr, dynamic_ncols=True)
    try:
        with open(scored_path, "a", encoding="utf-8") as out, open(job.rejects_path, "a", encoding="utf-8") as rejects:
            for row in read_rows(job.input, USAGE):
                stats["rows"] += 1
                progress.update(1)
                identity = row.row_id
                if row.index in done:
                    if done[row.index] != identity:
                        raise InputError(
                            f"{job.input} {row.where} differs from what {scored_path} holds for it ({done[row.index]}, now {identity}): "
                            "the input changed since that run; remove the output or drop --resume"
                        )
                    seen_done.add(identity)
                    stats["resumed"] += 1
                    continue
                try:
                    batch.append((row, job.parse(row)))
                except InputError as error:
                    job.bad(error, row, rejects, stats)
                    continue
                if len(batch) >= batch_size:
                    _score_batch(reward, batch, out, rejects, job, stats)
                    batch = []
            if batch:
                _score_batch(reward, batch, out, rejects, job, stats)
    finally:
        progress.close()
        if os.path.exists(job.rejects_path) and os.path.getsize(job.rejects_path) == 0:
            os.remove(job.rejects_path)  # no rejects, no file
    missing = sorted(set(done.values()) - seen_done)
    if missing:
        raise InputError(
            f"{scored_path} holds {len(missing)} row(s) that {job.input} no longer has (first: {missing[0]}); "
            "the input changed since that run: remove the output or drop --resume"
        )
    return stats


def score_conversations(reward, conversations: list[Conversation]) -> tuple[list[float | None], list[dict[str, float]]]:
    """The combined reward and the attributes of each conversation; None where scoring failed.

    The reward is checked as TRL would get it (float32, after attribute_weights): an overflow to
    +-inf is a failure by the ``on_error`` rule (``RewardFunction.check_final``), never a number.
    """
    scores = reward.scorer.score(conversations)
    if scores.values is None and reward.options.attribute_weights is None:
        combined = torch.full((len(conversations),), math.nan)  # attributes only (labelling): no single reward
    else:
        combined = reward.combine(scores)
        combined = reward.check_final(combined, combined, scores)
    values = [_float_or_none(v) for v in combined]
    named = [{name: _float_or_none(column[i]) for name, column in scores.attributes.items()} for i in range(len(conversations))]
    return values, named


def _score_batch(reward, batch: list[tuple[Row, Parsed]], out, rejects, job: JobRows, stats: dict) -> None:
    """Score and write one batch. A row the model scores NaN or +-inf is a bad row (named by its line;
    the rest of the batch is scored again without it); a row whose scoring failed under
    on_error='skip' is counted as failed and not written, so --resume scores it again."""
    conversations = [c for _, parsed in batch for c in parsed.conversations]
    owners = [k for k, (_, parsed) in enumerate(batch) for _ in parsed.conversations]
    try:
        values, named = score_conversations(reward, conversations)
    except ScoreError as error:
        if error.samples is None:
            raise
        bad = sorted({owners[i] for i in error.samples})
        for k in bad:  # named by its line, not its place in the batch
            job.bad(ScoreError(error.reason or str(error)), batch[k][0], rejects, stats)
        rest = [item for k, item in enumerate(batch) if k not in bad]
        if rest:
            _score_batch(reward, rest, out, rejects, job, stats)
        return
    start = 0
    labelling = reward.options.attribute_weights is None
    for row, parsed in batch:
        n = len(parsed.conversations)
        rewards, attributes = values[start:start + n], named[start:start + n]
        start += n
        # Failed under on_error='skip': NaN everywhere (an attributes-only row has a null reward by design).
        failed = any(v is None for a in attributes for v in a.values()) or any(
            r is None and not (labelling and a) for r, a in zip(rewards, attributes))
        if failed:
            stats["failed"] += 1
            continue
        out.write(json_line({**parsed.finish(rewards, attributes), "row_id": row.row_id}))
        stats["scored"] += 1
    out.flush()  # a killed run keeps every finished batch


def _count_lines(path: str) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def _float_or_none(value) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value
