"""Training-step speed and memory: ranvier (kernel and reference) against the peers, side by side.

Every entry is the same network as in ``shared/bench/anchors.py``: input → one recurrent layer of
H units → ``Linear(H, 10)`` on the last step → cross-entropy, and one training step is
zero_grad + forward over all T steps + loss + backward + Adam step.

    A  T=784, batch 64, 1 input,    H=128  (sequential-MNIST-like)
    B  T=70,  batch 32, 200 inputs, H=512  (language-model-like)

Dynamics: the LIF entries all run ``v = 0.95 v + I + W z − z`` with threshold 1 (ranvier: the
e-prop convention, ``tau_mem = −1/ln 0.95``, ``FastSigmoid(10)``, exactly the hand-written
``torch-LIF`` loop; the peers differ only in their surrogate and small details, see
``docs/kernels.md``). ALIF adds ``b = 0.99 b + z``, ``A = 1 + 1.8 b``.

Protocol: each configuration runs in its own process (clean peak RSS, no shared allocator
state), ``--procs`` processes per configuration in interleaved rounds; inside a process the
median of ``--repeats`` timed steps (after warm-up); the figure reported is the median over the
processes. Threads: ``--threads`` (default 2) for torch and OMP/MKL. Flush-denormal is ON by
default for every entry (``--no-flush-denormal`` to turn it off): at T=784 gradients of the dense
RNNs pass through float32 subnormals, which are slow on x86 (perf-anchors.md); flushing helps
the peers, not ranvier. Likewise every entry runs with glibc keeping freed memory for reuse
(``ranvier.core.allocator.keep_freed_memory``, which ``ranvier train`` also sets;
``--no-keep-freed-memory`` to turn it off): otherwise each step's large buffers are mapped
afresh and page-fault on every page.

    python benchmarks/speed.py            # full run (about 12 minutes on 2 cores)
    python benchmarks/speed.py --quick    # one process per config, fewer repeats (a few minutes)
    python benchmarks/speed.py --only 'B/' --procs 1
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

THREADS = 2
for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, str(THREADS))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SHAPES = {"A": dict(T=784, B=64, I=1, H=128, C=10), "B": dict(T=70, B=32, I=200, H=512, C=10)}
ALPHA, RHO, BETA_A = 0.95, 0.99, 1.8


# ------------------------------------------------------------------ models
class LastStep(nn.Module):
    """Wrap a layer ``x -> (seq [T,B,H], readout source [B,H])`` with the ``Linear(H, C)`` readout."""

    def __init__(self, layer: nn.Module, hidden: int, classes: int, source):
        super().__init__()
        self.layer, self.readout, self.source = layer, nn.Linear(hidden, classes), source

    def forward(self, x):
        return self.readout(self.source(self.layer, x))


def ranvier_spiking(s, alif=False, backend="auto", surrogate=None):
    from ranvier import ALIF, LIF, Convention, FastSigmoid

    surrogate = surrogate or FastSigmoid(10.0)
    # v = α v + I − z·R ; z = H(v − A): the e-prop convention, but (for ALIF) reset by the
    # adaptive threshold like the hand-written loop of the anchors.
    conv = Convention(scale_input=False, reset_by_adaptive=True, normalize_by_adaptive=False,
                      spike_from_previous=False, adapt_one_minus_rho=False)
    kw = dict(tau_mem=-1.0 / math.log(ALPHA), threshold=1.0, convention=conv, surrogate=surrogate, bias=True,
              self_connections=True, backend=backend)
    layer = (ALIF(s["I"], s["H"], tau_adapt=-1.0 / math.log(RHO), beta=BETA_A, **kw) if alif
             else LIF(s["I"], s["H"], **kw))
    return LastStep(layer, s["H"], s["C"], lambda m, x: m(x)[1].v)


def _triangle():
    from ranvier import PiecewiseLinear

    return PiecewiseLinear()


def ranvier_egru(s, backend="auto", threshold_mean=None):
    from ranvier import EGRU

    kw = {} if threshold_mean is None else {"threshold_mean": threshold_mean}
    try:
        layer = EGRU(s["I"], s["H"], backend=backend, **kw)
    except TypeError:  # an EGRU without a kernel backend
        if backend == "kernel":
            raise
        layer = EGRU(s["I"], s["H"], **kw)
    return LastStep(layer, s["H"], s["C"], lambda m, x: m(x)[0][-1])


class FastSigmoidSpike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g / (1.0 + 10.0 * x.abs()) ** 2


class TorchLoop(nn.Module):
    """The plain autograd loop of the anchors (nn.Linear input + recurrent, unbind over time)."""

    def __init__(self, s, alif=False):
        super().__init__()
        self.fc_in, self.rec = nn.Linear(s["I"], s["H"]), nn.Linear(s["H"], s["H"], bias=False)
        self.readout, self.alif = nn.Linear(s["H"], s["C"]), alif

    def forward(self, x):
        cur = self.fc_in(x)
        v = x.new_zeros(x.shape[1], self.rec.weight.shape[0])
        z, a, theta = torch.zeros_like(v), torch.zeros_like(v), 1.0
        for c in cur.unbind(0):
            v = ALPHA * v + c + self.rec(z) - theta * z
            if self.alif:
                a = RHO * a + z
                theta = 1.0 + BETA_A * a
            z = FastSigmoidSpike.apply(v - theta)
        return self.readout(v)


def snntorch_lif(s, alif=False):
    import snntorch as snn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc_in = nn.Linear(s["I"], s["H"])
            self.lif = snn.RLeaky(beta=ALPHA, linear_features=s["H"], all_to_all=True)
            self.readout = nn.Linear(s["H"], s["C"])

        def forward(self, x):
            spk, mem = self.lif.reset_mem()
            for c in self.fc_in(x).unbind(0):
                spk, mem = self.lif(c, spk, mem)
            return self.readout(mem)

    return Net()


def norse_lif(s, alif=False):
    import norse.torch as norse

    cls = norse.LSNNRecurrent if alif else norse.LIFRecurrent
    return LastStep(cls(s["I"], s["H"]), s["H"], s["C"], lambda m, x: m(x)[1].v)


def sj_lif(s, alif=False):
    from spikingjelly.activation_based import functional, neuron

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc_in, self.rec = nn.Linear(s["I"], s["H"]), nn.Linear(s["H"], s["H"], bias=False)
            self.lif = neuron.LIFNode(tau=20.0, decay_input=False, v_reset=None, step_mode="s")
            self.readout = nn.Linear(s["H"], s["C"])

        def forward(self, x):
            functional.reset_net(self)
            z = x.new_zeros(x.shape[1], s["H"])
            for c in self.fc_in(x).unbind(0):
                z = self.lif(c + self.rec(z))
            return self.readout(self.lif.v)

    return Net()


def dense_rnn(s, cell):
    rnn = {"gru": nn.GRU, "lstm": nn.LSTM}[cell](s["I"], s["H"])
    return LastStep(rnn, s["H"], s["C"], lambda m, x: m(x)[0][-1])


def evnn_egru(s):
    import evnn_pytorch  # noqa: F401  (not installable here, see docs/kernels.md)

    return LastStep(evnn_pytorch.EGRU(s["I"], s["H"], batch_first=False), s["H"], s["C"], lambda m, x: m(x)[0][-1])


# name -> (builder(shape), library, role)
CONFIGS: dict[str, tuple] = {}
for _S in ("A", "B"):
    CONFIGS.update({
        f"{_S}/ranvier-LIF": (lambda s: ranvier_spiking(s, backend="kernel"), "ranvier", "ranvier-kernel"),
        f"{_S}/ranvier-ALIF": (lambda s: ranvier_spiking(s, alif=True, backend="kernel"), "ranvier", "ranvier-kernel"),
        # ranvier's default surrogate (the LSNN triangle, zero outside |x| < 1): backward sparsity too
        f"{_S}/ranvier-LIF-triangle": (lambda s: ranvier_spiking(s, backend="kernel", surrogate=_triangle()), "ranvier",
                                       "ranvier-kernel"),
        f"{_S}/ranvier-ALIF-triangle": (lambda s: ranvier_spiking(s, alif=True, backend="kernel", surrogate=_triangle()),
                                        "ranvier", "ranvier-kernel"),
        f"{_S}/ranvier-LIF-reference": (lambda s: ranvier_spiking(s, backend="reference"), "ranvier", "ranvier-reference"),
        f"{_S}/ranvier-ALIF-reference": (lambda s: ranvier_spiking(s, alif=True, backend="reference"), "ranvier",
                                         "ranvier-reference"),
        f"{_S}/torch-LIF": (lambda s: TorchLoop(s), "torch", "loop"),
        f"{_S}/torch-ALIF": (lambda s: TorchLoop(s, alif=True), "torch", "loop"),
        f"{_S}/snntorch-LIF": (snntorch_lif, "snntorch", "spiking-peer"),
        f"{_S}/norse-LIF": (norse_lif, "norse", "spiking-peer"),
        f"{_S}/norse-ALIF": (lambda s: norse_lif(s, alif=True), "norse", "spiking-peer"),
        f"{_S}/sj-LIF-loop": (sj_lif, "spikingjelly", "spiking-peer"),
        f"{_S}/nn.GRU": (lambda s: dense_rnn(s, "gru"), "torch", "rnn-peer"),
        f"{_S}/nn.LSTM": (lambda s: dense_rnn(s, "lstm"), "torch", "rnn-peer"),
        f"{_S}/evnn-EGRU": (evnn_egru, "evnn_pytorch", "rnn-peer"),
        # "dense": thresholds sigmoid(θ), θ ~ N(−6, 2): ϑ ≈ 0.0025, so about every unit with ĉ > 0
        # has an event (about half of them: ĉ < 0 never fires).
        f"{_S}/ranvier-EGRU": (lambda s: ranvier_egru(s, backend="kernel", threshold_mean=-6.0), "ranvier",
                               "ranvier-kernel"),
        f"{_S}/ranvier-EGRU-reference": (lambda s: ranvier_egru(s, backend="reference", threshold_mean=-6.0),
                                         "ranvier", "ranvier-reference"),
    })
# EGRU at >= 80 % activity sparsity: EvNN's default thresholds (θ ~ N(0, 2), median ϑ = 0.5).
CONFIGS["B/ranvier-EGRU-sparse"] = (lambda s: ranvier_egru(s, backend="kernel"), "ranvier", "ranvier-kernel")
# Backward time at 0 % and 90 % backward sparsity, the same layer and activity (special worker).
CONFIGS["B/ranvier-LIF-backward-sparsity"] = (None, "ranvier", "backward-sparsity")


# ------------------------------------------------------------------ worker
def vm_hwm_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def sample(fn, warmup: int, repeats: int, min_time: float = 1.0, max_repeats: int = 30) -> list[float]:
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    while len(samples) < repeats or (sum(samples) < min_time * 1e3 and len(samples) < max_repeats):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return samples


def ranvier_layer(model):
    """The model's recurrent layer if it is a ranvier one (its activity is measured), else None."""
    from ranvier import EGRU
    from ranvier.layers import SpikingRecurrent

    layer = getattr(model, "layer", None)
    return layer if isinstance(layer, (SpikingRecurrent, EGRU)) else None


def activity_of(model, x) -> float | None:
    """Mean spike / event rate of the recurrent layer on ``x`` (ranvier layers only)."""
    layer = ranvier_layer(model)
    if layer is None:
        return None
    with torch.no_grad():
        return float(layer(x)[0].ne(0).double().mean())


def backward_sparsity_worker(s, warmup, repeats):
    """Backward time of the ranvier LIF kernel layer at 0 % and 90 % backward sparsity.

    The same weights, inputs and spikes (the forward does not depend on the surrogate); only the
    support of ``PiecewiseLinear`` changes: wide enough that every pseudo-derivative is non-zero,
    or the 10 % quantile of ``|x|`` so that 90 % of them are zero. Also timed, for the record: a
    support narrower than every ``|x|`` (100 %, every pseudo-derivative zero), the floor of what
    skipping units can save in this backward."""
    from ranvier import PiecewiseLinear

    torch.manual_seed(0)
    model = ranvier_spiking(s, backend="kernel", surrogate=PiecewiseLinear())
    layer = model.layer
    x = torch.rand(s["T"], s["B"], s["I"])
    y = torch.randint(0, s["C"], (s["B"],))
    with torch.no_grad():
        _, states = layer.trajectory(x)
    margin = (states.v - layer.threshold) / layer.threshold  # the surrogate argument (e-prop: from v_t)
    width90 = float(margin.abs().flatten().quantile(0.10))
    widths = {"0%": float(margin.abs().max()) * 2 + 1.0, "90%": width90,
              "100%": max(float(margin.abs().min()) * 0.5, 1e-12)}
    res = {}
    for tag, width in widths.items():
        layer.surrogate = PiecewiseLinear(gamma=0.3, width=width)
        res[f"sparsity_{tag}"] = float((margin.abs() >= width).double().mean())

    def backward_only(width):
        layer.surrogate = PiecewiseLinear(gamma=0.3, width=width)
        model.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        t0 = time.perf_counter()
        loss.backward()
        return (time.perf_counter() - t0) * 1e3

    times = {tag: [] for tag in widths}
    for _ in range(warmup):
        for w in widths.values():
            backward_only(w)
    for _ in range(max(repeats, 7)):  # interleaved, so that drifting load hits both alike
        for tag, w in widths.items():
            times[tag].append(backward_only(w))
    for tag in widths:
        res[f"backward_ms_{tag}"] = statistics.median(times[tag])
    res["ratio"] = res["backward_ms_90%"] / res["backward_ms_0%"]
    res["ratio_100%"] = res["backward_ms_100%"] / res["backward_ms_0%"]
    return res


def run_worker(name: str, warmup: int, repeats: int, flush: bool, threads: int, keep_freed: bool) -> dict:
    torch.set_num_threads(threads)
    torch.set_flush_denormal(flush)
    if keep_freed:  # glibc keeps freed blocks for reuse (ranvier/core/allocator.py), for every entry
        from ranvier.core.allocator import keep_freed_memory

        keep_freed = keep_freed_memory()
    builder, lib, role = CONFIGS[name]
    s = SHAPES[name.split("/")[0]]
    import importlib

    for mod in {"norse": ["norse.torch"], "spikingjelly": ["spikingjelly.activation_based.neuron"],
                "ranvier": ["ranvier", "ranvier.kernels.lif"]}.get(lib, [] if lib == "torch" else [lib]):
        importlib.import_module(mod)
    if builder is not None:
        # One tiny training step first, so that code every library loads on first use (numba's
        # cached kernels, SpikingJelly's custom ops, ...) counts as import, not as training memory.
        tiny = dict(SHAPES[name.split("/")[0]], T=2, B=2)
        F.cross_entropy(builder(tiny)(torch.rand(2, 2, tiny["I"])), torch.zeros(2, dtype=torch.long)).backward()
    rss_import = vm_hwm_mib()
    res = dict(name=name, shape=name.split("/")[0], lib=lib, role=role, threads=torch.get_num_threads(),
               flush_denormal=flush, keep_freed_memory=keep_freed, rss_import_mib=rss_import)
    if builder is None:
        res.update(backward_sparsity_worker(s, warmup, repeats))
        return res
    torch.manual_seed(0)
    model = builder(s)
    x = torch.rand(s["T"], s["B"], s["I"])
    y = torch.randint(0, s["C"], (s["B"],))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.eval()

    def infer():
        with torch.no_grad():
            model(x)

    res["infer_ms"] = statistics.median(sample(infer, warmup, repeats))
    model.train()

    def train_step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    train_step()
    res["grad_ok"] = all(p.grad is not None for p in model.parameters() if p.requires_grad)
    # The activity while the training steps are timed (it drifts as Adam moves the thresholds):
    # each ranvier layer's output is counted as it is produced (a count_nonzero per step, inside
    # the timing, so it costs ranvier, not the peers).
    rates: list[float] = []
    layer = ranvier_layer(model)
    hook = None
    if layer is not None:
        hook = layer.register_forward_hook(lambda _m, _i, out: rates.append(int(out[0].count_nonzero()) / out[0].numel()))
    res["train_ms"] = statistics.median(sample(train_step, max(warmup - 1, 0), repeats))
    res["rss_train_mib"] = vm_hwm_mib()
    res["train_added_mib"] = res["rss_train_mib"] - rss_import
    if hook is not None:
        hook.remove()
        res["activity"] = statistics.mean(rates)  # over the timed steps (and their warm-up)
        res["activity_after"] = activity_of(model, x)
    return res


# ------------------------------------------------------------------ driver
def aggregate(procs: list[dict]) -> list[dict]:
    rows = []
    for name in dict.fromkeys(p["name"] for p in procs):
        ok = [p for p in procs if p["name"] == name and "error" not in p]
        if not ok:
            rows.append(next(p for p in procs if p["name"] == name))
            continue
        row = dict(ok[0])
        for key, value in ok[0].items():
            if isinstance(value, float) and key != "rss_import_mib":
                row[key] = statistics.median(p[key] for p in ok)
        for key in ("rss_import_mib", "rss_train_mib", "train_added_mib"):
            if key in row:
                row[key] = max(p[key] for p in ok)  # memory: the worst process
        if "train_ms" in row:
            row["train_ms_procs"] = [round(p["train_ms"], 1) for p in ok]
        row["procs"] = len(ok)
        rows.append(row)
    return rows


def targets_of(rows: list[dict]) -> list[dict]:
    from common import target

    by = {r["name"]: r for r in rows if "error" not in r}
    out = []

    def ms(name):
        return by.get(name, {}).get("train_ms")

    for shape, goal in (("A", 5.0), ("B", 3.0)):
        peers = [r for r in by.values() if r["shape"] == shape and r["role"] == "spiking-peer"]
        if not peers:
            continue
        fastest = min(peers, key=lambda r: r["train_ms"])
        for kind in ("LIF", "ALIF"):
            mine = ms(f"{shape}/ranvier-{kind}")
            if mine is not None:
                out.append(target(f"{shape}: {kind} training step, speed-up over the fastest of snnTorch/Norse/SpikingJelly "
                                  f"({fastest['name'].split('/')[1]} {fastest['train_ms']:.0f} ms; ranvier {mine:.0f} ms)",
                                  round(fastest["train_ms"] / mine, 2), ">=", goal))
    for shape in ("A", "B"):
        gru, egru = ms(f"{shape}/nn.GRU"), ms(f"{shape}/ranvier-EGRU")
        if gru and egru:
            act = by[f"{shape}/ranvier-EGRU"].get("activity", float("nan"))
            out.append(target(f"{shape}: EGRU training step at dense activity ({act:.0%} active) / torch.nn.GRU",
                              round(egru / gru, 3), "<=", 1.0))
    gru, sparse = ms("B/nn.GRU"), ms("B/ranvier-EGRU-sparse")
    if gru and sparse:
        act = by["B/ranvier-EGRU-sparse"].get("activity", float("nan"))
        out.append(target(f"B: EGRU training step at {1 - act:.0%} activity sparsity / torch.nn.GRU",
                          round(sparse / gru, 3), "<=", 0.5))
        # the condition of that target, checked rather than assumed
        out.append(target("B: activity sparsity of that EGRU entry while its steps were timed",
                          round(1 - act, 3), ">=", 0.8))
    bw = by.get("B/ranvier-LIF-backward-sparsity")
    if bw:
        out.append(target(f"B: LIF backward time at {bw['sparsity_90%']:.0%} / at {bw['sparsity_0%']:.0%} backward sparsity "
                          f"({bw['backward_ms_90%']:.1f} / {bw['backward_ms_0%']:.1f} ms)", round(bw["ratio"], 3), "<=", 0.5))
    for shape in ("A", "B"):
        mine = by.get(f"{shape}/ranvier-LIF")
        peers = [r for r in by.values() if r["shape"] == shape and r["role"] == "spiking-peer" and "train_added_mib" in r]
        if mine and peers:
            low = min(peers, key=lambda r: r["train_added_mib"])
            out.append(target(f"{shape}: LIF peak training memory above the import baseline, MiB (lowest peer: "
                              f"{low['name'].split('/')[1]} {low['train_added_mib']:.0f})",
                              round(mine["train_added_mib"], 1), "<=", round(low["train_added_mib"], 1)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=None, help="regex over config names, e.g. '^B/' or 'LIF'")
    ap.add_argument("--procs", type=int, default=3, help="processes per config (median over them)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=THREADS)
    ap.add_argument("--no-flush-denormal", action="store_true")
    ap.add_argument("--no-keep-freed-memory", action="store_true",
                    help="leave glibc's default of returning large freed blocks to the system")
    ap.add_argument("--quick", action="store_true", help="one process per config, 3 repeats")
    ap.add_argument("--timeout", type=int, default=600)
    ap.add_argument("--no-write", action="store_true", help="do not write benchmarks/results/speed.json")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    flush = not a.no_flush_denormal
    if a.quick:
        a.procs, a.repeats = 1, 3
    if a.worker:
        try:
            res = run_worker(a.worker, a.warmup, a.repeats, flush, a.threads, not a.no_keep_freed_memory)
        except Exception as exc:  # reported as a row, e.g. a peer that is not installed
            res = dict(name=a.worker, error=f"{type(exc).__name__}: {exc}"[:300])
        print("RESULT " + json.dumps(res), flush=True)
        return
    names = [n for n in CONFIGS if a.only is None or re.search(a.only, n)]
    env = dict(os.environ, **{v: str(a.threads) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")})
    procs = []
    t_start = time.time()
    for rnd in range(a.procs):
        for name in names:
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--repeats", str(a.repeats),
                   "--warmup", str(a.warmup), "--threads", str(a.threads)] + (["--no-flush-denormal"] if not flush else [])
            cmd += ["--no-keep-freed-memory"] if a.no_keep_freed_memory else []
            try:
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout, env=env)
                lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
                res = (json.loads(lines[-1][7:]) if lines else
                       dict(name=name, error=f"rc={p.returncode}: {(p.stderr.strip().splitlines() or ['no output'])[-1]}"))
            except subprocess.TimeoutExpired:
                res = dict(name=name, error=f"timeout after {a.timeout} s")
            procs.append(res)
            msg = res.get("error") or ", ".join(f"{k} {v:.1f}" for k, v in res.items()
                                                if isinstance(v, float) and k not in ("rss_import_mib",))
            print(f"# [{rnd + 1}/{a.procs}] {name}: {msg}", flush=True)
    rows = aggregate(procs)
    for r in rows:
        r.setdefault("shape", r["name"].split("/")[0])
    # ratios against the fastest spiking peer / nn.GRU of the same shape, printed and stored
    for r in rows:
        if "train_ms" not in r:
            continue
        peers = [p for p in rows if p.get("shape") == r["shape"] and p.get("role") == "spiking-peer" and "train_ms" in p]
        gru = next((p for p in rows if p["name"] == f"{r['shape']}/nn.GRU" and "train_ms" in p), None)
        if peers:
            r["vs_fastest_spiking_peer"] = round(min(p["train_ms"] for p in peers) / r["train_ms"], 2)
        if gru:
            r["time_vs_nn_gru"] = round(r["train_ms"] / gru["train_ms"], 3)
    print(f"\n| config | train ms | infer ms | speed-up vs fastest spiking peer | time / nn.GRU | activity | "
          f"peak RSS train MiB (added) |\n|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['name']} | {r['error'][:80]} | | | | | |")
        elif "train_ms" in r:
            act = f"{r['activity']:.2f}" if "activity" in r else ""
            print(f"| {r['name']} | {r['train_ms']:.1f} | {r['infer_ms']:.1f} | {r.get('vs_fastest_spiking_peer', '')} | "
                  f"{r.get('time_vs_nn_gru', '')} | {act} | {r['rss_train_mib']:.0f} ({r['train_added_mib']:.0f}) |")
        else:
            print(f"| {r['name']} | " + ", ".join(f"{k} {v:.3f}" for k, v in r.items() if isinstance(v, float)) + " |")
    targets = targets_of(rows)
    print()
    for t in targets:
        print(f"{'met   ' if t['met'] else 'MISSED'} {t['name']}: {t['value']} (goal {t['op']} {t['target']})")
    print(f"# total wall {time.time() - t_start:.0f} s, flush-denormal {flush}, keep freed memory "
          f"{not a.no_keep_freed_memory}, {a.threads} threads, {a.procs} process(es)")
    if not a.no_write:
        from common import write_results

        for r in rows:
            r.pop("train_ms_procs", None) if a.procs == 1 else None
        flat = [{k: (json.dumps(v) if isinstance(v, list) else v) for k, v in r.items()} for r in rows]
        print("wrote", write_results("speed", flat, targets))


if __name__ == "__main__":
    main()
