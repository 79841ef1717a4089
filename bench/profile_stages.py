#!/usr/bin/env python3
"""Sorts the samples of `perf script` (one profile of the host under load) into the stages of a
request, and prints one Markdown row per stage: its share of the host's CPU samples and the CPU
time it costs per request.

    profile_stages.py PERF_SCRIPT_OUTPUT SAMPLE_HZ REQUESTS

A sample belongs to the first stage, in the order of STAGES, that one of its stack frames
matches (so "instance teardown" wins over "module call" for a reset that runs inside a call's
drop). Frames inside JIT-compiled guest code have no unwind information: perf stops there, and
such samples are counted as the module's own code.
"""
import collections
import re
import sys

# (stage, patterns): a sample is in the stage when any of its frames contains one of the patterns.
STAGES = [
    ("epoch ticker (module deadlines)", ["@thread:aifn-epoch"]),
    ("autoscaler and control plane", ["@thread:aifn-autoscale", "aifn_host::control", "aifn_host::autoscale"]),
    ("WASI context", ["aifn_guest::GuestModule::wasi_context", "WasiCtxBuilder"]),
    ("store creation", ["wasmtime::runtime::store::Store<T>::new"]),
    ("instance teardown (memory reset)", [
        "<aifn_guest::GuestCall as core::ops::drop::Drop>::drop",
        "drop_in_place<wasmtime::runtime::store::StoreInner",
        "drop_in_place<aifn_guest::GuestCall",
        "drop_in_place<aifn_guest::Live",
    ]),
    ("instance creation", ["InstancePre<T>::instantiate", "aifn_guest::GuestModule::instantiate"]),
    ("request and tensors into guest memory", ["func::typed::Lower", "LowerContext", "tensors_to_guest", "::lower"]),
    ("tensors out of guest memory", ["func::typed::Lift", "LiftContext", "tensors_from_guest", "::lift"]),
    ("module code (preprocess, postprocess)", ["@jit", "aifn_guest::GuestCall::preprocess", "aifn_guest::GuestCall::postprocess"]),
    ("ONNX Runtime", ["libonnxruntime", "aifn_model::ModelSession::run"]),
    ("v2 JSON to tensors", ["decode_v2_request", "aifn_host::instance::v2_inputs"]),
    ("reply encoding", ["encode_v2_response", "aifn_host::instance::finish"]),
    ("hand-off to and from the instance thread", [
        "aifn_host::instance::InstancePool::submit",
        "crossbeam_channel",
        "aifn_host::instance::Dispatch",
        "tokio::sync::oneshot",
        "@thread-idle",
    ]),
    ("HTTP parse", ["hyper::proto::h1::role", "httparse", "Buffered<T,B>::parse"]),
    ("HTTP write and socket I/O", ["hyper::proto::h1::io", "tokio::net", "mio::", "tokio::io"]),
    ("routing, auth, admission, metrics", [
        "aifn_host::http::data",
        "aifn_host::http::handle",
        "aifn_host::http::error",
        "aifn_host::policy",
        "aifn_host::metrics",
        "aifn_host::registry",
    ]),
    ("accept and connection set-up", ["aifn_host::http::accept", "TcpListener::accept", "hyper::proto::h1"]),
    ("tokio scheduler and idle wake-ups", ["tokio::runtime"]),
]
OTHER = "other"


def samples(path):
    """Yields (thread, frames leaf first) for each sample of a `perf script` output."""
    thread, frames = None, []
    for line in open(path, errors="replace"):
        if not line.strip():
            if thread is not None:
                yield thread, frames
            thread, frames = None, []
        elif not line[0].isspace():
            thread, frames = line.split()[0], []
        else:
            parts = line.strip().split(" ", 1)
            if len(parts) == 2:
                frames.append(re.sub(r"\+0x[0-9a-f]+ ", " ", parts[1]))
    if thread is not None:
        yield thread, frames


def stage_of(thread, frames):
    tags = ["@thread:" + thread]
    user = [f for f in frames if "kernel.kallsyms" not in f]
    if user and "/perf-" in user[0] and user[0].endswith(".map)"):
        tags.append("@jit")
    # An instance thread with nothing to do waits on its channel: a hand-off's cost.
    if thread != "aifn-io" and not thread.startswith("aifn-") and any("futex" in f or "sched_yield" in f for f in frames[:12]) and not user:
        tags.append("@thread-idle")
    text = "\n".join(tags + frames)
    for stage, patterns in STAGES:
        if any(p in text for p in patterns):
            return stage
    return OTHER


def main():
    path, hz, requests = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    counts, kernel = collections.Counter(), collections.Counter()
    for thread, frames in samples(path):
        stage = stage_of(thread, frames)
        counts[stage] += 1
        if frames and "kernel.kallsyms" in frames[0]:
            kernel[stage] += 1
    total = sum(counts.values()) or 1
    order = [s for s, _ in STAGES] + [OTHER]
    for stage in order:
        n = counts[stage]
        if n == 0:
            continue
        us = n / hz / requests * 1e6
        print(f"| {stage} | {100 * n / total:.1f}% | {100 * kernel[stage] / n:.0f}% | {us:.1f} |")
    print(f"| **all** | 100% | {100 * sum(kernel.values()) / total:.0f}% | {total / hz / requests * 1e6:.1f} |")


if __name__ == "__main__":
    main()
