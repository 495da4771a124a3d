"""``rewardbridge serve`` flags, validated once."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError


@dataclass
class ServerSettings:
    """``rewardbridge serve`` flags (see ``rewardbridge serve --help``)."""

    host: str = "127.0.0.1"
    port: int = 8000
    max_batch_size: int = 64
    max_wait_ms: float = 5.0
    api_key_env: str = "REWARDBRIDGE_API_KEY"
    policy_tokenizer: str | None = None
    max_body_bytes: int = 16 * 2**20
    # --max-body-bytes-in-flight: bodies being read or held, over all connections (16 full bodies by default)
    max_body_bytes_in_flight: int = 256 * 2**20
    max_conversations: int = 1024
    max_chars: int = 200_000
    model_name: str = "reward_model"
    graceful_timeout_s: float = 30.0  # --graceful-timeout: SIGTERM waits this long for requests in flight
    max_batch_chars: int = 256 * 1024  # --max-batch-chars: characters per scheduling round (a proxy for tokens)
    read_timeout_s: float = 30.0  # --read-timeout: for a request's headers, then again for its body

    def __post_init__(self):
        for flag, value in (("--max-batch-size", self.max_batch_size), ("--max-body-bytes", self.max_body_bytes),
                            ("--max-body-bytes-in-flight", self.max_body_bytes_in_flight),
                            ("--max-conversations", self.max_conversations), ("--max-chars", self.max_chars),
                            ("--max-batch-chars", self.max_batch_chars)):
            if value < 1:
                raise ConfigError(f"{flag} must be at least 1, got {value}")
        if self.max_wait_ms < 0:
            raise ConfigError(f"--max-wait-ms must be >= 0, got {self.max_wait_ms}")
        if not self.read_timeout_s > 0:
            raise ConfigError(f"--read-timeout must be more than 0 seconds, got {self.read_timeout_s}")
        if self.graceful_timeout_s < 0:
            raise ConfigError(f"--graceful-timeout must be 0 or more seconds, got {self.graceful_timeout_s}")
        if not 0 < self.port < 65536:
            raise ConfigError(f"--port must be 1-65535, got {self.port}")
