"""Connection options shared by every Kafka client we build (producer, consumer, admin)."""

from __future__ import annotations

from typing import Any

from aiokafka.helpers import create_ssl_context

from domain.config import KafkaConfig


def connection_options(cfg: KafkaConfig, *, client_id: str) -> dict[str, Any]:
    """``bootstrap_servers``, ``client_id`` and, with ``tls_enabled``, an SSL context built from the
    configured CA/certificate/key files: keyword arguments for any aiokafka client."""
    options: dict[str, Any] = {"bootstrap_servers": cfg.bootstrap_servers, "client_id": client_id}
    if cfg.tls_enabled:
        options["security_protocol"] = "SSL"
        options["ssl_context"] = create_ssl_context(
            cafile=cfg.tls_ca_file or None,
            certfile=cfg.tls_cert_file or None,
            keyfile=cfg.tls_key_file or None,
        )
    return options
