"""Tiny models built in-process: a byte-level BPE tokenizer with a chat template, and Llama
reward models (sequence classifier, multi-output head, causal LM) saved to temp dirs."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CORPUS = [
    "What is the capital of France? The capital of France is Paris.",
    "Write a haiku about the sea. Waves fold into foam, the tide keeps its own counsel.",
    "How many legs does a spider have? A spider has eight legs.",
    "Explain gradient descent. It moves parameters against the gradient of the loss.",
    "Tell me a joke. Why did the reward model cross the road? To score the other side.",
] * 20

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_tokenizer(chat_template: str | None = CHAT_TEMPLATE):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.model_max_length = 512
    if chat_template:
        fast.chat_template = chat_template
    return fast


def llama_config(tokenizer, **overrides):
    from transformers import LlamaConfig

    kwargs = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    kwargs.update(overrides)
    return LlamaConfig(**kwargs)


def save_model(path, model, tokenizer) -> str:
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def classifier_dir(tmp_path_factory, tokenizer):
    from transformers import LlamaForSequenceClassification

    torch.manual_seed(0)
    model = LlamaForSequenceClassification(llama_config(tokenizer, num_labels=1))
    return save_model(tmp_path_factory.mktemp("classifier"), model, tokenizer)


@pytest.fixture(scope="session")
def attributes_dir(tmp_path_factory, tokenizer):
    from transformers import LlamaForSequenceClassification

    torch.manual_seed(1)
    model = LlamaForSequenceClassification(llama_config(tokenizer, num_labels=3))
    return save_model(tmp_path_factory.mktemp("attributes"), model, tokenizer)


@pytest.fixture(scope="session")
def causal_dir(tmp_path_factory, tokenizer):
    from transformers import LlamaForCausalLM

    torch.manual_seed(2)
    model = LlamaForCausalLM(llama_config(tokenizer))
    return save_model(tmp_path_factory.mktemp("causal"), model, tokenizer)


@pytest.fixture(scope="session")
def plain_tokenizer_classifier_dir(tmp_path_factory):
    """A classifier whose tokenizer has no chat template."""
    from transformers import LlamaForSequenceClassification

    tok = build_tokenizer(chat_template=None)
    torch.manual_seed(3)
    model = LlamaForSequenceClassification(llama_config(tok, num_labels=1))
    return save_model(tmp_path_factory.mktemp("plain"), model, tok)


@pytest.fixture
def chat_batch():
    """Two prompts (one multi-turn with a system message) x varied-length completions."""
    p1 = [{"role": "user", "content": "What is the capital of France?"}]
    p2 = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Tell me a joke."},
        {"role": "assistant", "content": "No."},
        {"role": "user", "content": "Please, a joke."},
    ]
    answers = ["Paris.", "The capital of France is Paris, a city on the Seine " * 3, "Why did the model cross the road?", "No"]
    prompts = [p1, p1, p2, p2]
    completions = [[{"role": "assistant", "content": a}] for a in answers]
    return prompts, completions
