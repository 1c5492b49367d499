"""What the Python sides of scripts/bench-cpu-minilm.sh share: the texts they are given, and
timing an encode function per batch size with the fields `faaswap profile` prints."""
import statistics
import time


def texts(args):
    """`--text` values, then the lines of `--texts-file`."""
    out = list(args.text)
    if args.texts_file:
        out += [l.strip() for l in open(args.texts_file) if l.strip()]
    return out


def measure(encode, texts, batch_sizes, iters, warmup):
    """Per batch size (texts cycled to fill it): mean, median, p90 and min ms, and items/s."""
    results = []
    for b in [int(x) for x in batch_sizes.split(",")]:
        batch = [texts[i % len(texts)] for i in range(b)]
        for _ in range(warmup):
            encode(batch)
        ms = []
        for _ in range(iters):
            t = time.perf_counter()
            encode(batch)
            ms.append((time.perf_counter() - t) * 1e3)
        mean = statistics.fmean(ms)
        ms.sort()
        results.append({
            "batch": b, "iters": iters, "mean_ms": mean,
            "p50_ms": ms[round((len(ms) - 1) * 0.5)], "p90_ms": ms[round((len(ms) - 1) * 0.9)],
            "min_ms": ms[0], "items_per_s": b / (mean / 1e3),
        })
    return results
