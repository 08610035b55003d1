"""Shared pieces of the lowbit benchmarks: the machine's memory limit, a timer that
never times from cache, a description of the machine, and JSON / markdown writers.

Every figure a benchmark prints should come with its peer (eager PyTorch, another
kernel) measured in the same run, and with the machine's limit measured here.
"""
from __future__ import annotations

import ctypes
import datetime
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, Sequence

import torch


def l3_bytes() -> int:
    """Size of the last-level cache in bytes (sysfs), 32 MiB if it cannot be read."""
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    best = 0
    for index in base.glob("index*"):
        try:
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(size[-1:], 1)
        digits = size.rstrip("KMG")
        if digits.isdigit():
            best = max(best, int(digits) * mult)
    return best or (32 << 20)


# Input sets a timer rotates through must together exceed the last-level cache by this
# factor, so that every timed call reads its inputs from memory.
CACHE_FLUSH_FACTOR = 4


def set_threads(n: int | None) -> int:
    """Sets torch's intra-op threads (None: all cores) and returns the number in use."""
    if n:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def reuse_freed_memory() -> bool:
    """Makes glibc keep freed memory for reuse instead of returning it to the kernel.

    By default glibc serves every allocation above 32 MiB with a fresh mmap and unmaps
    it on free, so each big output of an op is first-touched page by page: on this
    kind of machine that page-fault cost (~2-7 GB/s) swamps the op itself. Real
    deployments avoid it with jemalloc/tcmalloc; we get the same effect with mallopt.
    It applies to ours and eager alike. Returns False where it could not be set.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    ok = libc.mallopt(m_mmap_max, 0) == 1
    ok &= libc.mallopt(m_trim_threshold, 2**31 - 1) == 1
    return bool(ok)


def release_freed_memory() -> None:
    """Hands memory that glibc keeps (see `reuse_freed_memory`) back to the kernel; call it
    between benchmark rows so that the process does not grow to the sum of all rows."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _best_seconds(fn: Callable[[], object], runs: int) -> float:
    fn()  # first touch / warm-up
    best = math.inf
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure_read_bandwidth(nbytes: int = 1 << 30, runs: int = 5,
                           tensor: torch.Tensor | None = None) -> dict:
    """Read bandwidth of this machine in GB/s (1e9 bytes/s), measured in-process with
    torch's threads on a float32 tensor far larger than the last-level cache.

    Read-only reductions (sum, dot, 2-norm) each read every byte once; the best run of
    the best method is the figure (noise on a shared machine only ever slows a run).
    Pass `tensor` to reuse a big float32 tensor instead of allocating `nbytes`.
    Returns {"gbps", "method", "bytes", "per_method"}.
    """
    x = tensor if tensor is not None else torch.randn(nbytes // 4)
    x = x.reshape(-1)
    assert x.dtype == torch.float32 and x.is_contiguous()
    size = x.numel() * 4
    methods = {
        "torch.sum": lambda: torch.sum(x),
        "torch.dot(x, x)": lambda: torch.dot(x, x),
        "torch.linalg.vector_norm": lambda: torch.linalg.vector_norm(x),
    }
    per_method = {name: size / _best_seconds(fn, runs) / 1e9 for name, fn in methods.items()}
    method = max(per_method, key=per_method.get)
    return {"gbps": per_method[method], "method": method, "bytes": size, "per_method": per_method}


def measure_copy_bandwidth(nbytes: int = 512 << 20, runs: int = 5) -> dict:
    """Copy bandwidth in GB/s counting read + write bytes (2 x size; the write-allocate
    read that the hardware may add is not counted)."""
    src = torch.randn(nbytes // 4)
    dst = torch.empty_like(src)
    seconds = _best_seconds(lambda: dst.copy_(src), runs)
    return {"gbps": 2 * src.numel() * 4 / seconds / 1e9, "bytes": src.numel() * 4}


def measure_write_bandwidth(nbytes: int = 512 << 20, runs: int = 5) -> dict:
    """Write bandwidth in GB/s with ordinary stores: torch's fill_ of a float32 tensor far
    larger than the last-level cache (written bytes only). Non-temporal stores can beat
    it (they skip the read of each line before writing it): a reference, not a limit."""
    dst = torch.empty(nbytes // 4)
    seconds = _best_seconds(lambda: dst.fill_(1.0), runs)
    return {"gbps": dst.numel() * 4 / seconds / 1e9, "bytes": dst.numel() * 4}


def time_fn(fn: Callable, inputs_list: Sequence[Sequence], *, warmup: int = 1,
            min_reps: int = 5, max_reps: int = 100, target_s: float = 0.3,
            return_all: bool = False):
    """Median seconds of `fn(*inputs)` over repetitions, after `warmup` calls.

    Call i uses inputs_list[i % len(inputs_list)]: give enough distinct input sets that
    together they exceed the last-level cache (see `sets_needed`), so no call finds its
    inputs in cache. The number of repetitions adapts to the first timed call: enough
    to fill about `target_s`, within [min_reps, max_reps].
    With return_all=True returns (median, list of all timed seconds).
    """
    meds, times = time_interleaved([fn], inputs_list, warmup=warmup, min_reps=min_reps,
                                   max_reps=max_reps, target_s=target_s, return_all=True)
    return (meds[0], times[0]) if return_all else meds[0]


def time_interleaved(fns: Sequence[Callable], inputs_list: Sequence[Sequence], *,
                     warmup: int = 1, min_reps: int = 5, max_reps: int = 100,
                     target_s: float = 0.3, return_all: bool = False):
    """Like `time_fn` for several functions of the same inputs (ours and its peer), timed
    in alternation: call after call they share whatever else the machine is doing, so a
    burst of load on a shared machine slows both instead of one. Consecutive calls use
    consecutive input sets whatever the function, so no function reads data that the
    previous call just brought into cache. `target_s` is per function.
    Returns the list of medians (and with return_all=True the lists of all times).
    """
    n = len(inputs_list)
    assert n > 0 and len(fns) > 0
    call = 0

    def run(fn):
        nonlocal call
        args = inputs_list[call % n]
        call += 1
        t0 = time.perf_counter()
        fn(*args)
        return time.perf_counter() - t0

    for _ in range(warmup):
        for fn in fns:
            run(fn)
    times = [[] for _ in fns]
    reps = min_reps
    while len(times[0]) < reps:
        for k, fn in enumerate(fns):
            times[k].append(run(fn))
        if len(times[0]) == 1:
            per_round = max(sum(t[0] for t in times), 1e-9)
            reps = max(min_reps, min(max_reps, math.ceil(target_s * len(fns) / per_round)))
    meds = [statistics.median(t) for t in times]
    return (meds, times) if return_all else meds


def time_interleaved_sets(fns: Sequence[Callable], sets_per_fn: Sequence[Sequence[Sequence]], *,
                          warmup: int = 1, min_reps: int = 5, max_reps: int = 100,
                          target_s: float = 0.3, max_fn_s: float | None = None,
                          estimates: Sequence[float | None] | None = None):
    """Like `time_interleaved`, for functions that each read their own data (their own
    weight copies): fn k rotates through its own `sets_per_fn[k]` (call j of fn k gets
    set j % len), so no fn finds in cache what its previous call read, whatever the
    number of functions, and each fn gets its own number of repetitions: enough to fill
    `target_s`, within [min_reps, max_reps], and, with `max_fn_s`, at most that many
    seconds of timed calls (never fewer than 1) so one slow peer cannot eat the run.

    The estimate of one call's time is the warm-up call (or `estimates[k]` when given and
    warmup is 0). Rounds call the fns in order; a fn with fewer repetitions than the
    round count is spread evenly over the rounds, so all fns share the same moments of
    a shared machine's load.
    Returns (medians, lists of all timed seconds), one entry per fn.
    """
    nfn = len(fns)
    assert nfn > 0 and len(sets_per_fn) == nfn and all(len(s) > 0 for s in sets_per_fn)
    counters = [0] * nfn

    def run(k):
        sets = sets_per_fn[k]
        args = sets[counters[k] % len(sets)]
        counters[k] += 1
        t0 = time.perf_counter()
        fns[k](*args)
        return time.perf_counter() - t0

    est = list(estimates) if estimates is not None else [None] * nfn
    for w in range(warmup):
        for k in range(nfn):
            t = run(k)
            est[k] = t if w == 0 or est[k] is None else min(est[k], t)
    times = [[] for _ in range(nfn)]
    if any(e is None for e in est):  # no estimate: the first timed round gives it
        for k in range(nfn):
            times[k].append(run(k))
            est[k] = times[k][0] if est[k] is None else est[k]
    reps = []
    for k in range(nfn):
        r = max(min_reps, min(max_reps, math.ceil(target_s / max(est[k], 1e-9))))
        if max_fn_s is not None:
            r = min(r, max(1, int(max_fn_s / max(est[k], 1e-9))))
        reps.append(max(r, len(times[k])))
    rounds = max(reps)
    for r in range(rounds):
        for k in range(nfn):
            # fn k runs in round r when its evenly spread schedule advances here
            due = (r + 1) * reps[k] // rounds - r * reps[k] // rounds
            for _ in range(due):
                if len(times[k]) < reps[k]:
                    times[k].append(run(k))
    return [statistics.median(t) for t in times], times


def weight_copies(bytes_per_copy: int, *, float32_bytes: int = 0, min_float32_bytes: int = 256 << 20,
                  at_least: int = 2, at_most: int = 512) -> int:
    """How many distinct copies of a weight a timer must cycle through so that none is
    read from cache: together they exceed the last-level cache CACHE_FLUSH_FACTOR times,
    and (benchmarks of linear layers) the float32 weights they stand for add up to at
    least `min_float32_bytes`."""
    want = math.ceil(CACHE_FLUSH_FACTOR * l3_bytes() / max(bytes_per_copy, 1))
    if float32_bytes:
        want = max(want, math.ceil(min_float32_bytes / float32_bytes))
    return max(at_least, min(at_most, want))


def storage_bytes(t) -> int:
    """Bytes a tensor really holds: for a tensor subclass with `__tensor_flatten__`
    (optimum-quanto, torchao, lowbit's QTensor) the sum over its inner tensors, else
    numel * element size. Tuples/lists/dicts are summed."""
    if isinstance(t, (tuple, list)):
        return sum(storage_bytes(o) for o in t)
    if isinstance(t, dict):
        return sum(storage_bytes(o) for o in t.values())
    if not isinstance(t, torch.Tensor):
        return 0
    if type(t) is not torch.Tensor and type(t) is not torch.nn.Parameter and hasattr(t, "__tensor_flatten__"):
        names, _ = t.__tensor_flatten__()
        return sum(storage_bytes(getattr(t, n)) for n in names)
    return t.numel() * t.element_size()


def clone_tensor(t):
    """A copy of `t` in fresh memory, tensor subclasses included (rebuilt from clones of
    their inner tensors with `__tensor_unflatten__`; some subclasses cannot deepcopy)."""
    if isinstance(t, (tuple, list)):
        return type(t)(clone_tensor(o) for o in t)
    if not isinstance(t, torch.Tensor):
        return t
    if isinstance(t, torch.nn.Parameter):
        t = t.data
    if type(t) is torch.Tensor or not hasattr(t, "__tensor_flatten__"):
        return t.detach().clone()
    names, ctx = t.__tensor_flatten__()
    inner = {n: clone_tensor(getattr(t, n)) for n in names}
    return type(t).__tensor_unflatten__(inner, ctx, t.size(), t.stride())


def is_missing_kernel(e: Exception) -> bool:
    """True when an op call failed because the op has no kernel for these inputs yet
    (declared schema, no implementation) rather than because of a bug."""
    if isinstance(e, NotImplementedError):
        return True
    text = str(e).lower()
    return "could not run" in text or "could not find kernel" in text


def first_line(e: Exception, limit: int = 160) -> str:
    """`Type: first line of the message`, cut to `limit` characters, for one-line reports."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"[:limit]


def tensor_bytes(obj) -> int:
    """Bytes held by the tensors in obj (a tensor, or a nested tuple/list/dict of them)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, (tuple, list)):
        return sum(tensor_bytes(o) for o in obj)
    if isinstance(obj, dict):
        return sum(tensor_bytes(o) for o in obj.values())
    return 0


def sets_needed(bytes_per_set: int, *, at_least: int = 2, at_most: int = 256) -> int:
    """How many distinct input sets of `bytes_per_set` together exceed the cache by
    CACHE_FLUSH_FACTOR (at least `at_least`, at most `at_most`)."""
    want = math.ceil(CACHE_FLUSH_FACTOR * l3_bytes() / max(bytes_per_set, 1))
    return max(at_least, min(at_most, want))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / (1 << 20), 1)
    except OSError:
        pass
    return None


def machine_info() -> dict:
    """What the figures were measured on: CPU, cores, memory, cache, torch, lowbit ISA, date."""
    try:
        import lowbit
        isa = lowbit.cpu_isa()
        build = lowbit.build_info()
    except Exception as e:  # the benchmark still describes the machine
        isa, build = f"unavailable ({type(e).__name__})", {}
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "l3_mib": l3_bytes() >> 20,
        "mem_gib": _mem_total_gib(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "lowbit_isa": isa,
        "lowbit_build": {k: str(v) for k, v in build.items()},
        "load_avg_1_5_15": load,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def write_json(path, data) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


def markdown_table(rows: Sequence[dict], columns: Sequence[tuple[str, str]]) -> str:
    """A markdown table of `rows`; columns are (key, header). Floats are shown with
    3 significant digits, None as an empty cell."""
    def cell(v):
        if v is None:
            return ""
        if isinstance(v, float):
            if v == 0 or not math.isfinite(v):
                return str(v)
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v).replace("|", "\\|")
    lines = ["| " + " | ".join(h for _, h in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(cell(r.get(k)) for k, _ in columns) + " |")
    return "\n".join(lines)


def write_markdown(path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text.endswith("\n") else text + "\n")
    return path


def machine_markdown(info: dict, extra: dict | None = None) -> str:
    """A few lines describing the machine (and any extra key: value pairs)."""
    items = {
        "CPU": f"{info['cpu']} ({info['cores']} cores, {info['threads']} threads used, "
               f"L3 {info['l3_mib']} MiB, {info['mem_gib']} GiB RAM)",
        "torch": info["torch"],
        "lowbit ISA": info["lowbit_isa"],
        "load average (1/5/15 min) at start": info["load_avg_1_5_15"],
        "date": info["date"],
    }
    items.update(extra or {})
    return "\n".join(f"- {k}: {v}" for k, v in items.items())
