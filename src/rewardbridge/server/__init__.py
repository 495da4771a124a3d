"""``rewardbridge serve``: one local reward model behind every peer's wire protocol at once.

Routes (registered from ``protocols.MODULES``; each lives beside its codec and is parse ->
the scorer a trainer uses -> format):

- ``POST /v1/chat/completions``  NIM (``openai.OpenAI(base_url=.../v1)`` works)
- ``POST /get_reward``           OpenRLHF (``query`` scored as rendered text, or with
                                 ``--policy-tokenizer`` re-rendered with the reward model's template)
- ``POST /classify``, ``/pooling``  vLLM pooling server
- ``POST /v2/models/<model>/infer`` + KServe v2 health/metadata: NeMo-Aligner's Triton server
- ``POST /v1/score``             rewardbridge's own protocol
- ``GET /health`` (alive), ``/ready`` (model loaded), ``/metrics`` (Prometheus text)

Concurrent requests share scoring rounds (``batcher.py``: up to ``--max-batch-size``
conversations and ``--max-batch-chars`` characters, taken fairly from the waiting requests,
waiting at most ``--max-wait-ms`` for company); each request gets back exactly its own rows,
and only the request whose rows fail sees the error. Under ``torchrun`` with ``zero3=true``, rank 0
serves HTTP and broadcasts each batch; every rank scores it in lockstep (``served.py``).
"""

from .app import create_app, serve
from .batcher import Batcher
from .served import ServedModel
from .settings import ServerSettings

__all__ = ["Batcher", "ServedModel", "ServerSettings", "create_app", "serve"]
