"""Rendering: TRL prompt/completion -> the text the reward model reads."""

import re

import pytest

from rewardbridge.conversation import Conversation, Renderer, conversations_from_trl, render_steerlm


def test_chat_render_is_the_reward_tokenizers_template_over_prompt_and_completion(tokenizer, chat_batch):
    prompts, completions = chat_batch
    renderer = Renderer(tokenizer)
    for p, c in zip(prompts, completions):
        text = renderer.render(Conversation.from_trl(p, c))
        # Same call as the model cards: apply_chat_template(prompt + [assistant], no generation prompt).
        assert text == tokenizer.apply_chat_template(p + c, tokenize=False, add_generation_prompt=False)
    multi_turn = renderer.render(Conversation.from_trl(prompts[2], completions[2]))
    assert multi_turn.startswith("<s><|system|>You are terse.</s><|user|>Tell me a joke.</s><|assistant|>No.</s>")
    assert multi_turn.endswith("<|assistant|>Why did the model cross the road?</s>")


def test_plain_text_prompt_becomes_a_user_turn_under_a_chat_template(tokenizer):
    text = Renderer(tokenizer).render(Conversation.from_trl("2+2=", "4"))
    assert text == "<s><|user|>2+2=</s><|assistant|>4</s>"


def test_plain_text_without_template_is_concatenated_with_special_tokens(tokenizer):
    renderer = Renderer(tokenizer, mode="text")
    conversation = Conversation.from_trl("2+2=", " 4")
    assert renderer.render(conversation) == "2+2= 4"
    assert renderer.add_special_tokens(conversation)  # a BERT classifier needs its [CLS]/[SEP]
    assert not Renderer(tokenizer).add_special_tokens(conversation)  # the template carries them


def test_chat_data_without_a_chat_template_says_what_to_pass():
    from rewardbridge.testing import build_tokenizer

    renderer = Renderer(build_tokenizer(chat_template=None))
    conversation = Conversation.from_trl([{"role": "user", "content": "hi"}], [{"role": "assistant", "content": "yo"}])
    with pytest.raises(ValueError, match="chat_template="):
        renderer.render(conversation)


def test_judge_render_asks_one_question_and_ends_at_the_generation_prompt(tokenizer):
    renderer = Renderer(tokenizer, judge_prompt="Q: {prompt}\nA: {response}\nGood? Yes or No.")
    text = renderer.render(Conversation.from_trl([{"role": "user", "content": "2+2?"}], [{"role": "assistant", "content": "4"}]))
    assert text == "<s><|user|>Q: 2+2?\nA: 4\nGood? Yes or No.</s><|assistant|>"
    with pytest.raises(ValueError, match="both"):
        Renderer(tokenizer, judge_prompt="no placeholders")


def test_steerlm_template_matches_nemo_aligner():
    conversation = Conversation.from_trl(
        [{"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1"}, {"role": "user", "content": "u2"}],
        [{"role": "assistant", "content": "r"}],
    )
    assert render_steerlm(conversation, "S") == (
        "<extra_id_0>System\nS\n<extra_id_1>User\nu1\n<extra_id_1>Assistant\na1\n"
        "<extra_id_1>User\nu2\n<extra_id_1>Assistant\nr\n<extra_id_2>"
    )
    with_system = Conversation.from_trl([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "u"}], "r")
    assert render_steerlm(with_system).startswith("<extra_id_0>System\nBe brief.\n<extra_id_1>User\nu\n")


def test_prompt_key_groups_equal_prompts_only(chat_batch):
    prompts, completions = chat_batch
    keys = [c.prompt_key() for c in conversations_from_trl(prompts, completions)]
    assert keys[0] == keys[1] and keys[2] == keys[3] and keys[0] != keys[2]
    assert Conversation.from_trl("a", "x").prompt_key() != Conversation.from_trl("b", "x").prompt_key()


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        conversations_from_trl(["a", "b"], ["x"])


# -- one reading, wherever a conversation arrives (issue 15 §3) ----------------------------------

def text(*parts):
    return [{"type": "text", "text": p} for p in parts]


# (id, prompt, completion): the forms TRL and OpenAI clients send, each a class of the old differences.
FORMS = [
    ("text-parts", [{"role": "user", "content": text("What is the capital", "of France?")}],
     [{"role": "assistant", "content": text("Paris.")}]),  # joined with "\n" everywhere (the server used "")
    ("string-parts", [{"role": "user", "content": ["Tell me", "a joke."]}], [{"role": "assistant", "content": "No."}]),
    ("text-prompt-messages-completion", "How many legs does a spider have?", [{"role": "assistant", "content": "Eight."}]),
    ("messages-prompt-text-completion", [{"role": "user", "content": "Hi?"}], "Hello."),
    ("multi-turn", [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "A joke?"},
                    {"role": "assistant", "content": "No."}, {"role": "user", "content": "Please."}],
     [{"role": "assistant", "content": text("Why did the", "model cross the road?")}]),
    ("plain", "2+2=", "4"),
    # Issue 15 review 23: a completion may end with a tool turn, and an assistant turn that only calls a
    # tool may have content null (OpenAI's form): the chat routes split a flat list as TRL pairs it.
    ("tool-turns", [{"role": "user", "content": "What is 2+2? Use the calculator."}],
     [{"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {"name": "add", "arguments": "{}"}}]},
      {"role": "tool", "content": "4"}, {"role": "assistant", "content": "It is 4."}, {"role": "tool", "content": "logged"}]),
]


def as_messages(prompt, completion):
    """What an OpenAI-style client sends: the prompt's turns, then the answer's."""
    prompt = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    completion = [{"role": "assistant", "content": completion}] if isinstance(completion, str) else completion
    return prompt + completion


@pytest.fixture(scope="module")
def served(classifier_dir):
    from servers.process import start_server, stop

    process, url = start_server(classifier_dir)
    yield url
    stop(process)


def route_scores(url, prompt, completion, rendered):
    """The score of one conversation from every route of a real `rewardbridge serve`, sent as raw bodies."""
    import httpx

    def post(path, body):
        response = httpx.post(url + path, json=body, timeout=60)
        assert response.status_code == 200, (path, response.text)
        return response.json()

    messages = as_messages(prompt, completion)
    sentences = {"inputs": [{"name": "sentences", "datatype": "BYTES", "shape": [1, 1], "data": [rendered]}],
                 "outputs": [{"name": "rewards", "parameters": {"binary_data": False}}]}
    return {
        "/v1/score": post("/v1/score", {"conversations": [{"prompt": prompt, "completion": completion}]})["rewards"][0],
        "/v1/chat/completions": float(post("/v1/chat/completions", {"model": "reward_model", "messages": messages})
                                      ["choices"][0]["message"]["content"].split(":")[1]),
        "/classify messages": post("/classify", {"model": "reward_model", "messages": messages})["data"][0]["probs"][0],
        "/pooling messages": post("/pooling", {"model": "reward_model", "messages": messages})["data"][0]["data"][0],
        "/classify input": post("/classify", {"model": "reward_model", "input": [rendered]})["data"][0]["probs"][0],
        "/get_reward": post("/get_reward", {"query": [rendered]})["rewards"][0],
        "/v2/models/reward_model/infer": post("/v2/models/reward_model/infer", sentences)["outputs"][0]["data"][0],
    }


@pytest.mark.parametrize("prompt, completion", [f[1:] for f in FORMS], ids=[f[0] for f in FORMS])
def test_every_route_reads_a_conversation_as_load_reward_does(served, classifier_dir, prompt, completion):
    from rewardbridge import load_reward

    reward = load_reward(classifier_dir)
    expected = reward(prompts=[prompt], completions=[completion])[0]
    # Text routes carry what the reward model reads: the in-process renderer's text.
    rendered = reward.scorer.renderer.render(Conversation.from_trl(prompt, completion))
    got = route_scores(served, prompt, completion, rendered)
    assert got == {route: pytest.approx(expected, abs=1e-5) for route in got}


# (protocol, options): each client of a real `rewardbridge serve`, without and with the reward model's tokenizer.
CLIENTS = [("rewardbridge", {}), ("nim", {}), ("vllm", {}), ("vllm", {"tokenizer": True}), ("openrlhf", {"tokenizer": True})]


@pytest.mark.parametrize("protocol, options", CLIENTS, ids=[p + ("-tokenizer" if o else "") for p, o in CLIENTS])
def test_every_client_reads_a_conversation_as_load_reward_does(served, classifier_dir, protocol, options):
    from rewardbridge import load_reward

    local = load_reward(classifier_dir, name="local")
    remote = load_reward(served, protocol=protocol, name=f"remote-{protocol}",
                         **({"tokenizer": classifier_dir} if options else {}))
    prompts, completions = [f[1] for f in FORMS], [f[2] for f in FORMS]
    # vLLM without a tokenizer sends every row as messages (text rows too, and a text prompt with a messages
    # completion): the server's template reads them as load_reward does (issue 15 review 8).
    assert remote(prompts=prompts, completions=completions) == pytest.approx(local(prompts=prompts, completions=completions), abs=1e-5)


def test_openrlhf_without_a_tokenizer_refuses_chat_data_either_way(served):
    from rewardbridge import load_reward
    from rewardbridge.errors import InputError

    reward = load_reward(served, protocol="openrlhf")
    for prompt, completion in [("2+2?", [{"role": "assistant", "content": "4"}]), ([{"role": "user", "content": "2+2?"}], "4")]:
        # Before: the first went as the raw text "2+2?4", the second was refused for want of a template.
        with pytest.raises(InputError, match="protocol='openrlhf' sends each conversation as rendered text.*pass tokenizer="):
            reward(prompts=[prompt], completions=[completion])


# (id, prompt, completion, the place named in-process, the field named by the server)
REFUSED = [
    ("image-part", [{"role": "user", "content": [*text("What is this?"), {"type": "image_url", "image_url": {"url": "x"}}]}],
     [{"role": "assistant", "content": "A cat."}], "prompt message 0 content part 1", "[0].content[1]"),
    ("numbers-as-content", [{"role": "user", "content": [1, 2]}], [{"role": "assistant", "content": "?"}],
     "prompt message 0 content part 0", "[0].content[0]"),
    ("text-part-without-text", [{"role": "user", "content": [{"type": "text"}]}], [{"role": "assistant", "content": "?"}],
     "prompt message 0 content part 0", "[0].content[0]"),
    ("content-null", [{"role": "user", "content": None}], [{"role": "assistant", "content": "?"}], "prompt message 0 has 'content': null",
     "[0]' has 'content': null"),
    ("no-content", [{"role": "user"}], [{"role": "assistant", "content": "?"}], "prompt message 0 has no 'content'",
     "[0]' has no 'content'"),
    ("empty-messages", [{"role": "user", "content": ""}], [{"role": "assistant", "content": ""}],
     "prompt and sample 0: completion are both empty", ""),  # as "" + "" is refused everywhere
]


@pytest.mark.parametrize("prompt, completion, local_place, field", [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_what_one_route_refuses_every_route_and_load_reward_refuse(served, classifier_dir, prompt, completion, local_place, field):
    import httpx

    from rewardbridge import load_reward
    from rewardbridge.errors import InputError

    with pytest.raises(InputError, match=f"sample 0: {re.escape(local_place)}"):
        load_reward(classifier_dir)(prompts=[prompt], completions=[completion])
    bodies = {
        "/v1/score": ({"conversations": [{"prompt": prompt, "completion": completion}]}, "conversations[0].prompt"),
        "/v1/chat/completions": ({"model": "reward_model", "messages": as_messages(prompt, completion)}, "messages"),
        "/classify": ({"model": "reward_model", "messages": as_messages(prompt, completion)}, "messages"),
        "/pooling": ({"model": "reward_model", "messages": as_messages(prompt, completion)}, "messages"),
    }
    for path, (body, label) in bodies.items():
        response = httpx.post(served + path, json=body, timeout=60)
        assert response.status_code == 422, (path, response.text)
        assert f"field '{label}{field}" in response.json()["error"]["message"], (path, response.text)


@pytest.mark.parametrize("path, body", [
    ("/get_reward", {"query": ["", "Hello there."]}),  # was 0.0 beside a batch-mate, a crash alone
    ("/classify", {"model": "reward_model", "input": [""]}),
])
def test_a_text_that_renders_to_no_tokens_is_refused_not_scored(served, path, body):
    import httpx

    response = httpx.post(served + path, json=body, timeout=60)
    assert response.status_code == 422 and "sample 0 renders to no tokens" in response.json()["error"]["message"], response.text


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/classify", "/pooling"])
@pytest.mark.parametrize("messages, words", [
    ([{"role": "assistant", "content": "4"}], "field 'messages' holds only the response"),
    ([{"role": "user", "content": "2+2?"}], "field 'messages[-1].role' is 'user'; the response to score comes last"),
    ([{"role": "user", "content": "2+2?"}, {"role": "tool", "content": "4"}], "field 'messages[-1].role' is 'tool'"),
], ids=["lone-assistant", "no-answer", "tool-without-answer"])
def test_a_chat_body_without_a_prompt_and_an_answer_names_the_field(served, path, messages, words):
    import httpx

    response = httpx.post(served + path, json={"model": "reward_model", "messages": messages}, timeout=60)
    assert response.status_code == 422 and words in response.json()["error"]["message"], response.text


def test_a_served_pair_model_refuses_the_text_routes(pair_rm_dir):
    import httpx

    from servers.process import start_server, stop

    process, url = start_server(pair_rm_dir, "--option", "trust_remote_code=true")
    try:
        for path, body in [("/classify", {"model": "reward_model", "input": ["Q? A."]}), ("/get_reward", {"query": ["Q? A."]})]:
            response = httpx.post(url + path, json=body, timeout=60)
            # Before: 200, the text scored as the pair (text, "").
            assert response.status_code == 422 and "(question, answer) pairs" in response.text, (path, response.text)
        conversation = {"conversations": [{"prompt": "Q?", "completion": "A."}]}
        assert httpx.post(url + "/v1/score", json=conversation, timeout=60).status_code == 200  # conversations still score
    finally:
        stop(process)
