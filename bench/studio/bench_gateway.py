"""Gateway overhead, side by side: a fake OpenAI-compatible upstream alone, neocloud in front of
it, and LiteLLM's proxy in front of it, in the same run on the same machine.

What is measured, for non-streaming and streaming chat completions (8 output tokens):

* added latency: p50 / p99 of one client sending requests back to back (wrk, 1 connection),
  minus the upstream's own p50 / p99 measured the same way;
* maximum sustained throughput: requests/s with 32 concurrent connections (wrk), every answer
  checked to be a 2xx.

neocloud runs as shipped with API-key auth (a real key, looked up in SQLite), per-key rate limits
(checked and taken on every request) and metering (one usage record per request, flushed in
batches into billing's usage events). LiteLLM's proxy runs with its master key and no database:
it has no per-key limits or spend logs without PostgreSQL, so it does less work per request than
neocloud does here. Each server is one process (uvicorn, one worker); the load generator is wrk.

Targets (issue 6): our added p50 <= 1 ms; our max RPS >= 10x LiteLLM's in the same run.
Anchors: on a 2-core machine here LiteLLM added ~19 ms at p50 and topped out near 50 req/s with
32 clients, the fake upstream alone ~4,500 req/s; LiteLLM publishes 2/8/13 ms p50/p95/p99 at
~1,170 req/s on 4 instances.

Rerun:  .venv/bin/python bench/studio/bench_gateway.py [--seconds 8] [--no-litellm]
LiteLLM is installed by this script into bench/studio/.litellm-venv (once), wrk from Debian
(``apt-get install wrk``) when it is missing and this runs as root.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
LITELLM_VENV = HERE / ".litellm-venv"
MASTER_KEY = "sk-bench-litellm-master-key"
BODY = {
    "model": "bench/fake",
    "messages": [{"role": "user", "content": "Say hello to the benchmark."}],
    "max_tokens": 8,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    base: str  # .../v1
    key: str | None
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)


def start(
    name: str, argv: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log.open("w") as out:
        return subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # its own process group: stopped with everything it spawned
        )


def wait_ready(server: Server, path: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    headers = {"Authorization": f"Bearer {server.key}"} if server.key else {}
    while True:
        if server.proc.poll() is not None:
            raise SystemExit(f"{server.name} exited:\n{server.log.read_text()[-3000:]}")
        try:
            answer = httpx.post(server.base + path, json=BODY, headers=headers, timeout=5)
            if answer.status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(
                f"{server.name} not ready in {timeout_s:.0f} s:\n{server.log.read_text()[-3000:]}"
            )
        time.sleep(0.5)


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing wrk from Debian …", flush=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=False, capture_output=True)
        found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is needed as the load generator: apt-get install wrk")
    return found


def ensure_litellm() -> Path:
    exe = LITELLM_VENV / "bin" / "litellm"
    if exe.exists():
        return exe
    print("installing litellm[proxy] into bench/studio/.litellm-venv (once) …", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
    subprocess.run(
        [str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"], check=True
    )
    return exe


def litellm_version() -> str:
    out = subprocess.run(
        [
            str(LITELLM_VENV / "bin" / "python"),
            "-c",
            "import importlib.metadata as m; print(m.version('litellm'))",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() or "?"


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    requests: int
    errors: int
    cpu_ms_per_request: float = 0.0  # the server's own CPU time (all its processes) per request


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pgid: int) -> float:
    """User + system CPU time of every process in process group ``pgid`` (from /proc)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # pgrp
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICK


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if m is None:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(
    wrk_bin: str, server: Server, *, stream: bool, connections: int, seconds: float, tmp: Path
) -> Result:
    body = {**BODY, "stream": True} if stream else BODY
    script = tmp / "post.lua"
    lines = [
        'wrk.method = "POST"',
        f"wrk.body = {json.dumps(json.dumps(body))}",
        'wrk.headers["Content-Type"] = "application/json"',
    ]
    if server.key:
        lines.append(f'wrk.headers["Authorization"] = "Bearer {server.key}"')
    # wrk's --latency table stops at p99: its done() hook prints the rest (microseconds).
    lines.append(
        "done = function(summary, latency, requests) "
        'io.write(string.format("p99.9 %d\\n", latency:percentile(99.9))) end'
    )
    script.write_text("\n".join(lines) + "\n")
    cpu_before = cpu_seconds(server.proc.pid)
    out = subprocess.run(
        [
            wrk_bin,
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "--latency",
            "-s",
            str(script),
            server.base + "/chat/completions",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p999 = int(re.search(r"^p99\.9 (\d+)$", out, re.M).group(1)) / 1000  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(bad.group(1)) if bad else 0) + (sum(int(g) for g in errs.groups()) if errs else 0)
    cpu = cpu_seconds(server.proc.pid) - cpu_before
    return Result(rps, p50, p99, p999, total, errors, 1000 * cpu / max(total, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description="neocloud vs LiteLLM gateway overhead")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument("--redis", default=None, help="run neocloud with the Redis limiter")
    parser.add_argument(
        "--legacy-tail",
        action="store_true",
        help="run neocloud as before the tail fix (usage flushed in a thread, no settled heap)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    wrk_bin = ensure_wrk()
    litellm = None if args.no_litellm else ensure_litellm()
    tmp = Path(tempfile.mkdtemp(prefix="bench-studio-"))
    servers: list[Server] = []
    try:
        up_port = free_port()
        upstream = Server(
            "upstream",
            start(
                "upstream",
                [
                    sys.executable,
                    "-m",
                    "neocloud.studio.engines.fakeupstream",
                    "--port",
                    str(up_port),
                ],
                tmp / "upstream.log",
            ),
            f"http://127.0.0.1:{up_port}/v1",
            None,
            tmp / "upstream.log",
        )
        servers.append(upstream)
        wait_ready(upstream, "/chat/completions")

        nc_port = free_port()
        argv = [
            sys.executable,
            str(HERE / "serve_neocloud.py"),
            "--port",
            str(nc_port),
            "--upstream",
            upstream.base,
            "--data",
            str(tmp / "neocloud"),
        ]
        if args.redis:
            argv += ["--redis", args.redis]
        if args.legacy_tail:
            argv.append("--legacy-tail")
        nc_proc = start("neocloud", argv, tmp / "neocloud.log")
        key_file = tmp / "neocloud" / "admin-key"
        deadline = time.monotonic() + 120
        while not key_file.exists():
            if nc_proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit((tmp / "neocloud.log").read_text()[-3000:])
            time.sleep(0.2)
        neocloud = Server(
            "neocloud",
            nc_proc,
            f"http://127.0.0.1:{nc_port}/v1",
            key_file.read_text().strip(),
            tmp / "neocloud.log",
        )
        servers.append(neocloud)
        wait_ready(neocloud, "/chat/completions")

        if litellm is not None:
            ll_port = free_port()
            config = tmp / "litellm.yaml"
            config.write_text(
                "model_list:\n"
                "  - model_name: bench/fake\n"
                "    litellm_params:\n"
                "      model: openai/fake\n"
                f"      api_base: {upstream.base}\n"
                "      api_key: none\n"
                "general_settings:\n"
                f"  master_key: {MASTER_KEY}\n"
            )
            ll = Server(
                "litellm",
                start(
                    "litellm",
                    [
                        str(litellm),
                        "--config",
                        str(config),
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(ll_port),
                        "--num_workers",
                        "1",
                    ],
                    tmp / "litellm.log",
                    env={"LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False"},
                ),
                f"http://127.0.0.1:{ll_port}/v1",
                MASTER_KEY,
                tmp / "litellm.log",
            )
            servers.append(ll)
            wait_ready(ll, "/chat/completions", timeout_s=300)

        # Warm up every path (connection pools, caches, JIT-less but lazy imports).
        for s in servers:
            for stream in (False, True):
                wrk(wrk_bin, s, stream=stream, connections=4, seconds=1, tmp=tmp)

        results: dict[str, dict[str, dict[str, Result]]] = {}
        for s in servers:
            results[s.name] = {}
            for stream in (False, True):
                mode = "stream" if stream else "plain"
                one = wrk(wrk_bin, s, stream=stream, connections=1, seconds=args.seconds, tmp=tmp)
                many = wrk(
                    wrk_bin,
                    s,
                    stream=stream,
                    connections=args.connections,
                    seconds=args.seconds,
                    tmp=tmp,
                )
                results[s.name][mode] = {"latency": one, "throughput": many}
                print(
                    f"  {s.name:9} {mode:6}  1 conn: p50 {one.p50_ms:6.2f} ms"
                    f"  p99 {one.p99_ms:6.2f} ms  p99.9 {one.p999_ms:6.2f} ms"
                    f"  ({one.rps:7.0f} req/s)   {args.connections} conns: {many.rps:7.0f} req/s"
                    f"  p50 {many.p50_ms:6.1f} ms  CPU {many.cpu_ms_per_request:.2f} ms/req"
                    f"  errors {one.errors + many.errors}",
                    flush=True,
                )
    finally:
        for s in reversed(servers):
            s.stop()

    report(results, args, litellm_version() if litellm else None)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    n: {m: {k: vars(r) for k, r in v.items()} for m, v in modes.items()}
                    for n, modes in results.items()
                },
                indent=2,
            )
        )
    shutil.rmtree(tmp, ignore_errors=True)


def report(
    results: dict[str, dict[str, dict[str, Result]]],
    args: argparse.Namespace,
    ll_version: str | None,
) -> None:
    print()
    print(
        f"machine: {os.cpu_count()} cores, {platform.machine()}, Python "
        f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f} at the end"
    )
    if ll_version:
        print(f"LiteLLM {ll_version}")
    print(
        f"{'':10} {'mode':6} | {'added p50':>9} {'added p99':>9} {'p99.9':>9} | {'max req/s':>9} "
        f"| {'CPU/req':>9} | errors"
    )
    up = results["upstream"]
    for name in ("upstream", "neocloud", "litellm"):
        if name not in results:
            continue
        for mode in ("plain", "stream"):
            r = results[name][mode]
            added50 = r["latency"].p50_ms - up[mode]["latency"].p50_ms
            added99 = r["latency"].p99_ms - up[mode]["latency"].p99_ms
            added999 = r["latency"].p999_ms - up[mode]["latency"].p999_ms
            errors = r["latency"].errors + r["throughput"].errors
            print(
                f"{name:10} {mode:6} | {added50:7.2f}ms {added99:7.2f}ms {added999:7.2f}ms "
                f"| {r['throughput'].rps:9.0f} | {r['throughput'].cpu_ms_per_request:7.2f}ms "
                f"| {errors}"
            )
    print()
    for mode in ("plain", "stream"):
        nc = results["neocloud"][mode]
        added = nc["latency"].p50_ms - up[mode]["latency"].p50_ms
        verdict = "met" if added <= 1 else "MISSED"
        line = f"{mode}: neocloud added p50 {added:.2f} ms (target <= 1 ms: {verdict})"
        if "litellm" in results:
            ratio = nc["throughput"].rps / max(results["litellm"][mode]["throughput"].rps, 1e-9)
            verdict = "met" if ratio >= 10 else "MISSED"
            line += f"; max RPS {ratio:.1f}x LiteLLM's (target >= 10x: {verdict})"
        print(line)
    print(
        "anchors: LiteLLM on 2 cores here ~19 ms added p50, ~50 req/s at 32 clients; fake upstream "
        "alone ~4,500 req/s; LiteLLM published 2/8/13 ms p50/p95/p99 at ~1,170 req/s on 4 instances"
    )


if __name__ == "__main__":
    main()
