"""The command line (brats.cli): parsers generated from the configs keep every flag.

``tests/data/cli_flags.json`` lists every flag of ``brats {ingest,train,segment,evaluate,synth,
nightly,app}`` with its default, choices, value count and whether it is required: as the
hand-written parsers of brats 0.1.0 (2026-11-25) had them, plus the flags, commands and
choices added since, and with the defaults changed on purpose since (each in the CHANGELOG:
``train --loss``, now the preset's, and ``synth --p-no-enhancing``, now 0.25),
``train --mixed-precision`` replaced by ``train --precision``, and ``segment --num-actors``
taking ``N`` or ``MIN:MAX`` (its default now the text ``"1"``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from brats.cli import PARSERS, main, run_synth
from brats.io.cases import Naming, discover
from brats.options import build_parser, option, parse_config
from brats.storage import resolve
from brats.volume.labels import BRATS2023

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = json.loads((ROOT / "tests" / "data" / "cli_flags.json").read_text())
SWITCHES = ("_StoreTrueAction", "_StoreFalseAction")


def flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    found = {}
    for action in parser._actions:
        if not isinstance(action, argparse._HelpAction):
            found[action.option_strings[0] if action.option_strings else action.dest] = action
    return found


def shown(value: object) -> object:
    if isinstance(value, tuple):
        return ",".join(value) if all(isinstance(v, str) for v in value) else list(value)
    return value


@pytest.mark.parametrize("command", sorted(EXPECTED))
def test_every_flag_and_default_of_before_is_still_there(command):
    actions = flags(PARSERS[command]())
    for name, before in EXPECTED[command].items():
        assert name in actions, f"brats {command} lost {name}"
        action = actions[name]
        assert list(action.option_strings) == before["flags"]
        assert bool(action.required or not action.option_strings) == before["required"]
        if before["kind"] in SWITCHES:  # a switch stays a switch (its meaning: below)
            assert type(action).__name__ in SWITCHES and action.nargs == 0, name
            continue
        assert shown(action.default) == before["default"], name
        assert (list(action.choices) if action.choices else None) == before["choices"], name
        assert action.nargs == before["nargs"], name
        assert action.help, f"{command} {name} has no help"


def test_switches_mean_what_they_meant():
    from brats.devtools.synth import SynthCommand
    from brats.ingest.job import IngestConfig
    from brats.segment.job import SegmentConfig

    base = ["--cohort", "c", "--out", "o"]
    ingest = parse_config(IngestConfig, PARSERS["ingest"]().parse_args(base))
    assert ingest.preprocess.crop_to_brain and ingest.preprocess.modalities[1] == "t1"
    flat = parse_config(IngestConfig, PARSERS["ingest"]().parse_args([*base, "--no-crop"]))
    assert not flat.preprocess.crop_to_brain
    synth = parse_config(SynthCommand, PARSERS["synth"]().parse_args(["out", "--nii"]))
    assert not synth.synth.compress and synth.out == "out"
    argv = [*base, "--model", "m", "--tta", "--use-gpu", "--min-et-voxels", "7"]
    segment = parse_config(SegmentConfig, PARSERS["segment"]().parse_args(argv))
    assert segment.predict.flip_tta and segment.use_gpu and segment.predict.min_et_voxels == 7
    assert segment.output_settings(BRATS2023) == {
        "label_convention": None,
        "min_et_voxels": 7,
        "overlap": 0.5,
        "tta": "on",
    }
    off = parse_config(
        SegmentConfig, PARSERS["segment"]().parse_args([*base, "--model", "m", "--no-tta"])
    )
    assert off.predict.tta == "off" and off.output_settings(BRATS2023)["tta"] == "off"


def test_lists_tuples_enums_and_nested_configs_parse_into_the_config():
    from brats.train.config import TrainConfig
    from brats.volume.normalize import Normalization

    argv = ["--data", "d", "--storage", "s", "--patch-size", "32", "64", "96"]
    argv += ["--modalities", "flair, t1ce,t2", "--preset", "seed", "--loss", "cce"]
    argv += ["--normalization", "instance"]
    train = parse_config(TrainConfig, PARSERS["train"]().parse_args(argv))
    assert train.patch_size == (32, 64, 96) and train.modalities == ("flair", "t1ce", "t2")
    assert (train.loss, train.normalization, train.steps_per_epoch) == ("cce", "instance", None)
    from brats.ingest.job import IngestConfig

    argv = ["--cohort", "c", "--out", "o", "--normalization", "minmax", "--max-bytes", "99"]
    argv += ["--label-scheme", "gli2024"]
    ingest = parse_config(IngestConfig, PARSERS["ingest"]().parse_args(argv))
    assert ingest.preprocess.normalization is Normalization.MINMAX
    assert ingest.preprocess.limits.max_bytes == 99
    assert ingest.preprocess.label_scheme == "gli2024"


@pytest.mark.parametrize(
    ("command", "argv", "reason"),
    [
        ("segment", ["--overlap", "1.5"], "overlap must be in"),
        ("train", ["--data", "d", "--storage", "s", "--patch-size", "30", "32", "32"], "divisible"),
        ("train", ["--data", "d", "--storage", "s", "--loss", "mse"], "invalid choice"),
        ("ingest", ["--modalities", "flair,pd"], "modalities must be"),
    ],
)
def test_values_a_config_refuses_are_usage_errors(command, argv, reason, capsys):
    required = {
        "segment": ["--cohort", "c", "--model", "m", "--out", "o"],
        "ingest": ["--cohort", "c", "--out", "o"],
    }
    runs = {"segment": "run_segment", "train": "run_train", "ingest": "run_ingest"}
    import brats.cli

    with pytest.raises(SystemExit) as exit_:
        getattr(brats.cli, runs[command])([*required.get(command, []), *argv])
    assert exit_.value.code == 2
    assert reason in capsys.readouterr().err


@pytest.mark.parametrize("command", sorted(PARSERS))
def test_help_of_every_command(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "-h"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: ") and "--" in text


def test_unknown_commands_and_the_bare_command():
    assert main([]) == 2 and main(["frobnicate"]) == 2 and main(["--help"]) == 0


def test_the_ingest_job_answers_under_both_names():
    helps = [
        subprocess.run(
            [sys.executable, f"jobs/{name}.py", "-h"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout
        for name in ("ingest", "preprocess")
    ]
    assert helps[0] == helps[1] and "--readers" in helps[0]


def test_two_configs_may_not_claim_one_flag():
    @dataclasses.dataclass(frozen=True)
    class A:
        seed: int = option(0, help="a")

    @dataclasses.dataclass(frozen=True)
    class B:
        seed: int = option(1, help="b")

    with pytest.raises(TypeError, match="repeats the option --seed"):
        build_parser("x", "x", A, B)


def test_synth_writes_the_cohort_it_is_asked_for(tmp_path, capsys):
    out = tmp_path / "cohort"
    argv = [str(out), "--cases", "2", "--shape", "32", "32", "32", "--seed", "5"]
    assert run_synth([*argv, "--convention", "brats2023", "--unlabeled", "1", "--nii"]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "3 cases" in printed
    found = discover(resolve(str(out)))
    assert len(found.cases) == 3
    assert {c.naming for c in found.cases} == {Naming.BRATS2023}
    assert all(p.endswith(".nii") for c in found.cases for p in c.images.values())


def test_benchmark_suites_take_their_settings_from_their_configs():
    from brats.benchmarks.command import BENCHMARKS, benchmark_parser
    from brats.benchmarks.train import TrainBenchmark

    parser = benchmark_parser()
    args = parser.parse_args(["train", "--steps", "5", "--shape", "32", "32", "16"])
    settings = parse_config(TrainBenchmark, args)
    assert (settings.steps, settings.shape, settings.epochs) == (5, (32, 32, 16), 4)
    assert parser.parse_args(["--json", "f.json", "all"]).suite == "all"
    from brats.benchmarks.recipe import RecipeBenchmark

    recipe = parse_config(RecipeBenchmark, parser.parse_args(["recipe", "--seeds", "3, 5"]))
    assert recipe.seeds == (3, 5) and recipe.presets == ("seed", "nnunet")
    for suite in BENCHMARKS:
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args([suite, "-h"])
        assert exit_.value.code == 0


def test_train_prints_the_best_epochs_validation_figures_not_its_whole_row():
    from brats.cli import _best_epoch

    row = {"epoch": 4, "loss": 1.49, "lr": 0.0, "threads": 1, "val_seconds": 0.75}
    row |= {"val_dice_WT": 0.20322107, "val_post_dice_ET": 0.046, "postprocessing": "{}"}
    assert _best_epoch(row) == {
        "epoch": 4,
        "val_dice_WT": 0.2032,
        "val_post_dice_ET": 0.046,
        "postprocessing": "{}",
    }


def test_brats_schemes_lists_the_built_ins_and_checks_a_users_file(tmp_path, capsys, caplog):
    assert main(["schemes"]) == 0
    listed = capsys.readouterr().out
    built_in = ("brats2020", "brats2023", "met2023", "men2023", "gli2024", "met2024", "ped2024")
    for name in (*built_in, "menrt2024"):
        assert name in listed
    assert "4 RC" in listed and "metrics_PED.py" in listed
    assert main(["schemes", "ped2024"]) == 0
    assert json.loads(capsys.readouterr().out)["classes"][2]["name"] == "CC"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "x", "classes": [{"name": "A", "value": 1}],
                               "regions": {"R": ["B"]}, "decode": [["R", "A"]]}))  # fmt: skip
    assert main(["schemes", str(bad)]) == 2
    assert "unknown classes ['B']" in caplog.text
