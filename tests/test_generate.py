"""Sampling (jobs/generate.py): local samples come from the policy's own distribution whatever its
generation_config.json asks for, and an engine's failures are named as an engine's."""

import json

import pytest
import torch

from rewardbridge.errors import RemoteError
from rewardbridge.jobs.generate import EngineGenerator, EngineSettings, LocalGenerator, Sampling
from rewardbridge.jobs.pairs import make_pairs
from rewardbridge.testing import llama_config, save_model
from servers.faulty import FaultyServer, free_port


@pytest.fixture(scope="module")
def opinionated_policy(tmp_path_factory, tokenizer):
    """A tiny causal LM whose generation_config.json asks for top_k=3, a repetition penalty and min_p."""
    from transformers import GenerationConfig, LlamaForCausalLM

    torch.manual_seed(5)
    model = LlamaForCausalLM(llama_config(tokenizer))
    model.generation_config = GenerationConfig(do_sample=True, top_k=3, repetition_penalty=3.0, min_p=0.2, no_repeat_ngram_size=1,
                                               bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    return save_model(tmp_path_factory.mktemp("opinionated"), model, tokenizer)


def test_local_samples_come_from_the_policys_own_distribution(opinionated_policy):
    generator = LocalGenerator(opinionated_policy, Sampling(n=2, max_new_tokens=2, temperature=1.0, top_p=1.0))
    original, seen = generator.model.generate, {}

    def generate(**kwargs):  # the scores generate sampled the first token from, after every processor and warper
        out = original(**kwargs, output_scores=True, return_dict_in_generate=True)
        seen["scores"] = out.scores
        return out.sequences

    generator.model.generate = generate
    prompt = "the sea and the sea and the"  # repeated tokens: a repetition penalty or an n-gram ban would change them
    generator.generate([prompt])
    batch = generator.tokenizer([prompt], return_tensors="pt")
    with torch.no_grad():
        raw = generator.model(**batch).logits[0, -1]
    # temperature 1, top_p 1: the model's own logits, with no top-k (-inf past the 3rd), penalty or min_p cut.
    torch.testing.assert_close(seen["scores"][0][0], raw, atol=1e-5, rtol=1e-5)
    assert generator.model.generation_config.top_k == 3  # the model's own config is left as it was


def test_the_local_sampler_is_recorded_in_run_json(causal_dir, classifier_dir, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "Sky?"}) + "\n")
    out = tmp_path / "pairs.jsonl"
    make_pairs(causal_dir, str(prompts), str(out), reward=classifier_dir, n=2, max_new_tokens=2, batch_size=3, progress=False)
    run = json.loads((tmp_path / "pairs.jsonl.run.json").read_text())
    assert (run["top_k"], run["repetition_penalty"], run["batch_size"]) == (0, 1.0, 3)


def html(path, body, headers):
    return 200, {"Content-Type": "text/html"}, b"<html><body><h1>Welcome to nginx!</h1></body></html>"


def test_an_engine_that_answers_html_is_said_to_answer_something_that_is_not_json():
    server = FaultyServer(html).start()
    try:
        generator = EngineGenerator(server.url, "m", Sampling(n=2, max_new_tokens=3), EngineSettings(max_retries=0))
        with pytest.raises(RemoteError, match=r"answered something that is not JSON \(text/html: '<html><body><h1>Welcome to nginx"):
            generator.generate(["Hi"])
    finally:
        server.stop()
    assert len(server.requests) == 1  # not retried: it would answer the same page again


def test_a_down_engine_names_the_engines_settings_not_a_rewards():
    generator = EngineGenerator(f"http://127.0.0.1:{free_port()}", "m", Sampling(n=2), EngineSettings(max_retries=1, retry_wait=0.01))
    with pytest.raises(RemoteError) as error:
        generator.generate(["Hi"])
    message = str(error.value)
    assert "could not be reached" in message and "--engine-timeout (pairs.engine_timeout)" in message
    assert "on_error" not in message  # the engine has no such option
