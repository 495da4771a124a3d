"""The server's scheduler (server/batcher.py) on its own: rows back exactly, rounds bounded and
shared fairly, a failure isolated to its request, an abandoned request never scored."""

import asyncio

import pytest
import torch

from rewardbridge.scorers.base import Scores
from rewardbridge.server import Batcher


class Recorder:
    """A scorer whose score for row x is x itself; it records each round and fails on 'bad' rows."""

    def __init__(self, delay=0.0):
        self.rounds, self.delay = [], delay

    def __call__(self, kind, items):
        import time

        self.rounds.append(list(items))
        if self.delay:
            time.sleep(self.delay)
        if any(isinstance(x, str) for x in items):
            raise ValueError(f"bad row in {items}")
        return Scores(values=torch.tensor(items, dtype=torch.float32))


def requests_of(sizes):
    """Consecutive integers: request k holds the next sizes[k] of them."""
    out, start = [], 0
    for n in sizes:
        out.append(list(range(start, start + n)))
        start += n
    return out


def run(batcher, requests, **kwargs):
    async def main():
        results = await asyncio.gather(*[batcher.submit("chat", r, **kwargs) for r in requests], return_exceptions=True)
        batcher.close()
        return results

    return asyncio.run(main())


def test_rows_come_back_exactly_and_rounds_are_shared_fairly():
    score = Recorder()
    requests = requests_of([3, 4, 2, 20, 1])
    results = run(Batcher(score, max_batch_size=8, max_wait_s=0.05), requests)
    assert [r.values.tolist() for r in results] == requests  # request k got exactly its own rows
    assert all(len(r) <= 8 for r in score.rounds)
    assert sorted(x for r in score.rounds for x in r) == list(range(30))  # every row scored once
    # Round-robin, one row per request in turn: the first round holds a row of every request...
    assert all(request[0] in score.rounds[0] for request in requests)
    # ...so the small requests are done within two rounds while the 20-row one is spread over four.
    rounds_of = lambda request: {i for i, r in enumerate(score.rounds) if set(r) & set(request)}  # noqa: E731
    assert max(max(rounds_of(r)) for r in requests if len(r) < 8) <= 1 and len(rounds_of(requests[3])) == 4


def test_a_round_holds_at_most_max_batch_chars():
    score = Recorder()
    requests = requests_of([6, 6])
    sizes = [100, 100, 100, 100, 100, 100]
    results = run(Batcher(score, max_batch_size=64, max_wait_s=0.05, max_batch_chars=250), requests, sizes=sizes)
    assert [r.values.tolist() for r in results] == requests
    assert all(len(r) <= 2 for r in score.rounds)  # 2 x 100 chars fit in 250, a third would not
    # A single row over the budget still rides (alone): nothing is refused by the budget.
    one = Recorder()
    assert run(Batcher(one, max_batch_size=64, max_wait_s=0.0, max_batch_chars=10), [[7]], sizes=[999])[0].values.tolist() == [7]


def test_a_failing_round_is_split_so_only_the_bad_request_sees_the_error():
    score = Recorder()
    requests = [[0], [1], ["bad"], [3], [4, 5]]
    results = run(Batcher(score, max_batch_size=64, max_wait_s=0.05), requests)
    assert isinstance(results[2], ValueError)
    assert [results[i].values.tolist() for i in (0, 1, 3, 4)] == [[0], [1], [3], [4, 5]]
    assert score.rounds[0] == [0, 1, "bad", 3, 4, 5]  # they did share a round first
    assert len(score.rounds) <= 1 + 2 * 3  # halves, not one call per request: at most 2 per level


def test_an_abandoned_request_is_never_scored():
    score, dropped = Recorder(delay=0.3), []

    async def main():
        batcher = Batcher(score, max_batch_size=1, max_wait_s=0.0, on_abandoned=dropped.append)
        first = asyncio.ensure_future(batcher.submit("chat", [0]))  # holds the worker for 0.3 s
        await asyncio.sleep(0.05)
        gone = asyncio.ensure_future(batcher.submit("chat", [1, 2]))
        await asyncio.sleep(0.05)
        gone.cancel()  # its client left (a timeout) while it waited
        last = await batcher.submit("chat", [3])
        out = (await first, last)
        batcher.close()
        return out

    first, last = asyncio.run(main())
    assert first.values.tolist() == [0] and last.values.tolist() == [3]
    assert score.rounds == [[0], [3]] and dropped == [2]  # rows 1 and 2 were dropped, unscored


@pytest.mark.parametrize("kinds", [["chat", "text", "chat"]])
def test_rounds_never_mix_kinds(kinds):
    score = Recorder()

    async def main():
        batcher = Batcher(lambda kind, items: (score.rounds.append((kind, list(items))),
                                               Scores(values=torch.tensor(items, dtype=torch.float32)))[1],
                          max_batch_size=8, max_wait_s=0.05)
        out = await asyncio.gather(*[batcher.submit(kind, [i]) for i, kind in enumerate(kinds)])
        batcher.close()
        return out

    results = asyncio.run(main())
    assert [r.values.tolist() for r in results] == [[0], [1], [2]]
    assert sorted(score.rounds) == [("chat", [0, 2]), ("text", [1])]


def test_a_round_checked_per_request_fails_the_bad_request_without_rescoring():
    # Issue 18 review: one bad request made its batch-mates be scored again and again (halves);
    # with score_requests each request gets its own outcome from the one round.
    rounds = []

    def score_requests(kind, groups):
        rounds.append([list(g) for g in groups])
        return [ValueError(f"bad row in {g}") if any(isinstance(x, str) for x in g)
                else Scores(values=torch.tensor(g, dtype=torch.float32)) for g in groups]

    requests = [[0], [1], ["bad"], [3], [4, 5]]
    batcher = Batcher(Recorder(), max_batch_size=64, max_wait_s=0.05, score_requests=score_requests)
    results = run(batcher, requests)
    assert isinstance(results[2], ValueError)
    assert [results[i].values.tolist() for i in (0, 1, 3, 4)] == [[0], [1], [3], [4, 5]]
    assert rounds == [[[0], [1], ["bad"], [3], [4, 5]]]  # one round, nobody scored twice
