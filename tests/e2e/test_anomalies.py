"""Anomaly detection on the running pipeline: steady multi-tenant demo traffic raises no anomaly;
one tenant's prompt version tripling its prompts is detected within 60 s and explained, and pages
once while it lasts."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal

import pytest

from tests.e2e.conftest import Pipeline, running_pipeline
from tests.support import REPO

pytestmark = pytest.mark.slow

BASELINE_S = 75
# Small buckets so a baseline forms in a test's time; production defaults are minutes.
ANOMALY = {
    "bucket_s": 5,
    "window_s": 10,
    "baseline_buckets": 12,
    "min_baseline_buckets": 4,
    "min_requests": 4,
    "min_spend_usd": "0.0001",
    "recover_after_s": 30,
}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    tmp = tmp_path_factory.mktemp("anomalies")
    with running_pipeline(tmp, [], {"anomaly.yaml": ANOMALY}) as pipeline:
        yield pipeline


def anomalies(pipeline: Pipeline) -> list[dict[str, object]]:
    body = pipeline.http.get(f"{pipeline.api}/api/alerts?kind=anomaly", timeout=10).json()
    alerts: list[dict[str, object]] = body["alerts"]
    return alerts


def test_a_prompt_version_tripling_its_prompts_is_detected_and_explained(
    pipeline: Pipeline,
) -> None:
    traffic = subprocess.Popen(
        [sys.executable, "-m", "tokenops", "demo-traffic", "--rate", "15",
         "--spike-after", str(BASELINE_S), "--spike-tenant", "acme",
         "--spike-prompt-version", "search-v2", "--spike-factor", "3"],
        env=pipeline.env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(BASELINE_S - 2)
        raised = anomalies(pipeline)
        assert raised == [], f"steady demo traffic raised an anomaly: {raised}"
        spike_at = time.monotonic() + 2
        found: list[dict[str, object]] = []
        while not found and time.monotonic() < spike_at + 75:
            found = [a for a in anomalies(pipeline) if a["state"] == "WARN"]
            time.sleep(1)
        detected_after_s = time.monotonic() - spike_at
        # the spike goes on for as long again as the baseline: still the one page
        time.sleep(max(0.0, spike_at + BASELINE_S - time.monotonic()))
        pages = [a for a in anomalies(pipeline) if a["state"] == "WARN"]
    finally:
        traffic.terminate()
        traffic.wait(10)
    assert found, "the spike was not detected"
    print(f"spike detected and queryable after {detected_after_s:.1f} s")
    assert detected_after_s <= 60
    assert pages == found, pages  # one page for the cause, not a flood
    assert len(found) == 1, found
    alert = found[0]
    assert alert["tenant"] == "acme"
    assert alert["scope"] == {"tenant": "acme", "feature": "search", "prompt_version": "search-v2"}
    explanation = alert["explanation"]
    assert isinstance(explanation, dict)
    assert explanation["anomaly"] == "context_bloat"
    # the signal that paged names input tokens per request, and only them
    [bloat] = [s for s in explanation["signals"] if s["anomaly"] == "context_bloat"]
    assert [c["class"] for c in bloat["classes"]] == ["input"]
    assert Decimal(bloat["classes"][0]["ratio"]) >= Decimal("1.5")
    before = explanation["baseline"]["tokens_per_request"]
    now = explanation["current"]["tokens_per_request"]
    assert Decimal(now["input_uncached"]) >= Decimal("1.5") * Decimal(before["input_uncached"])
    # In USD the input part is an increase. It need not be the largest part: in a window of a
    # dozen calls, output lengths vary by chance and output tokens cost 4-5x input tokens.
    parts = explanation["decomposition"]
    by_class = parts["tokens_per_request"]
    assert Decimal(by_class["input_uncached"]) > 0
    # and the message's cause is the signal's: an input class, whatever class cost most
    cause = alert["message"].rsplit("; ", 1)[1]
    input_classes = "input uncached|cache read|cache write|cache write 1h"
    assert re.match(rf"of which ({input_classes}) tokens per request", cause), alert["message"]
    total = Decimal(explanation["cost_change_usd_per_min"])
    summed = sum(
        (Decimal(v) for k, v in parts.items() if k != "tokens_per_request"), Decimal(0)
    ) + sum((Decimal(v) for v in by_class.values()), Decimal(0))
    assert summed == total
