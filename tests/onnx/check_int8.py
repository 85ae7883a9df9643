"""Checks int8 QDQ files written by `ablate export --int8` with an independent runtime.

For every `NAME-int8.onnx` given, `NAME-int8.ref.safetensors` beside it (written with
`--reference`, covering all of the run's test images) holds `test.input`, ablate's int8 logits
`test.logits` (its own reference computation of the QDQ graph), `test.float_logits` and
`test.labels`; `NAME.onnx` beside it is the float export of the same run. Each file must

- pass `onnx.checker.check_model(full_check=True)`;
- say in its metadata that it is int8, how it was calibrated (rule, images, set) and the float
  model's top-1;
- in onnxruntime with graph optimisations off (every QuantizeLinear, DequantizeLinear and float
  op run as the file states them: the same quantized arithmetic as ablate's) give exactly
  ablate's int8 top-1 on the test set, and ablate's int8 logits (within --tolerance, max abs
  error) on all but --max-differing of the images. That allowance is for rounding ties: the two
  runtimes sum a float conv in different orders, so a value within an ulp of a .5 quantization
  boundary can land one uint8 step apart, and that step reaches the image's logits. Measured:
  0 of 64 images on the CI runs, at most 9 of 500 (1.8%) on the digits runs; a wrong scale makes
  every image differ;
- in onnxruntime with all optimisations (what a deployment runs: QDQ groups fused into
  QLinearConv and friends, integer kernels) give a top-1 within --max-drop points of the float
  model's, as ablate's int8 top-1 must be too;
- be at most --max-size-ratio times the size of the float file (the line also prints what the
  float file would be with its conv and Gemm weights at one byte, its BNs at two constants per
  channel and nothing else changed).

`--mutate NAME-int8.onnx` then gives one QuantizeLinear in the middle of the network a wrong
scale (twice the calibrated one; its DequantizeLinear keeps the right one) and requires the
check to FAIL for it.

Exit status 0 when everything holds, 1 otherwise. Prints one line per file.
"""

import argparse
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from check import load_safetensors

REQUIRED_METADATA = ["quantization", "calibration", "float_test_top1", "int8_test_top1", "test_images"]


def session(model_bytes, optimise):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimise else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


def top1(logits, labels):
    return 100.0 * float((logits.argmax(1) == labels).mean())


def judge(model_bytes, meta, ref, args):
    """(problems, cells) of onnxruntime running the QDQ graph as stated against ablate's int8 logits."""
    got = session(model_bytes, optimise=False).run(["logits"], {"input": ref["test.input"]})[0]
    want, labels = ref["test.logits"], ref["test.labels"]
    per_image = np.abs(got - want).max(1)
    differing = int((per_image > args.tolerance).sum())
    argmax = int((got.argmax(1) != want.argmax(1)).sum())
    right = int((got.argmax(1) == labels).sum())
    ablate_right = round(float(meta["int8_test_top1"]) * len(labels) / 100)
    problems = []
    if differing > args.max_differing * len(labels):
        problems.append(f"{differing} of {len(labels)} images' logits differ from ablate's by more than {args.tolerance:g} "
                        f"(allowed: {args.max_differing:.0%})")
    if right != ablate_right:
        problems.append(f"onnxruntime's top-1 {100 * right / len(labels):.2f}% != ablate's int8 top-1 {meta['int8_test_top1']}%")
    cells = [f"QDQ as stated: top-1 {100 * right / len(labels):.2f}%, {differing} images' logits differ "
             f"(max|err| {per_image.max():.2e}), {argmax} argmax differ"]
    return problems, cells


def check_file(path, args):
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    missing = [k for k in REQUIRED_METADATA if k not in meta]
    if missing:
        print(f"FAIL {path}: metadata lacks {missing}")
        return False, model, None, meta
    problems = []
    if not meta["quantization"].startswith("int8"):
        problems.append(f"quantization metadata `{meta['quantization'][:40]}` does not say int8")
    calibration = json.loads(meta["calibration"])
    for key in ["rule", "images", "split", "dataset", "seed"]:
        if key not in calibration:
            problems.append(f"calibration metadata lacks {key}")
    ref = load_safetensors(path[: -len(".onnx")] + ".ref.safetensors")
    labels = ref["test.labels"]
    if len(labels) != int(meta["test_images"]):
        problems.append(f"the reference has {len(labels)} test images, the run {meta['test_images']}")
    float_top1, int8_top1 = float(meta["float_test_top1"]), float(meta["int8_test_top1"])
    if top1(ref["test.float_logits"], labels) != float_top1:
        problems.append("the reference's float logits do not give the metadata's float top-1")
    p, cells = judge(model.SerializeToString(), meta, ref, args)
    problems += p
    deployed = session(model.SerializeToString(), optimise=True).run(["logits"], {"input": ref["test.input"]})[0]
    deployed_top1 = top1(deployed, labels)
    cells.append(f"optimised: top-1 {deployed_top1:.2f}%")
    for who, value in [("ablate's int8", int8_top1), ("optimised onnxruntime's", deployed_top1)]:
        if float_top1 - value > args.max_drop:
            problems.append(f"{who} top-1 {value:.2f}% is more than {args.max_drop:g} points below float {float_top1:.2f}%")
    float_path = path[: -len("-int8.onnx")] + ".onnx"
    ratio = os.path.getsize(path) / os.path.getsize(float_path)
    cells.append(f"float top-1 {float_top1:.2f}%, int8 {int8_top1:.2f}%; size {ratio:.3f}x the float file "
                 f"(float with weights at one byte, BN at two constants, the rest as is: {shrunk_float(float_path):.3f}x)")
    if ratio > args.max_size_ratio:
        problems.append(f"size {ratio:.3f}x the float file > {args.max_size_ratio:g}x")
    print(f"{'ok  ' if not problems else 'FAIL'} {path}: {meta.get('model')}, {len(labels)} test images; "
          + "; ".join(cells + problems))
    return not problems, model, ref, meta


def shrunk_float(float_path):
    """The float file's size, as a fraction of itself, with every conv and Gemm weight stored in
    one byte instead of four, every BN as two constants per channel instead of four, and
    everything else (graph, names, doc string, metadata, indices) unchanged: what the int8 form's
    two savings alone reach, before it adds its scales and Q/DQ nodes."""
    model = onnx.load(float_path)
    arrays = {t.name: numpy_helper.to_array(t).nbytes for t in model.graph.initializer}
    weights = {n.input[1] for n in model.graph.node if n.op_type in ("Conv", "Gemm")}
    bn = {i for n in model.graph.node if n.op_type == "BatchNormalization" for i in n.input[1:]}
    saved = 0.75 * sum(arrays[w] for w in weights) + 0.5 * sum(arrays[b] for b in bn)
    size = os.path.getsize(float_path)
    return (size - saved) / size


def wrong_scale(model):
    """The model with the middle QuantizeLinear reading a scale twice its calibrated one."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    quantizers = [n for n in m.graph.node if n.op_type == "QuantizeLinear"]
    node = quantizers[len(quantizers) // 2]
    scale = next(t for t in m.graph.initializer if t.name == node.input[1])
    wrong = numpy_helper.to_array(scale) * np.float32(2.0)
    m.graph.initializer.append(numpy_helper.from_array(wrong, node.input[1] + ".wrong"))
    node.input[1] = node.input[1] + ".wrong"
    return node.output[0], m.SerializeToString()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", help="NAME-int8.onnx files, each with NAME-int8.ref.safetensors and NAME.onnx")
    p.add_argument("--tolerance", type=float, default=1e-4, help="max abs logit error of an agreeing image")
    p.add_argument("--max-differing", type=float, default=0.05, help="fraction of images allowed beyond --tolerance")
    p.add_argument("--max-drop", type=float, default=5.0, help="top-1 points int8 may lose against float")
    p.add_argument("--max-size-ratio", type=float, default=0.35)
    p.add_argument("--mutate", action="append", default=[], help="also require a wrong scale in this file to fail")
    args = p.parse_args()
    good = True
    loaded = {}
    for path in args.files:
        passed, model, ref, meta = check_file(path, args)
        good &= passed
        loaded[path] = (model, ref, meta)
    for path in args.mutate:
        model, ref, meta = loaded.get(path) or check_file(path, args)[1:]
        if ref is None:
            good = False
            continue
        name, data = wrong_scale(model)
        problems, cells = judge(data, meta, ref, args)
        caught = bool(problems)
        print(f"{'ok  ' if caught else 'FAIL'} {path} with the QuantizeLinear of `{name}` at twice its scale: "
              f"{'caught' if caught else 'NOT caught'} ({'; '.join(cells + problems)})")
        good &= caught
    sys.exit(0 if good else 1)


if __name__ == "__main__":
    main()
