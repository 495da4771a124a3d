"""Sampling N responses per prompt, for ``rewardbridge pairs``: locally with transformers
``generate``, or from an OpenAI-compatible server (vLLM, NIM, TensorRT-LLM's ``trtllm-serve``).

A prompt is TRL's: a string (standard data: the model continues the text) or a list of chat
messages (the policy's chat template renders it; a server gets it on ``/v1/chat/completions``).
Each generator returns, per prompt, N :class:`Sample` s: the text and why it stopped
(``"stop"``: an end token; ``"length"``: the token budget ran out).

The server's wire format (vLLM's and NIM's OpenAI-compatible API): ``POST /v1/completions``
``{"model", "prompt", "n", "max_tokens", "temperature", "top_p", "seed"}`` ->
``{"choices": [{"index", "text", "finish_reason"}]}``; ``POST /v1/chat/completions`` with
``"messages"`` -> ``choices[i].message.content``. Requests go through the reward transport
(scorers/transport.py): retries with backoff, endpoints in turn, the key read from the
environment when sent.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Sequence

from ..errors import ConfigError, RemoteError

Prompt = Any  # str | list[dict] (TRL's two prompt forms)


@dataclass(frozen=True)
class Sample:
    text: str
    finish_reason: str  # "stop" | "length" (or what the server said)


@dataclass(frozen=True)
class Sampling:
    """How responses are drawn (the same for both generators).

    ``top_k`` and ``repetition_penalty`` are fixed at "off" (0 and 1.0) for local sampling: the
    samples come from the policy as it is, whatever its generation_config.json asks for (an
    engine applies its own defaults: vLLM reads generation_config.json unless started with
    ``--generation-config vllm``).
    """

    n: int = 4
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    top_k: int = 0
    repetition_penalty: float = 1.0

    def check(self) -> None:
        if self.n < 2:
            raise ConfigError(f"-n {self.n}: a pair needs at least 2 responses per prompt; pass -n 2 or more")
        if self.max_new_tokens < 1:
            raise ConfigError(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"--top-p must be in (0, 1], got {self.top_p}")
        if not self.temperature > 0:
            raise ConfigError(f"--temperature {self.temperature}: greedy decoding gives {self.n} identical responses "
                              "and no pair; pass a temperature > 0 (1.0 samples from the policy as it is)")


class LocalGenerator:
    """Batched ``model.generate`` with sampling; ``num_return_sequences=n`` per prompt.

    Args:
        policy: a model folder or hub id, or an already loaded model (then ``tokenizer`` too).
        gguf_file: a GGUF checkpoint inside ``policy`` (transformers dequantizes it).
        device: ``"auto"`` (CUDA when there is one, else CPU) or a torch device string.
    """

    def __init__(self, policy: Any, sampling: Sampling, tokenizer: Any = None, gguf_file: str | None = None,
                 device: str = "auto", dtype: str = "auto"):
        import torch
        from transformers import AutoTokenizer

        from ..policy import load_causal_lm

        self.sampling = sampling
        if isinstance(policy, str):
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
            self.model = load_causal_lm(policy, gguf_file=gguf_file, dtype=torch_dtype).to(device)
            self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(policy, gguf_file=gguf_file)
        else:
            if tokenizer is None:
                raise ConfigError("a loaded policy model needs its tokenizer too (tokenizer=...)")
            self.model, self.tokenizer = policy, tokenizer

    def generate(self, prompts: Sequence[Prompt], first_index: int = 0) -> list[list[Sample]]:
        """N samples for each prompt; seeded by ``seed + first_index`` (the batch's first row)."""
        import torch
        from transformers import GenerationConfig

        tok, s = self.tokenizer, self.sampling
        chat = [not isinstance(p, str) for p in prompts]
        if any(chat) and tok.chat_template is None:
            raise ConfigError("chat prompts need the policy's chat template, and its tokenizer has none; "
                              "give prompts as text, or a policy with a chat template")
        texts = [tok.apply_chat_template(list(p), add_generation_prompt=True, tokenize=False) if c else p
                 for p, c in zip(prompts, chat)]
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        side = tok.padding_side
        tok.padding_side = "left"  # generation continues at the right edge
        try:
            # A chat template writes its own BOS; plain text gets the tokenizer's special tokens.
            batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=not all(chat)).to(self.model.device)
        finally:
            tok.padding_side = side
        own = self.model.generation_config
        eos = own.eos_token_id if own.eos_token_id is not None else tok.eos_token_id
        config = GenerationConfig(do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k,
                                  repetition_penalty=s.repetition_penalty, max_new_tokens=s.max_new_tokens,
                                  num_return_sequences=s.n, pad_token_id=pad_id, eos_token_id=eos, bos_token_id=own.bos_token_id)
        torch.manual_seed(s.seed + first_index)
        was_training = self.model.training
        self.model.eval()
        # transformers fills every setting left unset from the model's generation_config.json (top_k,
        # min_p, no_repeat_ngram_size, ...) and then its own defaults (top_k=50): generate under a
        # config that sets nothing, so only the settings above shape the samples.
        self.model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=pad_id, bos_token_id=own.bos_token_id)
        try:
            with torch.no_grad():
                output = self.model.generate(**batch, generation_config=config)
        finally:
            self.model.generation_config = own
            self.model.train(was_training)
        new = output[:, batch["input_ids"].shape[1]:]
        stops = {eos} if isinstance(eos, int) else set(eos or [])
        samples = [Sample(tok.decode(row, skip_special_tokens=True),
                          "stop" if any(int(t) in stops for t in row) else "length") for row in new]
        return [samples[i * s.n:(i + 1) * s.n] for i in range(len(prompts))]


@dataclass(frozen=True)
class EngineSettings:
    """What the transport reads (the same names as the reward's remote options)."""

    timeout: float = 600.0
    max_retries: int = 4
    retry_wait: float = 0.5
    max_concurrency: int = 16
    api_key_env: str | None = None


class EngineGenerator:
    """An OpenAI-compatible server: text prompts on /v1/completions, chat prompts on /v1/chat/completions.

    ``model`` is the name the server serves the policy under (vLLM: its path or
    ``--served-model-name``). A server that returns fewer than N choices (one that ignores
    ``n``) is asked again for the rest.
    """

    def __init__(self, url: str, model: str, sampling: Sampling, settings: EngineSettings = EngineSettings()):
        from ..scorers.transport import Transport, split_urls

        urls = [u[: -len("/v1")] if u.endswith("/v1") else u for u in split_urls(url)]
        self.model, self.sampling = model, sampling
        self.transport = Transport(urls, "openai", settings)
        # The transport's advice is a reward's (on_error='skip'); an engine has no such option.
        self.transport.give_up_hint = ("check that the engine is up and serves this URL, raise --engine-timeout "
                                       "(pairs.engine_timeout), or add endpoints (comma-separated)")

    def generate(self, prompts: Sequence[Prompt], first_index: int = 0) -> list[list[Sample]]:
        async def all_prompts():
            return await asyncio.gather(*[self._one(p, first_index + i) for i, p in enumerate(prompts)])

        return list(self.transport.run(all_prompts()))

    async def _one(self, prompt: Prompt, index: int) -> list[Sample]:
        from ..scorers.exchange import Request

        s = self.sampling
        chat = not isinstance(prompt, str)
        path = "/v1/chat/completions" if chat else "/v1/completions"
        samples: list[Sample] = []
        for attempt in range(4):  # a server that ignores `n` answers one choice a request
            body = {"model": self.model, "n": s.n - len(samples), "max_tokens": s.max_new_tokens,
                    "temperature": s.temperature, "top_p": s.top_p, "seed": s.seed + index + 7919 * attempt}
            body["messages" if chat else "prompt"] = list(prompt) if chat else prompt
            got = await self.transport.exchange(Request(path, json=body), lambda r: parse_choices(read_json(r), chat), [index])
            samples.extend(got)
            if len(samples) >= s.n:
                return samples[: s.n]
        raise RemoteError(f"{path} returned {len(samples)} of {s.n} responses for row {index} after 4 requests")

    def close(self) -> None:
        self.transport.close()


def read_json(response: Any) -> Any:
    """The answer's JSON, or a ProtocolError that says the server answered something else (a proxy's HTML page)."""
    from ..scorers.exchange import ProtocolError

    try:
        return response.json()
    except ValueError:
        kind = response.headers.get("Content-Type") or "no Content-Type"
        text = " ".join(response.text.split())[:120]
        raise ProtocolError(f"it answered something that is not JSON ({kind}: {text!r}); is the URL the OpenAI-compatible "
                            "server's base (http://host:port), not a proxy's or a web page's?") from None


def parse_choices(body: Any, chat: bool) -> list[Sample]:
    """``choices`` of a completions or chat answer, in index order.

    >>> parse_choices({"choices": [{"index": 1, "text": "b", "finish_reason": "length"},
    ...                            {"index": 0, "text": "a", "finish_reason": "stop"}]}, chat=False)
    [Sample(text='a', finish_reason='stop'), Sample(text='b', finish_reason='length')]
    """
    from ..scorers.exchange import ProtocolError

    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or not choices:
        raise ProtocolError(f"no 'choices' list in the answer (got {str(body)[:200]})")
    out = []
    for position, choice in enumerate(sorted(choices, key=lambda c: c.get("index", 0) if isinstance(c, dict) else 0)):
        if not isinstance(choice, dict):
            raise ProtocolError(f"choices[{position}] is not an object")
        if chat:
            message = choice.get("message")
            # One hosted NIM answered `message` as a list of messages (REFERENCE.md §2): read it either way.
            parts = message if isinstance(message, list) else [message]
            texts = [p.get("content") for p in parts if isinstance(p, dict)]
            if not texts or any(not isinstance(t, str) for t in texts):
                raise ProtocolError(f"choices[{position}].message.content is not text")
            text = "".join(texts)
        else:
            text = choice.get("text")
            if not isinstance(text, str):
                raise ProtocolError(f"choices[{position}].text is not text")
        out.append(Sample(text, str(choice.get("finish_reason") or "stop")))
    return out
