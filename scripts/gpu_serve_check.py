#!/usr/bin/env python3
"""The server end to end on one device, for scripts/gpu-check.sh: starts `faaswap serve`, deploys
the fixtures and the synthetic packages over the repository API, checks the answers against the
fixtures' references over real HTTP (and the greedy generations over the WebSocket, when
`websockets` or `aiohttp` is importable), times the first and later requests of each synthetic
package, and runs `faaswap bench` closed-loop against two of them.

  gpu_serve_check.py --bin FAASWAP --devices cuda --fixtures DIR --json OUT.json PACKAGE_DIR...

Exits non-zero when a check fails (a skipped WebSocket check is not a failure).
"""
import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, binary, devices, repo, log):
        self.base = f"http://127.0.0.1:{free_port()}"
        self.state = tempfile.mkdtemp()
        self.proc = subprocess.Popen(
            [binary, "serve", "--devices", devices, "--model-repository", repo, "--state-dir", self.state,
             "--addr", self.base.removeprefix("http://")],
            stdout=log, stderr=subprocess.STDOUT)
        t0 = time.time()
        while True:
            try:
                if self.req("GET", "/v2/health/ready", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.time() - t0 > 120:
                raise SystemExit(f"the server did not come up; see {log.name}")
            time.sleep(0.2)
        self.startup_s = time.time() - t0

    def req(self, method, path, body=None, timeout=120):
        data = None if body is None else json.dumps(body).encode()
        r = urllib.request.Request(self.base + path, data=data, method=method,
                                   headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(r, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.state, ignore_errors=True)


def link_or_copy(src, dst):
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def flat(x):
    return [v for r in x for v in flat(r)] if isinstance(x, list) else [x]


def max_diff(a, b):
    return float("inf") if len(a) != len(b) else max((abs(x - y) for x, y in zip(a, b)), default=0.0)


async def ws_generate(base, function, requests):
    """Greedy generations over the WebSocket, one after another on one socket."""
    url = base.replace("http://", "ws://") + f"/api/v1/functions/{function}/ws"
    out = []
    try:
        import websockets
        async with websockets.connect(url) as ws:
            for r in requests:
                await ws.send(json.dumps(r))
                while (m := json.loads(await ws.recv()))["type"] == "token":
                    pass
                out.append(m)
        return out
    except ImportError:
        pass
    import aiohttp
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(url) as ws:
            for r in requests:
                await ws.send_str(json.dumps(r))
                while (m := json.loads((await ws.receive()).data))["type"] == "token":
                    pass
                out.append(m)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--devices", default="cuda")
    ap.add_argument("--fixtures", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("packages", nargs="*")
    a = ap.parse_args()

    repo = tempfile.mkdtemp()
    for name in ("tiny_bert", "tiny_gpt2"):
        shutil.copytree(os.path.join(a.fixtures, name), os.path.join(repo, name))
    for p in a.packages:
        # Hard links, not copies (gigabytes) nor symbolic links (the server refuses those that
        # lead out of its repository).
        shutil.copytree(p, os.path.join(repo, os.path.basename(p.rstrip("/"))), copy_function=link_or_copy)
    report = {"devices": a.devices, "checks": [], "latency_ms": {}, "bench": {}}

    def check(name, ok, **kw):
        report["checks"].append({"check": name, "ok": ok, **kw})
        word = {True: "ok  ", False: "FAIL", None: "skip"}[ok]
        print(f"   {word} {name} {json.dumps(kw)[:240]}", file=sys.stderr, flush=True)

    log = open(a.json + ".server.log", "w")
    server = Server(a.bin, a.devices, repo, log)
    try:
        report["startup_s"] = server.startup_s
        report["devices_api"] = server.req("GET", "/api/v1/devices")[1]
        names = sorted(os.listdir(repo))
        for n in names:
            t = time.time()
            st, body = server.req("POST", f"/v2/repository/models/{n}/load")
            check(f"deploy {n}", st == 200, status=st, ms=round((time.time() - t) * 1e3, 1),
                  error=None if st == 200 else body)

        for fixture, output, key, tol_key in (
                ("tiny_bert", "last_hidden_state", "last_hidden_state", "last_hidden_state_max_abs"),
                ("tiny_gpt2", "logits", "last_position_logits", "last_position_logits_max_abs")):
            ref = json.load(open(os.path.join(a.fixtures, fixture, "reference.json")))
            tol = ref["tolerance"][tol_key]
            for i, c in enumerate(ref["cases"]):
                ids = c["input_ids"]
                st, body = server.req("POST", f"/v2/models/{fixture}/infer", {
                    "inputs": [{"name": "input_ids", "shape": [1, len(ids)], "datatype": "INT64", "data": ids}],
                    "outputs": [{"name": output}]})
                d = None
                if st == 200:
                    got, want = body["outputs"][0]["data"], flat(c[key])
                    d = max_diff(got[len(got) - len(want):] if fixture == "tiny_gpt2" else got, want)
                check(f"{fixture} case {i} over HTTP", st == 200 and d <= tol, max_abs_diff=d,
                      device=(body or {}).get("parameters", {}).get("device"))

        gens = ref["generation"]
        try:
            done = asyncio.run(ws_generate(server.base, "tiny_gpt2", [
                {"input_ids": g["prompt_ids"], "max_new_tokens": len(g["new_token_ids"]), "ignore_eos": True}
                for g in gens]))
            for i, (g, m) in enumerate(zip(gens, done)):
                check(f"tiny_gpt2 generation {i} over the WebSocket", m.get("token_ids") == g["new_token_ids"],
                      got=m.get("token_ids"), device=m.get("device"))
        except ImportError:
            check("generation over the WebSocket", None, why="neither websockets nor aiohttp is installed")

        big = [n for n in names if not n.startswith("tiny_")]
        for n in big:
            cfg = json.load(open(os.path.join(repo, n, "config.json")))
            seq = min(128, cfg.get("max_position_embeddings", cfg.get("n_positions", 128)))
            ids = [(t * 31 + 1) % cfg["vocab_size"] for t in range(seq)]
            body = {"inputs": [{"name": "input_ids", "shape": [1, seq], "datatype": "INT64", "data": ids}]}
            lat, first = [], None
            for k in range(12):
                t = time.time()
                st, r = server.req("POST", f"/v2/models/{n}/infer", body)
                lat.append((time.time() - t) * 1e3)
                if k == 0:
                    first = (r or {}).get("parameters")
                    check(f"{n} first request", st == 200, parameters=first, error=None if st == 200 else r)
            warm = sorted(lat[1:])[len(lat[1:]) // 2]
            report["latency_ms"][n] = {"first_http": lat[0], "warm_http_median": warm, "first_server": first}
        for n in ["tiny_bert"] + big[:1]:
            r = subprocess.run([a.bin, "bench", "--url", server.base, "--function", n, "--requests", "1500",
                                "--warmup", "100", "--concurrency", "16", "--input-ids",
                                ",".join(str((t * 31 + 1) % 500) for t in range(16))],
                               capture_output=True, text=True, timeout=300)
            try:
                report["bench"][n] = json.loads(r.stdout)
            except json.JSONDecodeError:
                report["bench"][n] = {"error": (r.stdout + r.stderr)[-500:]}
            check(f"bench {n}", r.returncode == 0, **{k: report["bench"][n].get(k) for k in
                                                      ("throughput_rps", "p50_ms", "p99_ms", "errors")})
    finally:
        server.stop()
        shutil.rmtree(repo, ignore_errors=True)
        with open(a.json, "w") as fh:
            json.dump(report, fh, indent=1)
    failed = [c["check"] for c in report["checks"] if c["ok"] is False]
    print(f"   server checks: {sum(c['ok'] is True for c in report['checks'])} passed, "
          f"{len(failed)} failed {failed}", file=sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
