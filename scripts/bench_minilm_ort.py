"""onnxruntime side of scripts/bench-cpu-minilm.sh: all-MiniLM-L6-v2 as CPU serving runs it.

Builds the model's ONNX graph (opset 17: Gather embeddings, LayerNormalization, MatMul + Add
projections, multi-head attention as MatMul / Softmax over [batch, heads, seq, head_dim],
exact GELU through Erf) from its `model.safetensors` with the `onnx` package — no PyTorch
needed — and checks it against the sentence embeddings of `minilm_sample.json` when that file
is given. Then times, per batch size, tokenize + run + mean-pool + normalise, as
sentence-transformers' `encode` does, with onnxruntime at ORT_ENABLE_ALL and the given intra-op
threads. Prints one JSON object with the same fields as `faaswap profile`.
"""
import argparse
import json
import os
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from bench_timing import measure, texts


def build_graph(model_dir, path):
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    w = load_file(os.path.join(model_dir, "model.safetensors"))
    h, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    d = h // heads
    eps = cfg.get("layer_norm_eps", 1e-12)
    inits, nodes = [], []

    def init(name, arr):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def node(op, ins, outs=None, **kw):
        outs = outs or [f"{op}_{len(nodes)}"]
        nodes.append(helper.make_node(op, ins, outs, **kw))
        return outs[0]

    def linear(x, prefix):
        wt = init(prefix + ".weight.T", w[prefix + ".weight"].T)
        return node("Add", [node("MatMul", [x, wt]), init(prefix + ".bias", w[prefix + ".bias"])])

    def layer_norm(x, prefix):
        g, b = init(prefix + ".weight", w[prefix + ".weight"]), init(prefix + ".bias", w[prefix + ".bias"])
        return node("LayerNormalization", [x, g, b], axis=-1, epsilon=eps)

    shape_bshd = init("shape_bshd", np.array([0, 0, heads, d], dtype=np.int64))
    shape_bsh = init("shape_bsh", np.array([0, 0, h], dtype=np.int64))
    scale = init("scale", np.array(1.0 / np.sqrt(d), dtype=np.float32))
    one = init("one", np.array(1.0, dtype=np.float32))
    neg = init("neg", np.array(-1e9, dtype=np.float32))
    half = init("half", np.array(0.5, dtype=np.float32))
    sqrt2 = init("sqrt2", np.array(np.sqrt(2.0), dtype=np.float32))

    # Embeddings: word + position (0..seq-1) + token type 0.
    x = node("Gather", [init("word", w["embeddings.word_embeddings.weight"]), "input_ids"])
    # The first `seq` rows of the position table (a 1-D slice of the input's shape gives `seq`).
    i0, i1, i2 = (init(f"c{v}", np.array([v], dtype=np.int64)) for v in (0, 1, 2))
    seq = node("Slice", [node("Shape", ["input_ids"]), i1, i2])
    pos = node("Slice", [init("pos", w["embeddings.position_embeddings.weight"]), i0, seq, i0])
    x = node("Add", [x, pos])
    x = node("Add", [x, init("type0", w["embeddings.token_type_embeddings.weight"][0])])
    x = layer_norm(x, "embeddings.LayerNorm")
    # Additive mask [batch, 1, 1, seq]: 0 where attended, -1e9 at padding.
    maskf = node("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    bias = node("Mul", [node("Sub", [one, maskf]), neg])
    bias = node("Unsqueeze", [bias, init("axes12", np.array([1, 2], dtype=np.int64))])

    def split_heads(t):
        return node("Transpose", [node("Reshape", [t, shape_bshd])], perm=[0, 2, 1, 3])

    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        q = split_heads(linear(x, p + "attention.self.query"))
        k = split_heads(linear(x, p + "attention.self.key"))
        v = split_heads(linear(x, p + "attention.self.value"))
        scores = node("Mul", [node("MatMul", [q, node("Transpose", [k], perm=[0, 1, 3, 2])]), scale])
        probs = node("Softmax", [node("Add", [scores, bias])], axis=-1)
        ctx = node("Reshape", [node("Transpose", [node("MatMul", [probs, v])], perm=[0, 2, 1, 3]), shape_bsh])
        x = layer_norm(node("Add", [linear(ctx, p + "attention.output.dense"), x]), p + "attention.output.LayerNorm")
        inner = linear(x, p + "intermediate.dense")
        gelu = node("Mul", [node("Mul", [inner, half]), node("Add", [node("Erf", [node("Div", [inner, sqrt2])]), one])])
        x = layer_norm(node("Add", [linear(gelu, p + "output.dense"), x]), p + "output.LayerNorm")
    nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"]))
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])
    out = helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "seq", h])
    graph = helper.make_graph(nodes, "minilm", [ids, mask], [out], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, path)


class Encoder:
    def __init__(self, model_dir, onnx_path, threads):
        st = json.load(open(os.path.join(model_dir, "sentence_bert_config.json")))
        self.tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
        self.tok.enable_truncation(st["max_seq_length"])
        self.tok.enable_padding(pad_id=0, pad_token="[PAD]")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.sess = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])

    def encode(self, texts):
        enc = self.tok.encode_batch(texts)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        (hidden,) = self.sess.run(None, {"input_ids": ids, "attention_mask": mask})
        m = mask[..., None].astype(np.float32)
        pooled = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--onnx", required=True, help="where the built graph is kept")
    p.add_argument("--check", help="minilm_sample.json to check the graph against")
    p.add_argument("--batch-sizes", default="1,32")
    p.add_argument("--text", action="append", default=[])
    p.add_argument("--texts-file")
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    a = p.parse_args()
    if not os.path.exists(a.onnx):
        build_graph(a.model, a.onnx)
    enc = Encoder(a.model, a.onnx, a.threads)
    check = None
    if a.check:
        sample = json.load(open(a.check))
        got = enc.encode([s["text"] for s in sample["sentences"]])
        want = np.array([s["embedding"] for s in sample["sentences"]], dtype=np.float32)
        check = {"min_cosine": float((got * want).sum(1).min()), "max_abs": float(np.abs(got - want).max())}
        if check["min_cosine"] < 0.9999:
            raise SystemExit(f"the ONNX graph does not reproduce the sample embeddings: {check}")
    results = measure(enc.encode, texts(a), a.batch_sizes, a.iters, a.warmup)
    print(json.dumps({"onnxruntime": ort.__version__, "threads": a.threads, "check": check, "results": results}))


if __name__ == "__main__":
    main()
