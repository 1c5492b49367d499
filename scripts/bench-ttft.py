#!/usr/bin/env python3
"""Time to first token of a swapped-in generative function against its swap time.

Two generative functions share a device whose weight pool holds only one of them, so a
request to the one not resident swaps it in (evicting the other). For each round this asks
A (cold: swapped in), then A again (warm: resident), then B (cold), B (warm), over the
generation WebSocket, and reports medians of the server's own timings: swap_ms, first_token_ms
(from arrival) and total_ms, cold and warm.

    scripts/bench-ttft.py --url http://127.0.0.1:8080 --functions g1,g2 --rounds 10

Needs `pip install websockets`. Prints a JSON summary and a Markdown table row.
"""

import argparse
import asyncio
import json
import statistics


async def one(url, function, request):
    import websockets

    ws_url = url.replace("http://", "ws://", 1) + f"/api/v1/functions/{function}/ws"
    async with websockets.connect(ws_url, max_size=None) as ws:
        await ws.send(json.dumps(request))
        tokens = 0
        while True:
            m = json.loads(await ws.recv())
            if m["type"] == "token":
                tokens += 1
            elif m["type"] == "done":
                return {**m["timings"], "tokens": tokens, "swap_source": m["swap_source"]}
            else:
                raise SystemExit(f"{function}: {m}")


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--functions", default="g1,g2")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=16)
    a = p.parse_args()
    functions = a.functions.split(",")
    request = {
        "input_ids": [(17 * i + 5) % 50000 for i in range(a.prompt_len)],
        "max_new_tokens": a.new_tokens,
        "ignore_eos": True,
    }
    cold, warm = [], []
    # One untimed pass so that both functions have run once.
    for f in functions:
        await one(a.url, f, request)
    for _ in range(a.rounds):
        for f in functions:
            c = await one(a.url, f, request)
            w = await one(a.url, f, request)
            if c["swap_source"] is None or w["swap_source"] is not None:
                raise SystemExit(f"expected a swap then a resident run: {c} {w}")
            cold.append(c)
            warm.append(w)
    med = lambda xs, k: statistics.median(x[k] for x in xs)  # noqa: E731
    summary = {
        "rounds": a.rounds,
        "prompt_len": a.prompt_len,
        "new_tokens": a.new_tokens,
        "cold_swap_ms": med(cold, "swap_ms"),
        "cold_first_token_ms": med(cold, "first_token_ms"),
        "cold_total_ms": med(cold, "total_ms"),
        "warm_first_token_ms": med(warm, "first_token_ms"),
        "warm_total_ms": med(warm, "total_ms"),
    }
    s = summary
    s["cold_ttft_over_swap"] = s["cold_first_token_ms"] / s["cold_swap_ms"]
    s["cold_ttft_over_swap_plus_warm_ttft"] = s["cold_first_token_ms"] / (s["cold_swap_ms"] + s["warm_first_token_ms"])
    print(json.dumps(summary, indent=2))
    print(
        f"| {s['cold_swap_ms']:.1f} | {s['cold_first_token_ms']:.1f} | {s['warm_first_token_ms']:.1f} "
        f"| {s['cold_swap_ms'] + s['warm_first_token_ms']:.1f} | {s['cold_ttft_over_swap']:.2f} "
        f"| {s['cold_total_ms']:.1f} | {s['warm_total_ms']:.1f} |"
    )


asyncio.run(main())
