"""ablate's TensorBoard event files read by TensorBoard itself (tests/tensorboard/check.sh).

  check.py cut-last-epoch RUN_DIR
      Removes the events of the run's last checkpointed epoch from its event file, with
      TensorBoard's own record reader and writer: what a kill between the checkpoint and the
      event write leaves. The resume must write that epoch again, once.

  check.py check [--experiment DIR]... [--resumed RUN_DIR]... [--flip RUN_DIR]
      Every run dir of each experiment (from its plan.json), and each resumed run dir:
      - every event file reads to its end through TensorBoard's record reader (both CRCs of every
        record checked), every record parses as TensorBoard's Event, no (tag, step) twice;
      - EventAccumulator: every scalar of every epoch equals the metrics.csv value (as float32),
        at steps 1..epochs exactly; the end-of-run scalars equal summary.json; the live fraction
        of the model's pruned family is there every epoch, in [0, 1], never rising; no tag the
        format does not name;
      - the HParams plugin (its own backend, as the dashboard asks it): the experiment's
        hyperparameters are the plan's keys with its values, one row (session group) per run,
        named by its folder, with the run's axis values as hparams, status success and the
        metric values of its files;
      - a resumed run has more than one event file.
      --flip copies RUN_DIR, flips one byte in the middle of its event file and requires the
      check of the copy to fail.
"""

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
import tomllib

import numpy as np
from tensorboard import context
from tensorboard.backend.event_processing import data_provider
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.backend.event_processing import plugin_event_accumulator
from tensorboard.backend.event_processing import plugin_event_multiplexer
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.tensorflow_stub import errors
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import PyRecordReader_New
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import backend_context
from tensorboard.plugins.hparams import get_experiment
from tensorboard.plugins.hparams import list_session_groups
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.summary.writer.record_writer import RecordWriter

# The format: each metrics.csv column's tag.
EPOCH_TAGS = {
    "train/loss": "train_loss",
    "train/top1": "train_top1",
    "test/loss": "test_loss",
    "test/top1": "test_top1",
    "train/lr": "lr",
    "time/epoch_seconds": "epoch_seconds",
    "time/data_seconds": "data_seconds",
    "time/compute_seconds": "compute_seconds",
    "time/eval_seconds": "eval_seconds",
    "time/images_per_second": "images_per_second",
}
# The live fraction of each pruned family, by the model's bottleneck conv.
LIVE_TAGS = {
    "learned-group": "pruning/learned_group_live_inputs",
    "learned-dsc": "pruning/learned_dsc_live_kernels",
}
# End-of-run scalars: their summary.json path.
FINAL_TAGS = {
    "final/deploy_test_top1": ["deploy_test_top1"],
    "final/deploy_test_loss": ["deploy_test_loss"],
    "final/deploy_agreement": ["deploy_agreement"],
    "final/training_form_test_top1": ["training_form_test_top1"],
    "final/best_test_top1": ["best_test_top1"],
    "final/best_epoch": ["best_epoch"],
    "final/deploy_flops": ["deploy", "paper", "flops"],
    "final/deploy_params": ["deploy", "paper", "params"],
    "final/deploy_flops_executed": ["deploy", "executed", "flops"],
    "final/deploy_params_executed": ["deploy", "executed", "params"],
    "final/deploy_bytes": ["deploy_bytes"],
    "final/checkpoint_bytes": ["checkpoint_bytes"],
    "final/train_seconds": ["train_seconds"],
    "final/median_epoch_seconds": ["median_epoch_seconds"],
    "final/median_images_per_second": ["median_images_per_second"],
}
# The HParams table's metric columns.
METRIC_TAGS = [
    "test/top1",
    "final/best_test_top1",
    "final/deploy_test_top1",
    "final/deploy_flops",
    "final/deploy_params",
    "final/median_epoch_seconds",
]
KEEP_ALL = {event_accumulator.SCALARS: 0, event_accumulator.TENSORS: 0}


class CheckFailed(Exception):
    pass


def expect(ok, what):
    if not ok:
        raise CheckFailed(what)


def f32(x):
    return np.float32(x)


def event_files(folder):
    return sorted(
        os.path.join(folder, n)
        for n in os.listdir(folder)
        if "tfevents" in n and os.path.isfile(os.path.join(folder, n))
    )


def raw_records(path):
    """Every record of the file through TensorBoard's reader (CRCs checked), to its end."""
    reader = PyRecordReader_New(path, 0, None, None)
    out = []
    while True:
        try:
            reader.GetNext()
        except errors.OutOfRangeError:
            return out
        except errors.DataLossError as e:
            raise CheckFailed(f"{path}: record {len(out) + 1}: {e.message}")
        out.append(reader.record())


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def config(run):
    with open(os.path.join(run, "config.toml"), "rb") as f:
        return tomllib.load(f)


def check_run(run, resumed=False):
    """Checks the event files of the run dir `run`; returns (epochs, scalar values checked)."""
    folder = os.path.join(run, "tensorboard")
    files = event_files(folder)
    expect(files, f"{run}: no event file")
    if resumed:
        expect(len(files) > 1, f"{run}: a resumed run continues in a new file: {files}")
    seen = set()
    for path in files:
        for i, data in enumerate(raw_records(path)):
            event = event_pb2.Event.FromString(data)
            if i == 0:
                expect(event.file_version == "brain.Event:2", f"{path}: no file version first")
            for v in event.summary.value:
                key = (v.tag, event.step)
                expect(key not in seen, f"{run}: {key} written twice")
                seen.add(key)

    rows = read_csv(os.path.join(run, "metrics.csv"))
    epochs = len(rows)
    acc = event_accumulator.EventAccumulator(folder, size_guidance=KEEP_ALL)
    acc.Reload()
    scalar_tags = set(acc.Tags()["scalars"])
    bottleneck = config(run)["model"]["bottleneck_conv"]
    live_tag = LIVE_TAGS.get(bottleneck)
    allowed = set(EPOCH_TAGS) | set(FINAL_TAGS) | set(LIVE_TAGS.values())
    expect(scalar_tags <= allowed, f"{run}: tags the format does not name: {scalar_tags - allowed}")
    checked = 0
    for tag, column in EPOCH_TAGS.items():
        events = acc.Scalars(tag)
        steps = [e.step for e in events]
        expect(steps == list(range(1, epochs + 1)), f"{run}: {tag} at steps {steps}, not 1..{epochs}")
        for e, row in zip(events, rows):
            want = f32(float(row[column]))
            expect(f32(e.value) == want, f"{run}: {tag} at epoch {e.step} is {e.value}, metrics.csv {want}")
            checked += 1
    if live_tag:
        live = [e.value for e in acc.Scalars(live_tag)]
        expect(len(live) == epochs, f"{run}: {live_tag} has {len(live)} of {epochs} epochs")
        expect(all(0 <= x <= 1 for x in live), f"{run}: {live_tag} {live} outside [0, 1]")
        expect(all(b <= a for a, b in zip(live, live[1:])), f"{run}: {live_tag} rises: {live}")
        expect(live[-1] < 1, f"{run}: {live_tag} never drops: {live}")
        checked += epochs
    summary_path = os.path.join(run, "summary.json")
    if os.path.exists(summary_path):
        with open(summary_path) as f:
            summary = json.load(f)
        for tag, path in FINAL_TAGS.items():
            want = summary
            for k in path:
                want = want[k]
            events = acc.Scalars(tag)
            expect([e.step for e in events] == [epochs], f"{run}: {tag} at {[e.step for e in events]}")
            expect(f32(events[0].value) == f32(want), f"{run}: {tag} is {events[0].value}, summary {want}")
            checked += 1
    # The pruning changes as text (TensorBoard's text plugin), at epochs within the run.
    tensors = plugin_event_accumulator.EventAccumulator(folder, size_guidance=KEEP_ALL)
    tensors.Reload()
    if bottleneck in LIVE_TAGS:
        texts = tensors.Tensors("pruning/structure")
        expect(texts, f"{run}: no pruning/structure text")
        for t in texts:
            expect(1 <= t.step <= epochs, f"{run}: pruning text at step {t.step}")
            expect(t.tensor_proto.string_val[0].startswith(b"iteration "), f"{run}: {t}")
    return epochs, checked, tensors


def plan_values(plan):
    """Each run's expected hparams (name -> value as TensorBoard gives it), by run id."""
    keys = []
    if any(r.get("label") for r in plan["runs"]):
        keys.append("label")
    for r in plan["runs"]:
        for k, _ in r["point"]:
            if k not in keys:
                keys.append(k)
    texts = {k: [t for r in plan["runs"] for kk, t in r["point"] if kk == k] for k in keys}
    parsed = {k: [tomllib.loads(f"v = {t}")["v"] for t in ts] for k, ts in texts.items()}
    def kind(k):
        vs = parsed[k]
        if k != "label" and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vs):
            return "number"
        if k != "label" and all(isinstance(v, bool) for v in vs):
            return "bool"
        return "string"
    kinds = {k: kind(k) for k in keys}
    out = {}
    for r in plan["runs"]:
        values = {}
        if "label" in keys and r.get("label"):
            values["label"] = r["label"]
        for k, t in r["point"]:
            v = tomllib.loads(f"v = {t}")["v"]
            if kinds[k] == "number":
                values[k] = float(v)
            elif kinds[k] == "bool":
                values[k] = v
            else:
                values[k] = v if isinstance(v, str) else t
        out[r["id"]] = values
    return keys, out


def value_of(v):
    kind = v.WhichOneof("kind")
    return {"number_value": v.number_value, "string_value": v.string_value, "bool_value": v.bool_value}[kind]


def check_experiment(exp):
    with open(os.path.join(exp, "plan.json")) as f:
        plan = json.load(f)
    keys, expected = plan_values(plan)
    runs = {}
    for r in plan["runs"]:
        run = os.path.join(exp, r["id"])
        epochs, checked, acc = check_run(run)
        start = acc.PluginTagToContent("hparams")[hparams_metadata.SESSION_START_INFO_TAG]
        info = hparams_metadata.parse_session_start_info_plugin_data(start)
        got = {k: value_of(v) for k, v in info.hparams.items()}
        expect(got == expected[r["id"]], f"{run}: hparams {got}, plan {expected[r['id']]}")
        runs[r["id"]] = (run, epochs, checked)
        print(f"ok {run}: {epochs} epochs, {checked} scalars equal metrics.csv / summary.json, hparams {got}")

    # The HParams dashboard's own queries, on the experiment dir as --logdir.
    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(exp)
    mux.Reload()
    tb = base_plugin.TBContext(logdir=exp, multiplexer=mux, data_provider=data_provider.MultiplexerDataProvider(mux, exp))
    backend = backend_context.Context(tb)
    request = context.RequestContext()
    experiment = get_experiment.Handler(request, backend, "", api_pb2.GetExperimentRequest()).run()
    names = sorted(h.name for h in experiment.hparam_infos)
    expect(names == sorted(keys), f"{exp}: hparams {names}, plan keys {sorted(keys)}")
    for h in experiment.hparam_infos:
        domain = sorted(str(value_of(v)) for v in h.domain_discrete.values)
        want = sorted({str(v[h.name]) for v in expected.values() if h.name in v})
        expect(domain == want, f"{exp}: {h.name} takes {domain}, the plan {want}")
    metrics = [m.name.tag for m in experiment.metric_infos]
    expect(metrics == METRIC_TAGS, f"{exp}: metric columns {metrics}")
    statuses = [api_pb2.STATUS_UNKNOWN, api_pb2.STATUS_SUCCESS, api_pb2.STATUS_FAILURE, api_pb2.STATUS_RUNNING]
    groups = list_session_groups.Handler(
        request, backend, "",
        api_pb2.ListSessionGroupsRequest(start_index=0, slice_size=1000, allowed_statuses=statuses),
    ).run().session_groups
    sessions = sorted(f"{run_id}/tensorboard" for run_id in runs)
    expect(sorted(g.name for g in groups) == sessions, f"{exp}: rows {[g.name for g in groups]}, runs {sessions}")
    for g in groups:
        run_id = g.name.removesuffix("/tensorboard")
        run, epochs, _ = runs[run_id]
        expect(len(g.sessions) == 1, f"{exp}: group {g.name} has {len(g.sessions)} sessions")
        expect(g.sessions[0].status == api_pb2.STATUS_SUCCESS, f"{run}: session status {g.sessions[0].status}")
        got = {k: value_of(v) for k, v in g.hparams.items()}
        expect(got == expected[run_id], f"{run}: dashboard hparams {got}")
        with open(os.path.join(run, "summary.json")) as f:
            summary = json.load(f)
        rows = read_csv(os.path.join(run, "metrics.csv"))
        want = {
            "test/top1": rows[-1]["test_top1"],
            "final/best_test_top1": summary["best_test_top1"],
            "final/deploy_test_top1": summary["deploy_test_top1"],
            "final/deploy_flops": summary["deploy"]["paper"]["flops"],
            "final/deploy_params": summary["deploy"]["paper"]["params"],
            "final/median_epoch_seconds": summary["median_epoch_seconds"],
        }
        got = {m.name.tag: (m.value, m.training_step) for m in g.metric_values}
        for tag, value in want.items():
            expect(tag in got, f"{run}: no {tag} in the dashboard")
            expect(f32(got[tag][0]) == f32(float(value)), f"{run}: {tag} {got[tag][0]}, files {value}")
            expect(got[tag][1] == epochs, f"{run}: {tag} at step {got[tag][1]}")
    print(f"ok {exp}: the HParams dashboard has {len(groups)} rows, columns {names} + {len(metrics)} metrics")


def cut_last_epoch(run):
    with open(os.path.join(run, "status.json")) as f:
        last = json.load(f)["epochs_done"]
    expect(last > 0, f"{run}: no epoch done")
    (path,) = event_files(os.path.join(run, "tensorboard"))
    kept = [r for r in raw_records(path) if event_pb2.Event.FromString(r).step != last]
    with open(path, "wb") as f:
        writer = RecordWriter(f)
        for r in kept:
            writer.write(r)
    print(f"cut epoch {last}'s events from {path}")


def flipped_fails(run):
    with tempfile.TemporaryDirectory() as tmp:
        copy = os.path.join(tmp, os.path.basename(run.rstrip("/")))
        shutil.copytree(run, copy)
        path = event_files(os.path.join(copy, "tensorboard"))[-1]
        with open(path, "r+b") as f:
            data = bytearray(f.read())
            at = len(data) // 2
            data[at] ^= 0x01
            f.seek(0)
            f.write(data)
        try:
            check_run(copy)
        except CheckFailed as e:
            print(f"ok: one flipped byte (at {at} of {len(data)}) fails the check: {e}")
            return
        raise CheckFailed(f"{path}: a flipped byte at {at} went unnoticed")


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command", required=True)
    cut = sub.add_parser("cut-last-epoch")
    cut.add_argument("run")
    check = sub.add_parser("check")
    check.add_argument("--experiment", action="append", default=[])
    check.add_argument("--resumed", action="append", default=[])
    check.add_argument("--flip")
    args = p.parse_args()
    try:
        if args.command == "cut-last-epoch":
            cut_last_epoch(args.run)
            return
        for exp in args.experiment:
            check_experiment(exp)
        for run in args.resumed:
            epochs, checked, _ = check_run(run, resumed=True)
            files = len(event_files(os.path.join(run, "tensorboard")))
            print(f"ok {run}: resumed, {files} event files, epochs 1..{epochs} once each, {checked} scalars equal")
        if args.flip:
            flipped_fails(args.flip)
    except CheckFailed as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
    print("tensorboard check: every file read by TensorBoard equals metrics.csv, summary.json and the plan")


if __name__ == "__main__":
    main()
