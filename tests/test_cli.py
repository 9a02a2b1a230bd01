import json
import subprocess
import sys

from advpure.cli import main


def test_info_json(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["advpure"] and info["torch"] and "cache_dir" in info


def test_cli_errors_are_clear(capsys):
    assert main(["train", "classifier", "--dataset", "svhn", "--out", "x.safetensors"]) == 2
    assert "unknown dataset 'svhn'" in capsys.readouterr().err


def test_console_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "advpure.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "train" in r.stdout


def test_version(capsys):
    import pytest

    from advpure import __version__

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"advpure {__version__}"


def test_list_shows_every_spec_with_its_options(capsys):
    from advpure.specs import names

    assert main(["list", "attacks"]) == 0
    out = capsys.readouterr().out
    for name in names("attack"):
        assert f"\n{name}: " in out
    assert "steps" in out and "eot" in out
    assert main(["list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"defenses", "attacks", "models", "datasets"}
    pgd = next(r for r in data["attacks"] if r["name"] == "pgd")
    eps = next(o for o in pgd["options"] if o["name"] == "eps")
    assert eps["type"] == "float|none" and eps["required"] is False and eps["help"]
    diffpure = next(r for r in data["defenses"] if r["name"] == "diffpure")
    assert [o["name"] for o in diffpure["options"]][:2] == ["model", "t"]
    models = {r["name"]: r for r in data["models"]}
    assert "resnet56" in models and "ARCH:PATH" in models and models["ARCH:PATH"]["form"]
    assert "digits" in {r["name"] for r in data["datasets"]}


def test_wrong_spec_key_names_the_valid_ones(capsys):
    assert main(["eval", "--dataset", "digits", "--classifier", "small-cnn", "--allow-random-weights",
                 "--defense", "diffpure:foo=1"]) == 2
    err = capsys.readouterr().err
    assert "--defense diffpure:foo=1: diffpure: unknown option 'foo'; valid options: model, t, norm" in err
    assert "(advpure list defenses)" in err


def test_help_shows_defaults_without_noise():
    from advpure.cli import build_parser
    from advpure.cli.options import all_parsers

    for p in all_parsers(build_parser()):
        text = p.format_help()
        assert "(default: None)" not in text and "(default: False)" not in text, p.prog
        for a in p._actions:  # every option says what it does
            assert not a.option_strings or a.help, f"{p.prog} {a.option_strings}: no help"
    text = next(p for p in all_parsers(build_parser()) if p.prog == "advpure eval").format_help()
    assert "(default: 100)" in text and "(default: test)" in text


def test_old_spellings_still_parse_hidden_and_with_a_notice(capsys):
    from advpure.cli import build_parser
    from advpure.cli.options import all_parsers

    parser = build_parser()
    args = parser.parse_args(["curves", "--classifier", "c", "--defense", "d", "--attack", "a", "--budgets", "0,8/255"])
    assert args.eps == [0.0, 8 / 255]
    assert "--budgets is now --eps" in capsys.readouterr().err
    args = parser.parse_args(["eval", "--dataset", "digits", "--classifier", "c", "--denoiser", "m.safetensors"])
    assert args.model == "m.safetensors"
    args = parser.parse_args(["train", "kernel", "--classifier", "c", "--out", "k.safetensors", "--attack-eps", "0.1"])
    assert args.eps == 0.1
    assert parser.parse_args(["eps-ad", "--classifier", "c", "--linf-budgets", "0.1"]).eps == [0.1]
    assert parser.parse_args(["cmap-ablation", "--out", "o", "--pgd-steps", "3"]).steps == 3
    helps = {p.prog: p.format_help() for p in all_parsers(parser)}
    for prog in ("curves", "eval", "train kernel", "eps-ad", "cmap-ablation", "eps observe"):
        for old in ("--budgets", "--denoiser", "--attack-eps", "--linf-budgets", "--l2-budgets", "--pgd-steps"):
            assert old not in helps["advpure " + prog], (prog, old)


def test_one_vocabulary():
    """--n is a number of images, --seeds a list, --eps the budget; the renamed spellings are gone from help."""
    from advpure.cli import build_parser
    from advpure.cli.options import all_parsers

    for p in all_parsers(build_parser()):
        opts = {s: a for a in p._actions for s in a.option_strings if a.help != "==SUPPRESS=="}
        if "--seeds" in opts:
            assert opts["--seeds"].type.__name__ == "seeds", p.prog
        assert "--n" not in opts or "discretisation" not in (opts["--n"].help or ""), p.prog
        for old in ("--budgets", "--linf-budgets", "--attack-eps", "--pgd-steps"):
            assert old not in opts, (p.prog, old)
