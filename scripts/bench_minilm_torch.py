"""PyTorch side of scripts/bench-cpu-minilm.sh: sentence-transformers on the CPU.

Prints one JSON object with the same fields as `faaswap profile`: per batch size, the mean,
median and p90 latency of `model.encode` (tokenize, forward, pool, normalise) and items/s.
"""
import argparse
import json
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--batch-sizes", default="1,32")
    p.add_argument("--text", action="append", default=[])
    p.add_argument("--texts-file")
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    texts = list(a.text)
    if a.texts_file:
        texts += [l.strip() for l in open(a.texts_file) if l.strip()]
    model = SentenceTransformer(a.model, device="cpu")
    model.eval()
    results = []
    for b in [int(x) for x in a.batch_sizes.split(",")]:
        batch = [texts[i % len(texts)] for i in range(b)]
        with torch.inference_mode():
            for _ in range(a.warmup):
                model.encode(batch, batch_size=b, normalize_embeddings=False)
            ms = []
            for _ in range(a.iters):
                t = time.perf_counter()
                model.encode(batch, batch_size=b, normalize_embeddings=False)
                ms.append((time.perf_counter() - t) * 1e3)
        mean = statistics.fmean(ms)
        ms.sort()
        results.append({
            "batch": b, "iters": a.iters, "mean_ms": mean,
            "p50_ms": ms[round((len(ms) - 1) * 0.5)], "p90_ms": ms[round((len(ms) - 1) * 0.9)],
            "min_ms": ms[0], "items_per_s": b / (mean / 1e3),
        })
    print(json.dumps({
        "torch": torch.__version__, "threads": torch.get_num_threads(), "results": results,
    }))


if __name__ == "__main__":
    main()
