import contextlib
import io
import json
import subprocess
import sys

import pytest

from twocol.cli import main


def twocol(*args):
    """`twocol ARGS` through the CLI's main() in this process (a subprocess would spend a second
    importing torch per call): the exit code, stdout and stderr a user would see. The command
    line itself, `python -m twocol`, is run by test_help_lists_commands and the training tests."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # argparse's errors and --help
            code = e.code
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


@pytest.mark.parametrize("args,needle", [
    (["-c", "configs/alexnet_paper.yaml", "model.lrn.alpah=1"], "model.lrn.alpah"),
    (["-c", "configs/alexnet_paper.yaml", "model.dropout=lots"], "model.dropout"),
    (["-c", "configs/missing.yaml"], "configs/missing.yaml"),
    (["-c", "configs/alexnet_paper.yaml", "--gpus", "0,0"], "repeats a GPU id"),
    (["-c", "configs/alexnet_paper.yaml", "--gpus", "7"], "GPU 7 does not exist"),
])
def test_bad_input_is_one_line_and_exit_code_2(args, needle):
    r = twocol("describe", *args)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and needle in r.stderr and "Traceback" not in r.stderr


def test_describe_json_for_the_three_nets():
    expected = {"alexnet_paper": 60_965_224, "alexnet_2012code": 60_965_224, "alexnet_onecol": 59_798_312}
    for name, params in expected.items():
        r = twocol("describe", "-c", f"configs/{name}.yaml", "--gpus", "cpu", "--json")
        assert r.returncode == 0, r.stderr
        d = json.loads(r.stdout)
        assert d["total_params"] == params
        assert sum(row["params"] for row in d["layers"]) == params
    d = json.loads(twocol("describe", "-c", "configs/alexnet_paper.yaml", "--json").stdout)
    assert {l["link"]: l["bytes_per_image"] for l in d["links"]} == {
        "conv3": 2 * 128 * 13 * 13 * 4, "fc6": 2 * 128 * 6 * 6 * 4, "fc7": 2 * 2048 * 4, "fc8": 2048 * 4}
    conv1 = [r for r in d["layers"] if r["layer"] == "conv1"]
    assert [r["column"] for r in conv1] == ["A", "B"] and conv1[0]["output"] == [48, 55, 55]


def test_describe_prints_a_table():
    r = twocol("describe", "-c", "configs/small_twocol.yaml")
    assert r.returncode == 0 and "total parameters: 1,475,690" in r.stdout and "conv3" in r.stdout


def test_help_lists_commands():
    r = subprocess.run([sys.executable, "-m", "twocol", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "describe" in r.stdout


def test_overrides_may_come_after_options():
    r = twocol("describe", "-c", "configs/small_twocol.yaml", "model.lrn.enabled=false", "--json",
               "model.fc_widths=[32,32]")
    assert r.returncode == 0, r.stderr
    fc6 = [row for row in json.loads(r.stdout)["layers"] if row["layer"] == "fc6"][0]
    assert fc6["output"] == [32]
    r = twocol("describe", "-c", "configs/small_twocol.yaml", "--json", "--bogus")
    assert r.returncode == 2 and "unrecognized arguments: --bogus" in r.stderr
