"""Tiny models built in-process, for tests and benchmarks (no model hub on CI machines).

A byte-level BPE tokenizer trained on a few KB, with a Jinja chat template, and Llama
configs of any size. Like ``transformers.testing_utils``: not part of the public API.
"""

from __future__ import annotations

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


def build_tokenizer(chat_template: str | None = CHAT_TEMPLATE, vocab_size: int = 400):
    """A PreTrainedTokenizerFast with <pad>=0, <s>=1, </s>=2 and role tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.model_max_length = 4096
    if chat_template:
        fast.chat_template = chat_template
    return fast


def llama_config(tokenizer, **overrides):
    """A small LlamaConfig (hidden 64, 2 layers) for ``tokenizer``; any field can be overridden."""
    from transformers import LlamaConfig

    kwargs = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
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
