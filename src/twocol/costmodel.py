"""The two-device cost model: the step time of the two-column net with each column on its own
device, predicted from each column's measured layer times and the bytes its links move, at a
given interconnect bandwidth.

The step is a graph of tasks: each column's forward layers, its backward layers in reverse,
and its weight update, run in that order on the column's device; a link's forward copy leaves
when its producer layer ends on the source device and the consumer layer on the destination
waits for it; the gradient of each copy goes back the reverse way after the consumer's
backward, and the producer's backward waits for it. A link is named by the layer it feeds (the
plan's, layers.py) and carries what the layer before it made: in the paper's net conv3 (after
conv2), fc6 (after conv5), fc7 (after fc6) in both directions and fc8 (after fc7) from B to A,
where fc8 and the loss live.

Assumptions (stated wherever a prediction is shown):
1. A layer takes on its own device the time measured for it (on a GPU: the summed time of its
   kernels; on the CPU: of its operators): no launch gaps, no host stalls, and no slowdown or
   speed-up from having a device to itself. When the columns were measured sharing one GPU,
   a column's kernels may have run slower beside the other's (see the measured overlap).
2. A copy takes bytes / bandwidth plus a fixed latency (0 unless given); the bandwidth is per
   direction and both directions run at once (PCIe and NVLink are full duplex); copies in one
   direction go one at a time, in the order the program issues them; copies run beside the
   devices' compute (copy engines) and cost the devices nothing.
3. The batch is on both devices when the step starts (the data pipeline feeds each device),
   unless input_bytes_to_b says it is copied from A's device to B's first.
4. Each device updates its own column's weights as soon as its backward ends (no cross-device
   synchronisation beyond the links), which is what queued GPU work does.
5. On one device the columns run one after the other and the links cost nothing (a link on one
   device hands over a view), so the one-device time is the sum of all the tasks.
"""
from __future__ import annotations

import math

from .layers import LAYERS

FORWARD_ORDER = LAYERS + ("loss",)
# Interconnects the command predicts for when no --link-gbps is given: GB/s (1e9 bytes/s) per
# direction, theoretical peaks of a x16 slot or of all of a GPU's NVLink links.
PRESETS = (("PCIe 2.0 x16 (2012): 5 GT/s x 16 lanes, 8b/10b", 8.0),
           ("PCIe 4.0 x16: 16 GT/s x 16 lanes, 128b/130b", 31.5),
           ("NVLink 4 (H100/H200 SXM): 18 links x 25 GB/s", 450.0))
ASSUMPTIONS = (
    "each layer takes on its own device the time measured for it (summed kernel or operator time: "
    "no launch gaps or host stalls, no contention)",
    "a copy takes bytes / bandwidth (+ latency); bandwidth per direction, both directions at once, "
    "one copy at a time per direction in program order, beside the devices' compute",
    "the batch is already on both devices when the step starts (the pipeline feeds each device)",
    "each device updates its own weights when its backward ends",
    "on one device the columns run one after the other and links cost nothing (views)",
)


def _order(layers: dict) -> list[str]:
    return [l for l in FORWARD_ORDER if l in layers]


def serial_step(layers: dict[str, dict[str, tuple[float, float]]], updates: dict[str, float]) -> float:
    """Seconds for one device running every column's forward, backward and update in turn."""
    return sum(f + b for col in layers.values() for f, b in col.values()) + sum(updates.values())


def two_device_step(layers: dict[str, dict[str, tuple[float, float]]], updates: dict[str, float],
                    routes: dict[str, dict[str, int]], bandwidth: float, latency: float = 0.0,
                    input_bytes_to_b: int = 0) -> dict:
    """Predicted step with column A on one device and B on another.

    layers: {"A": {"conv1": (forward s, backward s), ...}, "B": {...}}; updates: {"A": s, "B": s};
    routes: {"conv3": {"A>B": bytes, "B>A": bytes}, ..., "fc8": {"B>A": bytes}}: forward bytes
    per step of each link and direction (the gradient moves as many back); bandwidth: bytes/s
    per direction (math.inf: copies are free). Returns the step time and, per device, when it
    finished and how long it sat idle; per direction, how long the link was busy."""
    if bandwidth <= 0:
        raise ValueError(f"bandwidth must be positive, got {bandwidth}")
    cols = sorted(layers)
    order = [l for l in FORWARD_ORDER if any(l in layers[c] for c in cols)]
    # link -> (the layer making what crosses, the layer it feeds: the link's name)
    links = {link: (order[order.index(link) - 1], link) for link in routes}

    def copy_time(nbytes: int) -> float:
        return latency + (0.0 if math.isinf(bandwidth) else nbytes / bandwidth)

    clock = {c: 0.0 for c in cols}
    busy = {c: 0.0 for c in cols}
    channel = {}  # "A>B" -> when the direction is free
    link_busy = {}

    def send(route: str, ready: float, nbytes: int) -> float:
        start = max(ready, channel.get(route, 0.0))
        channel[route] = start + copy_time(nbytes)
        link_busy[route] = link_busy.get(route, 0.0) + copy_time(nbytes)
        return channel[route]

    def run(col: str, ready: float, seconds: float) -> float:
        clock[col] = max(clock[col], ready) + seconds
        busy[col] += seconds
        return clock[col]

    arrive: dict[tuple[str, str], float] = {}  # (layer, device) -> when its inputs from the other device are there
    if input_bytes_to_b and "B" in layers:
        arrive[("conv1", "B")] = send("A>B", 0.0, input_bytes_to_b)
    done: dict[tuple[str, str], float] = {}
    for layer in FORWARD_ORDER:
        for c in cols:
            if layer in layers[c]:
                done[(layer, c)] = run(c, arrive.get((layer, c), 0.0), layers[c][layer][0])
        for link, (producer, consumer) in links.items():
            if producer != layer:
                continue
            for route, nbytes in routes.get(link, {}).items():
                src, dst = route.split(">")
                t = send(route, done[(producer, src)], nbytes)
                arrive[(consumer, dst)] = max(arrive.get((consumer, dst), 0.0), t)
    grads: dict[tuple[str, str], float] = {}  # (layer, device) -> when the gradients from the other device are there
    for layer in reversed(FORWARD_ORDER):
        for c in cols:
            if layer in layers[c]:
                done[(layer, c)] = run(c, grads.get((layer, c), 0.0), layers[c][layer][1])
        for link, (producer, consumer) in links.items():
            if consumer != layer:
                continue
            for route, nbytes in routes.get(link, {}).items():
                src, dst = route.split(">")
                t = send(f"{dst}>{src}", done[(consumer, dst)], nbytes)
                grads[(producer, src)] = max(grads.get((producer, src), 0.0), t)
    finish = {c: run(c, 0.0, updates.get(c, 0.0)) for c in cols}
    step = max(finish.values())
    return {"step_s": step, "finish_s": finish, "idle_s": {c: step - busy[c] for c in cols},
            "link_busy_s": link_busy}


def predictions(layers, updates, routes, gbps: list[tuple[str, float]], measured_step: float,
                input_bytes_to_b: int = 0, profiled_step: float | None = None) -> dict:
    """The model's table: one device (serial) against the measured step (and the wall time of
    the profiled steps the layer times come from), and each interconnect (label, GB/s per
    direction; math.inf for free copies) with its speed-up over one device."""
    serial = serial_step(layers, updates)
    rows = []
    for label, g in gbps:
        bw = math.inf if math.isinf(g) else g * 1e9
        two = two_device_step(layers, updates, routes, bw)
        row = {"interconnect": label, "gbps": None if math.isinf(g) else g, "step_s": two["step_s"], "speedup_over_one_device": serial / two["step_s"],
               "idle_s": two["idle_s"], "link_busy_s": two["link_busy_s"]}
        if input_bytes_to_b:
            row["step_s_if_batch_copied_a_to_b"] = two_device_step(layers, updates, routes, bw,
                                                                   input_bytes_to_b=input_bytes_to_b)["step_s"]
        rows.append(row)
    return {"one_device_serial_s": serial, "measured_step_s": measured_step,
            "serial_over_measured": serial / measured_step if measured_step > 0 else None,
            "profiled_step_s": profiled_step,
            "serial_over_profiled": serial / profiled_step if profiled_step else None,
            "two_devices": rows, "assumptions": list(ASSUMPTIONS)}
