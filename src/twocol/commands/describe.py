"""`twocol describe`: the net as a table, one row per layer, then the links and totals."""
from __future__ import annotations

import json

from ..ablations import ABLATIONS
from ..describe import describe
from ..devices import Placement
from .common import add_config_arguments, config_of

HELP = "print the layers, devices, shapes, parameters and links of a config's net"


def add_arguments(p) -> None:
    add_config_arguments(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")


def format_tables(d: dict) -> str:
    out = [f"{d['config']} ({d['arch']}): input {'x'.join(map(str, d['input']))}, {d['placement']}"]
    out += [f"ablation {a['name']}: {a['what']} (the paper: {a['claim']})" for a in d.get("ablations", [])]
    out.append("")
    out.append(f"{'layer':<7}{'column':<8}{'device':<9}{'output':<16}{'params':>12}")
    for r in d["layers"]:
        out.append(f"{r['layer']:<7}{r['column']:<8}{r['device']:<9}{'x'.join(map(str, r['output'])):<16}{r['params']:>12,}")
    if d["links"]:
        out += ["", f"{'link':<7}{'bytes/image (forward; backward moves the same)':>48}"]
        for l in d["links"]:
            out.append(f"{l['link']:<7}{l['bytes_per_image']:>48,}")
    decodes = [k[:-len("_decode_bytes_per_image")] for k in d["feed"][0] if k.endswith("_decode_bytes_per_image")]
    out += ["", "feed: bytes the data pipeline moves to each column's device per training image "
                "(uint8 crop, mean window and lighting numbers, labels to A)",
            f"{'column':<8}{'device':<9}" + "".join(f"{w + ' decode':>14}" for w in decodes)]
    for f in d["feed"]:
        out.append(f"{f['column']:<8}{f['device']:<9}" + "".join(f"{f[w + '_decode_bytes_per_image']:>14,}" for w in decodes))
    out += ["", f"total parameters: {d['total_params']:,}"]
    if d["links"]:
        out.append(f"total bytes across links per image, forward: {d['link_bytes_per_image']:,}")
    return "\n".join(out)


def run(args) -> int:
    d = describe(config_of(args), Placement.parse(args.gpus))
    d["ablations"] = [{"name": n, "what": ABLATIONS[n].what, "claim": ABLATIONS[n].claim} for n in args.ablation]
    print(json.dumps(d, indent=2) if args.json else format_tables(d))
    return 0
