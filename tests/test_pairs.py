"""`rewardbridge pairs`: N samples per prompt from a tiny policy (local generate, or a vLLM-format
server on 127.0.0.1), scored by a tiny reward model, best/worst pairs; resume after SIGKILL,
and the safety rules (no overwrite, same settings, one writer, input unchanged)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rewardbridge.cli import main as cli_main
from rewardbridge.errors import ConfigError, InputError
from rewardbridge.jobs.pairs import make_pairs, select_pair
from rewardbridge.reward_fn import load_reward
from servers.generation import GenerationServer, respond

QUESTIONS = ["What is the capital of France?", "How many legs does a spider have?", "Tell me a joke.",
             "Write a haiku about the sea.", "Explain gradient descent.", "What is 12 times 12?"]


def write_prompts(path: Path, chat=True, questions=QUESTIONS) -> str:
    rows = [{"prompt": [{"role": "user", "content": q}] if chat else q} for q in questions]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


@pytest.fixture(scope="module")
def reward(classifier_dir):
    return load_reward(classifier_dir)


def check_pairs_against_the_reward(output, reward_dir, min_margin):
    """Every pair: its rewards are load_reward's scores of its texts, and chosen >= rejected + min_margin."""
    fresh = load_reward(reward_dir)  # loaded here, not the job's instance
    pairs = read_jsonl(output)
    for pair in pairs:
        scores = fresh(prompts=[pair["prompt"]] * 2, completions=[pair["chosen"], pair["rejected"]])
        assert pair["chosen_reward"] == pytest.approx(scores[0], abs=1e-4)
        assert pair["rejected_reward"] == pytest.approx(scores[1], abs=1e-4)
        assert pair["chosen_reward"] >= pair["rejected_reward"] + min_margin
        assert pair["margin"] == pytest.approx(pair["chosen_reward"] - pair["rejected_reward"])
    return pairs


def test_local_pairs_are_the_best_and_worst_by_the_reward(causal_dir, classifier_dir, reward, tmp_path):
    prompts = write_prompts(tmp_path / "prompts.jsonl")
    stats = make_pairs(causal_dir, prompts, str(tmp_path / "pairs.jsonl"), reward=reward, n=4, batch_size=4,
                       max_new_tokens=6, seed=3, progress=False)
    assert stats["rows"] == 6 and stats["pairs"] + stats["below_margin"] + stats["unscored"] == 6
    pairs = check_pairs_against_the_reward(tmp_path / "pairs.jsonl", classifier_dir, 0.0)
    records = read_jsonl(tmp_path / "pairs.jsonl.responses.jsonl")
    assert len(records) == 6 and all(len(r["responses"]) == 4 for r in records)
    by_row = {p["row_id"]: p for p in pairs}
    for record in records:
        rewards = [r["reward"] for r in record["responses"]]
        if record["chosen"] is None:
            continue
        # chosen = argmax, rejected = argmin of the 4 scored responses (the side file holds them all)
        assert rewards[record["chosen"]] == max(rewards) and rewards[record["rejected"]] == min(rewards)
        pair = by_row[record["row_id"]]
        assert pair["chosen"] == [{"role": "assistant", "content": record["responses"][record["chosen"]]["text"]}]
        assert pair["prompt"] == record["prompt"]
    run = json.loads((tmp_path / "pairs.jsonl.run.json").read_text())
    assert run["n"] == 4 and run["reward"] == classifier_dir and run["policy"] == causal_dir

    # The same samples (same seed) with a min-margin at the median: the pairs below it are dropped and counted.
    margins = sorted(p["margin"] for p in pairs)
    cut = margins[len(margins) // 2]
    again = make_pairs(causal_dir, prompts, str(tmp_path / "cut.jsonl"), reward=reward, n=4, batch_size=4, max_new_tokens=6,
                       seed=3, min_margin=cut, progress=False)
    kept = check_pairs_against_the_reward(tmp_path / "cut.jsonl", classifier_dir, cut)
    assert sorted(p["margin"] for p in kept) == pytest.approx([m for m in margins if m >= cut])
    assert again["below_margin"] == stats["below_margin"] + len([m for m in margins if m < cut])


def test_text_prompts_and_as_chat(causal_dir, reward, tmp_path):
    prompts = write_prompts(tmp_path / "text.jsonl", chat=False, questions=QUESTIONS[:2])
    make_pairs(causal_dir, prompts, str(tmp_path / "text_pairs.jsonl"), reward=reward, n=3, max_new_tokens=5, progress=False)
    records = read_jsonl(tmp_path / "text_pairs.jsonl.responses.jsonl")
    assert all(isinstance(r["prompt"], str) and r["chat"] is False for r in records)
    make_pairs(causal_dir, prompts, str(tmp_path / "chat_pairs.jsonl"), reward=reward, n=3, max_new_tokens=5, as_chat=True,
               progress=False)
    records = read_jsonl(tmp_path / "chat_pairs.jsonl.responses.jsonl")
    assert records[0]["prompt"] == [{"role": "user", "content": QUESTIONS[0]}] and records[0]["chat"] is True


@pytest.mark.parametrize("chat", [True, False], ids=["chat", "completions"])
def test_engine_pairs_come_from_the_server_and_are_scored_by_the_reward(chat, classifier_dir, reward, tmp_path):
    server = GenerationServer(model="org/policy-8b", fail_first=2).start()  # 2 x 503 first: retried
    try:
        prompts = write_prompts(tmp_path / "prompts.jsonl", chat=chat)
        stats = make_pairs("org/policy-8b", prompts, str(tmp_path / "pairs.jsonl"), reward=reward, n=4, batch_size=3,
                           max_new_tokens=5, seed=11, engine=server.url + "/v1", progress=False)
    finally:
        server.stop()
    assert stats["done_now"] == 6
    path = "/v1/chat/completions" if chat else "/v1/completions"
    answered = [body for p, body in server.requests if p == path]
    assert len(answered) == 6 + 2  # one request per prompt (n=4 in it), plus the 2 refused and retried
    body = answered[-1]
    assert body["n"] == 4 and body["max_tokens"] == 5 and body["model"] == "org/policy-8b" and ("messages" in body) == chat
    records = read_jsonl(tmp_path / "pairs.jsonl.responses.jsonl")
    for index, record in enumerate(records):
        key = json.dumps(record["prompt"], sort_keys=True)
        # The server's text for choice i of row `index` (seed = 11 + row index).
        assert [r["text"] for r in record["responses"]] == [respond(key, 11 + index, i, 5)[0] for i in range(4)]
    check_pairs_against_the_reward(tmp_path / "pairs.jsonl", classifier_dir, 0.0)


def test_a_server_that_ignores_n_is_asked_for_the_rest(reward, tmp_path):
    server = GenerationServer(model="m", ignore_n=True).start()
    try:
        prompts = write_prompts(tmp_path / "p.jsonl", questions=QUESTIONS[:2])
        make_pairs("m", prompts, str(tmp_path / "pairs.jsonl"), reward=reward, n=3, max_new_tokens=4, engine=server.url,
                   progress=False)
    finally:
        server.stop()
    # Per prompt: n=3 answered with 1 choice, then n=2, then n=1 (two prompts in flight at once).
    assert sorted(b["n"] for _, b in server.requests) == [1, 1, 2, 2, 3, 3]
    assert all(len(r["responses"]) == 3 for r in read_jsonl(tmp_path / "pairs.jsonl.responses.jsonl"))


def test_an_unknown_model_is_a_clear_error(reward, tmp_path):
    server = GenerationServer(model="served-name").start()
    try:
        prompts = write_prompts(tmp_path / "p.jsonl", questions=QUESTIONS[:1])
        with pytest.raises(Exception, match=r"HTTP 404.*The model `wrong` does not exist"):
            make_pairs("wrong", prompts, str(tmp_path / "pairs.jsonl"), reward=reward, n=2, engine=server.url, progress=False)
    finally:
        server.stop()


def run_cli(*args, env=None):
    return subprocess.Popen([sys.executable, "-m", "rewardbridge.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


@pytest.mark.parametrize("engine", [False, True], ids=["local", "engine"])
def test_resume_after_sigkill_loses_and_repeats_no_pair(engine, causal_dir, classifier_dir, reward, tmp_path):
    rows = 16
    questions = [f"Question number {i}?" for i in range(rows)]
    prompts = write_prompts(tmp_path / "prompts.jsonl", questions=questions)
    out = tmp_path / "pairs.jsonl"
    server = GenerationServer(model="m", delay=0.25).start()  # a slow engine: the kill lands mid-run
    try:
        policy = ["m", prompts, "--engine", server.url] if engine else [causal_dir, prompts]
        # Batches of 1: each row is sampled with seed + its index, so an uninterrupted run draws the same samples.
        job = ["pairs", *policy, "--reward", classifier_dir, "-n", "3", "--batch-size", "1",
               "--max-new-tokens", "4" if engine else "6"]
        args = [*job, "-o", str(out)]
        process = run_cli(*args)
        deadline = time.monotonic() + 120
        responses = Path(str(out) + ".responses.jsonl")
        while time.monotonic() < deadline and process.poll() is None:
            if responses.exists() and len(responses.read_text().splitlines()) >= 3:
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert process.returncode == -signal.SIGKILL
        first = len(responses.read_text().splitlines())
        assert 3 <= first < rows, f"the first run did {first} of {rows} rows before the kill"
        assert cli_main([*args, "--resume"]) == 0
        if engine:  # the same job, never interrupted (the engine's samples depend on the row, not the run)
            assert cli_main([*job, "-o", str(tmp_path / "whole.jsonl")]) == 0
    finally:
        server.stop()
    records = read_jsonl(responses)
    assert sorted(int(r["row_id"].split(":")[0]) for r in records) == list(range(rows))  # every row once
    pairs = read_jsonl(out)
    assert len({p["row_id"] for p in pairs}) == len(pairs)  # no pair twice
    assert {p["row_id"] for p in pairs} == {r["row_id"] for r in records if r["chosen"] is not None}  # none lost
    if engine:
        key = lambda p: p["row_id"]  # noqa: E731
        assert sorted(pairs, key=key) == sorted(read_jsonl(tmp_path / "whole.jsonl"), key=key)


def test_a_kill_between_the_two_writes_is_repaired_on_resume(causal_dir, reward, tmp_path):
    prompts = write_prompts(tmp_path / "prompts.jsonl")
    out = tmp_path / "pairs.jsonl"
    make_pairs(causal_dir, prompts, str(out), reward=reward, n=4, max_new_tokens=6, batch_size=2, progress=False)
    whole = read_jsonl(out)
    assert len(whole) >= 2, "the tiny models gave too few pairs for this test"
    # As if killed after the last responses line but before its pair, with a half-written line after it.
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:-1]))
    responses = Path(str(out) + ".responses.jsonl")
    responses.write_text(responses.read_text() + '{"row_id": "99:ab", "respo')
    stats = make_pairs(causal_dir, prompts, str(out), reward=reward, n=4, max_new_tokens=6, batch_size=2, resume=True,
                       progress=False)
    assert stats["recovered"] == 1 and stats["resumed"] == 6 and stats["done_now"] == 0
    assert sorted(read_jsonl(out), key=lambda p: p["row_id"]) == sorted(whole, key=lambda p: p["row_id"])
    assert len(read_jsonl(responses)) == 6  # the cut-off line is gone


def test_safety_rules(causal_dir, reward, tmp_path):
    import fcntl

    prompts = write_prompts(tmp_path / "prompts.jsonl", questions=QUESTIONS[:2])
    out = str(tmp_path / "pairs.jsonl")
    common = dict(reward=reward, n=2, max_new_tokens=3, progress=False)
    make_pairs(causal_dir, prompts, out, **common)
    with pytest.raises(ConfigError, match="already exists; pass --resume"):
        make_pairs(causal_dir, prompts, out, **common)
    with pytest.raises(ConfigError, match=r"made with other settings \(n: 2 then, 3 now"):
        make_pairs(causal_dir, prompts, out, resume=True, **{**common, "n": 3})
    with pytest.raises(ConfigError, match="would write over the input"):
        make_pairs(causal_dir, prompts, prompts, **common)
    with open(out + ".lock", "a") as held:  # another writer holds the lock
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ConfigError, match="is being written by"):
            make_pairs(causal_dir, prompts, out, resume=True, **common)
        fcntl.flock(held, fcntl.LOCK_UN)
    Path(prompts).write_text(Path(prompts).read_text().replace("capital", "Capital"))
    with pytest.raises(InputError, match="line 1 differs from what"):
        make_pairs(causal_dir, prompts, out, resume=True, **common)


def test_bad_rows_are_reported_by_line_or_skipped(causal_dir, reward, tmp_path):
    prompts = tmp_path / "bad.jsonl"
    prompts.write_text('{"prompt": "Hi?"}\n{"question": "no prompt"}\nnot json\n{"prompt": "Sea?"}\n')
    with pytest.raises(InputError, match=r"line 2: no 'prompt' column \(the row has \['question'\]\)"):
        make_pairs(causal_dir, str(prompts), str(tmp_path / "a.jsonl"), reward=reward, n=2, max_new_tokens=3, progress=False)
    stats = make_pairs(causal_dir, str(prompts), str(tmp_path / "b.jsonl"), reward=reward, n=2, max_new_tokens=3,
                       on_bad_row="skip", progress=False)
    assert stats["rejected"] == 2 and stats["done_now"] == 2
    rejects = read_jsonl(tmp_path / "b.jsonl.rejects.jsonl")
    assert [r["where"] for r in rejects] == ["line 2", "line 3"]


@pytest.mark.parametrize("flags, message", [
    (["-n", "1"], "a pair needs at least 2 responses"),
    (["--temperature", "0"], "greedy decoding gives"),
    (["--min-margin", "-1"], "--min-margin must be a finite number >= 0"),
])
def test_bad_flags_are_one_line_errors_before_any_file(flags, message, causal_dir, classifier_dir, tmp_path, capsys):
    prompts = write_prompts(tmp_path / "p.jsonl", questions=QUESTIONS[:1])
    code = cli_main(["pairs", causal_dir, prompts, "--reward", classifier_dir, "-o", str(tmp_path / "o.jsonl"), *flags])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_normalize_is_refused(causal_dir, classifier_dir, tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", questions=QUESTIONS[:1])
    with pytest.raises(ConfigError, match="pairs keep the reward model's own scores"):
        make_pairs(causal_dir, prompts, str(tmp_path / "o.jsonl"), reward=classifier_dir, options={"normalize": "zscore"},
                   n=2, progress=False)


INF, NAN = float("inf"), float("nan")


@pytest.mark.parametrize("rewards, margin, truncated, expected", [
    ([0.5, 2.0, None, -1.0], 0.0, None, (1, 3, None)),
    ([1.0, 1.0, 1.0], 0.0, None, (None, None, "below_margin")),  # all tied: no winner
    ([3.0, None, None], 0.0, None, (None, None, "unscored")),
    ([0.0, 1.0, 1.0, 0.0], 1.0, None, (1, 0, None)),  # ties: the first wins; margin == min_margin is enough
    ([0.0, 0.9], 1.0, None, (None, None, "below_margin")),
    ([INF, INF], 0.0, None, (None, None, "unscored")),  # non-finite: left out, never a response paired with itself
    ([NAN, 1.0, 0.0], 0.0, None, (1, 2, None)),
    ([-INF, 1.0, 0.5], 0.0, None, (1, 2, None)),
    ([3.0, 1.0, 0.0], 0.0, [True, False, False], (1, 2, None)),  # the best was cut at max_new_tokens: left out
    ([3.0, 1.0, 0.0], 0.0, [True, True, False], (None, None, "truncated")),  # one complete response is no pair
    ([3.0, None, 0.0], 0.0, [False, False, True], (None, None, "truncated")),
])
def test_select_pair(rewards, margin, truncated, expected):
    assert select_pair(rewards, margin, truncated) == expected


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_prompts_in_any_row_format(fmt, causal_dir, reward, tmp_path):
    import csv

    rows = [{"prompt": [{"role": "user", "content": q}]} for q in QUESTIONS[:2]]
    path = tmp_path / f"prompts.{fmt}"
    if fmt == "csv":  # chat messages in a cell as JSON text, as rows.py reads them
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["prompt"])
            writer.writeheader()
            writer.writerows({"prompt": json.dumps(r["prompt"])} for r in rows)
    else:
        from datasets import Dataset

        Dataset.from_list(rows).to_parquet(str(path))
    make_pairs(causal_dir, str(path), str(tmp_path / "pairs.jsonl"), reward=reward, n=2, max_new_tokens=3, progress=False)
    assert [r["prompt"] for r in read_jsonl(tmp_path / "pairs.jsonl.responses.jsonl")] == [r["prompt"] for r in rows]


# ---- the review's findings (issue 16): failures, selection, starts that fail, resume ------------

NIM_340B = dict(protocol="nim", model_name="nvidia/nemotron-4-340b-reward", timeout=2.0, max_retries=1, retry_wait=0.01,
                attributes=["helpfulness", "correctness", "coherence", "complexity", "verbosity"])


def test_a_batch_whose_every_request_failed_is_unscored_under_on_error_skip(causal_dir, tmp_path):
    from servers.faulty import Fault, FaultyServer
    from test_remote import nim_answer

    server = FaultyServer(nim_answer()).start()
    server.script += [Fault(status=503)] * 100  # every request, and its retry, fails
    try:
        prompts = write_prompts(tmp_path / "p.jsonl", questions=QUESTIONS[:3])
        options = {**NIM_340B, "attribute_weights": [0.3, 0.74, 0.46, 0.47, -0.33], "on_error": "skip"}
        stats = make_pairs(causal_dir, prompts, str(tmp_path / "pairs.jsonl"), reward=server.url, options=options, n=2,
                           max_new_tokens=3, progress=False)
        requests = len(server.requests)
        # The same NIM answering, without weights: attributes and no single reward is still refused.
        server.script.clear()
        with pytest.raises(ConfigError, match=r"returns attributes .* but no single reward: pass --option attribute_weights"):
            make_pairs(causal_dir, prompts, str(tmp_path / "unweighted.jsonl"), reward=server.url,
                       options={**NIM_340B, "model_name": "org/other-reward"}, n=2, max_new_tokens=3, progress=False)
    finally:
        server.stop()
    # 3 prompts x 2 responses, one request each, tried twice (max_retries=1); nothing scored, nothing made up.
    assert requests == 12
    assert (stats["unscored"], stats["pairs"], stats["written"]) == (3, 0, 0)
    records = read_jsonl(tmp_path / "pairs.jsonl.responses.jsonl")
    assert [r["no_pair"] for r in records] == ["unscored"] * 3
    assert all(response["reward"] is None for r in records for response in r["responses"])


def test_drop_truncated_leaves_responses_cut_at_max_new_tokens_out_of_the_pairs(reward, tmp_path):
    server = GenerationServer(model="m").start()  # choice i of a row: 1-8 words, cut ("length") past max_tokens
    try:
        prompts = write_prompts(tmp_path / "p.jsonl")
        common = dict(reward=reward, n=4, max_new_tokens=3, engine=server.url, seed=5, progress=False)
        kept = make_pairs("m", prompts, str(tmp_path / "all.jsonl"), **common)
        assert cli_main(["pairs", "m", prompts, "--reward", reward.source, "-n", "4", "--max-new-tokens", "3", "--seed", "5",
                         "--engine", server.url, "--drop-truncated", "-o", str(tmp_path / "complete.jsonl")]) == 0
    finally:
        server.stop()
    records = read_jsonl(tmp_path / "complete.jsonl.responses.jsonl")
    cut = [[r["finish_reason"] == "length" for r in record["responses"]] for record in records]
    assert kept["truncated_responses"] == sum(map(sum, cut)) and 0 < sum(map(sum, cut)) < 24
    for record, flags in zip(records, cut):
        if record["chosen"] is not None:  # both sides of every pair ended on their own
            assert not flags[record["chosen"]] and not flags[record["rejected"]]
        else:
            assert record["no_pair"] == ("truncated" if flags.count(False) < 2 else "below_margin")
    assert any(record["no_pair"] == "truncated" for record in records) and any(record["chosen"] is not None for record in records)
    assert any(r["finish_reason"] == "length" for pair in read_jsonl(tmp_path / "all.jsonl.responses.jsonl") if pair["chosen"] is not None
               for r in (pair["responses"][pair["chosen"]], pair["responses"][pair["rejected"]]))  # without the flag they are used
    assert json.loads(Path(str(tmp_path / "complete.jsonl") + ".run.json").read_text())["drop_truncated"] is True


def test_a_resume_with_another_min_margin_or_drop_truncated_chooses_the_pairs_again(reward, tmp_path):
    server = GenerationServer(model="m").start()
    try:
        prompts = write_prompts(tmp_path / "p.jsonl")
        out = str(tmp_path / "pairs.jsonl")
        common = dict(reward=reward, n=4, max_new_tokens=3, engine=server.url, progress=False)
        first = make_pairs("m", prompts, out, min_margin=1e9, **common)  # a margin no pair reaches
        assert (first["written"], first["below_margin"]) == (0, 6)
        texts = [[r["text"] for r in record["responses"]] for record in read_jsonl(out + ".responses.jsonl")]
        sampled = len(server.requests)
        again = make_pairs("m", prompts, out, min_margin=0.0, resume=True, **common)
        assert len(server.requests) == sampled and again["done_now"] == 0 and again["reselected"] == 6  # nothing sampled again
        fresh = make_pairs("m", prompts, str(tmp_path / "fresh.jsonl"), min_margin=0.0, **common)
        by_row = lambda path: sorted(read_jsonl(path), key=lambda p: p["row_id"])  # noqa: E731
        assert again["written"] == fresh["written"] > 0 and by_row(out) == by_row(tmp_path / "fresh.jsonl")
        assert [[r["text"] for r in record["responses"]] for record in read_jsonl(out + ".responses.jsonl")] == texts
        # And to drop_truncated: the same pairs as a fresh run with the flag.
        make_pairs("m", prompts, out, drop_truncated=True, resume=True, **common)
        make_pairs("m", prompts, str(tmp_path / "fresh_complete.jsonl"), drop_truncated=True, **common)
        assert by_row(out) == by_row(tmp_path / "fresh_complete.jsonl")
        run = json.loads(Path(out + ".run.json").read_text())
        assert (run["min_margin"], run["drop_truncated"]) == (0.0, True)
        with pytest.raises(ConfigError, match=r"made with other settings \(max_new_tokens: 3 then, 4 now"):
            make_pairs("m", prompts, out, drop_truncated=True, resume=True, **{**common, "max_new_tokens": 4})
    finally:
        server.stop()


def write_question_rows(path: Path) -> str:
    path.write_text("".join(json.dumps({"question": q}) + "\n" for q in QUESTIONS[:2]))
    return str(path)


@pytest.mark.parametrize("case, message", [
    ("prompt_column", r"line 1: no 'prompt' column \(the row has \['question'\]\); pass --prompt-column"),
    ("missing_policy", r"policy='.*no-such-policy': no such folder"),
    ("reward_model_as_policy", r"is a LlamaForSequenceClassification .*not a causal LM.*looks like a reward model"),
])
def test_a_run_that_cannot_start_writes_nothing_and_the_fixed_rerun_runs(case, message, causal_dir, classifier_dir, reward, tmp_path):
    import transformers

    prompts = write_question_rows(tmp_path / "q.jsonl")
    out = tmp_path / "out" / "pairs.jsonl"
    out.parent.mkdir()
    policy, column = {"prompt_column": (causal_dir, "prompt"), "missing_policy": (str(tmp_path / "no-such-policy"), "question"),
                      "reward_model_as_policy": (classifier_dir, "question")}[case]

    def refuse(*args, **kwargs):
        raise AssertionError("weights were loaded before the error was found")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(transformers.PreTrainedModel, "from_pretrained", classmethod(refuse))
        with pytest.raises((ConfigError, InputError), match=message):
            make_pairs(policy, prompts, str(out), reward=reward, n=2, max_new_tokens=3, prompt_column=column, progress=False)
    assert list(out.parent.iterdir()) == []  # no output, no side file, no lock
    stats = make_pairs(causal_dir, prompts, str(out), reward=reward, n=2, max_new_tokens=3, prompt_column="question", progress=False)
    assert stats["done_now"] == 2


def test_a_policy_checkpoint_without_its_lm_head_is_refused_and_its_files_are_started_over(
        causal_dir, classifier_dir, reward, tmp_path):
    import shutil

    headless = tmp_path / "headless"  # a classifier's weights under a causal-LM config: lm_head.weight is missing
    shutil.copytree(classifier_dir, headless)
    config = json.loads((headless / "config.json").read_text())
    (headless / "config.json").write_text(json.dumps({**config, "architectures": ["LlamaForCausalLM"]}))
    prompts = write_prompts(tmp_path / "p.jsonl", questions=QUESTIONS[:2])
    out = str(tmp_path / "pairs.jsonl")
    with pytest.raises(ConfigError, match=r"policy='.*headless': the checkpoint has no weights for lm_head.weight"):
        make_pairs(str(headless), prompts, out, reward=reward, n=2, max_new_tokens=3, progress=False)
    # It failed after taking the output (the lock, run.json) but before any row: the rerun starts over, --resume or not.
    assert make_pairs(causal_dir, prompts, out, reward=reward, n=2, max_new_tokens=3, progress=False)["done_now"] == 2
    assert json.loads(Path(out + ".run.json").read_text())["policy"] == causal_dir


def test_files_that_hold_no_sampled_row_are_started_over(causal_dir, reward, tmp_path):
    prompts = write_question_rows(tmp_path / "q.jsonl")
    out = str(tmp_path / "pairs.jsonl")
    # --on-bad-row skip with the wrong column: every row rejected, none sampled.
    skipped = make_pairs(causal_dir, prompts, out, reward=reward, n=2, max_new_tokens=3, on_bad_row="skip", progress=False)
    assert (skipped["rejected"], skipped["done_now"]) == (2, 0)
    stats = make_pairs(causal_dir, prompts, out, reward=reward, n=2, max_new_tokens=3, prompt_column="question", progress=False)
    assert (stats["done_now"], stats["rejected"]) == (2, 0) and not Path(out + ".rejects.jsonl").exists()


@pytest.mark.parametrize("engine", [False, True], ids=["local", "engine"])
def test_a_local_resume_with_another_batch_size_is_refused(engine, causal_dir, reward, tmp_path):
    server = GenerationServer(model="m").start()
    try:
        prompts = write_prompts(tmp_path / "p.jsonl", questions=QUESTIONS[:3])
        out = str(tmp_path / "pairs.jsonl")
        policy = "m" if engine else causal_dir
        common = dict(reward=reward, n=2, max_new_tokens=3, engine=server.url if engine else None, progress=False)
        make_pairs(policy, prompts, out, batch_size=2, **common)
        if engine:  # the engine seeds each row by its index: the batching changes nothing
            assert make_pairs(policy, prompts, out, batch_size=1, resume=True, **common)["resumed"] == 3
        else:  # local batches are seeded by their first row: another batch size would draw other samples
            with pytest.raises(ConfigError, match=r"batch_size: 2 then, 1 now"):
                make_pairs(policy, prompts, out, batch_size=1, resume=True, **common)
    finally:
        server.stop()
