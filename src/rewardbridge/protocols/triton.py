"""NeMo-Aligner's reward server (PyTriton, KServe v2 HTTP): both directions of the wire format.

Model ``reward_model``; input ``sentences`` (BYTES, SteerLM-rendered text, sent as shape
[B, 1] like NeMo-Aligner's client: ``np.char.encode(arr[..., None], "utf-8")``); output
``rewards`` FP32 [B, 1], or [B, 9] for an unmerged regression model (REFERENCE.md §3).

The client builds and reads bodies with ``tritonclient.http`` itself (binary tensor data,
as PyTriton's clients send), over the shared transport. The server side reads both JSON
tensors and Triton's binary tensor data extension: the JSON header is the first
``Inference-Header-Content-Length`` bytes, each binary input follows in order, sized by its
``parameters.binary_data_size``; a BYTES element is a 4-byte little-endian length + bytes.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

from ..conversation import Conversation
from ..errors import InputError
from ..presets import NEMOTRON_340B_ATTRIBUTES
from ..scorers.base import Scores
from ..scorers.exchange import ProtocolError, Request
from ._wire import load_json
from .base import TEXT, Answer, Call, Codec, HTTPError, Route, Rows, check_attribute_names

INPUT, OUTPUT = "sentences", "rewards"
HEADER_LENGTH = "Inference-Header-Content-Length"


def infer_path(model: str) -> str:
    return f"/v2/models/{model}/infer"


# -- client ----------------------------------------------------------------------------------


class TritonClient(Codec):
    """Client side: SteerLM-rendered sentences (``render=`` changes it) in requests of ``request_batch_size``."""

    protocol = "triton"
    renders_here = True
    default_render = "steerlm"  # NeMo-Aligner's server reads SteerLM text
    summary = "POST /v2/models/<model_name>/infer, request_batch_size rendered texts per request as BYTES sentences"

    def __init__(self, options: Any, renderer: Any = None):
        import tritonclient.http  # noqa: F401 (fail early with ImportError when the extra is missing)

        super().__init__(options, renderer)

    def request(self, batch: list[Conversation]) -> Request:
        import tritonclient.http as httpclient

        texts = np.array([self.renderer.render(c) for c in batch], dtype=object)
        sentences = np.char.encode(texts[..., None].astype(str), "utf-8")  # (B, 1) bytes, as NeMo-Aligner sends
        tensor = httpclient.InferInput(INPUT, list(sentences.shape), "BYTES")
        tensor.set_data_from_numpy(sentences, binary_data=True)
        output = httpclient.InferRequestedOutput(OUTPUT, binary_data=True)
        body, json_size = httpclient.InferenceServerClient.generate_request_body([tensor], outputs=[output])
        headers = {"Content-Type": "application/octet-stream"}
        if json_size is not None:
            headers[HEADER_LENGTH] = str(json_size)
        return Request(infer_path(self.options.model_name), content=body, headers=headers)

    def parse(self, response: Any, n: int) -> Rows:
        import tritonclient.http as httpclient

        header = response.headers.get(HEADER_LENGTH)
        try:
            result = httpclient.InferenceServerClient.parse_response_body(
                response.content, header_length=int(header) if header else None
            )
            rewards = result.as_numpy(OUTPUT)
        except Exception as error:  # tritonclient raises its own and plain JSON errors
            raise ProtocolError(f"not a KServe v2 answer with '{OUTPUT}' ({error})") from None
        if rewards is None:
            raise ProtocolError(f"the answer has no output named {OUTPUT!r}")
        rewards = np.asarray(rewards, dtype=np.float32).reshape(n, -1) if rewards.size % max(n, 1) == 0 else None
        if rewards is None:
            raise ProtocolError(f"output {OUTPUT!r} does not have {n} rows")
        if rewards.shape[1] == 1:
            return Rows(values=rewards[:, 0].tolist())
        names = self.options.attributes or (NEMOTRON_340B_ATTRIBUTES if rewards.shape[1] == 9 else None)
        if names is None or len(names) != rewards.shape[1]:
            raise ProtocolError(f"output {OUTPUT!r} has {rewards.shape[1]} columns; pass attributes= naming each, in order")
        check_attribute_names(names, self.options, "the answer")
        return Rows(attributes={name: rewards[:, k].tolist() for k, name in enumerate(names)})


# -- server ----------------------------------------------------------------------------------


def parse_request(body: bytes, header_length: str | None) -> tuple[list[str], dict]:
    """An infer body -> (sentences, the request's JSON header). InputError names the bad field;
    every field the answer reads later (``parameters``, ``outputs``, ``id``) is checked here,
    before anything is scored."""
    if header_length is not None:
        try:
            size = int(header_length)
        except ValueError:
            raise InputError(f"header {HEADER_LENGTH!r} is not an integer") from None
        if not 0 < size <= len(body):
            raise InputError(f"header {HEADER_LENGTH!r} = {size} is outside the body of {len(body)} bytes")
        header, binary = load_json(body[:size]), body[size:]
    else:
        header, binary = load_json(body), b""
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise InputError("field 'inputs' is missing or not a list")
    _check_answer_fields(header)
    offset, sentences = 0, None
    for i, tensor in enumerate(header["inputs"]):
        if not isinstance(tensor, dict):
            raise InputError(f"field 'inputs[{i}]' is not an object")
        parameters = _parameters(tensor, f"inputs[{i}].parameters")
        size, raw = parameters.get("binary_data_size"), None
        if size is not None:
            if not _count(size):
                raise InputError(f"field 'inputs[{i}].parameters.binary_data_size' must be a whole number of bytes >= 0, got {size!r}")
            raw, offset = binary[offset:offset + size], offset + size
            if len(raw) != size:
                raise InputError(f"field 'inputs[{i}].parameters.binary_data_size' = {size} runs past the body")
        if tensor.get("name") != INPUT:
            if tensor.get("name") in ("tokens", "sequence_lengths"):
                raise InputError(f"field 'inputs[{i}].name' = {tensor.get('name')!r}: this server reads '{INPUT}' (text), not token ids")
            continue
        if sentences is not None:
            raise InputError(f"field 'inputs[{i}]' is a second '{INPUT}' tensor; send one (which to score would be a guess)")
        if tensor.get("datatype") != "BYTES":
            raise InputError(f"field 'inputs[{i}].datatype' must be 'BYTES' for '{INPUT}'")
        shape = tensor.get("shape")
        if (not isinstance(shape, list) or not 1 <= len(shape) <= 2 or not all(_count(d) for d in shape)
                or (len(shape) == 2 and shape[1] != 1)):
            raise InputError(f"field 'inputs[{i}].shape' must be [B] or [B, 1] (whole numbers), got {shape!r}")
        label = f"inputs[{i}].data"
        sentences = _decode_bytes(raw, label) if raw is not None else _flatten(tensor.get("data"), label)
        if len(sentences) != shape[0]:
            raise InputError(f"field 'inputs[{i}].shape' says {shape[0]} rows, the data holds {len(sentences)}")
    if offset != len(binary):
        raise InputError(f"the body has {len(binary) - offset} bytes of binary data that no input's binary_data_size claims")
    if sentences is None:
        raise InputError(f"field 'inputs' has no tensor named {INPUT!r}")
    return sentences, header


def _count(value: Any) -> bool:
    """A JSON whole number >= 0 (not true/false, not 1.5)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _parameters(holder: dict, label: str) -> dict:
    parameters = holder.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise InputError(f"field {label!r} must be an object, got {type(parameters).__name__}")
    return parameters


def _check_answer_fields(header: dict) -> None:
    """``id``, ``parameters.binary_data_output`` and ``outputs``: what shapes the answer."""
    if header.get("id") is not None and not isinstance(header["id"], str):
        raise InputError(f"field 'id' must be a string, got {type(header['id']).__name__}")
    flag = _parameters(header, "parameters").get("binary_data_output")
    if flag is not None and not isinstance(flag, bool):
        raise InputError(f"field 'parameters.binary_data_output' must be true or false, got {flag!r}")
    outputs = header.get("outputs")
    if outputs is None:
        return
    if not isinstance(outputs, list):
        raise InputError(f"field 'outputs' must be a list of {{'name', 'parameters'}} objects, got {type(outputs).__name__}")
    for k, output in enumerate(outputs):
        if not isinstance(output, dict) or not isinstance(output.get("name"), str):
            raise InputError(f"field 'outputs[{k}].name' is missing or not a string")
        if output["name"] != OUTPUT:
            raise InputError(f"field 'outputs[{k}].name' = {output['name']!r}: this model's only output is {OUTPUT!r}")
        binary = _parameters(output, f"outputs[{k}].parameters").get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise InputError(f"field 'outputs[{k}].parameters.binary_data' must be true or false, got {binary!r}")


def _decode_bytes(raw: bytes, label: str) -> list[str]:
    """Triton's BYTES serialization: per element a 4-byte little-endian length, then UTF-8 bytes."""
    out, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise InputError(f"field {label!r}: binary BYTES tensor data is truncated")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise InputError(f"field {label!r}: element {len(out)} claims {length} bytes, past the end of the data")
        try:
            out.append(raw[offset:offset + length].decode("utf-8"))
        except UnicodeDecodeError as error:
            raise InputError(f"field {label!r}: element {len(out)} is not UTF-8 text ({error})") from None
        offset += length
    return out


def _flatten(data: Any, label: str) -> list[str]:
    """``[B]`` strings, or ``[B, 1]`` as one-string lists (KServe JSON allows both)."""
    if not isinstance(data, list):
        raise InputError(f"field {label!r} is missing or not a list")
    flat = [item[0] if isinstance(item, list) and len(item) == 1 else item for item in data]
    if not all(isinstance(s, str) for s in flat):
        raise InputError(f"field {label!r} must hold strings, as [B] or [B, 1]")
    return flat


def reward_matrix(scores: Scores) -> np.ndarray:
    """[B, 1] rewards, or [B, K] attributes for a multi-attribute model without weights."""
    if scores.values is not None:
        return scores.values.float().numpy()[:, None]
    return np.stack([c.float().numpy() for c in scores.attributes.values()], axis=1)


def format_response(matrix: np.ndarray, request: dict, model: str) -> tuple[bytes, dict[str, str]]:
    """The infer answer, binary when the request asked for it (as tritonclient does by default)."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    # parse_request checked these fields' types, so nothing here can fail after the model ran.
    wants_binary = bool((request.get("parameters") or {}).get("binary_data_output"))
    for output in request.get("outputs") or []:
        if output.get("name") == OUTPUT and "binary_data" in (output.get("parameters") or {}):
            wants_binary = bool(output["parameters"]["binary_data"])
    tensor: dict[str, Any] = {"name": OUTPUT, "datatype": "FP32", "shape": list(matrix.shape)}
    answer: dict[str, Any] = {"model_name": model, "model_version": "1", "outputs": [tensor]}
    if request.get("id"):
        answer["id"] = request["id"]
    if not wants_binary:
        tensor["data"] = matrix.reshape(-1).tolist()
        return json.dumps(answer).encode(), {"Content-Type": "application/json"}
    raw = matrix.tobytes()
    tensor["parameters"] = {"binary_data_size": len(raw)}
    header = json.dumps(answer).encode()
    return header + raw, {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(header))}


def model_metadata(model: str, columns: int) -> dict:
    return {
        "name": model,
        "versions": ["1"],
        "platform": "rewardbridge",
        "inputs": [{"name": INPUT, "datatype": "BYTES", "shape": [-1, 1]}],
        "outputs": [{"name": OUTPUT, "datatype": "FP32", "shape": [-1, columns]}],
    }


def server_metadata(version: str) -> dict:
    return {"name": "rewardbridge", "version": version, "extensions": ["binary_tensor_data"]}


# -- routes: KServe v2 inference, health and metadata, as tritonclient calls them ------------------


def _check_model(call: Call) -> None:
    name = call.params.get("name")
    if name is not None and name != call.server.settings.model_name:
        raise HTTPError(404, f"unknown model {name!r}; this server serves {call.server.settings.model_name!r}")


async def serve_infer(call: Call) -> Answer:
    _check_model(call)
    sentences, header = parse_request(call.body, call.headers.get(HEADER_LENGTH.lower()))
    scores = await call.server.score(TEXT, sentences)
    body, headers = format_response(reward_matrix(scores), header, call.server.settings.model_name)
    return Answer(body, headers=headers)


async def serve_live(call: Call) -> Answer:
    return Answer(status=200)


async def serve_ready(call: Call) -> Answer:
    _check_model(call)
    return Answer(status=200 if call.server.model is not None else 503)


async def serve_server_metadata(call: Call) -> dict:
    from .. import __version__

    return server_metadata(__version__)


async def serve_model_metadata(call: Call) -> dict:
    _check_model(call)
    columns = call.server.model.columns if call.server.model is not None else 1
    return model_metadata(call.server.settings.model_name, columns)


CLIENT = TritonClient
ROUTES = (
    Route("POST", "/v2/models/{name}/infer", serve_infer),
    Route("POST", "/v2/models/{name}/versions/{version}/infer", serve_infer),
    Route("GET", "/v2/health/live", serve_live),
    Route("GET", "/v2/health/ready", serve_ready),
    Route("GET", "/v2/models/{name}/ready", serve_ready),
    Route("GET", "/v2/models/{name}/versions/{version}/ready", serve_ready),
    Route("GET", "/v2", serve_server_metadata),
    Route("GET", "/v2/models/{name}", serve_model_metadata),
    Route("GET", "/v2/models/{name}/versions/{version}", serve_model_metadata),
)
