"""What a profiler trace of training steps says about the two columns.

`read_trace` loads a Chrome/Perfetto trace written by torch.profiler; `step_timelines` puts
every piece of work of each profiled step in a lane: the column that did it ("A" or "B"), the
links between them ("link"), or the host ("host": work outside both columns, e.g. zero_grad),
with its layer and its phase (forward, backward, update). `summarize` turns the steps into
per-layer forward and backward times per column and the share of the step in which both
columns run at once.

What counts as a piece of work: on a GPU, each kernel, copy and memset the device ran (its
device time); on the CPU, each top-level operator the host thread ran (an op called by no other
op), so the Python between ops is not counted. How each one is attributed:

* forward: by the profiler ranges the op ran in. The column's runtime records
  "twocol:column:<A|B>", each link copy "twocol:link:<link>:<src>><dst>" (links.py), and
  twocol.profile records "twocol:layer:<column>:<layer>", "twocol:update:<column>" and
  "twocol:step" around each step. Column work outside any layer range (the concatenation that
  joins a link's halves, the input's copy) goes with the column's next layer.
* backward: the autograd engine runs each backward node as one
  "autograd::engine::evaluate_function: ..." op carrying the node's sequence number, which is
  also recorded on the forward op that created the node; the backward node gets that forward
  op's lane and layer (a link's gradient travels the reverse route). Of the forward ops
  sharing a sequence number, the node's creator is the last to start (ops issued before it
  read the same counter; those after it read the next value). Nodes without a sequence
  number (AccumulateGrad) go with the backward node before them on their thread.
* on a GPU, a kernel goes with the host op that launched it (the CUDA runtime call with the
  same correlation id).
"""
from __future__ import annotations

import gzip
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from .errors import TwocolError
from .layers import LAYERS
from .links import COLUMN_LABEL, LINK_LABEL

STEP_LABEL = "twocol:step"
LAYER_LABEL = "twocol:layer:"
UPDATE_LABEL = "twocol:update:"
BACKWARD_OP = "autograd::engine::evaluate_function: "
HOST_CATS = ("cpu_op", "user_annotation", "cuda_runtime", "cuda_driver")
DEVICE_CATS = ("kernel", "gpu_memcpy", "gpu_memset")
LANES = ("A", "link", "B", "host")
PHASES = ("forward", "backward", "update")


@dataclass(frozen=True)
class Slice:
    """One piece of work: [start, end) in microseconds of the trace's clock."""

    start: float
    end: float
    lane: str      # "A", "B", "link" or "host"
    layer: str     # conv1..fc8, loss, update; the link's name in the "link" lane; "other" on the host
    phase: str     # "forward", "backward" or "update"
    name: str      # the op's or kernel's name
    route: str = ""  # for link work: "A>B" or "B>A", the direction the bytes went
    stream: int | None = None  # on a GPU, the CUDA stream it ran on

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass
class Step:
    """One profiled step: its wall-clock range on the host and its pieces of work."""

    start: float
    end: float
    slices: list[Slice] = field(default_factory=list)

    @property
    def wall(self) -> float:
        return self.end - self.start


def read_trace(path: str | Path) -> list[dict]:
    """The events of a Chrome trace (.json or .json.gz)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise TwocolError(f"{path} is not a readable Chrome trace ({e})") from None
    return data["traceEvents"] if isinstance(data, dict) else data


@dataclass
class _Host:
    """A host-side event with what its ranges say about it."""

    ev: dict
    thread: tuple
    parent: "_Host | None"
    column: str | None = None
    layer: str | None = None
    link: tuple[str, str] | None = None   # (name, route)
    update: str | None = None
    backward: "_Host | None" = None       # the evaluate_function op it runs in
    under_op: bool = False                # inside another cpu_op

    @property
    def start(self) -> float:
        return float(self.ev["ts"])

    @property
    def end(self) -> float:
        return float(self.ev["ts"]) + float(self.ev.get("dur", 0.0))

    @property
    def seq(self):
        return self.ev.get("args", {}).get("Sequence number")


def _host_tree(events: list[dict]) -> list[_Host]:
    """Host events with their enclosing ranges resolved, per thread, in start order."""
    by_thread: dict[tuple, list[dict]] = {}
    for e in events:
        if e.get("ph") == "X" and e.get("cat") in HOST_CATS and "ts" in e:
            by_thread.setdefault((e.get("pid"), e.get("tid")), []).append(e)
    out = []
    for thread, evs in by_thread.items():
        evs.sort(key=lambda e: (float(e["ts"]), -float(e.get("dur", 0.0))))
        stack: list[_Host] = []
        for e in evs:
            while stack and stack[-1].end <= float(e["ts"]):
                stack.pop()
            parent = stack[-1] if stack else None
            h = _Host(e, thread, parent)
            if parent is not None:
                h.column, h.layer, h.link, h.update = parent.column, parent.layer, parent.link, parent.update
                h.backward = parent.backward
                h.under_op = parent.under_op or parent.ev.get("cat") == "cpu_op"
            name = e.get("name", "")
            if name.startswith(COLUMN_LABEL):
                h.column = name[len(COLUMN_LABEL):]
            elif name.startswith(LAYER_LABEL):
                h.column, h.layer = name[len(LAYER_LABEL):].split(":", 1)
            elif name.startswith(LINK_LABEL):
                link, route = name[len(LINK_LABEL):].split(":", 1)
                h.link = (link, route)
            elif name.startswith(UPDATE_LABEL):
                h.update = name[len(UPDATE_LABEL):]
            elif name.startswith(BACKWARD_OP) and h.backward is None:
                h.backward = h
            stack.append(h)
            out.append(h)
    return out


def _forward_attribution(h: _Host) -> tuple[str, str, str, str] | None:
    """(lane, layer, phase, route) from the ranges of a forward-pass host event; layer None
    for column work outside any layer (resolved to the column's next layer later)."""
    if h.link is not None:
        return ("link", h.link[0], "forward", h.link[1])
    if h.update is not None:
        return (h.update, "update", "update", "")
    if h.column is not None:
        return (h.column, h.layer, "forward", "")
    return None


def _attribute(hosts: list[_Host]) -> dict[int, tuple[str, str, str, str]]:
    """id(host event) -> (lane, layer, phase, route) for every host event."""
    result: dict[int, tuple] = {}
    # Forward: resolve "column work outside a layer" to the column's next layer on its thread
    # (or, when no layer follows, to its last one).
    pending: dict[tuple, list[_Host]] = {}
    last_layer: dict[tuple, str] = {}
    for h in hosts:  # start order within each thread
        if h.backward is not None:
            continue
        a = _forward_attribution(h)
        if a is None:
            result[id(h)] = ("host", "other", "forward", "")
        elif a[0] in ("A", "B") and a[2] == "forward" and a[1] is None:
            pending.setdefault((h.thread, a[0]), []).append(h)
        else:
            result[id(h)] = a
            if a[2] == "forward" and a[0] in ("A", "B"):
                last_layer[(h.thread, a[0])] = a[1]
                for p in pending.pop((h.thread, a[0]), []):
                    result[id(p)] = (a[0], a[1], "forward", "")
    for key, waiting in pending.items():
        for p in waiting:
            result[id(p)] = (key[1], last_layer.get(key, "other"), "forward", "")
    # The op that created each autograd node: the last forward op to start with its number.
    creator: dict[int, _Host] = {}
    for h in hosts:
        if h.backward is None and h.ev.get("cat") == "cpu_op" and h.seq is not None and h.seq >= 0:
            if h.seq not in creator or h.start >= creator[h.seq].start:
                creator[h.seq] = h
    # Backward: each evaluate_function op takes its forward op's place; the ops inside it follow.
    previous: dict[tuple, tuple] = {}
    for h in hosts:
        if h.backward is not h:
            continue
        fwd = creator.get(h.seq) if h.seq is not None and h.seq >= 0 else None
        if fwd is not None:
            lane, layer, _, route = result[id(fwd)]
            if lane == "link":
                route = ">".join(reversed(route.split(">")))
            a = (lane, layer, "backward", route)
            previous[h.thread] = a
        else:
            a = previous.get(h.thread, ("host", "other", "backward", ""))
        result[id(h)] = a
    for h in hosts:
        if h.backward is not None and h.backward is not h:
            result[id(h)] = result[id(h.backward)]
    return result


def step_timelines(events: list[dict]) -> list[Step]:
    """Every profiled step (a "twocol:step" range) with its pieces of work, in start order."""
    hosts = _host_tree(events)
    steps = sorted((h for h in hosts if h.ev.get("name") == STEP_LABEL), key=lambda h: h.start)
    if not steps:
        raise TwocolError("the trace holds no 'twocol:step' range: not a trace written by twocol profile")
    attribution = _attribute(hosts)
    out = [Step(s.start, s.end) for s in steps]

    def step_of(t: float) -> Step | None:
        for s in out:
            if s.start <= t <= s.end:
                return s
        return None

    device = [e for e in events if e.get("ph") == "X" and e.get("cat") in DEVICE_CATS and "ts" in e]
    if device:
        launches = {h.ev["args"]["correlation"]: h for h in hosts
                    if h.ev.get("cat") in ("cuda_runtime", "cuda_driver") and "correlation" in h.ev.get("args", {})}
        for e in device:
            h = launches.get(e.get("args", {}).get("correlation"))
            s = step_of(h.start) if h is not None else step_of(float(e["ts"]))
            if s is None:
                continue
            lane, layer, phase, route = attribution[id(h)] if h is not None else ("host", "other", "forward", "")
            start = float(e["ts"])
            s.slices.append(Slice(start, start + float(e.get("dur", 0.0)), lane, layer, phase, e.get("name", ""), route,
                                  e.get("args", {}).get("stream")))
    else:
        for h in hosts:
            if h.ev.get("cat") != "cpu_op" or h.under_op:
                continue
            s = step_of(h.start)
            if s is None:
                continue
            lane, layer, phase, route = attribution[id(h)]
            s.slices.append(Slice(h.start, h.end, lane, layer, phase, h.ev.get("name", ""), route))
    for s in out:
        s.slices.sort(key=lambda x: x.start)
    return out


def union(intervals) -> list[tuple[float, float]]:
    """Disjoint sorted intervals covering the given ones."""
    merged: list[list[float]] = []
    for a, b in sorted(intervals):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def covered(intervals) -> float:
    return sum(b - a for a, b in union(intervals))


def both_at_once(a, b) -> float:
    """Time during which some interval of `a` and some interval of `b` run together."""
    ua, ub = union(a), union(b)
    i = j = 0
    total = 0.0
    while i < len(ua) and j < len(ub):
        lo, hi = max(ua[i][0], ub[j][0]), min(ua[i][1], ub[j][1])
        total += max(0.0, hi - lo)
        if ua[i][1] < ub[j][1]:
            i += 1
        else:
            j += 1
    return total


def step_summary(step: Step) -> dict:
    """Microseconds: wall time, each lane's busy time, both columns at once, and per
    (lane, layer, phase) the summed duration of its work."""
    lanes = {lane: [(x.start, x.end) for x in step.slices if x.lane == lane] for lane in LANES}
    work: dict[str, float] = {}
    for x in step.slices:
        key = f"{x.lane}:{x.layer}:{x.phase}"
        work[key] = work.get(key, 0.0) + x.duration
    streams = {lane: sorted({x.stream for x in step.slices if x.lane == lane and x.stream is not None})
               for lane in LANES}
    return {"wall_us": step.wall, "busy_us": {lane: covered(v) for lane, v in lanes.items()},
            "any_busy_us": covered([iv for v in lanes.values() for iv in v]),
            "both_columns_us": both_at_once(lanes["A"], lanes["B"]), "work_us": work,
            "pieces": len(step.slices), "streams": {k: v for k, v in streams.items() if v}}


def summarize(steps: list[Step]) -> dict:
    """Medians over the steps (microseconds) of step_summary's numbers, per-layer forward and
    backward times per column, the share of the step in which both columns run at once, and on
    a GPU the CUDA streams each lane's work ran on."""
    per = [step_summary(s) for s in steps]
    med = statistics.median
    keys = sorted({k for p in per for k in p["work_us"]})
    work = {k: med([p["work_us"].get(k, 0.0) for p in per]) for k in keys}
    layers: dict[str, dict[str, dict[str, float]]] = {}
    for k, v in work.items():
        lane, layer, phase = k.split(":")
        layers.setdefault(lane, {}).setdefault(layer, {"forward": 0.0, "backward": 0.0, "update": 0.0})[phase] = v
    wall = med([p["wall_us"] for p in per])
    both = med([p["both_columns_us"] for p in per])
    return {"steps": len(per), "wall_us": wall, "busy_us": {lane: med([p["busy_us"][lane] for p in per]) for lane in LANES},
            "any_busy_us": med([p["any_busy_us"] for p in per]), "both_columns_us": both,
            "both_columns_share": both / wall if wall > 0 else 0.0,
            "pieces_per_step": med([p["pieces"] for p in per]), "layers": layers,
            "streams": {lane: sorted({x for p in per for x in p["streams"].get(lane, [])}) for lane in LANES
                        if any(lane in p["streams"] for p in per)},
            "median_step": min(range(len(per)), key=lambda i: abs(per[i]["wall_us"] - wall))}


# The rows of a profile's per-layer table (`twocol profile` and bench/report.py print it).
TABLE_LAYERS = LAYERS + ("loss", "update")


def layer_table(timeline: dict) -> list[tuple[str, list[float | None]]]:
    """From summarize()'s result: for each layer with work in some column, microseconds per step
    [A forward, A backward, B forward, B backward], None where that column has no such work
    (the update has no backward)."""
    rows = []
    for layer in TABLE_LAYERS:
        cells: list[float | None] = []
        for column in ("A", "B"):
            v = timeline["layers"].get(column, {}).get(layer)
            if v is None:
                cells += [None, None]
            elif layer == "update":
                cells += [v["update"], None]
            else:
                cells += [v["forward"], v["backward"]]
        if any(c is not None for c in cells):
            rows.append((layer, cells))
    return rows
