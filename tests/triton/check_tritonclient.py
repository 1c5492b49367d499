"""Triton's Python HTTP client (tritonclient[http]), unmodified, against a running faaswap.

    python check_tritonclient.py URL FIXTURES_DIR

Run by the Rust test `triton::tritonclient_speaks_to_faaswap`, which starts the server with a
model repository holding `tiny_bert`, `tiny_gpt2`, `tiny_bert_cls` and `tiny_bert_qa`. Exits non-zero on the first mismatch.
"""
import json
import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException


def check(cond, what):
    if not cond:
        raise SystemExit(f"tritonclient check failed: {what}")


def main():
    url, fixtures = sys.argv[1], sys.argv[2]
    host = url.removeprefix("http://")
    client = httpclient.InferenceServerClient(url=host)

    check(client.is_server_live(), "server live")
    check(client.is_server_ready(), "server ready")
    meta = client.get_server_metadata()
    check(meta["name"] == "faaswap", f"server metadata {meta}")

    index = client.get_model_repository_index()
    check({m["name"] for m in index} >= {"tiny_bert", "tiny_gpt2"}, f"repository index {index}")

    # Nothing deploys on first use: infer on an unloaded model is an error.
    ids = np.array([[1, 2, 3]], dtype=np.int64)
    inp = httpclient.InferInput("input_ids", list(ids.shape), "INT64")
    inp.set_data_from_numpy(ids)
    try:
        client.infer("tiny_bert", [inp])
        raise SystemExit("infer on an unloaded model should fail")
    except InferenceServerException as e:
        check("not deployed" in str(e), f"unloaded error: {e}")

    client.load_model("tiny_bert")
    client.load_model("tiny_gpt2", config=json.dumps({"slo_ms": 200.0}))
    check(client.is_model_ready("tiny_bert"), "tiny_bert ready")
    meta = client.get_model_metadata("tiny_bert")
    check(any(i["name"] == "input_ids" for i in meta["inputs"]), f"model metadata {meta}")

    ref = json.load(open(f"{fixtures}/tiny_bert/reference.json"))
    for case in ref["cases"]:
        ids = np.array([case["input_ids"]], dtype=np.int64)
        want = np.array(case["last_hidden_state"], dtype=np.float32)
        for binary in (True, False):
            inp = httpclient.InferInput("input_ids", list(ids.shape), "INT64")
            inp.set_data_from_numpy(ids, binary_data=binary)
            out = httpclient.InferRequestedOutput("last_hidden_state", binary_data=binary)
            res = client.infer("tiny_bert", [inp], outputs=[out])
            got = res.as_numpy("last_hidden_state")
            check(got.shape == (1, len(case["input_ids"]), 64), f"shape {got.shape}")
            diff = float(np.abs(got[0] - want).max())
            check(diff <= 1e-4, f"tiny_bert seq {case['seq_len']} binary={binary}: max abs diff {diff}")

    # No outputs named: the client asks for binary outputs of everything.
    gpt2 = json.load(open(f"{fixtures}/tiny_gpt2/reference.json"))
    case = gpt2["cases"][2]
    ids = np.array([case["input_ids"]], dtype=np.int64)
    inp = httpclient.InferInput("input_ids", list(ids.shape), "INT64")
    inp.set_data_from_numpy(ids)
    logits = client.infer("tiny_gpt2", [inp]).as_numpy("logits")
    check(logits.shape == (1, len(case["input_ids"]), 512), f"logits shape {logits.shape}")
    diff = float(np.abs(logits[0, -1] - np.array(case["last_position_logits"], dtype=np.float32)).max())
    check(diff <= 1e-4, f"tiny_gpt2 logits max abs diff {diff}")

    # A reranker: text pairs as BYTES tensors, binary and JSON, logits as binary.
    client.load_model("tiny_bert_cls")
    meta = client.get_model_metadata("tiny_bert_cls")
    check(any(i["name"] == "text_pair" for i in meta["inputs"]), f"text_pair in metadata {meta}")
    cls = json.load(open(f"{fixtures}/tiny_bert_cls/reference.json"))
    texts = np.array([p["text"].encode() for p in cls["pair_cases"]], dtype=np.object_)
    pairs = np.array([p["text_pair"].encode() for p in cls["pair_cases"]], dtype=np.object_)
    want = np.array([p["logits"] for p in cls["pair_cases"]], dtype=np.float32)
    for binary in (True, False):
        a = httpclient.InferInput("text", [len(texts)], "BYTES")
        a.set_data_from_numpy(texts, binary_data=binary)
        b = httpclient.InferInput("text_pair", [len(pairs)], "BYTES")
        b.set_data_from_numpy(pairs, binary_data=binary)
        got = client.infer("tiny_bert_cls", [a, b]).as_numpy("logits")
        check(got.shape == want.shape, f"reranker logits shape {got.shape}")
        diff = float(np.abs(got - want).max())
        check(diff <= 1e-4, f"tiny_bert_cls pairs binary={binary}: max abs diff {diff}")

    # Question answering: both logits when none are named.
    client.load_model("tiny_bert_qa")
    qa = json.load(open(f"{fixtures}/tiny_bert_qa/reference.json"))
    case = qa["cases"][3]
    ids = np.array([case["input_ids"]], dtype=np.int64)
    types = np.array([case["token_type_ids"]], dtype=np.int64)
    a = httpclient.InferInput("input_ids", list(ids.shape), "INT64")
    a.set_data_from_numpy(ids)
    b = httpclient.InferInput("token_type_ids", list(types.shape), "INT64")
    b.set_data_from_numpy(types)
    res = client.infer("tiny_bert_qa", [a, b])
    for name in ("start_logits", "end_logits"):
        got = res.as_numpy(name)
        check(got is not None and got.shape == ids.shape, f"{name} of {res.get_response()}")
        diff = float(np.abs(got[0] - np.array(case[name], dtype=np.float32)).max())
        check(diff <= 1e-4, f"tiny_bert_qa {name}: max abs diff {diff}")

    stats = client.get_inference_statistics("tiny_bert")
    count = stats["model_stats"][0]["inference_stats"]["success"]["count"]
    check(count == 2 * len(ref["cases"]), f"stats {stats}")

    client.unload_model("tiny_bert")
    check(not client.is_model_ready("tiny_bert"), "tiny_bert unloaded")
    print("tritonclient: all checks passed")


if __name__ == "__main__":
    main()
