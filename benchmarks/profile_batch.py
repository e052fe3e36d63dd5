"""Where one training batch spends its time (issue 18): MXNet profiler + per-batch extras.

For each ``--preset NETWORK:SIZE:BATCH`` a worker process (OpenMP threads are fixed at
``import mxnet``) builds the training graph (``with_det=False``) in a
:class:`training.detection_module.DetectionModule` exactly as ``fit.fit`` does, on a batch of the
training iterator (full augmentation), and prints

* the per-operator table of one profiled batch (``mx.profiler``, ``aggregate_stats``):
  forward + backward + update + metric, operators summed by type, with their share of the
  operator time;
* the per-batch costs this project adds to what ``mx.mod.Module`` does, each timed in the
  same process and given as a share of the batch: the non-finite guard, the training metric
  (``Module.update_metric``: ``MultiBoxMetric`` reading the graph's ``loss_sums``), the
  batch-end callbacks (Speedometer + interrupt check), the
  record-iterator wrapper (label slicing), and the head's 3-D ``Concat`` (its operator time);
* ``MultiBoxTarget``: its time per batch at the record's label width, at the original's width
  350 and with the label rows trimmed to the batch's real maximum.

The loop rows (``loop: ...``) run ``--loop-batches`` consecutive batches without waiting in
between (as ``Module.fit`` does) and wait at the end, rounds interleaved, median of rounds.

Then the step table (issue 36): the loop as training runs it (batches read from the record by
the iterator while the network computes, as ``fit`` does) split into its parts, each timed
alone in the same process: what reading the data costs the loop (decode + augment beyond what
overlaps the compute), the network's forward, ``MultiBoxTarget`` (its share of the profiled
operator time), backward, update, the training metric, and the rest (Python and waits, the
loop's time that none of the parts explains). Below it, the compute limit: every convolution
of the graph alone (each on an input of its real shape, forward + backward, as training runs
it) in float32 and, where the processor runs it, bfloat16 (``amp.convert_symbol``); a CPU
without bf16 kernels says why in one line. The convolutions' own time in the profiled graph
(forward + backward operators) is printed beside them: alone, each convolution reads and writes
MXNet's plain layout, so it can be slower than in the graph. ``loop / limit`` is the loop's
time per batch over the fastest of these: how far the loop is from the convolutions' own cost.

Example::

    python -m benchmarks.profile_batch --preset tiny_photo:256:8 --preset tiny:160:8 --rounds 3
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Sequence

if __package__ in (None, ""):  # run by path (python benchmarks/x.py): make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))

REFERENCE_MEAN = (123.0, 117.0, 104.0)
ORIGINAL_LABEL_WIDTH = 350


def _preset(value: str) -> tuple[str, int, int]:
    parts = value.split(":")
    try:
        network, size, batch = parts[0], int(parts[1]), int(parts[2])
    except (IndexError, ValueError):
        raise argparse.ArgumentTypeError(f"--preset {value!r}: expected NETWORK:SIZE:BATCH, "
                                         f"e.g. tiny:160:32") from None
    if size < 32 or batch < 1:
        raise argparse.ArgumentTypeError(f"--preset {value!r}: size must be >= 32 and batch "
                                         f">= 1")
    return network, size, batch


def get_parser() -> argparse.ArgumentParser:
    """Parser of ``python -m benchmarks.profile_batch``."""
    p = argparse.ArgumentParser(description="Profile one SSD training batch per preset and time "
                                            "the per-batch extras of the training loop")
    p.add_argument("--preset", dest="presets", type=_preset, action="append",
                   help="NETWORK:SIZE:BATCH, repeatable (default: tiny_photo:256:8 and "
                        "tiny:160:8, the photo and demo recipes)")
    p.add_argument("--rec", type=str, default="",
                   help="training record; '' generates a synthetic one per size (default: '')")
    p.add_argument("--num-class", dest="num_class", type=int, default=4,
                   help="object classes of the graph (default: 4, the synthetic set's)")
    p.add_argument("--rounds", type=int, default=3,
                   help="interleaved timing rounds per loop variant (default: 3)")
    p.add_argument("--loop-batches", dest="loop_batches", type=int, default=0,
                   help="batches per loop round (default: 0 = 2 for 300 px presets, 10 else)")
    p.add_argument("--json", type=str, default="", help="also write the results here")
    p.add_argument("--worker", type=str, default="", help=argparse.SUPPRESS)
    return p


# --------------------------------------------------------------------------------------------
# worker
# --------------------------------------------------------------------------------------------
def _parse_aggregate(text: str) -> list[dict]:
    """Operator rows of ``mx.profiler.dumps(format='json')`` summed by operator name."""
    data = json.loads(text)
    rows: dict[str, dict] = {}
    for domain, entries in data.get("Time", {}).items():
        if domain != "operator" or not isinstance(entries, dict):
            continue                                    # C API rows are waits, not compute
        for name, stat in entries.items():
            if not isinstance(stat, dict) or "Total" not in stat:
                continue
            row = rows.setdefault(name, {"op": name, "domain": domain, "count": 0, "ms": 0.0})
            row["count"] += int(stat.get("Count", 0))
            row["ms"] += float(stat["Total"])
    return sorted(rows.values(), key=lambda r: -r["ms"])


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def per_array_sums_check(module: Any) -> str | None:
    """The guard before issue 18 (one ``sum`` per array), kept here to measure it."""
    from config.mxnet_compat import mx
    import numpy as np
    checks, names = [], []
    for name, array in module._guarded_arrays():
        checks.append(mx.nd.sum(array).as_in_context(mx.cpu()))
        names.append(name)
    values = mx.nd.concat(*[c.reshape((1,)) for c in checks], dim=0).asnumpy()   # (K,)
    bad = np.flatnonzero(~np.isfinite(values))
    return names[bad[0]] if bad.size else None


def worker(cfg: dict) -> dict:
    """Profile and time one preset (runs in its own process)."""
    from config.mxnet_compat import mx

    import fit
    from config.config import cfg as aug
    from dataset.iterator import DetRecordIter
    from evaluate.eval_metric import MultiBoxMetric
    from symbol.symbol_factory import get_symbol_train
    from training.detection_module import DetectionModule

    network, size, batch_size = cfg["network"], cfg["size"], cfg["batch_size"]
    it = DetRecordIter(cfg["rec"], batch_size, size, mean_pixels=REFERENCE_MEAN,
                       **dict(aug.train))
    batches = [it.next() for _ in range(2)]
    sym = get_symbol_train(network, size, cfg["num_class"], nms_thresh=0.45, with_det=False,
                           fast_ops=True)                 # the graph train.py binds
    module = DetectionModule(sym, label_names=("label",), context=[mx.cpu()])
    module.bind(it.provide_data, it.provide_label)
    module.init_params(mx.init.Xavier())
    module.init_optimizer(optimizer="sgd", optimizer_params=fit.get_optimizer_params(
        "sgd", 0.002, 0.9, 0.0005, None, 1))
    metric = MultiBoxMetric()
    plain_update = mx.mod.Module.update

    fused_check = module._first_non_finite

    def step(batch: Any, guard: bool | str) -> None:
        module.forward_backward(batch)
        if guard:
            module._first_non_finite = (fused_check if guard is True else
                                        (lambda: per_array_sums_check(module)))
            module.update()
        else:
            plain_update(module)
        module.update_metric(metric, batch.label)

    for k in range(2):                                  # warm-up (allocations, MKL-DNN)
        step(batches[k % 2], True)
    mx.nd.waitall()

    if cfg["mode"] == "profile":
        return _profile(cfg, step, batches)
    result = _time(cfg, module, sym, it, batches, metric, step)
    result["stages"] = _stages(cfg, module, it, batches, metric, step)
    result["limit"] = conv_limit(sym, batches[0].data[0].shape, cfg["rounds"])
    return result


def _stages(cfg: dict, module: Any, it: Any, batches: list, metric: Any, step: Any) -> dict:
    """Seconds per batch of the training loop with real data, and of each part timed alone."""
    from config.mxnet_compat import mx
    n = cfg["loop_batches"] or (2 if cfg["size"] >= 300 else 10)
    parts: dict[str, list[float]] = {k: [] for k in
                                     ("loop_data", "data", "forward", "backward", "update",
                                      "metric")}

    def timed(fn: Any) -> float:
        mx.nd.waitall()
        tic = time.perf_counter()
        fn()
        mx.nd.waitall()
        return time.perf_counter() - tic

    def next_batch() -> Any:
        try:
            return it.next()
        except StopIteration:
            it.reset()
            return it.next()

    for _ in range(cfg["rounds"]):
        it.reset()
        mx.nd.waitall()
        tic = time.perf_counter()
        for _ in range(n):                   # as fit: read, step; the read-ahead overlaps
            step(next_batch(), True)
        mx.nd.waitall()
        parts["loop_data"].append((time.perf_counter() - tic) / n)
        it.reset()
        tic = time.perf_counter()
        for _ in range(n):                   # the iterator alone (its decoding threads)
            next_batch()
        parts["data"].append((time.perf_counter() - tic) / n)
        for k in range(n):
            batch = batches[k % 2]
            parts["forward"].append(timed(lambda: module.forward(batch, is_train=True)))
            parts["backward"].append(timed(module.backward))
            parts["update"].append(timed(module.update))
            parts["metric"].append(timed(lambda: module.update_metric(metric, batch.label)))
    return {name: _median(values) for name, values in parts.items()}


def conv_shapes(sym: Any, data_shape: tuple) -> list[tuple[dict, tuple]]:
    """(attributes, input shape) of every Convolution of ``sym`` at ``data_shape``."""
    nodes = json.loads(sym.tojson())["nodes"]
    internals = sym.get_internals()
    found = []
    for node in nodes:
        if node["op"] != "Convolution":
            continue
        source = internals[node["name"] + "_output"].get_children()[0]
        _, shapes, _ = source.infer_shape_partial(data=data_shape)
        found.append((dict(node.get("attrs", {})), tuple(shapes[0])))
    return found


def conv_limit(sym: Any, data_shape: tuple, rounds: int = 3) -> dict:
    """Forward + backward of the graph's convolutions alone, float32 and bfloat16.

    Each convolution gets an input of its real shape; the first (on the image) computes no
    input gradient, as in training. Returns ``float32_s``, ``bfloat16_s`` (or None) and
    ``bfloat16_note`` (why there is no figure, when there is none).
    """
    from config.mxnet_compat import mx
    outputs, grad_req = [], {}
    for k, (attrs, shape) in enumerate(conv_shapes(sym, data_shape)):
        x = mx.sym.Variable(f"conv{k}_in", shape=shape)
        kwargs = {key: attrs[key] for key in ("kernel", "stride", "pad", "num_filter",
                                              "num_group", "dilate", "no_bias") if key in attrs}
        y = mx.sym.Convolution(x, name=f"conv{k}", **kwargs)
        outputs.append(mx.sym.MakeLoss(mx.sym.mean(y)))
        grad_req[f"conv{k}_in"] = "null" if k == 0 else "write"
    graph = mx.sym.Group(outputs)

    def bind(symbol: Any) -> Any:
        args = symbol.list_arguments()
        exe = symbol.simple_bind(mx.cpu(), grad_req={a: grad_req.get(a, "write") for a in args},
                                 type_dict={a: "float32" for a in args})
        for array in exe.arg_dict.values():
            array[:] = mx.nd.random.uniform(-0.1, 0.1, array.shape)
        return exe

    def measure(exe: Any) -> list[float]:
        times = []
        for k in range(2 + 3):
            mx.nd.waitall()
            tic = time.perf_counter()
            exe.forward(is_train=True)
            exe.backward()
            mx.nd.waitall()
            if k >= 2:                       # two warm-up passes (allocations, primitives)
                times.append(time.perf_counter() - tic)
        return times

    executors = {"float32": bind(graph)}
    note = ""
    try:
        from mxnet.contrib import amp
        executors["bfloat16"] = bind(amp.convert_symbol(graph, target_dtype="bfloat16",
                                                        cast_optional_params=False))
        measure(executors["bfloat16"])
    except Exception as err:                 # noqa: BLE001 (MXNetError: no kernel here)
        executors.pop("bfloat16", None)
        flags = _cpu_flags()
        note = (f"bfloat16 unavailable on this CPU ({'has' if 'avx512_bf16' in flags else 'no'} "
                f"avx512_bf16): {str(err).strip().splitlines()[0][:120]}")
    times: dict[str, list[float]] = {name: [] for name in executors}
    for _ in range(rounds):                  # interleaved
        for name, exe in executors.items():
            times[name] += measure(exe)
    return {"convolutions": len(outputs), "float32_s": _median(times["float32"]),
            "bfloat16_s": _median(times["bfloat16"]) if "bfloat16" in times else None,
            "bfloat16_note": note}


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()



def _profile(cfg: dict, step: Any, batches: list) -> dict:
    """One batch under ``mx.profiler`` (run with bulk execution off: per-operator rows)."""
    from config.mxnet_compat import mx
    network, size = cfg["network"], cfg["size"]
    trace = os.path.join(cfg["workdir"], f"profile_{network}_{size}.json")
    mx.profiler.set_config(profile_all=True, aggregate_stats=True, filename=trace)
    mx.profiler.set_state("run")
    tic = time.perf_counter()
    step(batches[0], True)
    mx.nd.waitall()
    profiled_s = time.perf_counter() - tic
    mx.profiler.set_state("stop")
    ops = _parse_aggregate(mx.profiler.dumps(reset=True, format="json"))
    mx.profiler.set_config(profile_all=False, aggregate_stats=False, filename=trace)
    return {"profiled_batch_s": profiled_s, "ops": ops,
            "op_total_ms": sum(r["ms"] for r in ops) or float("nan")}


def _time(cfg: dict, module: Any, sym: Any, it: Any, batches: list, metric: Any,
          step: Any) -> dict:
    """Loop variants, the extras timed alone, and MultiBoxTarget at several widths."""
    from config.mxnet_compat import mx
    import numpy as np
    network, size, batch_size = cfg["network"], cfg["size"], cfg["batch_size"]

    # -- loops: Module's own per-batch work vs the guarded one -------------------------------
    n = cfg["loop_batches"] or (2 if size >= 300 else 10)
    loops: dict[str, list[float]] = {"module": [], "guarded": [], "guarded_before": []}
    modes = {"module": False, "guarded": True, "guarded_before": "sums"}
    for _ in range(cfg["rounds"]):
        for name in loops:
            mx.nd.waitall()
            tic = time.perf_counter()
            for k in range(n):
                step(batches[k % 2], modes[name])
            mx.nd.waitall()
            loops[name].append((time.perf_counter() - tic) / n)

    # -- pieces timed alone (outputs ready) --------------------------------------------------
    mx.nd.waitall()
    fused_check = type(module)._first_non_finite.__get__(module)
    reps = 20
    tic = time.perf_counter()
    for _ in range(reps):
        module.update_metric(metric, batches[0].label)
    metric_s = (time.perf_counter() - tic) / reps
    module._first_non_finite = fused_check
    guard_alone: dict[str, list[float]] = {"fused": [], "sums": []}
    for _ in range(reps):
        for name, check in (("fused", fused_check), ("sums", lambda: per_array_sums_check(module))):
            tic = time.perf_counter()
            check()
            guard_alone[name].append(time.perf_counter() - tic)

    speedometer = mx.callback.Speedometer(batch_size, 20, auto_reset=True)
    param = mx.model.BatchEndParam(epoch=0, nbatch=0, eval_metric=metric, locals=None)
    tic = time.perf_counter()
    for k in range(reps * 10):
        param = mx.model.BatchEndParam(epoch=0, nbatch=k, eval_metric=metric, locals=None)
        speedometer(param)
    callbacks_s = (time.perf_counter() - tic) / (reps * 10)

    it.reset()
    inner = it._iter
    wrapper_s = []
    for _ in range(6):
        try:
            raw = inner.next()
        except StopIteration:
            break
        tic = time.perf_counter()
        label = raw.label[0]
        end = it.label_start + it.max_objects * it.object_width
        label = label[:, it.label_start:end].reshape((batch_size, it.max_objects,
                                                       it.object_width))
        mx.io.DataBatch(data=raw.data, label=[label], pad=raw.pad, index=raw.index,
                        provide_data=it.provide_data, provide_label=it.provide_label)
        wrapper_s.append(time.perf_counter() - tic)

    # -- MultiBoxTarget at several label widths ----------------------------------------------
    internals = sym.get_internals()
    anchors_sym = internals["multibox_anchors_output"]
    cls_sym = internals["multibox_cls_pred_output"]
    group = mx.sym.Group([anchors_sym, cls_sym])
    arg, aux = module.get_params()
    exe = group.bind(mx.cpu(), {**{k: v for k, v in arg.items()
                                   if k in group.list_arguments()},
                                "data": batches[0].data[0]},
                     aux_states={k: v for k, v in aux.items()
                                 if k in group.list_auxiliary_states()})
    anchors, cls_preds = exe.forward(is_train=False)
    anchors_shape = anchors.shape
    label = batches[0].label[0].asnumpy()               # (B, M, 5 or 6)
    real_rows = int(max(1, (label[:, :, 0] >= 0).sum(axis=1).max()))
    widths = {"record width": label.shape[1], "original 350": ORIGINAL_LABEL_WIDTH //
              label.shape[2], "batch max": real_rows}
    target: dict[str, float] = {}
    for name, rows in widths.items():
        padded = np.full((batch_size, rows, label.shape[2]), -1.0, dtype=np.float32)
        keep = min(rows, label.shape[1])
        padded[:, :keep] = label[:, :keep]
        lab = mx.nd.array(padded)
        times = []
        for _ in range(5):
            mx.nd.waitall()
            tic = time.perf_counter()
            mx.nd.contrib.MultiBoxTarget(
                anchors, lab, cls_preds, overlap_threshold=.5, ignore_label=-1,
                negative_mining_ratio=3, minimum_negative_samples=0,
                negative_mining_thresh=.5, variances=(0.1, 0.1, 0.2, 0.2))
            mx.nd.waitall()
            times.append(time.perf_counter() - tic)
        target[f"{name} ({rows} rows)"] = _median(times[1:])

    batch_s = _median(loops["guarded"])
    return {
        "network": network, "size": size, "batch_size": batch_size,
        "omp_threads": os.environ.get("OMP_NUM_THREADS"),
        "label_shape": list(label.shape), "anchors": int(anchors_shape[1]),
        "loop_module_s": loops["module"], "loop_guarded_s": loops["guarded"],
        "loop_guarded_before_s": loops["guarded_before"], "loop_batches": n,
        "extras": {
            "guard, before: one sum per array (loop diff.)": _median(loops["guarded_before"]) -
            _median(loops["module"]),
            "guard, now: multi_sum_sq + all_finite (loop diff.)": _median(loops["guarded"]) -
            _median(loops["module"]),
            "guard alone, before (sums + wait)": _median(guard_alone["sums"]),
            "guard alone, now (sums, flags + wait)": _median(guard_alone["fused"]),
            "training metric update": metric_s,
            "batch-end callbacks (Speedometer)": callbacks_s,
            "iterator wrapper (label slice)": _median(wrapper_s),
        },
        "multibox_target_s": target, "batch_s": batch_s,
    }


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------
def make_record(workdir: str, size: int, num_images: int = 32) -> str:
    """Synthetic VOC record of ``num_images`` images stored at ``size`` px."""
    from benchmarks.workers import make_synthetic_rec
    return make_synthetic_rec(os.path.join(workdir, f"rec{size}"), num_images, size)


def format_result(r: dict, top: int = 15) -> str:
    """Human-readable block of one preset."""
    lines = [f"== {r['network']} {r['size']} px, batch {r['batch_size']} "
             f"(OMP_NUM_THREADS {r['omp_threads']}, {r['anchors']} anchors, label "
             f"{tuple(r['label_shape'])})",
             f"profiled batch {r['profiled_batch_s']:.3f} s (profiler on, bulk execution off); operator time "
             f"{r['op_total_ms']:.1f} ms",
             f"{'operator':32s} {'calls':>6s} {'ms':>10s} {'share':>7s}"]
    for row in r["ops"][:top]:
        lines.append(f"{row['op']:32s} {row['count']:6d} {row['ms']:10.1f} "
                     f"{row['ms'] / r['op_total_ms']:7.1%}")
    rest = sum(row["ms"] for row in r["ops"][top:])
    lines.append(f"{'(other operators)':32s} {'':6s} {rest:10.1f} {rest / r['op_total_ms']:7.1%}")
    lines.append(f"loop, Module's work per batch   {_median(r['loop_module_s']):.4f} s  rounds "
                 f"{[round(x, 4) for x in r['loop_module_s']]}")
    lines.append(f"loop, guard before (sums)       {_median(r['loop_guarded_before_s']):.4f} s  "
                 f"rounds {[round(x, 4) for x in r['loop_guarded_before_s']]}")
    lines.append(f"loop, guard now                 {_median(r['loop_guarded_s']):.4f} s  rounds "
                 f"{[round(x, 4) for x in r['loop_guarded_s']]}")
    for name, seconds in r["extras"].items():
        lines.append(f"  {name:40s} {seconds * 1000:9.2f} ms  {seconds / r['batch_s']:7.2%}")
    for name, seconds in r["multibox_target_s"].items():
        lines.append(f"  MultiBoxTarget fwd, {name:22s} {seconds * 1000:8.2f} ms  "
                     f"{seconds / r['batch_s']:7.2%}")
    lines += format_steps(r)
    return "\n".join(lines)


def step_table(r: dict) -> list[tuple[str, float]]:
    """(part, seconds per batch) of the loop with real data; the parts add up to the loop.

    ``MultiBoxTarget`` is its share of the profiled operator time applied to the forward +
    backward time; it is taken out of the forward (where the operator runs).
    """
    st = r["stages"]
    target_ms = sum(row["ms"] for row in r["ops"] if "MultiBoxTarget" in row["op"])
    target_s = target_ms / r["op_total_ms"] * (st["forward"] + st["backward"])
    loop_no_data = _median(r["loop_guarded_s"])
    parts = [("data (decode + augment) in the loop", st["loop_data"] - loop_no_data),
             ("forward (network)", st["forward"] - target_s),
             ("MultiBoxTarget", target_s),
             ("backward", st["backward"]),
             ("update (SGD + guard)", st["update"]),
             ("training metric", st["metric"])]
    parts.append(("Python and waits (the rest)", st["loop_data"] - sum(v for _, v in parts)))
    return parts


def format_steps(r: dict) -> list[str]:
    """The step table, the compute limit and loop / limit, as text lines."""
    st, limit = r["stages"], r["limit"]
    loop = st["loop_data"]
    lines = [f"step of the training loop with real data: {loop * 1000:.1f} ms a batch "
             f"(the iterator alone: {st['data'] * 1000:.1f} ms a batch)",
             f"  {'part':40s} {'ms':>9s} {'share':>7s}"]
    for name, seconds in step_table(r):
        lines.append(f"  {name:40s} {seconds * 1000:9.2f} {seconds / loop:7.1%}")
    in_graph = sum(row["ms"] for row in r["ops"]
                   if row["op"] in ("Convolution", "_backward_Convolution")) / 1000.0
    lines.append(f"compute limit: the {limit['convolutions']} convolutions, forward + backward: "
                 f"in the graph (profiled) {in_graph * 1000:.1f} ms; alone, float32 "
                 f"{limit['float32_s'] * 1000:.1f} ms")
    best = min(in_graph, limit["float32_s"])
    if limit["bfloat16_s"] is not None:
        lines[-1] += (f", bfloat16 {limit['bfloat16_s'] * 1000:.1f} ms "
                      f"({limit['float32_s'] / limit['bfloat16_s']:.2f}x)")
        best = min(best, limit["bfloat16_s"])
    else:
        lines.append(f"  {limit['bfloat16_note']}")
    lines.append(f"loop / limit {loop / best:.2f} (limit: the fastest of those, "
                 f"{best * 1000:.1f} ms)")
    return lines


def _spawn(cfg: dict, workdir: str) -> dict:
    """Run one worker process; bulk execution is switched off for the profiled one."""
    stem = os.path.join(workdir, f"{cfg['network']}_{cfg['size']}_{cfg['mode']}")
    cfg = dict(cfg, out=stem + ".out.json")
    with open(stem + ".cfg.json", "w") as f:
        json.dump(cfg, f)
    env = dict(os.environ)
    if cfg["mode"] == "profile":
        env["MXNET_EXEC_BULK_EXEC_TRAIN"] = "0"         # else bulked operators are not listed
    subprocess.run([sys.executable, "-m", "benchmarks.profile_batch", "--worker",
                    stem + ".cfg.json"], check=True, env=env,
                   cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(cfg["out"]) as f:
        return json.load(f)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    args = get_parser().parse_args(argv)
    if args.worker:
        with open(args.worker) as f:
            cfg = json.load(f)
        result = worker(cfg)
        with open(cfg["out"], "w") as f:
            json.dump(result, f)
        return 0
    if args.rounds < 1:
        raise SystemExit(f"--rounds {args.rounds}: must be >= 1")
    if args.rec and not os.path.isfile(args.rec):
        raise SystemExit(f"--rec {args.rec}: no such file")
    presets = args.presets or [("tiny_photo", 256, 8), ("tiny", 160, 8)]
    results = []
    with tempfile.TemporaryDirectory(prefix="profile_batch_") as workdir:
        recs: dict[int, str] = {}
        for network, size, batch in presets:
            rec = args.rec or recs.get(size) or make_record(workdir, size, max(32, 2 * batch))
            recs[size] = rec
            cfg = {"network": network, "size": size, "batch_size": batch, "rec": rec,
                   "num_class": args.num_class, "rounds": args.rounds,
                   "loop_batches": args.loop_batches, "workdir": workdir}
            load = os.getloadavg()[0]
            result = {}
            for mode in ("profile", "time"):
                result.update(_spawn(dict(cfg, mode=mode), workdir))
            concat_ms = sum(r["ms"] for r in result["ops"]
                            if r["op"] in ("Concat", "_backward_Concat"))
            result["extras"]["head Concat fwd+bwd (profiled)"] = concat_ms / 1000.0
            result["load_before"], result["load_after"] = load, os.getloadavg()[0]
            print(format_result(result))
            print(f"load average {load:.2f} -> {result['load_after']:.2f}", flush=True)
            results.append(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
