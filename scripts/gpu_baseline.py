#!/usr/bin/env python3
"""PyTorch baselines for scripts/gpu-check.sh, and the merged table.

  gpu_baseline.py --json OUT.json --model DIR [--model DIR ...]   measure PyTorch
  gpu_baseline.py --table FAASWAP.json TORCH.json                 print the comparison

Per model (batch 1, 128 tokens, in the package's dtype — FP32 with TF32 off, or BF16 for
packages stored in BF16): the raw pinned copy of all weights, the usual cold start
(`model.to("cuda")` from pageable memory + first forward), the warm eager forward, and the warm
forward captured in a CUDA graph. Decoders (GPT2LMHeadModel, AutoModelForCausalLM for the Llama
family) compute the last position's logits only (`logits_to_keep=1`), as faaswap's device-check
times them by default (`--logits last`: the time to a first token); BERT runs BertModel, or
BertForQuestionAnswering for a QA package.
"""
import argparse
import json
import os
import statistics
import sys
import time


def stored_dtype(d):
    """The dtype of the first tensor of DIR/model.safetensors (its header, read directly)."""
    with open(os.path.join(d, "model.safetensors"), "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    return next(v["dtype"] for k, v in header.items() if k != "__metadata__")


def measure(dirs, seq_len=128, iters=20):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, BertForQuestionAnswering, BertModel, GPT2LMHeadModel

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device("cuda")
    out = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "models": []}

    def timed(fn):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        return (time.perf_counter() - t0) * 1e3

    for d in dirs:
        cfg = AutoConfig.from_pretrained(d)
        dtype = torch.bfloat16 if stored_dtype(d) == "BF16" else torch.float32
        decoder = cfg.model_type in ("gpt2", "llama", "mistral", "qwen2", "qwen3")
        if cfg.model_type == "gpt2":
            model = GPT2LMHeadModel.from_pretrained(d, attn_implementation="eager")
        elif cfg.model_type in ("llama", "mistral", "qwen2", "qwen3"):
            model = AutoModelForCausalLM.from_pretrained(d, attn_implementation="eager")
        elif (cfg.architectures or [""])[0] == "BertForQuestionAnswering":
            model = BertForQuestionAnswering.from_pretrained(d, attn_implementation="eager")
        else:
            # No pooler: faaswap's packages carry none, so both sides move the same weights.
            model = BertModel.from_pretrained(d, attn_implementation="eager", add_pooling_layer=False)
        model = model.to(dtype).eval()
        if decoder:
            # The last position's logits only, as faaswap's device-check times a decoder.
            def run(ids, model=model):
                return model(ids, logits_to_keep=1, use_cache=False)
        else:
            run = model
        vocab = cfg.vocab_size
        ids = torch.tensor([[(t * 31 + 1) % vocab for t in range(seq_len)]])
        nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
        # Raw pinned copy of the same bytes.
        flat = torch.empty(nbytes // 4, dtype=torch.float32).pin_memory()
        gpu_flat = torch.empty_like(flat, device=dev)
        raw = statistics.median(timed(lambda: gpu_flat.copy_(flat, non_blocking=True)) for _ in range(5))
        del gpu_flat, flat
        colds = []
        with torch.inference_mode():
            for _ in range(3):
                model.to("cpu")
                torch.cuda.empty_cache()

                def cold():
                    model.to(dev)
                    run(ids.to(dev))

                colds.append(timed(cold))
            x = ids.to(dev)
            for _ in range(3):
                run(x)
            warm = statistics.median(timed(lambda: run(x)) for _ in range(iters))
            # The same with the output read back to the host, as faaswap's figures include.
            first = (lambda o: o[0])  # logits, start_logits or last_hidden_state
            warm_host = statistics.median(timed(lambda: first(run(x)).cpu()) for _ in range(iters))
            # CUDA graph of the forward with a static input.
            # BERT's mask helper copies a CPU scalar, which graph capture refuses: the graph
            # runs embeddings + encoder with no mask (the same result for unpadded input).
            if decoder:
                fwd = run
            else:
                def fwd(ids):
                    return model.encoder(model.embeddings(input_ids=ids))
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(3):
                    fwd(x)
            torch.cuda.current_stream().wait_stream(s)
            g = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(g):
                    fwd(x)
                for _ in range(3):
                    g.replay()
                graphed = statistics.median(timed(g.replay) for _ in range(iters))
            except RuntimeError as e:
                print(f"   graph capture failed: {str(e)[:200]}", file=sys.stderr)
                graphed = float("nan")
        out["models"].append({
            "model": d.rstrip("/").split("/")[-1],
            "weight_bytes": nbytes,
            "raw_pinned_copy_ms": raw,
            "cold_to_cuda_forward_ms": statistics.median(colds),
            "warm_eager_ms": warm,
            "warm_eager_to_host_ms": warm_host,
            "warm_graph_ms": graphed,
        })
        print(f"   {out['models'][-1]}", file=sys.stderr)
        del model, g
        torch.cuda.empty_cache()
    return out


def table(faaswap_path, torch_path):
    f = json.load(open(faaswap_path))
    t = {m["model"]: m for m in json.load(open(torch_path))["models"]}
    tdev = json.load(open(torch_path)).get("device", "?")
    print(f"GPU: {tdev}; {f['device']}; batch {f['batch']}, {f['seq_len']} tokens, FP32 (TF32 off)")
    bad = [c for c in f.get("fixtures", []) if not c["ok"]]
    print(f"fixture checks: {len(f.get('fixtures', [])) - len(bad)}/{len(f.get('fixtures', []))} within tolerance")
    print()
    print("| model | MB | raw pinned copy ms (faaswap / torch) | faaswap swap ms | swap rate / raw | "
          "faaswap warm ms | torch eager ms (+ output to host) | torch graph ms | faaswap cold ms | cold / max(raw, warm) | "
          "torch .to+fwd ms | max abs diff vs CPU |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for m in f["models"]:
        p = t.get(m["model"], {})
        raw = m.get("raw_copy_ms") or float("nan")
        bound = max(raw, m["warm_ms"])
        print(f"| {m['model']} | {m['weight_bytes'] / 1e6:.0f} | {raw:.2f} / {p.get('raw_pinned_copy_ms', float('nan')):.2f} "
              f"| {m['swap_ms']:.2f} | {raw / m['swap_ms']:.3f} | {m['warm_ms']:.2f} | {p.get('warm_eager_ms', float('nan')):.2f} ({p.get('warm_eager_to_host_ms', float('nan')):.2f}) "
              f"| {p.get('warm_graph_ms', float('nan')):.2f} | {m['cold_ms']:.2f} | {m['cold_ms'] / bound:.3f} "
              f"| {p.get('cold_to_cuda_forward_ms', float('nan')):.1f} | {m['max_abs_diff_vs_cpu']:.2e} |")
    serve = os.path.join(os.path.dirname(faaswap_path), "serve.json")
    if os.path.exists(serve):
        r = json.load(open(serve))
        ok = [c for c in r["checks"] if c["ok"] is True]
        failed = [c["check"] for c in r["checks"] if c["ok"] is False]
        skipped = [c["check"] for c in r["checks"] if c["ok"] is None]
        print()
        print(f"server checks (faaswap serve on {r['devices']}): {len(ok)} passed, {len(failed)} failed {failed}, "
              f"{len(skipped)} skipped {skipped}")
        for n, m in r.get("latency_ms", {}).items():
            srv = m.get("first_server") or {}
            print(f"- {n}: first request {m['first_http']:.1f} ms over HTTP (server: swap {srv.get('swap_ms', 0):.2f} ms, "
                  f"total {srv.get('total_ms', 0):.2f} ms), later ones {m['warm_http_median']:.1f} ms")
        for n, b in r.get("bench", {}).items():
            if "throughput_rps" in b:
                print(f"- faaswap bench {n}, 16 clients, 16 tokens: {b['throughput_rps']:.0f} requests/s, "
                      f"p50 {b['p50_ms']:.2f} ms, p99 {b['p99_ms']:.2f} ms")
    print()
    print("targets: swap rate / raw >= 0.95; cold / max(raw, warm) <= 1.05; faaswap warm <= torch eager "
          "(stretch: torch graph); max abs diff within 1e-4 of the CPU engine (relative to output scale).")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", action="append", default=[])
    ap.add_argument("--json")
    ap.add_argument("--table", nargs=2, metavar=("FAASWAP_JSON", "TORCH_JSON"))
    a = ap.parse_args()
    if a.table:
        table(*a.table)
        return
    result = measure(a.model)
    with open(a.json, "w") as fh:
        json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
