"""Checks ONNX files written by `ablate export` with an independent runtime.

For every `NAME.onnx` given, `NAME.ref.safetensors` beside it (written by `ablate export
--reference`) holds image sets `S` with `S.input` and ablate's own `S.logits`. Each file must

- pass `onnx.checker.check_model(full_check=True)` (which also infers every shape),
- carry the metadata ablate writes (model, config, ablate_version, git_commit, ...),
- give, in onnxruntime, logits within --tolerance (max abs error) of ablate's on every set,
  with the same argmax, at the full batch and at batch 1 (the batch is dynamic),
- for a trained run's `test` set covering all its test images, reproduce its deploy top-1.

`--mutate NAME.onnx` then breaks the file on purpose (the first channel shuffle's Transpose
made the identity; the first index-select's index reversed) and requires the comparison to
FAIL for each: proof that the checks above can see one wrong op.

Exit status 0 when everything holds, 1 otherwise. Prints one line per file.
"""

import argparse
import json
import struct
import sys
import tomllib

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

DTYPES = {"F32": np.float32, "U32": np.uint32, "I64": np.int64}
REQUIRED_METADATA = ["model", "config", "ablate_version", "git_commit", "weights", "input"]


def load_safetensors(path):
    """The tensors of a safetensors file (8-byte header length, JSON header, data)."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        out[name] = np.frombuffer(data[begin:end], dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
    return out


def session(model_bytes):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


def compare(model_bytes, ref, tolerance):
    """Per set: (max abs error, argmax identical). Raises nothing; the caller judges."""
    sess = session(model_bytes)
    results = {}
    for key in sorted(k for k in ref if k.endswith(".input")):
        name = key[: -len(".input")]
        x, want = ref[key], ref[name + ".logits"]
        got = sess.run(["logits"], {"input": x})[0]
        single = np.concatenate([sess.run(["logits"], {"input": x[i : i + 1]})[0] for i in range(min(len(x), 4))])
        err = max(float(np.abs(got - want).max()), float(np.abs(single - want[: len(single)]).max()))
        same = bool((got.argmax(1) == want.argmax(1)).all())
        results[name] = (err, same, got)
    return results


def ok(results, tolerance):
    return all(err <= tolerance and same for err, same, _ in results.values())


def mutations(model):
    """(what, mutated model bytes) for each deliberate break the file allows."""
    out = []
    transposes = [n for n in model.graph.node if n.op_type == "Transpose" and n.name.endswith(".shuffle.transpose")]
    if transposes:
        m = onnx.ModelProto()
        m.CopyFrom(model)
        node = next(n for n in m.graph.node if n.name == transposes[0].name)
        for a in node.attribute:
            if a.name == "perm":
                del a.ints[:]
                a.ints.extend([0, 1, 2, 3, 4])
        out.append((f"shuffle {node.name} perm -> identity", m.SerializeToString()))
    gathers = [n for n in model.graph.node if n.op_type == "Gather"]
    if gathers:
        m = onnx.ModelProto()
        m.CopyFrom(model)
        index_name = gathers[0].input[1]
        init = next(t for t in m.graph.initializer if t.name == index_name)
        values = numpy_helper.to_array(init)[::-1].copy()
        init.CopyFrom(numpy_helper.from_array(values, index_name))
        out.append((f"index-select {gathers[0].name} reversed", m.SerializeToString()))
    return out


def check_file(path, tolerance):
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    missing = [k for k in REQUIRED_METADATA if k not in meta]
    problems = [f"metadata lacks {missing}"] if missing else []
    ref = load_safetensors(path[: -len(".onnx")] + ".ref.safetensors")
    results = compare(model.SerializeToString(), ref, tolerance)
    for name, (err, same, got) in results.items():
        if err > tolerance:
            problems.append(f"{name}: max abs error {err:.3g} > {tolerance:g}")
        if not same:
            problems.append(f"{name}: argmax differs from ablate's")
    cells = [f"{n}: max|err| {e:.2e}, argmax {'same' if s else 'DIFFERS'}" for n, (e, s, _) in results.items()]
    if "test.labels" in ref and "deploy_test_top1" in meta:
        labels = ref["test.labels"]
        top1 = 100.0 * float((results["test"][2].argmax(1) == labels).mean())
        cells.append(f"onnxruntime test top-1 {top1:.2f}% (run: {float(meta['deploy_test_top1']):.2f}%)")
        data = tomllib.loads(meta["config"]).get("data", {})
        test_size = data.get("test_size", 1000 if data.get("dataset") == "synthetic" else 10000)
        # A run's full test set: the runtime must reproduce the run's own deploy top-1.
        if test_size == len(labels) and abs(top1 - float(meta["deploy_test_top1"])) > 1e-9:
            problems.append(f"test top-1 {top1:.2f}% differs from the run's {meta['deploy_test_top1']}%")
    opset = model.opset_import[0].version
    print(f"{'ok  ' if not problems else 'FAIL'} {path}: {meta.get('model')} opset {opset}, "
          f"{len(model.graph.node)} nodes; " + "; ".join(cells + problems))
    return not problems, model, ref


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", help="NAME.onnx files, each with NAME.ref.safetensors")
    p.add_argument("--tolerance", type=float, default=1e-4)
    p.add_argument("--mutate", action="append", default=[], help="also require deliberate breaks of this file to fail")
    args = p.parse_args()
    good = True
    loaded = {}
    for path in args.files:
        passed, model, ref = check_file(path, args.tolerance)
        good &= passed
        loaded[path] = (model, ref)
    shuffles = 0
    for path in args.mutate:
        model, ref = loaded.get(path) or check_file(path, args.tolerance)[1:]
        breaks = mutations(model)
        shuffles += sum(what.startswith("shuffle") for what, _ in breaks)
        for what, data in breaks:
            results = compare(data, ref, args.tolerance)
            caught = not ok(results, args.tolerance)
            worst = max(err for err, _, _ in results.values())
            print(f"{'ok  ' if caught else 'FAIL'} {path} with {what}: "
                  f"{'caught' if caught else 'NOT caught'} (max|err| {worst:.3g})")
            good &= caught
    if args.mutate and not shuffles:
        print("FAIL --mutate: none of the files has a channel shuffle to break")
        good = False
    sys.exit(0 if good else 1)


if __name__ == "__main__":
    main()
