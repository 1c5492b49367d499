"""PyTorch side of scripts/bench-cpu-minilm.sh: sentence-transformers on the CPU.

Prints one JSON object with the same fields as `faaswap profile`: per batch size, the mean,
median and p90 latency of `model.encode` (tokenize, forward, pool, normalise) and items/s.
"""
import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

from bench_timing import measure, texts  # noqa: E402


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
    model = SentenceTransformer(a.model, device="cpu")
    model.eval()

    def encode(batch):
        with torch.inference_mode():
            model.encode(batch, batch_size=len(batch), normalize_embeddings=False)

    results = measure(encode, texts(a), a.batch_sizes, a.iters, a.warmup)
    print(json.dumps({
        "torch": torch.__version__, "threads": torch.get_num_threads(), "results": results,
    }))


if __name__ == "__main__":
    main()
