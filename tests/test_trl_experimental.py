"""TRL 1.16's experimental online trainers that take ``reward_funcs`` train with rewardbridge rewards.

- ``OnlineDPOTrainer`` calls a reward function with prompts, completions, completion_ids,
  the dataset columns and ``trainer_state`` (no log_metric / log_extra: online_dpo_trainer.py
  ``_calculate_rewards_from_functions``), and logs the mean reward as ``objective/scores``.
- ``AsyncGRPOTrainer`` pickles reward functions into a spawned, CUDA-free child process
  (async_rollout_worker.py ``AsyncRolloutWorker``) that generates through a vLLM server's
  ``/v1/completions`` and scores there. vLLM cannot run here, so a stand-in server speaks
  vLLM's wire format (token ids in, ``choices[0].token_ids`` + ``logprobs.token_logprobs``
  out), and weight sync (NCCL to vLLM) is the no-op that TRL's constructor accepts for tests.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from datasets import Dataset
from transformers import AutoTokenizer

from rewardbridge import RewardFunction, load_reward

QUESTIONS = ["What is the capital of France?", "How many legs does a spider have?", "Tell me a joke.", "Explain gradient descent."]


class RecordingReward(RewardFunction):
    """A rewardbridge reward that also appends what it scored to a JSON-lines file (any process)."""

    def __init__(self, reward: RewardFunction, log_path: str):
        super().__init__(reward.source, reward.options, reward._scorer)
        self.log_path = log_path

    def __getstate__(self):
        return {**super().__getstate__(), "log_path": self.log_path}

    def __call__(self, prompts, completions, completion_ids=None, **kwargs):
        scores = super().__call__(prompts, completions, completion_ids, **kwargs)
        with open(self.log_path, "a") as log:
            for p, c, s in zip(prompts, completions, scores):
                log.write(json.dumps({"prompt": p, "completion": c, "score": s, "pid": os.getpid(),
                                      "kwargs": sorted(kwargs)}) + "\n")
        return scores


def recorded(path) -> list[dict]:
    with open(path) as log:
        return [json.loads(line) for line in log]


def assert_scores_are_the_rewards_own(reward, rows):
    """Each recorded score == the reward's own score for that (prompt, completion), scored here."""
    expected = reward(prompts=[r["prompt"] for r in rows], completions=[r["completion"] for r in rows])
    torch.testing.assert_close(torch.tensor([r["score"] for r in rows]), torch.tensor(expected), rtol=1e-5, atol=1e-6)


@pytest.fixture(params=["local", "remote"])
def reward_source(request, classifier_dir):
    """The same reward model in this process, or behind a real `rewardbridge serve` on 127.0.0.1."""
    if request.param == "local":
        yield classifier_dir, {}
        return
    from servers.process import start_server, stop

    process, url = start_server(classifier_dir)
    try:
        yield url, {"protocol": "rewardbridge"}
    finally:
        stop(process)


def test_online_dpo_trains_with_a_rewardbridge_reward(causal_dir, classifier_dir, reward_source, tmp_path):
    from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

    log_path = str(tmp_path / "scored.jsonl")
    source, options = reward_source
    reward = RecordingReward(load_reward(source, name="rm", **options), log_path)
    args = OnlineDPOConfig(
        output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=2, max_new_tokens=8, max_steps=2,
        logging_steps=1, report_to="none", save_strategy="no", learning_rate=1e-4,
    )
    dataset = Dataset.from_dict({"prompt": [[{"role": "user", "content": q}] for q in QUESTIONS]})
    trainer = OnlineDPOTrainer(
        model=causal_dir, reward_funcs=[reward], args=args, train_dataset=dataset,
        processing_class=AutoTokenizer.from_pretrained(causal_dir),
    )
    trainer.train()

    rows = recorded(log_path)
    steps = [entry for entry in trainer.state.log_history if "objective/scores" in entry]
    assert trainer.state.global_step == 2 and len(steps) == 2
    # 2 prompts x 2 completions per step, scored in one call each step; trainer_state came along.
    assert len(rows) == 8 and all(r["kwargs"] == ["trainer_state"] for r in rows)
    for step, entry in enumerate(steps):
        # OnlineDPO logs mean(rewards) of the step as objective/scores.
        assert entry["objective/scores"] == pytest.approx(sum(r["score"] for r in rows[4 * step: 4 * step + 4]) / 4, abs=1e-5)
    assert_scores_are_the_rewards_own(load_reward(classifier_dir), rows)


class FakeVLLMServer:
    """vLLM's OpenAI server as AsyncGRPO uses it, on 127.0.0.1: /health, /v1/models, /v1/completions.

    /v1/completions takes token-id prompts (``"prompt": [ids]``, ``"return_token_ids": true``) and
    answers ``choices[0].token_ids`` and ``choices[0].logprobs.token_logprobs``; the tokens are
    drawn at random from the policy's vocabulary (no model runs here), ending in EOS.
    """

    def __init__(self, vocab_size: int, eos_token_id: int, max_model_len: int = 512):
        import random
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        server = self
        self.requests = []
        rng = random.Random(0)

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _json(self, body: dict):
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path == "/health":
                    return self._json({})
                if self.path == "/v1/models":
                    return self._json({"data": [{"id": "policy", "max_model_len": max_model_len}]})
                self.send_error(404)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/v1/completions":
                    return self.send_error(404)
                server.requests.append(body)
                n = rng.randint(1, body["max_tokens"] - 1)
                tokens = [rng.randrange(6, vocab_size) for _ in range(n)] + [eos_token_id]
                self._json({"choices": [{"token_ids": tokens, "text": "", "logprobs": {"token_logprobs": [-5.0] * len(tokens)}}]})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class VarlenAttentionCPU:
    """FlashAttention's ``flash_attn_varlen_func`` in plain torch, for AsyncGRPO's tree attention on CPU.

    trl 1.16's AsyncGRPO trains with packed rows through a FlashAttention-3 kernel fetched from
    the Hub (GPU only). Same maths: per segment, softmax(q k^T * scale) v with the causal mask
    aligned bottom-right (flash-attn's convention when seqlen_q != seqlen_k), GQA heads repeated.
    """

    @staticmethod
    def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                               softmax_scale=None, causal=True, window_size=(-1, -1), **kwargs):
        assert causal and tuple(window_size) == (-1, -1)
        out = torch.zeros_like(q)  # (Tq, Hq, D)
        scale = softmax_scale if softmax_scale is not None else q.shape[-1] ** -0.5
        repeat = q.shape[1] // k.shape[1]
        for i in range(len(cu_seqlens_q) - 1):
            qs, qe, ks, ke = int(cu_seqlens_q[i]), int(cu_seqlens_q[i + 1]), int(cu_seqlens_k[i]), int(cu_seqlens_k[i + 1])
            qi = q[qs:qe].transpose(0, 1)                                   # (H, Lq, D)
            ki = k[ks:ke].repeat_interleave(repeat, dim=1).transpose(0, 1)  # (H, Lk, D)
            vi = v[ks:ke].repeat_interleave(repeat, dim=1).transpose(0, 1)
            lq, lk = qe - qs, ke - ks
            # query j sees keys up to j + (lk - lq): the bottom-right-aligned causal mask.
            mask = torch.arange(lk)[None, :] <= torch.arange(lq)[:, None] + (lk - lq)
            scores = (qi @ ki.transpose(-1, -2)) * scale
            weights = scores.masked_fill(~mask, float("-inf")).softmax(-1)
            out[qs:qe] = (weights @ vi).transpose(0, 1)
        return out


class NoWeightSync:
    """AsyncGRPO's WeightTransferProtocol as a no-op: the stand-in server has no weights to update."""

    def init_weight_transfer(self):
        pass

    def pause(self):
        pass

    def send_weights(self, iterator):
        for _ in iterator:
            pass

    def resume(self):
        pass

    def destroy(self):
        pass


@pytest.mark.multiprocess
def test_async_grpo_scores_in_its_child_process(causal_dir, classifier_dir, tmp_path, monkeypatch):
    from trl.experimental.async_grpo import AsyncGRPOConfig, AsyncGRPOTrainer, async_grpo_trainer, async_rollout_worker

    # trl 1.16 reads the GPU's name for its MFU metric unconditionally (torch.cuda.get_device_name):
    # on CPU that one metrics helper answers "unknown device", as it does for GPUs it has no table for.
    monkeypatch.setattr(async_grpo_trainer, "get_peak_flops_per_device", lambda accelerator, dtype: None)
    # The worker refuses to start without the vllm package, though it only speaks HTTP to the
    # server (the stand-in below); vLLM cannot be installed on a CPU machine.
    monkeypatch.setattr(async_rollout_worker, "is_vllm_available", lambda *a, **k: True)
    # Its packed-row attention is a Hub FlashAttention-3 kernel (GPU only): the same maths in torch.
    from trl.experimental.async_grpo import packing

    monkeypatch.setattr(packing, "_flash_attn", lambda: VarlenAttentionCPU)

    tokenizer = AutoTokenizer.from_pretrained(causal_dir)
    tokenizer.padding_side = "left"
    # The worker parses replies with a response template (known chat templates only): ours, in TRL's format.
    tokenizer.response_template = {
        "defaults": {"role": "assistant"}, "start_anchor": "<|assistant|>",
        "fields": {"content": {"close_pattern": r"</s>\s*|$", "content": "text"}},
    }
    server = FakeVLLMServer(len(tokenizer), tokenizer.eos_token_id)
    log_path = str(tmp_path / "scored.jsonl")
    try:
        args = AsyncGRPOConfig(
            output_dir=str(tmp_path), use_cpu=True, report_to="none", save_strategy="no", logging_steps=1,
            max_steps=2, num_generations=2, max_completion_length=8, per_device_train_batch_size=4,
            token_budget=512, vllm_server_base_url=server.url, learning_rate=1e-4,
        )
        trainer = AsyncGRPOTrainer(
            model=causal_dir, reward_funcs=[RecordingReward(load_reward(classifier_dir, name="rm"), log_path)],
            args=args, processing_class=tokenizer, weight_transfer=NoWeightSync(),
            train_dataset=Dataset.from_dict({"prompt": [[{"role": "user", "content": q}] for q in QUESTIONS]}),
        )
        trainer.train()
    finally:
        server.close()

    rows = recorded(log_path)
    assert trainer.state.global_step == 2
    assert {r["pid"] for r in rows} != {os.getpid()}  # scored in the spawned child, from the pickled reward
    assert len(rows) >= 4 and len(server.requests) >= 4
    assert_scores_are_the_rewards_own(load_reward(classifier_dir), rows)


def test_varlen_attention_stand_in_matches_sdpa():
    """The CPU stand-in equals torch SDPA, segment by segment (causal, GQA 4 query heads on 2 kv heads)."""
    torch.manual_seed(0)
    lengths = [3, 5]
    q, k, v = torch.randn(8, 4, 16), torch.randn(8, 2, 16), torch.randn(8, 2, 16)
    cu = torch.tensor([0, 3, 8])
    out = VarlenAttentionCPU.flash_attn_varlen_func(q, k, v, cu, cu, 5, 5, softmax_scale=0.25)
    start = 0
    for n in lengths:
        seg = slice(start, start + n)
        expected = torch.nn.functional.scaled_dot_product_attention(
            q[seg].transpose(0, 1), k[seg].transpose(0, 1), v[seg].transpose(0, 1), is_causal=True, scale=0.25, enable_gqa=True
        ).transpose(0, 1)
        torch.testing.assert_close(out[seg], expected)
        start += n
