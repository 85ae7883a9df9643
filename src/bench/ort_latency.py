# Batch-1 latency of an ONNX file in onnxruntime, for `ablate bench --onnx` (which passes this
# file to `python -c`). argv: FILE RUNS THREADS (comma-separated). Prints one JSON line:
# {"onnxruntime": version, "latency_ms": {"<threads>": median ms}}, or {"error": why}, exit 3.
import json
import sys
import time

try:
    import numpy as np
    import onnxruntime as ort
except ImportError as e:
    print(json.dumps({"error": str(e)}))
    sys.exit(3)

path, runs, threads = sys.argv[1], int(sys.argv[2]), [int(t) for t in sys.argv[3].split(",")]
x = np.random.default_rng(0).uniform(-2.0, 2.0, (1, 3, 32, 32)).astype(np.float32)
latency = {}
for t in threads:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = t
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    for _ in range(5):
        sess.run(None, {"input": x})
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        sess.run(None, {"input": x})
        times.append(time.perf_counter() - start)
    latency[str(t)] = 1e3 * float(np.median(times))
print(json.dumps({"onnxruntime": ort.__version__, "latency_ms": latency}))
