"""Wire protocols: one module each, holding both directions of one format.

Each module has the client codec the remote scorer uses (``CLIENT``: how conversations
become a request, how the answer becomes rows) and the server routes ``rewardbridge serve``
registers (``ROUTES``: parse -> the scorer a trainer uses -> format), so client and server
share one codec and cannot drift apart. Adding a protocol means adding one module and one
line to :data:`MODULES`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# protocol= name -> module in this package (imported only when that protocol is used).
MODULES = {
    "nim": "nim",
    "triton": "triton",
    "vllm": "vllm",
    "openrlhf": "openrlhf",
    "rewardbridge": "native",
    "genrm": "genrm",  # a pairwise generative judge (Nemotron-3's GenRM): client only
    "principle": "principle",  # a pointwise principle judge read from logprobs: client only
}
PROTOCOLS = tuple(MODULES)


def protocol_module(protocol: str) -> ModuleType:
    """The module of ``protocol`` (one of :data:`PROTOCOLS`, checked by ``RewardOptions``)."""
    return importlib.import_module(f".{MODULES[protocol]}", __name__)


def all_routes() -> list:
    """Every protocol's server routes, in table order (``rewardbridge serve`` registers them)."""
    return [route for protocol in MODULES for route in protocol_module(protocol).ROUTES]
