"""twocol profile: the trace reading (handmade CPU and GPU traces, exact numbers), the
two-device cost model (handmade layer times worked out by hand) and the command end to end."""
import json
import math

import pytest

from twocol import costmodel
from twocol.commands.profile import interconnects
from twocol.config import load_config
from twocol.describe import describe
from twocol.devices import Placement
from twocol.profile import analyse, profile_training
from twocol.timeline import step_timelines, summarize

from conftest import twocol_in_process as twocol


def X(name, ts, dur, cat="cpu_op", tid=1, **args):
    return {"ph": "X", "cat": cat, "name": name, "pid": 1, "tid": tid, "ts": ts, "dur": dur, "args": args}


def seq(n):
    return {"Sequence number": n, "Fwd thread id": 0}


def cpu_trace():
    """One step of a toy two-column net as the CPU profiler records it."""
    bwd = "autograd::engine::evaluate_function: "
    return [
        X("twocol:step", 0, 100, "user_annotation"),
        X("twocol:column:A", 1, 9, "user_annotation"),
        X("twocol:layer:A:conv1", 2, 8, "user_annotation"),
        X("aten::conv2d", 3, 4, **seq(0)),
        X("aten::convolution", 3.5, 3, **seq(0)),          # inside conv2d: not counted again
        X("twocol:column:A", 11, 9, "user_annotation"),
        X("twocol:link:conv3:B>A", 11, 2, "user_annotation"),
        X("_Crossing", 11.5, 1, **seq(1)),
        X("aten::cat", 14, 1, **seq(2)),                    # column A, no layer: goes with conv3
        X("twocol:layer:A:conv3", 16, 3, "user_annotation"),
        X("aten::conv2d", 16.5, 2, **seq(3)),
        X("aten::empty", 18.6, 0.3, **seq(4)),             # reads the next number; B's op creates node 4
        X("twocol:column:B", 21, 9, "user_annotation"),
        X("twocol:layer:B:conv1", 22, 7, "user_annotation"),
        X("aten::conv2d", 23, 4, **seq(4)),
        X("twocol:layer:A:loss", 31, 2, "user_annotation"),
        X("aten::cross_entropy_loss", 31.5, 1, **seq(5)),
        X(bwd + "NllLossBackward0", 40, 2, **seq(5)),
        X(bwd + "torch::autograd::AccumulateGrad", 42.5, 0.5),  # no number: with the node before it
        X(bwd + "ConvolutionBackward0", 44, 4, **seq(3)),
        X("aten::convolution_backward", 44.5, 2.5),        # inside: not counted again
        X(bwd + "_CrossingBackward", 49, 1, **seq(1)),
        X(bwd + "CatBackward0", 51, 1, **seq(2)),
        X(bwd + "ConvolutionBackward0", 53, 3, **seq(4)),
        X(bwd + "ConvolutionBackward0", 57, 3, **seq(0)),
        X("twocol:update:A", 70, 5, "user_annotation"),
        X("aten::add_", 71, 3),
        X("aten::zeros", 80, 1),                            # outside every column: the host
        X("aten::add_", 200, 10),                           # outside the step: ignored
    ]


def test_cpu_trace_puts_each_op_in_its_column_layer_and_phase():
    (step,) = step_timelines(cpu_trace())
    s = summarize([step])
    assert s["wall_us"] == 100 and s["steps"] == 1 and s["pieces_per_step"] == 16
    a, b, link, host = (s["layers"][k] for k in ("A", "B", "link", "host"))
    assert a["conv1"] == {"forward": 4, "backward": 3, "update": 0}
    assert a["conv3"]["forward"] == pytest.approx(1 + 2 + 0.3) and a["conv3"]["backward"] == 4 + 1
    assert a["loss"] == {"forward": 1, "backward": 2 + 0.5, "update": 0}
    assert a["update"]["update"] == 3
    assert b == {"conv1": {"forward": 4, "backward": 3, "update": 0}}
    assert link == {"conv3": {"forward": 1, "backward": 1, "update": 0}}
    assert host == {"other": {"forward": 1, "backward": 0, "update": 0}}
    routes = {(x.phase, x.route) for x in step.slices if x.lane == "link"}
    assert routes == {("forward", "B>A"), ("backward", "A>B")}   # the gradient goes home
    assert s["both_columns_us"] == 0 and s["both_columns_share"] == 0 and s["streams"] == {}
    assert s["busy_us"]["B"] == 7 and s["busy_us"]["A"] == pytest.approx(4 + 3.3 + 1 + 2.5 + 5 + 3 + 3)


def test_gpu_trace_follows_kernels_to_their_launches_and_measures_overlap():
    bwd = "autograd::engine::evaluate_function: "
    rt = lambda ts, corr, tid=1, name="cudaLaunchKernel": X(name, ts, 1, "cuda_runtime", tid, correlation=corr)
    k = lambda ts, dur, corr, stream, cat="kernel": {"ph": "X", "cat": cat, "name": f"k{corr}", "pid": 0,
                                                      "tid": stream, "ts": ts, "dur": dur,
                                                      "args": {"correlation": corr, "stream": stream}}
    events = [
        X("twocol:step", 0, 100, "user_annotation"),
        X("twocol:column:A", 1, 9, "user_annotation"), X("twocol:layer:A:conv1", 1, 9, "user_annotation"),
        X("aten::conv2d", 2, 6, **seq(0)), rt(3, 11),
        X("twocol:column:B", 11, 9, "user_annotation"), X("twocol:layer:B:conv1", 11, 9, "user_annotation"),
        X("aten::conv2d", 12, 6, **seq(1)), rt(13, 12),
        X("twocol:link:fc8:B>A", 21, 4, "user_annotation"), X("_Crossing", 21.5, 2.5, **seq(2)),
        rt(22, 13, name="cudaMemcpyAsync"),
        # the autograd engine's device thread
        X(bwd + "ConvolutionBackward0", 30, 5, tid=2, **seq(1)), rt(31, 14, tid=2),
        X(bwd + "ConvolutionBackward0", 36, 4, tid=2, **seq(0)), rt(37, 15, tid=2),
        X(bwd + "_CrossingBackward", 41, 4, tid=2, **seq(2)), rt(42, 16, tid=2, name="cudaMemcpyAsync"),
        k(50, 10, 11, 7), k(55, 15, 12, 8), k(70, 2, 13, 8, "gpu_memcpy"), k(73, 7, 14, 8), k(75, 10, 15, 7),
        k(86, 1, 16, 7, "gpu_memcpy"), k(88, 1, 99, 7),
    ]
    (step,) = step_timelines(events)
    s = summarize([step])
    assert s["layers"]["A"] == {"conv1": {"forward": 10, "backward": 10, "update": 0}}
    assert s["layers"]["B"] == {"conv1": {"forward": 15, "backward": 7, "update": 0}}
    assert s["layers"]["link"] == {"fc8": {"forward": 2, "backward": 1, "update": 0}}
    assert s["layers"]["host"] == {"other": {"forward": 1, "backward": 0, "update": 0}}
    # A runs 50-60 and 75-85, B 55-70 and 73-80: together 55-60 and 75-80.
    assert s["both_columns_us"] == 10 and s["both_columns_share"] == pytest.approx(0.1)
    assert s["busy_us"]["A"] == 20 and s["busy_us"]["B"] == 22 and s["any_busy_us"] == (72 - 50) + (85 - 73) + 1 + 1
    assert [x.route for x in step.slices if x.lane == "link"] == ["B>A", "A>B"]
    assert s["streams"] == {"A": [7], "link": [7, 8], "B": [8], "host": [7]}


def test_a_trace_without_steps_is_refused():
    with pytest.raises(Exception, match="twocol:step"):
        step_timelines([X("aten::add_", 0, 1)])


# The cost model on handmade times (seconds) and bytes at 1 byte/s, so a byte is a second.
LAYERS = {"A": {**{l: (1.0, 2.0) for l in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")},
                "loss": (1.0, 1.0)},
          "B": {l: (1.0, 2.0) for l in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")}}
UPDATES = {"A": 1.0, "B": 1.0}
ROUTES = {"conv3": {"A>B": 3, "B>A": 3}, "fc6": {"A>B": 1, "B>A": 1}, "fc7": {"A>B": 1, "B>A": 1}, "fc8": {"B>A": 2}}


def test_cost_model_arithmetic_worked_by_hand():
    assert costmodel.serial_step(LAYERS, UPDATES) == 26 + 21 + 2
    p = costmodel.two_device_step(LAYERS, UPDATES, ROUTES, bandwidth=1.0)
    # Forward: conv1-2 end at 2; the conv3 copies take 2-5; conv3-5 run 5-8; fc6 copies 8-9, fc6
    # 9-10; fc7 copies 10-11, fc7 11-12; fc8's copy B>A 12-14, fc8 14-15, loss 15-16. Backward: loss
    # 16-17, fc8 17-19, its gradient to B 19-21; fc7 A 19-21, B 21-23; their gradients B>A 23-24
    # and A>B 21-22; fc6 A 24-26, B 23-25; gradients 25-26 and 26-27; conv5 A 26-28, B 27-29;
    # conv4, conv3 follow (A to 32, B to 33); conv3's gradients 33-36 to A and 32-35 to B; conv2 A
    # 36-38, B 35-37; conv1 A 38-40, B 37-39; updates A 40-41, B 39-40.
    assert p["step_s"] == 41 and p["finish_s"] == {"A": 41, "B": 40}
    assert p["idle_s"] == {"A": 41 - 27, "B": 41 - 22}
    assert p["link_busy_s"] == {"A>B": 12, "B>A": 12}
    free = costmodel.two_device_step(LAYERS, UPDATES, ROUTES, bandwidth=math.inf)
    assert free["step_s"] == 27 and free["link_busy_s"] == {"A>B": 0, "B>A": 0}
    # Latency alone: every copy takes 0.5 s.
    assert costmodel.two_device_step(LAYERS, UPDATES, ROUTES, math.inf, latency=0.5)["step_s"] > 27


def test_cost_model_batch_copied_to_b_first():
    layers = {"A": {"conv1": (1.0, 1.0)}, "B": {"conv1": (1.0, 1.0)}}
    p = costmodel.two_device_step(layers, {}, {}, bandwidth=1.0, input_bytes_to_b=5)
    assert p["step_s"] == 7 and p["finish_s"] == {"A": 2, "B": 7} and p["link_busy_s"] == {"A>B": 5}
    with pytest.raises(ValueError):
        costmodel.two_device_step(layers, {}, {}, bandwidth=0.0)


def test_cost_model_table():
    t = costmodel.predictions(LAYERS, UPDATES, ROUTES, [("slow", 1e-9), ("free", math.inf)], measured_step=98.0,
                              input_bytes_to_b=4, profiled_step=49.0)
    assert t["one_device_serial_s"] == 49 and t["serial_over_measured"] == 0.5 and t["serial_over_profiled"] == 1
    slow, free = t["two_devices"]
    assert slow["gbps"] == 1e-9 and slow["step_s"] == pytest.approx(41) and slow["speedup_over_one_device"] == pytest.approx(49 / 41)
    assert free["gbps"] is None and free["step_s"] == 27 and free["step_s_if_batch_copied_a_to_b"] == 27
    assert slow["step_s_if_batch_copied_a_to_b"] > slow["step_s"]
    assert len(t["assumptions"]) == 5


def test_interconnects_default_and_given():
    assert [g for _, g in interconnects(None)] == [8.0, 31.5, 450.0, math.inf]
    assert interconnects([8, 64]) == [("8 GB/s", 8), ("64 GB/s", 64)]


def test_profile_command_on_the_cpu_simulation(tmp_path, capsys):
    code, out, err = twocol(capsys, "profile", "-c", "configs/tiny_twocol.yaml", "--gpus", "cpu", "--steps", "2",
                            "--warmup", "1", "--link-gbps", "8", "--link-gbps", "450", "-o", tmp_path)
    assert code == 0, err[-3000:]
    assert "both columns at once 0.0% of the step" in out and "one device, columns in series" in out
    assert (tmp_path / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "trace.json.gz").stat().st_size > 0
    p = json.loads((tmp_path / "profile.json").read_text())
    layers = p["timeline"]["layers"]
    for column in ("A", "B"):
        for layer in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"):
            assert layers[column][layer]["forward"] > 0 and layers[column][layer]["backward"] > 0, (column, layer)
        assert layers[column]["update"]["update"] > 0
    assert layers["A"]["fc8"]["forward"] > 0 and "fc8" not in layers["B"] and layers["A"]["loss"]["backward"] > 0
    assert p["timeline"]["both_columns_share"] == 0 and p["timeline"]["steps"] == 2
    cfg = load_config("configs/tiny_twocol.yaml")
    per_image = {l["link"]: l["bytes_per_image"] for l in describe(cfg, Placement.cpu())["links"]}
    routes = p["link_bytes_per_step"]
    assert {k: sum(v.values()) for k, v in routes.items()} == {k: v * cfg.data.batch_size for k, v in per_image.items()}
    assert set(routes["conv3"]) == {"A>B", "B>A"} and set(routes["fc8"]) == {"B>A"}
    m = p["cost_model"]
    column_work = sum(v[ph] for c in ("A", "B") for v in layers[c].values() for ph in ("forward", "backward", "update"))
    assert m["one_device_serial_s"] == pytest.approx(column_work * 1e-6)
    assert m["profiled_step_s"] == pytest.approx(p["timeline"]["wall_us"] * 1e-6)
    # The ops found in a profiled step are within its wall time and account for most of it.
    assert 0.3 < m["serial_over_profiled"] <= 1
    assert [row["gbps"] for row in m["two_devices"]] == [8, 450]
    assert all(row["step_s"] < m["one_device_serial_s"] for row in m["two_devices"])
    assert p["params"]["A"] + p["params"]["B"] == describe(cfg, Placement.cpu())["total_params"]


@pytest.mark.parametrize("args,needle", [(["--link-gbps", "0"], "--link-gbps"), (["--steps", "0"], "--steps")])
def test_profile_bad_input_is_one_line(tmp_path, capsys, args, needle):
    from twocol.cli import main
    assert main(["profile", "-c", "configs/tiny_twocol.yaml", "--gpus", "cpu", *args, "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err and not any(tmp_path.iterdir())


def test_profile_of_a_one_column_net(tmp_path):
    cfg = load_config("configs/tiny_onecol.yaml")
    result, steps = analyse(profile_training(cfg, Placement.cpu(), tmp_path, steps=1, warmup=0), tmp_path, [])
    assert set(result["timeline"]["layers"]) >= {"A"} and "B" not in result["timeline"]["layers"]
    assert result["link_bytes_per_step"] == {} and "cost_model" not in result and len(steps) == 1


def test_describe_profile_and_the_cost_model_take_every_ablations_net(tmp_path):
    """Every layer list (describe's rows, the profiler's spans, the cost model's order and links)
    comes from the one plan, so every ablation's net goes through all three; the links are named by
    the layer they feed, and the cost model finds what each one carries whatever layer is gone."""
    from twocol.ablations import ABLATIONS, apply_ablations
    base = load_config("configs/tiny_twocol.yaml", ["data.batch_size=2"])
    for name, entry in ABLATIONS.items():
        cfg = apply_ablations(load_config("configs/tiny_twocol.yaml", ["data.batch_size=2", *entry.baseline(base)]),
                              [name])
        d = describe(cfg, Placement.cpu())
        run = profile_training(cfg, Placement.cpu(), tmp_path / name, steps=1, warmup=0)
        result, _ = analyse(run, tmp_path / name, [("free", math.inf)])
        layers = {r["layer"] for r in d["layers"]}
        spans = set(result["timeline"]["layers"]["A"]) - {"loss", "update"}
        want = {"conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"} - {name[:5]} \
            if name in ("conv2_off", "conv3_off", "conv3_and_link_off", "conv4_off") else \
            {"conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"}
        assert spans == want and want <= layers, name
        assert [link["link"] for link in d["links"]] == list(run["link_bytes_per_step"]), name
        model = result["cost_model"]
        assert model["two_devices"][0]["step_s"] <= model["one_device_serial_s"], name
