"""What the plugin boundary costs per hook call: the private copy of the arguments, the fresh
validation of the result, and the handoff to the time-limited worker thread.

A trivial document hook (it returns 1.0 per sample, ~5 us of its own) on a batch of 8 samples
of ~900 characters each is called through :meth:`PluginHost.call` with the time limit on
(worker thread) and off (inline), and bare; the best of 7 repeats is reported.

    python benchmarks/plugin_call_overhead.py [--samples 8] [--calls 1000] [--json]
"""

from __future__ import annotations

import argparse
import json
import time

from ufarsap_engine.alignment.scoring import make_sample
from ufarsap_engine.hookspecs import hookimpl
from ufarsap_engine.plugin_host import PluginHost, private_copy
from ufarsap_engine.schemas import AlignmentState, Horizon, PluginInfo, ScaleScores, TextBatch


class _Trivial:
    @hookimpl
    def ufarsap_plugin_info(self):
        return PluginInfo(paradigm="safety", description="trivial", scales=["document"], horizons=["short"])

    @hookimpl
    def ufarsap_score_document(self, batch):
        return ScaleScores(sample_scores=[1.0] * len(batch))


class _Entry:  # what PluginHost needs of an installed plugin, for an in-process object
    name, target, distribution, version = "safety.trivial", "bench", "bench", "0"

    def load(self):
        return _Trivial


def _best_us(fn, calls: int) -> float:
    best = float("inf")
    for _ in range(7):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls)
    return round(best * 1e6, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    text = "A calm paragraph about trains and the weather, nothing more. " * 15
    batch = TextBatch(samples=[make_sample(str(i), text) for i in range(args.samples)])
    state = AlignmentState(short={"safety": 0.5}, medium={"safety": 0.5}, long={"safety": 0.5})
    entries = {"safety.trivial": _Entry()}
    limited = PluginHost(["safety.trivial"], installed=entries)
    inline = PluginHost(["safety.trivial"], installed=entries, call_timeout_s=0)
    plugin = limited.pm.get_plugin("safety.trivial")

    def through(host):
        return lambda: host.call("ufarsap_score_document", expect=ScaleScores, batch=batch,
                                 horizon=Horizon.SHORT, state=state)

    res = {
        "bare_hook_us": _best_us(lambda: plugin.ufarsap_score_document(batch), args.calls),
        "copy_args_us": _best_us(lambda: (private_copy(batch), private_copy(state)), args.calls),
        "call_inline_us": _best_us(through(inline), args.calls),
        "call_time_limited_us": _best_us(through(limited), args.calls),
    }
    res["overhead_us"] = round(res["call_time_limited_us"] - res["bare_hook_us"], 1)
    res["thread_handoff_us"] = round(res["call_time_limited_us"] - res["call_inline_us"], 1)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        for k, v in res.items():
            print(f"{k:22s} {v:8.1f}")


if __name__ == "__main__":
    main()
