"""Relay overhead: the simulated provider called directly vs through the relay (metering on,
events published to a real broker), with wrk as the load generator. A bare proxy on the same
server and client stack (bench/bare_proxy.py: no validation, metering or events) is measured
too: the floor under any relay built on that stack.

    python bench/relay_overhead.py [--seconds 10]

Starts its own broker, simulator and relay on free loopback ports, stops them afterwards, and
prints p50/p99 latency at concurrency 1 and throughput at concurrency 32 for each path. Needs
`wrk` (Debian package `wrk`; `make bench` installs it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tokenops.processes import children, cpu_seconds  # noqa: E402

LITELLM_KEY = "sk-bench-" + "0" * 32  # the proxy refuses to start without a master key
BODY = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Summarise our refund policy in one line."}],
    "max_tokens": 32,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait(url: str) -> None:
    for _ in range(1200):
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


PUBLISHED = "tokenops_relay_events_published_total"
SPOOL_DEPTH = "tokenops_relay_spool_depth"


def metric(relay: str, name: str) -> float:
    """A metric of the relay summed over its labels (and workers)."""
    metrics = httpx.get(f"{relay}/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.split("{")[0].split(" ")[0] == name
    )


def wrk(
    url: str, key: str | None, connections: int, seconds: int, workdir: Path
) -> dict[str, float]:
    script = workdir / "post.lua"
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(json.dumps(BODY))}"]
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    script.write_text("\n".join(lines) + "\n")
    threads = min(2, connections)
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def ms(label: str) -> float:
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)", out, re.M)
        if not match:
            return float("nan")
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "p50": ms("50"),
        "p99": ms("99"),
        "rps": rate,
        "errors": float(errors.group(1)) if errors else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1, help="relay worker processes")
    parser.add_argument(
        "--litellm",
        default=str(REPO / ".bench" / "litellm" / "bin" / "litellm"),
        help="the LiteLLM proxy executable to measure on the same simulator (skipped if absent)",
    )
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install wrk (or make bench)")
    work = Path(tempfile.mkdtemp(prefix="tokenops-bench-"))
    ports = {name: free_port() for name in ("broker", "simulator", "relay")}
    env = {
        **os.environ,
        "TOKENOPS_EMBEDDED_BROKER_PORT": str(ports["broker"]),
        "TOKENOPS_KAFKA_BOOTSTRAP": f"127.0.0.1:{ports['broker']}",
        "TOKENOPS_SIMULATOR_PORT": str(ports["simulator"]),
        "TOKENOPS_RELAY_PORT": str(ports["relay"]),
        "TOKENOPS_DATA_DIR": str(work),
        "TOKENOPS_SIMULATE": "always",
        "TOKENOPS_RELAY_WORKERS": str(args.workers),
    }
    started = []
    try:
        for service in ("broker", "simulator", "relay"):
            log = (work / f"{service}.log").open("wb")
            cmd = [sys.executable, "-m", "tokenops", service]
            if service == "broker":
                cmd += ["--port", str(ports["broker"])]
            started.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=log, cwd=REPO))
            if service == "broker":
                time.sleep(2)
        direct = f"http://127.0.0.1:{ports['simulator']}"
        relay = f"http://127.0.0.1:{ports['relay']}"
        wait(f"{direct}/healthz")
        wait(f"{relay}/healthz")
        bare_port = free_port()
        log = (work / "bare_proxy.log").open("wb")
        command = [sys.executable, "-m", "uvicorn", "--app-dir", str(REPO / "bench")]
        command += ["bare_proxy:app", "--host", "127.0.0.1", "--port", str(bare_port)]
        command += ["--loop", "uvloop", "--http", "httptools", "--no-access-log"]
        command += ["--log-level", "warning"]
        started.append(
            subprocess.Popen(
                command, env={**env, "UPSTREAM": f"{direct}/openai"}, stdout=log, stderr=log
            )
        )
        bare = f"http://127.0.0.1:{bare_port}"
        wait(f"{bare}/healthz")
        paths = [
            ("direct to simulator", direct, None),
            ("bare proxy (floor)", bare, None),
            ("through relay", relay, "sk-acme-demo"),
        ]
        if Path(args.litellm).exists():
            litellm_port = free_port()
            config = work / "litellm.yaml"
            config.write_text(
                "model_list:\n  - model_name: gpt-4o-mini\n    litellm_params:\n"
                "      model: openai/gpt-4o-mini\n"
                f"      api_base: {direct}/openai/v1\n      api_key: sk-simulated\n"
            )
            log = (work / "litellm.log").open("wb")
            command = [args.litellm, "--config", str(config), "--host", "127.0.0.1"]
            command += ["--port", str(litellm_port)]
            started.append(
                subprocess.Popen(
                    command,
                    env={**env, "LITELLM_LOG": "ERROR", "LITELLM_MASTER_KEY": LITELLM_KEY},
                    stdout=log,
                    stderr=log,
                    cwd=work,
                )
            )
            litellm = f"http://127.0.0.1:{litellm_port}"
            wait(f"{litellm}/health/liveliness")
            paths.append(("through LiteLLM proxy", litellm, LITELLM_KEY))
        else:
            print(f"LiteLLM not measured: {args.litellm} not found (make bench installs it)")
        results = {}
        relay_pid = started[2].pid  # broker, simulator, relay, then the others
        for name, base, key in paths:
            wrk(f"{base}/v1/chat/completions", key, 4, 2, work)  # warm up
            if base == relay:
                time.sleep(1.5)  # every worker's counters are refreshed once a second
                cpu = cpu_seconds([relay_pid, *children(relay_pid)])
                calls = metric(relay, PUBLISHED)
            results[name] = {
                "c1": wrk(f"{base}/v1/chat/completions", key, 1, args.seconds, work),
                "c32": wrk(f"{base}/v1/chat/completions", key, 32, args.seconds, work),
            }
            if base == relay:
                cpu = cpu_seconds([relay_pid, *children(relay_pid)]) - cpu
                time.sleep(1.5)
                calls = metric(relay, PUBLISHED) - calls
        time.sleep(1.5)  # every worker's gauges are refreshed once a second
        totals = {name: metric(relay, name) for name in (PUBLISHED, SPOOL_DEPTH)}
        header = ("path", "c1 p50 ms", "c1 p99 ms", "c1 req/s", "c32 req/s", "errors")
        print(f"{header[0]:22} " + " ".join(f"{h:>10}" for h in header[1:]))
        for name, r in results.items():
            print(
                f"{name:22} {r['c1']['p50']:>10.2f} {r['c1']['p99']:>10.2f} {r['c1']['rps']:>9.0f} "
                f"{r['c32']['rps']:>10.0f} {r['c1']['errors'] + r['c32']['errors']:>7.0f}"
            )
        d, t = results["direct to simulator"]["c1"], results["through relay"]["c1"]
        p50, p99 = t["p50"] - d["p50"], t["p99"] - d["p99"]
        print(f"added latency at c1: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
        b = results["bare proxy (floor)"]["c1"]
        print(
            f"added by the bare proxy (same server and client, nothing else): p50 "
            f"{b['p50'] - d['p50']:.2f} ms, p99 {b['p99'] - d['p99']:.2f} ms; the relay's own "
            f"work on top: p50 {t['p50'] - b['p50']:.2f} ms"
        )
        # CPU per call holds still on a busy machine, where the latencies above do not
        print(f"relay CPU per call: {cpu / calls * 1e6:.0f} us ({calls:.0f} calls)")
        if "through LiteLLM proxy" in results:
            litellm_rps = results["through LiteLLM proxy"]["c32"]["rps"]
            ratio = results["through relay"]["c32"]["rps"] / litellm_rps
            print(f"relay throughput at c32: {ratio:.1f}x the LiteLLM proxy's")
        print(
            f"relay workers: {args.workers}; events published by the relay: "
            f"{totals[PUBLISHED]:.0f} "
            f"(waiting in the spool: {totals[SPOOL_DEPTH]:.0f})"
        )
    finally:
        for process in reversed(started):
            process.terminate()
            process.wait(15)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
