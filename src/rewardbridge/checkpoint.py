"""A checkpoint read without its weights: config.json, the kind it implies, the Auto class that
loads it, its output count, token ids, length limit, and the device and dtype to load it to.

``resolve.py`` asks these questions once, before any weights load.
"""

from __future__ import annotations

import os

from .errors import ConfigError
from .presets import explain_kind

# Config classes in these auto_map entries are the model's own code (ArmoRM, the BERT RewardModel).
MODEL_AUTO_CLASSES = ("AutoModelForSequenceClassification", "AutoModel")


def from_pretrained_or_explain(auto_class, source: str, what: str, **kwargs):
    """``auto_class.from_pretrained``, with transformers' hub errors turned into what to do."""
    try:
        return auto_class.from_pretrained(source, **kwargs)
    except OSError as error:
        raise ConfigError(
            f"cannot load the {what} of {source!r}: it is not a local folder, and the hub did not provide it "
            f"({' '.join(str(error).split())[:300]}). Pass a local model directory, or a hub id this machine can reach"
        ) from error


def max_positions(config: dict) -> int | None:
    """The positions the model was trained on, under whatever name its config class gives them
    (GPT-2: ``n_positions``; transformers maps it to ``max_position_embeddings``)."""
    from transformers import CONFIG_MAPPING

    names = ["max_position_embeddings"]
    config_class = CONFIG_MAPPING.get(config.get("model_type")) if config.get("model_type") in CONFIG_MAPPING else None
    if config_class is not None and "max_position_embeddings" in getattr(config_class, "attribute_map", {}):
        names.insert(0, config_class.attribute_map["max_position_embeddings"])
    names += ["n_positions", "max_sequence_length", "seq_length"]  # custom code without a registered class
    return next((config[name] for name in names if isinstance(config.get(name), int)), None)


def resolve_device(device: str):
    """``"auto"``: this rank's GPU if there is one, else CPU; a GPU asked for must exist. Returns (device, why)."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():  # LOCAL_RANK picks this process's GPU under a launcher
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))), "device='auto': this rank's GPU"
        return torch.device("cpu"), "device='auto': no GPU here"
    resolved = torch.device(device)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device={device!r}, but this machine has no CUDA GPU (torch.cuda.is_available() is False); use device='cpu' or 'auto'")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ConfigError(f"device={device!r}, but this machine has {torch.cuda.device_count()} GPU(s); use an index below that, or 'auto'")
    return resolved, f"device={device!r} was given"


def resolve_dtype(dtype, device):
    """``"auto"`` is bfloat16 on a GPU and float32 on CPU."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        return getattr(torch, dtype)
    except AttributeError:
        raise ConfigError(f"dtype={dtype!r} is not a torch dtype; use 'auto', 'float32', 'bfloat16' or 'float16'") from None


def config_dict(source: str, options) -> dict:
    """config.json as a plain dict: read without running any of the model's own code."""
    from transformers import AutoConfig, PretrainedConfig

    if options.gguf_file:  # a GGUF file carries a standard architecture, never custom code
        return from_pretrained_or_explain(AutoConfig, source, "config", gguf_file=options.gguf_file).to_dict()
    if os.path.isdir(source) and not os.path.isfile(os.path.join(source, "config.json")):
        # transformers reads such a folder as an empty config, and every check after it would be guessing
        held = sorted(os.listdir(source))
        raise ConfigError(
            f"{source!r} is a folder without a config.json, so not a model folder (it holds "
            f"{', '.join(held[:8]) + (' ...' if len(held) > 8 else '') if held else 'nothing'}); pass the folder a "
            "model was saved to (save_pretrained writes config.json beside the weights)"
        )
    try:
        return PretrainedConfig.get_config_dict(source)[0]
    except OSError as error:
        raise ConfigError(
            f"cannot load the config of {source!r}: it is not a local folder with a config.json, and the hub did not "
            f"provide it ({' '.join(str(error).split())[:300]}). Pass a local model directory, or a hub id this machine can reach"
        ) from error


def resolve_kind(source: str, options, config: dict) -> tuple[str, str]:
    """The readout kind and why it was chosen: the option (or a preset), else the model config."""
    if options.kind is not None:
        return options.kind, f"kind={options.kind!r} was given"
    kind, why = explain_kind(config)
    if kind is None:
        raise ConfigError(
            f"cannot tell what kind of reward model {source!r} is ({why}); pass kind= one of "
            "'classifier', 'causal_logit', 'attributes', 'pair_regression', 'custom'"
        )
    return kind, why


def model_class_for(kind: str, source: str, options, config: dict):
    """The transformers Auto class that loads ``kind``; custom code only with ``trust_remote_code``."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

    if kind == "causal_logit":
        return AutoModelForCausalLM
    if kind not in ("pair_regression", "custom"):
        return AutoModelForSequenceClassification
    auto_map = config.get("auto_map") or {}
    mapped = [name for name in MODEL_AUTO_CLASSES if name in auto_map]
    if mapped and not options.trust_remote_code:
        raise ConfigError(
            f"{source} needs its own modelling code (config.json auto_map: {auto_map[mapped[0]]}), which runs only "
            "with trust_remote_code=True; read that code, then pass trust_remote_code=True "
            "(--option trust_remote_code=true on the command line)"
        )
    if kind == "custom" and not mapped:
        raise ConfigError(
            f"kind='custom' loads a model's own code, but {source}/config.json maps none of {list(MODEL_AUTO_CLASSES)} "
            "in auto_map; use kind='classifier' for a standard sequence classifier"
        )
    return AutoModelForSequenceClassification if "AutoModelForSequenceClassification" in mapped or not mapped else AutoModel


def check_output_count(config: dict, kind: str, attributes) -> None:
    """A classifier head's outputs must match ``attributes``; several unnamed outputs are an error.

    Reading output 0 of a multi-output head without a word would score with one attribute
    (or one class logit) and call it the reward.
    """
    if kind not in ("classifier", "attributes"):
        return
    # transformers saves id2label for every classifier; num_labels is derived from it.
    # Without either, transformers builds 2 labels (PretrainedConfig's default).
    outputs = len(config["id2label"]) if config.get("id2label") else config.get("num_labels", 2)
    if attributes and len(attributes) != outputs:
        raise ConfigError(
            f"the reward model has {outputs} outputs but attributes names {len(attributes)}: "
            f"{list(attributes)}; pass one name per output, in output order"
        )
    if not attributes and outputs > 1:
        raise ConfigError(
            f"the reward model has {outputs} outputs (config.num_labels), and no attributes were given to say which is which; "
            "pass attributes=[names in output order] and attribute_weights to combine them"
        )


def check_kind_fits(kind: str, config: dict, why: str) -> None:
    """Refuse a kind whose head the checkpoint does not have: transformers would initialize it
    at random and every score would be noise (a causal LM read as a classifier, or the reverse)."""
    implied, arch_why = explain_kind(config)
    wants_classifier_head = kind in ("classifier", "attributes")
    if implied == "causal_logit" and wants_classifier_head:
        raise ConfigError(
            f"{why}, but this checkpoint is a causal LM ({arch_why}) with no sequence-classification head: "
            f"kind={kind!r} would score with a randomly initialized head. Pass kind='causal_logit' with token_id "
            "(the logit that is the reward), or point source at the classifier checkpoint"
        )
    if implied == "classifier" and kind == "causal_logit":
        raise ConfigError(
            f"{why}, but this checkpoint is a sequence classifier ({arch_why}) with no language-model head: "
            "kind='causal_logit' would read next-token logits from a randomly initialized head. Pass kind='classifier'"
        )
    if kind == "pair_regression" and not config.get("auto_map") and not is_encoder(config):
        # Without custom code, pair_regression is a standard encoder's (question, answer) segments; a decoder
        # has no segment embeddings, and a causal LM no head at all (a random one would be made).
        what = (f"a causal LM ({arch_why}) with no score head" if implied == "causal_logit"
                else f"a decoder ({config.get('model_type')!r}, {arch_why}) that reads one sequence, with no segment ids")
        fix = ("kind='causal_logit' with token_id" if implied == "causal_logit"
               else "kind='classifier', which renders the conversation with its chat template")
        raise ConfigError(
            f"{why}, but kind='pair_regression' reads (question, answer) as a tokenizer pair with segment ids, as BERT-style "
            f"cross-encoders (or a model's own code) do, and this checkpoint is {what}. Pass {fix}"
        )


def is_encoder(config: dict) -> bool:
    """A BERT-style encoder (BERT, RoBERTa, DeBERTa, ...): a masked-LM model type that is not a decoder."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    return config.get("model_type") in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not config.get("is_decoder", False)


def reads_pairs(kind: str, why: str, config: dict, options, has_template: bool) -> tuple[str, str]:
    """A one-output encoder classifier (BERT, RoBERTa, DeBERTa: a cross-encoder) with no chat template
    reads (question, answer) as a tokenizer pair, as such cards do (``tokenizer(question, answer)``),
    not one segment of prompt + completion: ``pair_regression``. Returns (kind, why)."""
    model_type = config.get("model_type")
    encoder = is_encoder(config)
    outputs = len(config["id2label"]) if config.get("id2label") else config.get("num_labels", 2)
    if kind != "classifier" or not encoder or outputs != 1 or options.attributes:
        return kind, why
    if has_template or options.render != "auto":
        reason = "it has a chat template" if has_template else f"render={options.render!r} was given"
        return kind, f"{why}; an encoder ({model_type}), but {reason}, so the conversation is rendered (kind='pair_regression' reads (question, answer) pairs instead)"
    return "pair_regression", f"{why}: an encoder ({model_type}) with no chat template, so a cross-encoder reading (question, answer) as a pair"


# Any of these makes a folder a tokenizer transformers can load (sentencepiece, BPE, WordPiece, tiktoken).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "merges.txt", "tokenizer.model",
                   "spiece.model", "sentencepiece.bpe.model")


def check_tokenizer_files(folder: str, what: str) -> None:
    """A local folder must hold a tokenizer; transformers would otherwise ask to install sentencepiece."""
    if not os.path.isdir(folder):
        return  # a hub id: transformers fetches it
    names = os.listdir(folder)
    if any(name in TOKENIZER_FILES or name.endswith((".model", ".tiktoken")) for name in names):
        return
    raise ConfigError(
        f"{what} {folder} has no tokenizer files (none of {', '.join(TOKENIZER_FILES[:5])}, ...); a fine-tuned checkpoint often "
        "lacks them: copy them from its base model into the folder, or pass tokenizer='<the base model's folder or hub id>'"
    )


def load_tokenizer(source: str, what: str, **kwargs):
    """A tokenizer by folder or hub id, with the mistakes said as such: a folder that does not exist (not a
    hub lookup that fails with an OSError about a repo id), one without tokenizer files (not "install
    sentencepiece"), a file where the folder is meant."""
    from transformers import AutoTokenizer

    from .sources import resolve_local_source

    source = resolve_local_source(source, what)
    check_tokenizer_files(source, what)
    return from_pretrained_or_explain(AutoTokenizer, source, what, **kwargs)


def token_ids_for(token_id, tokenizer) -> tuple[int, ...]:
    """``0`` -> (0,); ``("Yes", "No")`` -> their single-token ids."""
    wanted = token_id if isinstance(token_id, (tuple, list)) else (token_id,)
    if len(wanted) not in (1, 2):
        raise ConfigError(f"token_id must be one token or a (yes, no) pair, got {token_id!r}")
    ids = []
    for token in wanted:
        if isinstance(token, str):
            pieces = tokenizer.encode(token, add_special_tokens=False)
            if len(pieces) != 1:
                raise ConfigError(
                    f"token_id {token!r} is {len(pieces)} tokens for this tokenizer ({pieces}); pass one token (or its id)"
                )
            token = pieces[0]
        if not 0 <= int(token) < len(tokenizer):
            raise ConfigError(f"token_id {token} is outside the vocabulary (size {len(tokenizer)}); pass an id below that")
        ids.append(int(token))
    return tuple(ids)


def model_max_length(tokenizer, config: dict) -> int:
    """The model's own limit: the tokenizer's, else the position embeddings' (config.json)."""
    limits = [max_positions(config)]
    if getattr(tokenizer, "model_max_length", None) and tokenizer.model_max_length < 10**7:
        limits.append(tokenizer.model_max_length)  # tokenizers without a limit say ~1e30
    limits = [n for n in limits if n]
    return min(limits) if limits else 4096
