import json

import numpy as np
import pytest
import torch

from conftest import config, one_line_error, twocol_in_process
from twocol.checkpoint import save_checkpoint
from twocol.cli import main
from twocol.devices import Placement
from twocol.features import extract, feature_paths, load_features
from twocol.model import build_model
from twocol.metrics import column_scores, colour_specialisation
from twocol.viz.filters import filter_grid, stretch
from twocol.viz.neighbours import nearest, row_chunks

TINY = ("model.conv_widths=[6,8,8,8,8]", "model.fc_widths=[16,16]", "model.num_classes=3")


def tiny_net(arch="twocol"):
    return build_model(config(f"small_{arch}", *TINY), Placement.cpu(), seed=0)


def kernels(k=5, side=11):
    return torch.randn(k, 3, side, side)


# colour specialisation

def test_grey_kernels_score_zero():
    w = kernels()[:, :1].repeat(1, 3, 1, 1)
    assert torch.allclose(colour_specialisation(w), torch.zeros(5), atol=1e-7)


def test_single_channel_and_opponent_kernels_score_high():
    w = torch.zeros(3, 3, 11, 11)
    for c in range(3):
        w[c, c] = torch.randn(11, 11)
    assert torch.allclose(colour_specialisation(w), torch.full((3,), 2 / 3))
    red_minus_green = torch.zeros(1, 3, 11, 11)
    red_minus_green[0, 0], red_minus_green[0, 1] = 1.0, -1.0
    assert colour_specialisation(red_minus_green).item() == pytest.approx(1.0)


def test_score_of_a_zero_kernel_is_zero_and_shape_is_checked():
    assert colour_specialisation(torch.zeros(2, 3, 5, 5)).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="conv1 weight"):
        colour_specialisation(torch.zeros(2, 4, 5, 5))


def test_column_scores_summarise_each_column_and_change_nothing():
    net = tiny_net()
    with torch.no_grad():
        net.col_b.conv1.weight.copy_(net.col_b.conv1.weight[:, :1].repeat(1, 3, 1, 1))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    scores = column_scores(net)
    assert set(scores) == {"A", "B"}
    a = colour_specialisation(net.col_a.conv1.weight)
    assert scores["A"]["mean"] == pytest.approx(a.mean().item())
    assert scores["A"]["std"] == pytest.approx(a.std(correction=0).item())
    assert scores["A"]["kernels"] == 6 and scores["A"]["mean"] > 0.5
    assert scores["B"]["mean"] == pytest.approx(0.0, abs=1e-6)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    json.dumps(scores)  # goes into metrics.jsonl as it is
    assert set(column_scores(tiny_net("onecol"))) == {"A"}


# filter grid

@pytest.mark.parametrize("k,rows,cols", [(48, 3, 16), (12, 1, 12), (20, 2, 16)])
def test_grid_has_one_tile_per_kernel(k, rows, cols):
    w = kernels(k)
    grid, layout = filter_grid(w, scale=4, gap=1)
    assert (layout.tiles, layout.rows, layout.cols, layout.tile) == (k, rows, cols, 44)
    assert grid.shape == (1 + rows * 45, 1 + cols * 45, 3) and grid.dtype == np.uint8
    expected = np.round(stretch(w) * 255).astype(np.uint8)
    for i in range(k):
        y, x = layout.origin(i)
        tile = grid[y:y + 44, x:x + 44]
        assert np.array_equal(tile[::4, ::4], expected[i]) and np.array_equal(tile[3::4, 3::4], expected[i])
    if k % cols:  # the unused places of the last row stay background
        y, x = layout.origin(k)
        assert (grid[y:y + 44, x:x + 44] == 255).all()


def test_stretch_is_per_kernel_and_keeps_colours():
    w = kernels(2)
    w[0] = w[0, :1] * 1000  # a huge grey kernel must not flatten the other one's contrast
    s = stretch(w)
    for k in range(2):
        assert s[k].min() == pytest.approx(0.0) and s[k].max() == pytest.approx(1.0)
    assert np.allclose(s[0, ..., 0], s[0, ..., 1]) and np.allclose(s[0, ..., 0], s[0, ..., 2])
    assert (stretch(torch.ones(1, 3, 3, 3)) == 0.5).all()
    ramp = torch.arange(9.0).view(3, 3)
    orange = torch.stack([ramp, ramp / 2, torch.zeros(3, 3)])[None]  # colour must survive the stretch
    s = stretch(orange)[0]
    assert np.allclose(s[..., 0], ramp.numpy() / 8) and np.allclose(s[..., 1], s[..., 0] / 2) and (s[..., 2] == 0).all()


# nearest neighbours and features

def test_a_training_image_is_its_own_nearest_neighbour_at_distance_zero():
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(50, 33)).astype(np.float32) * 100
    queries = [7, 0, 49]
    idx, dist = nearest(bank[queries], row_chunks(bank, size=8), k=4)
    assert idx[:, 0].tolist() == queries and (dist[:, 0] == 0).all()
    brute = np.linalg.norm(bank[queries, None].astype(np.float64) - bank[None], axis=2)
    assert np.array_equal(idx, np.argsort(brute, axis=1, kind="stable")[:, :4])
    assert np.allclose(dist, np.sort(brute, axis=1)[:, :4])


def test_features_of_an_image_are_the_same_every_run():
    net = tiny_net()
    net.train()  # extract must switch dropout off, and put the mode back
    images = torch.randn(6, 3, 64, 64)
    batches = [(images[:4], torch.tensor([0, 1, 2, 0])), (images[4:], torch.tensor([1, 2]))]
    first, second = np.zeros((6, 32), np.float32), np.zeros((6, 32), np.float32)
    assert extract(net, batches, first) == [0, 1, 2, 0, 1, 2]
    extract(net, batches[::-1], second)  # other batches around an image change nothing
    assert net.training
    assert np.array_equal(first, np.concatenate([second[2:], second[:2]]))
    with torch.no_grad():
        assert np.array_equal(first[:4], net.eval().last_hidden(images[:4]).numpy())
    assert np.abs(first).sum() > 0


def test_feature_paths_accept_the_stem_or_either_file(tmp_path):
    want = (tmp_path / "f.npy", tmp_path / "f.json")
    for name in ("f", "f.npy", "f.json"):
        assert feature_paths(tmp_path / name) == want


# commands

def tiny_checkpoint(path, arch="twocol", epoch=3):
    cfg = config(f"small_{arch}", *TINY)
    net = build_model(cfg, Placement.cpu(), seed=0)
    save_checkpoint(path, {"model": net.state_dict(), "config": cfg.to_dict(), "epoch": epoch, "step": 0})
    return path


def test_viz_filters_writes_the_figure_and_prints_the_scores(tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path / "c.pt")
    assert main(["viz", "filters", "--ckpt", str(ckpt), "-o", str(tmp_path / "f.png")]) == 0
    out = capsys.readouterr().out
    assert "column A" in out and "column B" in out and "over 6 kernels" in out
    from PIL import Image
    with Image.open(tmp_path / "f.png") as im:
        assert im.size[0] >= 1 + 6 * 45


def test_viz_curve_plots_the_logged_scores(tmp_path, capsys):
    metrics = tmp_path / "metrics.jsonl"
    rows = [{"kind": "step", "epoch": 0, "loss": 2.3},
            {"kind": "epoch", "epoch": 1, "colour": {"A": {"mean": 0.6, "std": 0.1}, "B": {"mean": 0.5, "std": 0.1}}},
            {"kind": "epoch", "epoch": 2, "colour": {"A": {"mean": 0.7, "std": 0.1}, "B": {"mean": 0.3, "std": 0.2}}}]
    metrics.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert main(["viz", "curve", "--metrics", str(metrics), "-o", str(tmp_path / "c.png")]) == 0
    out = capsys.readouterr().out
    assert "epoch 2: column A 0.7000 ± 0.1000, column B 0.3000 ± 0.2000" in out and "epoch 0" not in out
    assert (tmp_path / "c.png").stat().st_size > 0
    metrics.write_text(json.dumps(rows[0]) + "\n")
    assert main(["viz", "curve", "--metrics", str(metrics), "-o", str(tmp_path / "d.png")]) == 2
    assert "no line with an epoch" in capsys.readouterr().err


@pytest.mark.parametrize("cmd", [["viz", "filters"], ["features", "--data", "nowhere"]])
def test_a_missing_checkpoint_is_a_one_line_error_with_exit_code_2(tmp_path, capsys, cmd):
    code, _, err = twocol_in_process(capsys, *cmd, "--ckpt", tmp_path / "none.pt", "-o", tmp_path / "out")
    one_line_error(code, err, "checkpoint not found")
    assert list(tmp_path.iterdir()) == []


def handmade_features(tmp_path, split, rows, labels, pixels, ckpt="c.pt"):
    """A features file of `split` whose images are given flat grey levels (8x8, crop 6)."""
    from PIL import Image
    from twocol.features import FORMAT

    relpaths = []
    for i, level in enumerate(pixels):
        rel = f"{split}/{i}.png"
        (tmp_path / split).mkdir(exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), level, np.uint8)).save(tmp_path / rel)
        relpaths.append(rel)
    npy, meta = feature_paths(tmp_path / f"{split}_feats")
    np.save(npy, np.asarray(rows, np.float32))
    meta.write_text(json.dumps({"format": FORMAT, "root": str(tmp_path), "split": split, "checkpoint": ckpt,
                                "epoch": 1, "step": 10, "config": "tiny", "crop": 6, "classes": ["x", "y"],
                                "relpaths": relpaths, "labels": labels}))
    return npy.with_suffix("")


def listed(out, heading):
    """Relpaths listed under `heading` for the first query in viz neighbours' output."""
    lines = out.split(heading + ":\n", 1)[1].splitlines()
    return [l.split()[1] for l in lines if l.startswith("    ")][:2]


def test_viz_neighbours_searches_features_and_pixels_separately(tmp_path, capsys):
    # Feature neighbours of val 0 are train 2 then 0; pixel neighbours are train 1 then 0.
    train = handmade_features(tmp_path, "train", [[0, 0], [9, 9], [1, 0], [5, 5]], [0, 1, 0, 1], [100, 50, 250, 0])
    val = handmade_features(tmp_path, "val", [[1.2, 0], [9, 9]], [0, 1], [60, 0])
    png = tmp_path / "n.png"
    args = ["viz", "neighbours", "--feats", str(val), "--query", "0", "--query", "1", "--k", "2", "-o", str(png)]
    assert main(args + ["--train-feats", str(train)]) == 0
    out = capsys.readouterr().out
    assert listed(out, "nearest by last hidden layer") == ["train/2.png", "train/0.png"]
    assert listed(out, "nearest by raw pixels") == ["train/1.png", "train/0.png"]
    assert png.stat().st_size > 0

    assert main(args) == 2
    assert "give --train-feats" in capsys.readouterr().err
    other = handmade_features(tmp_path, "train", [[0, 0]] * 4, [0] * 4, [0] * 4, ckpt="other.pt")
    assert main(args + ["--train-feats", str(other)]) == 2
    assert "differ in checkpoint" in capsys.readouterr().err


def test_viz_neighbours_of_a_training_image_leave_the_image_itself_out(tmp_path, capsys):
    train = handmade_features(tmp_path, "train", [[0, 0], [3, 0], [1, 0]], [0, 1, 0], [10, 20, 30])
    assert main(["viz", "neighbours", "--feats", str(train), "--query", "0", "--k", "2",
                 "-o", str(tmp_path / "n.png")]) == 0
    out = capsys.readouterr().out
    assert listed(out, "nearest by last hidden layer") == ["train/2.png", "train/1.png"]
    assert listed(out, "nearest by raw pixels") == ["train/1.png", "train/2.png"]
    assert main(["viz", "neighbours", "--feats", str(train), "--query", "3", "-o", str(tmp_path / "m.png")]) == 2
    assert "not a row" in capsys.readouterr().err


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    """A tiny synthetic dataset and a checkpoint of a tiny net that reads it."""
    from twocol.data.synth import synthesize

    root = tmp_path_factory.mktemp("viz_run")
    data = synthesize(root / "data", classes=3, per_class=5, image_size=72, val_per_class=2, workers=1)
    cfg = config("small_twocol", *TINY, "data.loader=torch", "data.workers=0", "data.batch_size=4")
    net = build_model(cfg, Placement.cpu(), seed=0)
    ckpt = root / "checkpoint.pt"
    save_checkpoint(ckpt, {"model": net.state_dict(), "config": cfg.to_dict(), "epoch": 2, "step": 8})
    return root, data, ckpt


def test_features_then_neighbours_end_to_end(synthetic_run, capsys):
    from twocol.data.layout import open_dataset

    root, data, ckpt = synthetic_run
    for split in ("train", "val"):
        assert main(["features", "--ckpt", str(ckpt), "--data", str(data), "--split", split, "--gpus", "cpu",
                     "-o", str(root / split)]) == 0
    assert main(["features", "--ckpt", str(ckpt), "--data", str(data), "--batch-size", "3", "--gpus", "cpu",
                 "-o", str(root / "again.npy")]) == 0
    capsys.readouterr()
    rows, meta = load_features(root / "train")
    dataset = open_dataset(data)
    assert rows.shape == (15, 32) and rows.dtype == np.float32
    assert list(zip(meta["relpaths"], meta["labels"])) == [tuple(x) for x in dataset.train]
    assert meta["classes"] == dataset.classes and meta["crop"] == 64 and meta["epoch"] == 2
    # Another batch size gives the same rows: each image's feature depends on that image only.
    assert np.allclose(load_features(root / "again")[0], rows, atol=1e-5)
    assert load_features(root / "val")[0].shape == (6, 32)

    png = root / "neighbours.png"
    assert main(["viz", "neighbours", "--feats", str(root / "val"), "--train-feats", str(root / "train"),
                 "--query", "0", "--query", "5", "--k", "3", "-o", str(png)]) == 0
    out = capsys.readouterr().out
    assert out.count("query val row") == 2 and png.stat().st_size > 0
    assert listed(out, "nearest by last hidden layer")[0].startswith("train/")
