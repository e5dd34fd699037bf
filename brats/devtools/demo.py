"""The demo: the whole pipeline on a generated cohort with a local Ray (``make demo``).

Stages, each writing under ``--out`` (default ``demo-out/``):

1. ``cohort/``: a seeded training cohort built on the MNI152 template, in the label scheme
   ``--label-scheme`` (BraTS 2020 by default: its names, labels and kinds of lesion, see
   :mod:`brats.devtools.synth`), plus two broken cases (a truncated gzip, a missing
   modality): bad input is reported and the others go on;
2. ``normalized/``: the Ray Data ingest job's Parquet shards and ``manifest.json``;
3. ``runs/demo/``: Ray Train with 2 workers on the CPU, checkpoints, the exported model;
4. ``incoming/``: held-out cases the model never saw (and one broken one), segmented by the
   segmentation job into ``segmented/``: a mask per case, records, ``report.html``;
5. ``incoming-site-b/``: held-out cases from another acquisition site (other contrasts,
   gamma, a stronger bias field, more noise, 5 mm slices on a 5 mm slice grid: 31 slices
   where the training cases have 48), segmented into ``segmented-site-b/``: how the model
   does on another hospital's scans, which it predicts at its own spacing.

It ends by printing what each stage did, the held-out mean Dice per region at the training
site and at the other site as a table, and where everything went; the whole summary (paths
and figures) is ``summary.json`` under ``--out``.
``--small`` runs a reduced size (CI runs it so the demo's path stays green).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from brats.options import build_parser, option, parse_config, parse_or_exit
from brats.runtime import init_ray
from brats.volume.labels import SCHEMES, scheme_named

if TYPE_CHECKING:
    from brats.devtools.synth import SynthConfig
    from brats.train.config import TrainConfig
    from brats.volume.labels import LabelScheme

log = logging.getLogger("brats.demo")

SUMMARY_FILE = "summary.json"
"""The demo's whole summary (paths and figures), written under ``--out``."""


def demo_filters(label_scheme: str) -> int:
    """The demo network's top-level filters for a built-in scheme: 8 for three region outputs
    or fewer (the glioma regions WT, TC and ET; ``menrt2024``'s one), 16 for more
    (``gli2024``, ``met2024``, ``ped2024``: four). Measured on the recipe benchmark's
    ``gli2024`` cohort, seed 0: at 8 filters the network never told cavity, necrosis and
    enhancement apart (every core voxel near 0.5 on the TC, ET and RC outputs, training cases
    included; no held-out TC, ET or RC found, at a learning rate of 3e-3 or 1e-3, with the
    preset's augmentation or none); at 16 it did (held-out RC Dice 0.99)."""
    return 8 if len(scheme_named(label_scheme).decode) <= 3 else 16


@dataclass(frozen=True)
class DemoConfig:
    """Sizes and training settings of the demo (the defaults are the README's figures)."""

    out: str = "demo-out"
    cases: int = 24
    held_out: int = 8
    shape: tuple[int, int, int] = (64, 64, 48)
    patch: int = 32
    base_filters: int | None = None
    """Filters of the network's top level; ``None``: :func:`demo_filters` of the scheme."""
    depth: int = 3
    epochs: int = 80
    patches_per_case: int = 4
    learning_rate: float = 3e-3
    num_workers: int = 2
    seed: int = 0
    num_cpus: int | None = None
    site: str = "a"
    other_site: str = "b"
    label_scheme: str = "brats2020"
    """The generated cohorts' label scheme (a built-in name): what ``brats synth
    --label-scheme`` writes."""

    def training(self, data: str, storage: str, name: str, **overrides: Any) -> TrainConfig:
        """The demo's training run on the cohort ``data``; ``overrides`` are
        :class:`~brats.train.config.TrainConfig` fields (a preset, a seed)."""
        from brats.train.config import TrainConfig

        values: dict[str, Any] = {
            "num_workers": self.num_workers,
            "epochs": self.epochs,
            "batch_size": 2,
            "patch_size": (self.patch,) * 3,
            "patches_per_case": self.patches_per_case,
            "learning_rate": self.learning_rate,
            "base_filters": self.filters,
            "depth": self.depth,
            "val_fraction": 0.15,
            "seed": self.seed,
        }
        return TrainConfig(data=data, storage=storage, name=name, **(values | overrides))

    def settings(self) -> dict[str, Any]:
        """Every field, ``base_filters`` resolved (what a summary records)."""
        return asdict(self) | {"base_filters": self.filters}

    def acquired(self, synth: SynthConfig, site: str) -> SynthConfig:
        """How ``site``'s held-out cases are generated from the training cohort's ``synth``:
        rendered as ``site`` renders them and, where its slices are thicker than the
        training grid's (site b: 5 mm against 3.2), acquired on a grid of that slice
        spacing (``spacing_mm``: the same anatomy in fewer slices), so the model meets a
        case at another spacing as a hospital's would be. A cohort already acquired at a
        ``spacing_mm`` keeps its in-plane spacing, and its slices where they are thicker."""
        from brats.devtools.sites import SITES

        out = replace(synth, site=site)
        thickness = SITES[site].slice_thickness_mm
        grid = synth.spacing_mm or synth.spacing
        if thickness is None or thickness <= grid[2] * 1.001:
            return out
        return replace(out, spacing_mm=(grid[0], grid[1], thickness))

    @property
    def filters(self) -> int:
        """The network's top-level filters: ``base_filters``, else the scheme's
        (:func:`demo_filters`)."""
        return self.base_filters or demo_filters(self.label_scheme)

    @classmethod
    def small(cls, out: str) -> DemoConfig:
        """A few cases at 32^3 and a tiny network: the pipeline's path, in about a minute."""
        return cls(
            out=out,
            cases=6,
            held_out=2,
            shape=(32, 32, 32),
            patch=16,
            base_filters=4,
            depth=2,
            epochs=2,
            patches_per_case=2,
        )


def run_demo(config: DemoConfig) -> dict[str, Any]:
    """Run every stage; return a summary (paths and figures) that is also printed."""
    from brats.devtools.faults import write_faulty_case
    from brats.devtools.synth import SynthConfig, generate_cohort
    from brats.ingest.job import IngestConfig, ingest
    from brats.segment.job import SegmentConfig, segment
    from brats.train.job import train

    out = os.path.abspath(config.out)
    other = f"site-{config.other_site}"
    paths = {
        name: os.path.join(out, name)
        for name in (
            "cohort", "normalized", "runs", "incoming", "segmented",
            f"incoming-{other}", f"segmented-{other}",
        )
    }  # fmt: skip
    timings: dict[str, float] = {}

    began = time.perf_counter()
    synth = SynthConfig(
        shape=config.shape, seed=config.seed, site=config.site, convention=config.label_scheme
    )
    ids = generate_cohort(paths["cohort"], config.cases, synth)
    write_faulty_case(paths["cohort"], "Broken_truncated", "truncated_gzip", synth)
    write_faulty_case(paths["cohort"], "Broken_missing", "missing_modality", synth)
    # Held-out cases: later indices of the same generator, never seen in training, rendered
    # at the training site and at another one.
    generate_cohort(paths["incoming"], config.held_out, synth, start=1001)
    write_faulty_case(paths["incoming"], "Broken_nan", "nan", synth)
    other_synth = config.acquired(synth, config.other_site)
    generate_cohort(paths[f"incoming-{other}"], config.held_out, other_synth, start=2001)
    timings["generate_s"] = time.perf_counter() - began
    log.info("generated %d + %d cases at %s", len(ids), config.held_out, config.shape)

    init_ray(num_cpus=config.num_cpus)
    began = time.perf_counter()
    ingested = ingest(IngestConfig(cohort=paths["cohort"], out=paths["normalized"]))
    timings["ingest_s"] = time.perf_counter() - began

    began = time.perf_counter()
    trained = train(config.training(paths["normalized"], paths["runs"], "demo"))
    timings["train_s"] = time.perf_counter() - began

    began = time.perf_counter()
    assert trained.model is not None
    segmented = segment(
        SegmentConfig(cohort=paths["incoming"], model=trained.model, out=paths["segmented"])
    )
    segment(
        SegmentConfig(
            cohort=paths[f"incoming-{other}"], model=trained.model, out=paths[f"segmented-{other}"]
        )
    )
    timings["segment_s"] = time.perf_counter() - began
    return {
        "out": out,
        "ingest": {
            "manifest": ingested.manifest_uri,
            "ok": ingested.n_ok,
            "failed": [f["reason"] for f in ingested.manifest["failures"]],
        },
        "train": {
            "model": trained.model,
            "epochs": len(trained.history),
            "best_val": {k: round(v, 3) for k, v in trained.best.items() if k.startswith("val_")},
        },
        "segment": {
            "masks": os.path.join(paths["segmented"], "masks"),
            "report": os.path.join(paths["segmented"], "report.html"),
            "done": segmented.done,
            "failed": [f["error"] for f in segmented.failed],
        },
        "held_out_mean_dice": {
            f"site {config.site} (training)": _mean_dice(paths["segmented"], synth.scheme),
            f"site {config.other_site}": _mean_dice(paths[f"segmented-{other}"], synth.scheme),
        },
        "seconds": {k: round(v, 1) for k, v in timings.items()},
    }


def _mean_dice(segmented: str, scheme: LabelScheme) -> dict[str, float]:
    """Mean Dice per region of the scheme (WT, TC, ET for glioma) of a segmentation job's
    ``summary.json``."""
    with open(os.path.join(segmented, "summary.json")) as fh:
        regions = json.load(fh)["regions"]
    return {
        region: round(regions[region]["dice"]["mean"], 3)
        for region in scheme.regions
        if (regions.get(region) or {}).get("dice")
    }


@dataclass(frozen=True)
class DemoCommand:
    """Everything ``python -m brats.devtools.demo`` takes."""

    out: str = option("demo-out", help="folder for every stage's outputs")
    small: bool = option(False, help="a reduced size: the pipeline's path in about a minute (CI)")
    epochs: int | None = option(None, help="epochs to train (default: the size's own)")
    num_cpus: int | None = option(None, help="CPUs for the local Ray (default: all)")
    label_scheme: str = option(
        "brats2020",
        choices=tuple(SCHEMES),
        help="label scheme of the generated cohorts (brats synth --label-scheme)",
    )
    base_filters: int | None = option(
        None,
        help="filters of the network's top level (default: the size's own; at full size 8 "
        "for three region outputs, 16 for the 2024 schemes' four)",
    )

    def demo(self) -> DemoConfig:
        """The demo's sizes and settings."""
        config = DemoConfig.small(self.out) if self.small else DemoConfig(out=self.out)
        config = replace(config, label_scheme=self.label_scheme)
        if self.base_filters:
            config = replace(config, base_filters=self.base_filters)
        if self.epochs:
            config = replace(config, epochs=self.epochs)
        if self.num_cpus:
            config = replace(config, num_cpus=self.num_cpus)
        return config


def demo_parser() -> argparse.ArgumentParser:
    """``python -m brats.devtools.demo``'s arguments, built from :class:`DemoCommand`."""
    return build_parser(
        "python -m brats.devtools.demo",
        "The whole pipeline on a generated cohort with a local Ray: generate, ingest, train, "
        "segment held-out cases, report.",
        DemoCommand,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``make demo``: run the demo and print where everything went."""
    from brats.runtime import prepare_tensorflow, setup_logging

    prepare_tensorflow()  # before anything imports TensorFlow
    _, command = parse_or_exit(demo_parser(), argv, lambda a: parse_config(DemoCommand, a))
    setup_logging()
    config = command.demo()
    log.info("demo settings: %s", json.dumps(config.settings()))
    summary = run_demo(config)
    with open(os.path.join(summary["out"], SUMMARY_FILE), "w") as fh:
        fh.write(json.dumps(summary, indent=2) + "\n")
    print(summary_text(summary))
    return 0


def summary_text(summary: dict[str, Any]) -> str:
    """The demo's closing lines for a person: what each stage did, the held-out Dice as a
    table, and where the masks, the report and the whole summary are."""
    seconds = summary["seconds"]
    ingest, trained, segmented = summary["ingest"], summary["train"], summary["segment"]
    best = " ".join(f"{k.removeprefix('val_dice_')} {v:.3f}" for k, v in trained["best_val"].items()
                    if k.startswith("val_dice_"))  # fmt: skip
    lines = [
        f"demo done: its stages took {sum(seconds.values()):.0f} s ("
        + ", ".join(f"{k.removesuffix('_s')} {v:.0f} s" for k, v in seconds.items())
        + ")",
        f"  ingest   {ingest['ok']} cases, {len(ingest['failed'])} refused: "
        + "; ".join(ingest["failed"]),
        f"  train    {trained['epochs']} epochs, best validation Dice {best or '-'}",
        f"  segment  {segmented['done']} held-out cases, {len(segmented['failed'])} refused: "
        + "; ".join(segmented["failed"]),
        "",
    ]
    sites = summary["held_out_mean_dice"]
    regions = list(dict.fromkeys(r for dice in sites.values() for r in dice))
    width = max(len("held-out mean Dice"), *(len(s) for s in sites))
    lines.append(f"{'held-out mean Dice':<{width}}" + "".join(f"  {r:>5}" for r in regions))
    for site, dice in sites.items():
        # A region no case of the site could be scored on has no mean: "-".
        cells = (f"{dice[r]:.3f}" if r in dice else "-" for r in regions)
        lines.append(f"{site:<{width}}" + "".join(f"  {c:>5}" for c in cells))
    lines += [
        "",
        f"masks:   {segmented['masks']}",
        f"report:  {segmented['report']}",
        f"model:   {trained['model']}",
        f"summary: {os.path.join(summary['out'], SUMMARY_FILE)}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    sys.exit(main())
