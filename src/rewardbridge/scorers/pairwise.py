"""The pairwise judge's scorer (``protocol="genrm"``): a prompt's responses compared two at a
time by a generative reward model, folded into one reward each (``comparisons.py``).

A reward that needs the group: each call gathers every rank's rows (``groups.py``), so a
group TRL split across processes is whole again; the comparisons of the step are dealt out
round-robin, each sent once, all in flight at once (up to ``max_concurrency``) on the
shared transport; the judgements are gathered back, every rank folds every group the same
way and keeps its own rows. ``normalize=`` then applies to these rewards over the same
groups (``Scores.groups``).

A group is every row with the same prompt and principle, or, with ``group_size=N`` (the
trainer's ``num_generations``), each block of N consecutive rows in the gathered order:
TRL's own advantage groups, so a prompt that appears twice in a batch is judged as two
groups. Anything wrong with one rank's rows is found before the first request and raised
on every rank together (``groups.raise_problems``), naming the rank.

Cost per step, for G prompts of N responses: ``circular`` N comparisons per prompt,
``all_pairs`` N(N-1)/2, times ``judges_per_pair``; each comparison is one judge request
holding the conversation and two answers, and the judge reasons before it answers.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Sequence

if TYPE_CHECKING:  # imported where the scores are built: a remote judge's client loads no torch (issue 18)
    import torch

from ..comparisons import NEUTRAL_RANKING, NEUTRAL_SCORE, Comparison, Judgement, answer_text, comparison_pairs, fold, split_reasoning
from ..errors import ConfigError, InputError, RemoteError, warn
from ..judge_options import GROUP_ADJUSTMENTS
from ..groups import consecutive_blocks, gather_results, gather_rows, group_indices, raise_problems, runs_of, share
from .base import Scores
from .judges import exchange_parsed, row_principles
from .transport import Transport, display_url

logger = logging.getLogger(__name__)


@dataclass
class Group:
    """One prompt's responses: the history the judge reads, and each response's text."""

    history: list[dict]
    principle: str | None
    rows: list[int] = field(default_factory=list)  # indices among all ranks' rows
    texts: list[str] = field(default_factory=list)  # full completions (reasoning included: length penalty)

    @property
    def answers(self) -> list[str]:
        return [answer_text(t) for t in self.texts]


class Outcome(NamedTuple):
    """What became of one comparison: a judgement, or why there is none."""

    judgement: Judgement | None
    error: str | None = None
    retries: int = 0  # answers that held nothing to read and were asked again
    unparsed: bool = False  # no answer could be read (a failure, or neutral)
    fatal: BaseException | None = None  # not a remote failure (a missing key variable): raised whatever on_error says


class PairwiseScorer:
    """Scores conversations by comparing each prompt's responses with a pairwise judge.

    Args:
        urls: the judge's base URLs (vLLM or NIM replicas); load is spread over them.
        codec: ``protocols.genrm.GenRMClient``.
        options: :class:`~rewardbridge.options.RewardOptions`: pairs, judges_per_pair,
            principle(_column), sampling, parse_retries, on_parse_failure, length penalties,
            and the transport's timeout, retries, max_concurrency, api_key_env, on_error.
    """

    reads_columns = True  # principle_column
    needs_groups = True  # every response of a prompt in one call

    def __init__(self, urls: Sequence[str], codec: Any, options: Any):
        self.codec, self.options, self.protocol = codec, options, codec.protocol
        self.transport = Transport(urls, codec.protocol, options)
        self._metrics: dict[str, float] = {}
        self._warned: set[str] = set()

    def __repr__(self) -> str:
        return f"PairwiseScorer({self.protocol!r}, {[display_url(u) for u in self.transport.urls]}, pairs={self.options.pairs!r})"

    def __getstate__(self):
        raise TypeError("a PairwiseScorer does not pickle; pickle the RewardFunction (it carries the URL and options)")

    def score(self, conversations, columns: dict | None = None) -> Scores:
        """Rewards (B,) for this rank's conversations; a collective when distributed (every rank calls it).

        ``Scores.groups`` holds each row's group number among all ranks' groups.
        """
        conversations = list(conversations)
        try:
            principles, problem = row_principles(self.options, columns, len(conversations)), self._key_problem()
        except InputError as error:  # raised below on every rank together, none left waiting in a collective
            principles, problem = [None] * len(conversations), error
        gathered = gather_rows([((c.prompt_key(), p), c, p) for c, p in zip(conversations, principles)], problem)
        raise_problems(gathered)
        groups = self._groups(gathered)
        self._check_groups(groups)
        self._warn_on_no_reasoning(groups)
        opts = self.options
        plan = self.plan(groups, opts.pairs)
        mine = share(len(plan), gathered)
        outcomes = gather_results(self.transport.run(self._judge_all({k: plan[k] for k in mine}, groups)))
        rewards = self._fold(groups, plan, outcomes, len(gathered.rows))
        number = [0] * len(gathered.rows)
        for g, group in enumerate(groups):
            for row in group.rows:
                number[row] = g
        return Scores(values=rewards[gathered.mine], groups=number[gathered.mine])

    def raise_together(self, error: Exception) -> None:
        """Raise ``error`` (found in this rank's input before :meth:`score`) on every rank: the
        other ranks are in :meth:`score`'s gather, and get it there. A collective."""
        raise_problems(gather_rows([], error))
        raise error  # not reached: the gather holds this rank's error

    def judge_groups(self, groups: list[Group], both_orders: bool = True) -> list[list[float]]:
        """One process, no collectives (``rewardbridge eval``): every pair of each group, in both
        orders, folded without the length adjustment. Returns each group's rewards (NaN: failed)."""
        self._check_groups(groups)
        plan = self.plan(groups, "all_pairs", both_orders=both_orders)
        outcomes = self.transport.run(self._judge_all(dict(enumerate(plan)), groups))
        self._raise_or_warn(outcomes)
        by_group = _by_group(plan, outcomes, len(groups))
        return [fold(len(group.texts), by_group[g]).rewards for g, group in enumerate(groups)]

    def plan(self, groups: list[Group], strategy: str, both_orders: bool = False) -> list[Comparison]:
        """Every comparison of these groups, in one order all ranks agree on."""
        return [
            Comparison(g, i, j, k)
            for g, group in enumerate(groups)
            for i, j, k in comparison_pairs(strategy, len(group.texts), self.options.judges_per_pair, both_orders)
        ]

    def pop_metrics(self) -> dict[str, float]:
        """The last call's judge metrics and the transport's retries and latencies (``<name>/...``)."""
        metrics, self._metrics = self._metrics, {}
        return {**metrics, **self.transport.pop_metrics()}

    def close(self) -> None:
        self.transport.close()

    # -- internals ------------------------------------------------------------------------------

    def _key_problem(self) -> Exception | None:
        """A key variable named but not set here: found before the gather, so the error names this
        rank instead of every rank failing at its first request."""
        env = self.options.api_key_env
        if env and not os.environ.get(env):
            return ConfigError(f"api_key_env={env!r}, but that environment variable is not set; set it to the key on every process")
        return None

    def _groups(self, gathered) -> list[Group]:
        """Every rank's rows as groups, in one order all ranks agree on (see the module docstring)."""
        keys = [key for key, _, _ in gathered.rows]
        size = self.options.group_size
        indices = consecutive_blocks(keys, size) if size else group_indices(keys)
        groups = []
        for rows in indices:
            first, principle = gathered.rows[rows[0]][1], gathered.rows[rows[0]][2]
            groups.append(Group(first.prompt_messages(), principle, rows, [gathered.rows[i][1].completion_text() for i in rows]))
        if not size:
            self._warn_on_split_runs(groups)
        return groups

    def _warn_on_split_runs(self, groups: list[Group]) -> None:
        # TRL's groups are positional; a prompt in two places, each a run of several rows, looks
        # like two TRL groups merged into one here (interleaved rows, as OnlineDPO sends, do not).
        for group in groups:
            runs = runs_of(group.rows)
            if len(runs) > 1 and min(runs) > 1 and "split-runs" not in self._warned:
                self._warned.add("split-runs")
                prompt = next((m["content"] for m in reversed(group.history) if m.get("role") == "user"), "")
                warn(f"protocol={self.protocol!r}: the prompt {str(prompt)[:60]!r} comes as {len(runs)} separate runs of "
                     f"completions ({runs}), judged as one group of {len(group.rows)}; if they are separate TRL groups, "
                     "pass group_size=<the trainer's num_generations> to judge each alone")

    def _warn_on_no_reasoning(self, groups: list[Group]) -> None:
        given = [f"{key}={getattr(self.options, key):g}" for key in ("reasoning_length_penalty", "reasoning_bonus")
                 if getattr(self.options, key)]
        if given and "no-reasoning" not in self._warned:
            if not any(split_reasoning(t)[0] for group in groups for t in group.texts):
                self._warned.add("no-reasoning")
                warn(f"{' and '.join(given)} {'do' if len(given) > 1 else 'does'} nothing here: no completion "
                     "has a <think>...</think> part (a policy that does not reason); drop it, or train a reasoning policy")

    def _check_groups(self, groups: list[Group]) -> None:
        from ..protocols.genrm import check_history

        single = [g for g in groups if len(g.texts) < 2]
        if single:
            prompt = next((m["content"] for m in reversed(single[0].history) if m.get("role") == "user"), "")
            raise ConfigError(
                f"protocol={self.protocol!r} compares responses to the same prompt, but {len(single)} of {len(groups)} prompt(s) "
                f"have a single response (first: {prompt[:60]!r}); set num_generations to 2 or more in the trainer's config "
                "(GRPOConfig / RLOOConfig) so each prompt has several"
            )
        for group in groups:  # on every rank alike, before any request: a bad prompt fails everywhere at once
            check_history(group.history)

    async def _judge_all(self, work: dict[int, Comparison], groups: list[Group]) -> dict[int, Outcome]:
        keys = list(work)
        results = await asyncio.gather(*(self._judge(work[k], groups[work[k].group]) for k in keys))
        return dict(zip(keys, results))

    async def _judge(self, comparison: Comparison, group: Group) -> Outcome:
        answers = group.answers
        request = self.codec.request(group.history, answers[comparison.first], answers[comparison.second], group.principle)
        a, b = group.rows[comparison.first], group.rows[comparison.second]
        retries = self.options.parse_retries
        try:
            result, asked_again, why = await exchange_parsed(self.transport, request, self.codec.parse, [a, b], retries)
        except RemoteError as error:  # the transport's message names the endpoint and samples a and b
            return Outcome(None, str(error))
        except Exception as error:  # noqa: BLE001: carried to every rank and raised there (no rank left waiting)
            return Outcome(None, str(error), fatal=error)
        if why is None:
            return Outcome(result, None, asked_again)
        if self.options.on_parse_failure == "neutral":  # genrm_compare's fallback, when asked for
            return Outcome(Judgement(NEUTRAL_SCORE, NEUTRAL_SCORE, NEUTRAL_RANKING), None, asked_again, True)
        return Outcome(None, (
            f"the judge's answer comparing samples {a} and {b} could not be read after {retries + 1} attempt(s): {why}; "
            "raise parse_retries, pass on_parse_failure='neutral' (3.0, 3.0, 3.5 as genrm_compare) or on_error='skip'"
        ), asked_again, True)

    def _raise_or_warn(self, outcomes: dict[int, Outcome]) -> None:
        fatal = next((o.fatal for _, o in sorted(outcomes.items()) if o.fatal is not None), None)
        if fatal is not None:
            raise fatal
        errors = [o.error for _, o in sorted(outcomes.items()) if o.error]
        if errors and self.options.on_error == "raise":
            more = f" (and {len(errors) - 1} more comparison(s))" if len(errors) > 1 else ""
            raise RemoteError(errors[0] + more)
        for error in errors:
            logger.warning("%s; its two responses scored as failed (on_error='skip')", error)

    def _fold(self, groups, plan, outcomes, size) -> torch.Tensor:
        import torch

        adjustments = {key: getattr(self.options, key) for key in GROUP_ADJUSTMENTS}

        # Every rank holds every outcome now: raise (or not) on all of them alike.
        self._raise_or_warn(outcomes)
        rewards = torch.full((size,), math.nan)
        individual: list[float] = []
        tiebreaks = judged = 0
        by_group = _by_group(plan, outcomes, len(groups))
        for g, group in enumerate(groups):
            folded = fold(len(group.texts), by_group[g], group.texts, **adjustments)
            rewards[torch.tensor(group.rows)] = torch.tensor(folded.rewards, dtype=torch.float32)
            individual += folded.individual
            tiebreaks, judged = tiebreaks + folded.tiebreaks, judged + folded.judged
        scores = torch.tensor(individual, dtype=torch.float64)
        self._metrics = {
            "comparisons": float(len(plan)),
            "failed_comparisons": float(sum(o.error is not None for o in outcomes.values())),
            "parse_retries": float(sum(o.retries for o in outcomes.values())),
            "parse_failures": float(sum(o.unparsed for o in outcomes.values())),
        }
        if judged:
            self._metrics.update({
                "judge_score_mean": float(scores.mean()),
                "judge_score_std": float(scores.std(unbiased=False)),  # population std, as genrm_compare
                "tiebreak_rate": tiebreaks / judged,
            })
        return rewards


def _by_group(plan: list[Comparison], outcomes: dict[int, Outcome], count: int) -> list[list[tuple]]:
    """(first, second, judgement) of each group's comparisons, in plan order."""
    by_group: list[list[tuple]] = [[] for _ in range(count)]
    for k, c in enumerate(plan):
        by_group[c.group].append((c.first, c.second, outcomes[k].judgement))
    return by_group
