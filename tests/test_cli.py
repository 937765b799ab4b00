"""The command line's describe output and errors, through main() in this process (conftest's
twocol_in_process); `python -m twocol` itself is run by test_help_lists_commands and the
training tests."""
import json
import subprocess
import sys

import pytest

from conftest import twocol_in_process as twocol


@pytest.mark.parametrize("args,needle", [
    (["-c", "configs/alexnet_paper.yaml", "model.lrn.alpah=1"], "model.lrn.alpah"),
    (["-c", "configs/alexnet_paper.yaml", "model.dropout=lots"], "model.dropout"),
    (["-c", "configs/missing.yaml"], "configs/missing.yaml"),
    (["-c", "configs/alexnet_paper.yaml", "--gpus", "0,0"], "repeats a GPU id"),
    (["-c", "configs/alexnet_paper.yaml", "--gpus", "7"], "GPU 7 does not exist"),
])
def test_bad_input_is_one_line_and_exit_code_2(capsys, args, needle):
    code, _, err = twocol(capsys, "describe", *args)
    assert code == 2
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err


def test_describe_json_for_the_three_nets(capsys):
    expected = {"alexnet_paper": 60_965_224, "alexnet_2012code": 60_965_224, "alexnet_onecol": 59_798_312}
    for name, params in expected.items():
        code, out, err = twocol(capsys, "describe", "-c", f"configs/{name}.yaml", "--gpus", "cpu", "--json")
        assert code == 0, err
        d = json.loads(out)
        assert d["total_params"] == params
        assert sum(row["params"] for row in d["layers"]) == params
    d = json.loads(twocol(capsys, "describe", "-c", "configs/alexnet_paper.yaml", "--json")[1])
    assert {l["link"]: l["bytes_per_image"] for l in d["links"]} == {
        "conv3": 2 * 128 * 13 * 13 * 4, "fc6": 2 * 128 * 6 * 6 * 4, "fc7": 2 * 2048 * 4, "fc8": 2048 * 4}
    conv1 = [r for r in d["layers"] if r["layer"] == "conv1"]
    assert [r["column"] for r in conv1] == ["A", "B"] and conv1[0]["output"] == [48, 55, 55]


def test_describe_prints_a_table(capsys):
    code, out, _ = twocol(capsys, "describe", "-c", "configs/small_twocol.yaml")
    assert code == 0 and "total parameters: 1,475,690" in out and "conv3" in out


def test_help_lists_commands():
    r = subprocess.run([sys.executable, "-m", "twocol", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "describe" in r.stdout


def test_overrides_may_come_after_options(capsys):
    code, out, err = twocol(capsys, "describe", "-c", "configs/small_twocol.yaml", "model.lrn.enabled=false",
                            "--json", "model.fc_widths=[32,32]")
    assert code == 0, err
    fc6 = [row for row in json.loads(out)["layers"] if row["layer"] == "fc6"][0]
    assert fc6["output"] == [32]
    code, _, err = twocol(capsys, "describe", "-c", "configs/small_twocol.yaml", "--json", "--bogus")
    assert code == 2 and "unrecognized arguments: --bogus" in err
