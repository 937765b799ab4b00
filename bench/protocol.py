"""A bench protocol: the file that says what `bench.paper` runs, as a config says what a net is.

A protocol (bench/protocols/*.yaml, read through twocol's bounded typed YAML loader) names its
data sets, the two nets (a config and overrides each), the overrides every net gets (the recipe,
the schedule rule, the epoch cap), the seeds, and which comparisons run with their targets. Its
results record the file's name, version and hash, and those of the configs it names: a protocol
changed after its results were seen is a new version, never the same one retuned.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from twocol.ablations import ABLATIONS
from twocol.errors import ConfigError
from twocol.typed_yaml import from_dict, read_yaml

# Where --protocol looks for a bare name, and the one `make bench` runs.
PROTOCOLS = Path(__file__).parent / "protocols"
DEFAULT = PROTOCOLS / "cpu.yaml"
# A data set's `prepared` path that stands for the --data argument.
DATA_ARGUMENT = "DATA"


@dataclass
class SyntheticSet:
    """The built-in synthetic set (twocol synth), made under --data-dir on first use."""
    classes: int = 10
    per_class: int = 300
    val_per_class: int = 100
    image_size: int = 44
    seed: int = 0


@dataclass
class DataSet:
    synthetic: Optional[SyntheticSet] = None
    prepared: Optional[str] = None  # a prepared set's folder, or DATA: the --data argument


@dataclass
class Net:
    config: str = ""
    overrides: list[str] = field(default_factory=list)


@dataclass
class HalfWidths:
    """Targets: the 95% half-width a comparison's paired difference should reach (points)."""
    top1: Optional[float] = None
    top5: Optional[float] = None


@dataclass
class TwoVsOne:
    data: str = "main"
    half_width: HalfWidths = field(default_factory=HalfWidths)


@dataclass
class AblationSet:
    data: str = "main"
    names: list[str] = field(default_factory=list)
    seeds: Optional[int] = None  # seeds 0..seeds-1 (default: the protocol's)
    half_width: HalfWidths = field(default_factory=HalfWidths)


@dataclass
class DropoutComparison:
    """The two-column net with and without its dropout, on a set where the net without it
    overfits; overfitting is the validation error minus the training split's, both measured in
    evaluation mode (centre crop, no masks)."""
    data: str = "main"
    seeds: Optional[int] = None  # seeds 0..seeds-1 (default: the protocol's)
    half_width: HalfWidths = field(default_factory=HalfWidths)


@dataclass
class Ensemble:
    """The error of the average of `size` seeds' two-column nets' predictions (the two-vs-one
    comparison's runs: nothing is trained for it)."""
    size: int = 5


@dataclass
class Comparisons:
    two_vs_one: Optional[TwoVsOne] = None
    ensemble: Optional[Ensemble] = None
    ablations: Optional[AblationSet] = None
    dropout: Optional[DropoutComparison] = None


@dataclass
class Protocol:
    name: str = ""
    version: int = 0
    about: str = ""       # what this protocol is, and what it can and cannot show
    scale: str = ""       # the rule that chose its scale
    data: dict[str, DataSet] = field(default_factory=dict)
    nets: dict[str, Net] = field(default_factory=dict)
    common: list[str] = field(default_factory=list)  # overrides every net gets, before its own
    seeds: int = 8
    threads: int = 1      # torch threads per training (the CPU; on a GPU torch's own)
    # A net has converged by the first epoch whose validation top-1 error is within this many
    # points of its final one ("iterations to converge").
    convergence_margin: float = 1.0
    comparisons: Comparisons = field(default_factory=Comparisons)


def validate(p: Protocol, source: str) -> None:
    def need(ok: bool, what: str):
        if not ok:
            raise ConfigError(f"{source}: {what}")

    need(bool(p.name) and p.name.replace("-", "").replace("_", "").isalnum(),
         f"name must be letters, digits, - and _ (it names the results), got {p.name!r}")
    need(p.version >= 1, "version must be >= 1")
    need(1 <= p.seeds <= 1000, "seeds must be in 1..1000")
    need(1 <= p.threads <= 1024, "threads must be in 1..1024")
    need(p.convergence_margin >= 0, "convergence_margin must be >= 0")
    need("twocol" in p.nets and set(p.nets) <= {"twocol", "onecol"}, "nets must hold twocol (and onecol)")
    for key, d in p.data.items():
        need((d.synthetic is None) != (d.prepared is None), f"data.{key} must give one of synthetic, prepared")
    c = p.comparisons
    for name, comp in (("two_vs_one", c.two_vs_one), ("ablations", c.ablations), ("dropout", c.dropout)):
        if comp is not None:
            need(comp.data in p.data, f"comparisons.{name}.data names no data set ({comp.data!r}; "
                                      f"the protocol's are {', '.join(p.data) or 'none'})")
    for name, comp in (("ablations", c.ablations), ("dropout", c.dropout)):
        if comp is not None and comp.seeds is not None:
            need(2 <= comp.seeds <= p.seeds, f"comparisons.{name}.seeds must be in 2..seeds")
    need(c.two_vs_one is None or "onecol" in p.nets, "comparisons.two_vs_one needs nets.onecol")
    need(c.ensemble is None or c.two_vs_one is not None, "comparisons.ensemble reuses two_vs_one's runs: give it")
    need(c.ensemble is None or 2 <= c.ensemble.size <= p.seeds, "comparisons.ensemble.size must be in 2..seeds")
    if c.ablations is not None:
        unknown = [n for n in c.ablations.names if n not in ABLATIONS]
        need(not unknown, f"comparisons.ablations names {unknown[0] if unknown else ''!r}; the ablations are "
                          f"{', '.join(ABLATIONS)}")
        need("dropout_off" not in c.ablations.names, "dropout_off is comparisons.dropout, on its own data set")


def resolve(path: str | Path) -> Path:
    """A protocol's file: a path, or a bare name under bench/protocols/."""
    path = Path(path)
    if not path.exists() and path.parent == Path(".") and (PROTOCOLS / path.with_suffix(".yaml")).is_file():
        return PROTOCOLS / path.with_suffix(".yaml")
    return path


def load_protocol(path: str | Path) -> Protocol:
    path = resolve(path)
    return from_dict(Protocol, read_yaml(path, "protocol"), str(path), validate, what="protocol")


def file_hash(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
