"""Continuous sample traffic from the demo tenants, through the relay, for `tokenops up --demo`."""

from __future__ import annotations

import itertools
import random
import time
from dataclasses import dataclass

import httpx

from tokenops.settings import Settings

TENANTS = {"acme": "sk-acme-demo", "globex": "sk-globex-demo", "initech": "sk-initech-demo"}
FEATURES = {
    "search": ["search-v1", "search-v2"],
    "support-chat": ["support-v3"],
    "summarize": ["sum-v1", "sum-v2"],
}
MODELS = ["gpt-4o-mini", "gpt-4o", "deepseek-chat", "claude-3-5-sonnet", "kimi-k2", "glm-4.5"]
TOPICS = ["refund policy", "quarterly report", "shipping delay", "password reset", "pricing"]


@dataclass(frozen=True)
class Spike:
    """From `after_s` seconds on, one tenant's prompt version sends `factor` times the prompt
    (a context-bloat incident, to see the anomaly detector explain it)."""

    after_s: float
    tenant: str
    prompt_version: str
    factor: int = 3


def run(settings: Settings, *, rate: float, count: int, spike: Spike | None = None) -> None:
    url = f"http://{settings.relay_host}:{settings.relay_port}/v1/chat/completions"
    rng = random.Random(7)
    interval = 1.0 / rate
    began = time.monotonic()
    with httpx.Client(timeout=30.0) as client:
        for sent in itertools.count(1):
            started = time.monotonic()
            tenant = rng.choice(list(TENANTS))
            feature = rng.choice(list(FEATURES))
            version = rng.choice(FEATURES[feature])
            repeat = 20
            if (
                spike is not None
                and started - began >= spike.after_s
                and (tenant, version) == (spike.tenant, spike.prompt_version)
            ):
                repeat *= spike.factor
            body = {
                "model": rng.choice(MODELS),
                "messages": [
                    {"role": "system", "content": f"You help {tenant} with {feature}."},
                    {"role": "user", "content": f"Tell me about {rng.choice(TOPICS)}. " * repeat},
                ],
                "max_tokens": rng.choice([64, 128, 256]),
                "stream": rng.random() < 0.3,
            }
            headers = {
                "authorization": f"Bearer {TENANTS[tenant]}",
                "x-feature": feature,
                "x-prompt-version": version,
            }
            try:
                client.post(url, json=body, headers=headers).read()
            except httpx.HTTPError as exc:
                print(f"demo-traffic: {type(exc).__name__}: {exc}", flush=True)
            if count and sent >= count:
                return
            time.sleep(max(0.0, interval - (time.monotonic() - started)))
