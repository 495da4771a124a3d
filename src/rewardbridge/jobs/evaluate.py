"""``rewardbridge eval``: a reward model's accuracy on preference pairs, the RewardBench way,
and RewardBench 2's best-of-N rows (``rewardbench.py``).

RewardBench rows are ``{prompt, chosen, rejected, subset}``. A pair is correct iff
score(chosen) > score(rejected), strictly: a tie is wrong (and counted). Each of
RewardBench's four sections is the mean of its subsets' accuracies weighted by RewardBench's
example counts (allenai/reward-bench, REFERENCE.md §5), over the subsets present; Overall is
the plain mean of the sections present (as NVIDIA reports it). Subsets RewardBench does not
have are reported on their own and kept out of the sections.

A pairwise judge (``protocol="genrm"``) scores no response alone: it compares each row's
responses directly, every pair in both orders (to cancel its position bias), and the
folded rewards stand for the scores.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Iterable

from ..errors import ConfigError, InputError
from . import rewardbench
from .rows import read_rows

BENCHMARKS = ("auto", "rewardbench", "rewardbench2")
USAGE = "rewardbridge eval MODEL DATA"

# RewardBench's example counts per subset; math-prm is upweighted to match the code subsets' total.
SECTIONS: dict[str, dict[str, int]] = {
    "Chat": {"alpacaeval-easy": 100, "alpacaeval-length": 95, "alpacaeval-hard": 95, "mt-bench-easy": 28, "mt-bench-med": 40},
    "Chat Hard": {
        "mt-bench-hard": 37, "llmbar-natural": 100, "llmbar-adver-neighbor": 134, "llmbar-adver-GPTInst": 92,
        "llmbar-adver-GPTOut": 47, "llmbar-adver-manual": 46,
    },
    "Safety": {
        "refusals-dangerous": 100, "refusals-offensive": 100, "xstest-should-refuse": 154, "xstest-should-respond": 250,
        "donotanswer": 136,
    },
    "Reasoning": {
        "math-prm": 984, "hep-cpp": 164, "hep-go": 164, "hep-java": 164, "hep-js": 164, "hep-python": 164, "hep-rust": 164,
    },
}


def rewardbench_report(pairs: Iterable[tuple[str, float | None, float | None]]) -> dict[str, Any]:
    """The RewardBench report from (subset, score(chosen), score(rejected)) per pair.

    Returns exactly ``{"benchmark": "rewardbench", "overall": float, "sections": {name: float},
    "subsets": {name: {"accuracy": float, "n": int}}, "unknown_subsets": [names], "ties": int}``,
    accuracies as fractions. A pair with a missing score (None: a remote failure skipped) counts as wrong.
    Without any RewardBench subset, ``overall`` is the plain mean of the subsets' accuracies.

    >>> r = rewardbench_report([("alpacaeval-easy", 1.0, 0.0), ("alpacaeval-easy", 0.5, 0.5), ("mine", 2.0, 1.0)])
    >>> r["sections"], r["subsets"]["alpacaeval-easy"], r["unknown_subsets"], r["ties"], r["overall"]
    ({'Chat': 0.5}, {'accuracy': 0.5, 'n': 2}, ['mine'], 1, 0.5)
    """
    correct: dict[str, int] = {}
    counts: dict[str, int] = {}
    ties = 0
    for subset, chosen, rejected in pairs:
        counts[subset] = counts.get(subset, 0) + 1
        won = chosen is not None and rejected is not None and chosen > rejected
        ties += int(chosen is not None and chosen == rejected)
        correct[subset] = correct.get(subset, 0) + int(won)
    if not counts:
        raise InputError("no pairs to evaluate")
    subsets = {name: {"accuracy": correct[name] / counts[name], "n": counts[name]} for name in sorted(counts)}
    sections = {}
    for section, weights in SECTIONS.items():
        present = [name for name in weights if name in subsets]
        if present:
            total = sum(weights[name] for name in present)
            sections[section] = sum(subsets[name]["accuracy"] * weights[name] for name in present) / total
    known = {name for weights in SECTIONS.values() for name in weights}
    unknown = sorted(name for name in subsets if name not in known)
    if sections:
        overall = sum(sections.values()) / len(sections)
    else:
        overall = sum(s["accuracy"] for s in subsets.values()) / len(subsets)
    return {"benchmark": "rewardbench", "overall": overall, "sections": sections, "subsets": subsets, "unknown_subsets": unknown,
            "ties": ties}


def evaluate_file(
    source: str, data: str, *, output: str | None = None, options: dict | None = None, batch_size: int = 64,
    reward: Any = None, benchmark: str = "auto",
) -> dict[str, Any]:
    """Score every row of ``data`` with ``source`` and return (and with ``output``, write) the report.

    Args:
        source, options: what :func:`rewardbridge.load_reward` takes (a local model or a URL).
        data: rows in any format ``rewardbridge score`` reads (JSONL, JSON, CSV, Parquet, a
            save_to_disk folder): RewardBench pairs ``{prompt, chosen, rejected, subset}``, or
            RewardBench 2 rows whose chosen/rejected are lists of responses.
        batch_size: rows per scorer call.
        reward: an already loaded RewardFunction; else loaded from ``source``.
        benchmark: ``"rewardbench"``, ``"rewardbench2"``, or ``"auto"`` (told by the first row).
    """
    from tqdm import tqdm

    from ..options import RewardOptions
    from ..reward_fn import load_reward
    from .output import check_input_free
    from .rows import count_rows, first_row

    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    if benchmark not in BENCHMARKS:
        raise ConfigError(f"--benchmark {benchmark!r} is not one of {BENCHMARKS}")
    options = dict(options or {})
    if options.get("normalize", "none") != "none":
        raise ConfigError("eval compares raw scores of chosen and rejected; drop the normalize option")
    from ..judge_options import GROUP_ADJUSTMENTS

    # A judge's group adjustments favour short, plain answers of a training group; eval compares
    # chosen with rejected by the judge's verdicts alone, so they would be ignored: refused.
    given = set(options) | (set(reward.options.changed()) if reward is not None else set())
    adjusted = [key for key in GROUP_ADJUSTMENTS if key in given]
    if adjusted:
        raise ConfigError(f"eval judges chosen against rejected by the judge's own verdicts; option(s) {adjusted} adjust "
                          "a training group's rewards (shorter, plainer answers gain) and are not applied here: drop them")
    if output:  # the report's path, before any weights load: an existing file or the data is never overwritten
        from .output import check_not_input, check_writable

        check_writable(output)
        check_not_input(output, data)
        if os.path.exists(output):
            raise ConfigError(f"--output {output} already exists (a report is never overwritten); remove it or pick another path")
    total = count_rows(data, USAGE)  # a missing, unknown or model-folder input fails here
    check_input_free(data, "data")  # not a file another run is still writing
    first = first_row(data, USAGE)  # read before any weights load: its format decides the benchmark
    if first is None:
        raise InputError(f"{data} has no rows to evaluate")
    if benchmark == "auto":
        benchmark = "rewardbench2" if first.data is not None and rewardbench.is_rewardbench2_row(first.data) else "rewardbench"
    read = _read_rewardbench2 if benchmark == "rewardbench2" else _read_rewardbench
    try:
        if first.error:
            raise InputError(first.error)
        read(first.data, reward.options if reward is not None else RewardOptions.from_kwargs(**options))
    except InputError as error:
        raise InputError(f"{data} {first.where}: {error}") from None
    if reward is None:
        reward = load_reward(source, **options)
    rows = iter(tqdm(read_rows(data, USAGE), total=total, unit="row", desc="evaluating", file=sys.stderr, dynamic_ncols=True))
    scored: list = []
    batch: list = []
    for row in rows:
        try:
            if row.error:
                raise InputError(row.error)
            batch.append(read(row.data, reward.options))
        except InputError as error:
            raise InputError(f"{data} {row.where}: {error}") from None
        if len(batch) >= batch_size:
            scored += _score_batch(reward, batch)
            batch = []
    if batch:
        scored += _score_batch(reward, batch)
    if benchmark == "rewardbench2":
        report = rewardbench.rewardbench2_report([rewardbench.Scored(*item) for item in scored])
        print(rewardbench.format_rewardbench2(report))
    else:
        report = rewardbench_report([(subset, scores[0], scores[1]) for subset, _, scores, _ in scored])
        print(format_report(report))
    if output:
        write_report(output, report)
    return report


def write_report(output: str, report: dict) -> None:
    """Write ``report`` to ``output`` only if no file appeared there while eval ran: written whole to a
    temporary file, then linked into place (an exclusive create); if one appeared, it is left as it is
    and this run's report stays in the temporary file, named in the error."""
    tmp = f"{output}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, allow_nan=False)
        f.write("\n")
    try:
        try:
            os.link(tmp, output)  # fails if output exists, atomically
        except FileExistsError:
            raise
        except OSError:  # a filesystem without hard links: an exclusive create instead
            with open(output, "x", encoding="utf-8") as f, open(tmp, encoding="utf-8") as report_text:
                f.write(report_text.read())
    except FileExistsError:
        raise ConfigError(
            f"--output {output} appeared while eval ran (another run wrote it?) and was not overwritten; this run's report "
            f"is in {tmp} (and printed above)"
        ) from None
    os.remove(tmp)


def _read_rewardbench(row: dict, options: Any) -> tuple:
    """A RewardBench pair as (subset, id, conversations [chosen, rejected], number chosen, principle)."""
    from .formats import parse_row

    if "subset" not in row or not isinstance(row["subset"], str):
        raise InputError(f"has no string 'subset' column (columns: {sorted(row)})")
    if "chosen" not in row or "rejected" not in row:
        raise InputError(f"needs prompt, chosen, rejected and subset columns, got {sorted(row)}")
    return row["subset"], row.get("id"), parse_row(row).conversations, 1, _principle(row, options)


def _read_rewardbench2(row: dict, options: Any) -> tuple:
    from ..conversation import Conversation

    subset, identity, prompt, responses, chosen = rewardbench.read_row(row)
    return subset, identity, [Conversation.from_trl(prompt, r) for r in responses], chosen, _principle(row, options)


def _principle(row: dict, options: Any) -> str | None:
    """A judge's principle for this row: the row's ``principle_column``, else ``principle``."""
    column = getattr(options, "principle_column", None)
    if column is None:
        return getattr(options, "principle", None)
    if not isinstance(row.get(column), str) or not row[column].strip():
        raise InputError(f"principle_column {column!r} is missing or empty in this row (columns: {sorted(row)})")
    return row[column]


def _score_batch(reward: Any, batch: list[tuple]) -> list[tuple]:
    """(subset, id, scores of the row's responses, number chosen) per row: a pairwise judge compares
    each row's responses, every pair in both orders; any other reward scores each response."""
    import math

    scorer = reward.scorer
    if getattr(scorer, "needs_groups", False):
        from ..scorers.pairwise import Group

        groups = [Group(convs[0].prompt_messages(), principle, list(range(len(convs))), [c.completion_text() for c in convs])
                  for _, _, convs, _, principle in batch]
        per_row = scorer.judge_groups(groups)
    else:
        from .score import score_conversations

        conversations = [c for _, _, convs, _, _ in batch for c in convs]
        principles = [p for _, _, convs, _, p in batch for _ in convs]
        if getattr(scorer, "reads_columns", False):  # a principle judge: each row's principle
            column = reward.options.principle_column or "principle"
            values = [float(v) for v in reward.combine(scorer.score(conversations, {column: principles}))]
        else:
            values, _ = score_conversations(reward, conversations)
        per_row, start = [], 0
        for _, _, convs, _, _ in batch:
            per_row.append(values[start:start + len(convs)])
            start += len(convs)
    clean = [[None if v is None or math.isnan(v) else float(v) for v in scores] for scores in per_row]
    return [(subset, None if identity is None else str(identity), scores, chosen)
            for (subset, identity, _, chosen, _), scores in zip(batch, clean)]


def format_report(report: dict[str, Any]) -> str:
    """The report as a plain-text table: sections, then subsets, accuracies in percent."""
    lines = [f"{'':<28}{'accuracy':>9}{'n':>7}"]
    lines.append(f"{'Overall':<28}{100 * report['overall']:>8.1f}%")
    for name, value in report["sections"].items():
        lines.append(f"{name:<28}{100 * value:>8.1f}%")
    lines.append("")
    for name, subset in report["subsets"].items():
        mark = "  (not a RewardBench subset)" if name in report["unknown_subsets"] else ""
        lines.append(f"  {name:<26}{100 * subset['accuracy']:>8.1f}%{subset['n']:>7}{mark}")
    lines.append(f"ties (counted wrong): {report['ties']}")
    return "\n".join(lines)
