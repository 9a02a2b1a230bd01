"""The evaluation runner: numbers against direct computation, stochastic protocol, sanity warnings,
kill -9 and resume, truncated journals, and 2-process torchrun sharding."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from advpure.defenses import Purifier
from advpure.eval.journal import Journal
from advpure.eval.runner import format_markdown, run_eval

REPO = Path(__file__).resolve().parents[2]


class NoisePurifier(Purifier):
    stochastic = True

    def __init__(self, sigma: float = 0.3) -> None:
        super().__init__()
        self.sigma = sigma

    def purify(self, x, *, generator=None):
        return (x + self.sigma * torch.randn(x.shape, generator=generator, device=x.device)).clamp(0, 1)


@pytest.fixture(scope="module")
def clf_path(tmp_path_factory, digits_classifier):
    from advpure.models import save_classifier

    p = tmp_path_factory.mktemp("clf") / "digits.safetensors"
    save_classifier(digits_classifier, p, dataset="digits")
    return p


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _cli(clf_path, out, journal=None, *, n=60, batch=10, steps=5, seeds="0,1"):
    cmd = [sys.executable, "-m", "advpure.cli.eval", "--dataset", "digits", "--classifier", str(clf_path),
           "--attack", f"pgd:eps=0.1,steps={steps},step_size=0.02", "--n-samples", str(n), "--batch-size", str(batch),
           "--seeds", seeds, "--out", str(out), "--no-progress", "--no-sanity"]
    if journal:
        cmd += ["--journal", str(journal)]
    return cmd


def test_clean_accuracy_matches_direct_computation(digits_data, digits_classifier):
    r = run_eval(dataset="digits", classifier=digits_classifier, attack="none", n=50, subset_seed=3,
                 batch_size=16, progress=False)
    x, y = digits_data[1].subset(50, 3).tensors()
    direct = float((digits_classifier(x).argmax(1) == y).float().mean())
    assert r["clean_accuracy"]["mean"] == pytest.approx(direct)
    assert "robust_accuracy" not in r


def test_robust_run_record_and_table(digits_classifier, tmp_path):
    r = run_eval(dataset="digits", classifier=digits_classifier, attack="pgd:eps=0.1,steps=5,step_size=0.02",
                 n=40, batch_size=20, seeds=[0, 1], out=tmp_path / "r.json", sanity_n=8, sanity_queries=50,
                 progress=False)
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["robust_accuracy"]["mean"] == pytest.approx(r["robust_accuracy"]["mean"])
    assert r["robust_accuracy"]["mean"] < r["clean_accuracy"]["mean"]
    assert r["perturbation"]["max_linf"] <= 0.1 + 1e-6 and r["perturbation"]["nan"] == 0
    assert len(r["per_seed"]) == 2 and r["cost"]["attack_forwards_per_image"] > 5
    assert {row["check"] for row in r["sanity_checks"]} == {"randomness", "gradients", "large_eps",
                                                             "more_iterations", "black_box"}
    table = format_markdown(r)
    assert "robust accuracy" in table and "sanity: large_eps" in table


def test_stochastic_protocol_and_eot1_warning(digits_classifier):
    r = run_eval(dataset="digits", classifier=digits_classifier, defense=NoisePurifier(0.3),
                 attack="pgd:eps=0.1,steps=3,step_size=0.03,eot=1", n=24, batch_size=24, eval_draws=4,
                 sanity_n=8, sanity_queries=20, progress=False)
    assert r["protocol"]["draws_used"] == 4 and r["defense"]["stochastic"]
    assert r["robust_accuracy_worst_case"]["mean"] <= r["robust_accuracy"]["mean"]
    rows = {row["check"]: row for row in r["sanity_checks"]}
    assert rows["randomness"]["status"] == "WARNING"
    assert "**WARNING" in format_markdown(r)


def test_bad_arguments(digits_classifier):
    with pytest.raises(ValueError, match="unknown attack"):
        run_eval(dataset="digits", classifier=digits_classifier, attack="nope", n=8, progress=False)
    with pytest.raises(ValueError, match="n"):
        run_eval(dataset="digits", classifier=digits_classifier, n=0, progress=False)
    with pytest.raises(FileNotFoundError):
        run_eval(dataset="digits", classifier="/nonexistent.safetensors", n=4, progress=False)


def test_journal_drops_truncated_line(tmp_path):
    p = tmp_path / "j.jsonl"
    j = Journal(p, "k")
    j.append({"type": "batch", "seed": 0, "batch": 0})
    j.close()
    with open(p, "a") as f:
        f.write('{"key": "k", "type": "batch", "se')
    j2 = Journal(p, "k")
    assert len(j2.records) == 1
    j2.append({"type": "batch", "seed": 0, "batch": 1})
    j2.close()
    j3 = Journal(p, "k")
    assert len(j3.records) == 2
    j3.close()
    assert len(Journal(p, "other").records) == 0


def test_journal_runs_a_check_once(tmp_path):
    """A resumed run takes a check's journalled result instead of computing it again."""
    p, calls = tmp_path / "j.jsonl", []
    j = Journal(p, "k")
    assert j.once("sanity", "rows", lambda: calls.append(1) or [{"check": "a"}]) == [{"check": "a"}]
    j.close()
    j2 = Journal(p, "k")
    assert j2.once("sanity", "rows", lambda: calls.append(2) or []) == [{"check": "a"}] and calls == [1]
    j2.close()


def test_journal_keeps_every_valid_line_after_garbage(tmp_path, capsys):
    p = tmp_path / "j.jsonl"
    lines = [{"key": "k", "type": "batch", "seed": 0, "batch": b} for b in range(4)]
    text = "\n".join(json.dumps(r) for r in lines[:2]) + "\nthis is not json\n[1, 2]\n" + \
        "\n".join(json.dumps(r) for r in lines[2:]) + "\n"
    p.write_text(text)
    j = Journal(p, "k")
    assert [r["batch"] for r in j.records] == [0, 1, 2, 3] and j.skipped == 2
    assert "skipped 2 unreadable line(s)" in capsys.readouterr().err


def test_second_writer_is_refused(tmp_path):
    from advpure.eval.journal import JournalError

    p = tmp_path / "j.jsonl"
    first = Journal(p, "k")
    with pytest.raises(JournalError, match="in use by another run"):
        Journal(p, "k")
    first.close()
    Journal(p, "k").close()  # free again once the first run is done


def test_stale_journal_names_the_changed_classifier(tmp_path, digits_classifier):
    """Evaluate, change the classifier's weights (a retrained model in the same place), resume the same journal:
    an error naming the classifier digest, never the old accuracies."""
    import copy

    from advpure.eval.journal import JournalError

    j = tmp_path / "j.jsonl"
    kw = dict(dataset="digits", attack="none", n=16, batch_size=16, sanity=False, progress=False, journal=j)
    first = run_eval(classifier=digits_classifier, **kw)
    assert first["clean_accuracy"]["mean"] > 0.9
    assert run_eval(classifier=digits_classifier, **kw)["clean_accuracy"] == first["clean_accuracy"]  # same: resumes
    other = copy.deepcopy(digits_classifier)
    with torch.no_grad():
        for prm in other.parameters():
            prm.mul_(0.0)
    with pytest.raises(JournalError, match="classifier changed"):
        run_eval(classifier=other, **kw)


def _inprocess(clf_path, *, n=60, batch=10, steps=5, seeds=(0, 1)):
    return run_eval(dataset="digits", classifier=str(clf_path), attack=f"pgd:eps=0.1,steps={steps},step_size=0.02",
                    n=n, batch_size=batch, seeds=list(seeds), sanity=False, progress=False)


def test_kill_and_resume(clf_path, tmp_path):
    out, journal = tmp_path / "out.json", tmp_path / "j.jsonl"
    proc = subprocess.Popen(_cli(clf_path, out, journal, steps=40), env=_env(), cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while time.time() - t0 < 120:
        if journal.exists() and journal.read_text().count("\n") >= 1:
            break
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    killed = proc.poll() is None
    if killed:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_before = journal.read_text().count("\n")
    assert not out.exists() or not killed
    subprocess.run(_cli(clf_path, out, journal, steps=40), check=True, env=_env(), cwd=tmp_path, timeout=300)
    ref, got = _inprocess(clf_path, steps=40), json.loads(out.read_text())
    assert killed and n_before < 12, "the run finished before it could be killed; make it slower"
    lines = [json.loads(s) for s in journal.read_text().splitlines()]
    tasks = [(r["seed"], r["batch"]) for r in lines if r["type"] == "batch"]
    assert len(tasks) == len(set(tasks)) == 12  # 2 seeds x 6 batches, none twice
    assert got["per_seed"] == ref["per_seed"]


def test_torchrun_two_processes_equals_single(clf_path, tmp_path):
    dist_out = tmp_path / "dist.json"
    import socket

    with socket.socket() as sock:  # a free port: a fixed one collides with other runs on the machine
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
           "-m", "advpure.cli.eval", *_cli(clf_path, dist_out, tmp_path / "dj.jsonl", n=40, batch=8)[3:]]
    subprocess.run(cmd, check=True, env=_env(), cwd=tmp_path, timeout=300)
    a, b = _inprocess(clf_path, n=40, batch=8), json.loads(dist_out.read_text())
    assert b["cost"]["processes"] == 2
    assert a["per_seed"] == b["per_seed"]
    assert sorted(p.name for p in tmp_path.glob("dj.jsonl.rank*")) == ["dj.jsonl.rank0of2", "dj.jsonl.rank1of2"]


def test_resume_reads_journals_of_another_process_count(tmp_path, digits_classifier):
    """A run journaled by 2 processes (JOURNAL.rank0of2, JOURNAL.rank1of2) resumed by 1: nothing is recomputed and
    the numbers are the same."""
    j = tmp_path / "j.jsonl"
    kw = dict(dataset="digits", classifier=digits_classifier, attack="pgd:eps=0.1,steps=2,step_size=0.05", n=24,
              batch_size=8, seeds=[0, 1], sanity=False, progress=False, journal=j)
    first = run_eval(**kw)
    lines = j.read_text().splitlines()
    header = [ln for ln in lines if '"header"' in ln]
    batches = [ln for ln in lines if '"batch"' in ln]
    assert len(batches) == 6
    (tmp_path / "j.jsonl.rank0of2").write_text("\n".join(header + batches[0::2]) + "\n")
    (tmp_path / "j.jsonl.rank1of2").write_text("\n".join(header + batches[1::2]) + "\n")
    j.unlink()
    again = run_eval(**kw)
    assert again["robust_accuracy"] == first["robust_accuracy"] and again["clean_accuracy"] == first["clean_accuracy"]
    assert '"batch"' not in j.read_text()  # every task came from the rank files


def test_stale_journal_in_the_cli(tmp_path, digits_classifier, capsys):
    """The issue's scenario on the command line: evaluate m.safetensors with a journal, retrain into the same path,
    evaluate again with the same journal: one line naming the changed classifier, exit 2, no stale accuracy."""
    import copy

    from advpure.cli import main
    from advpure.models import save_classifier

    m = tmp_path / "m.safetensors"
    save_classifier(digits_classifier, m, dataset="digits")
    args = ["eval", "--dataset", "digits", "--classifier", str(m), "--n", "16", "--batch-size", "16",
            "--journal", str(tmp_path / "j.jsonl"), "--out", str(tmp_path / "r.json"), "--no-progress"]
    assert main(args) == 0
    retrained = copy.deepcopy(digits_classifier)
    with torch.no_grad():
        for prm in retrained.parameters():
            prm.mul_(-1.0)
    save_classifier(retrained, m, dataset="digits")  # same path, other weights
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "classifier changed" in err[0] and "Traceback" not in err[0]


# --------------------------------------------------------------------------- EvalConfig
def test_eval_config_validates_each_setting_by_name():
    from advpure.eval.runner import EvalConfig

    for bad, name in [(dict(n=0), "n"), (dict(batch_size=0), "batch_size"), (dict(seeds=()), "seeds"),
                      (dict(seeds=(0, -1)), "seed"), (dict(eval_draws=0), "eval_draws"), (dict(votes=-1), "votes"),
                      (dict(subset_seed=-1), "subset_seed"), (dict(sanity_n=0), "sanity_n"),
                      (dict(convergence=True, convergence_max_factor=1), "convergence_max_factor"),
                      (dict(seeds="0,1"), "seeds"), (dict(dataset=""), "dataset")]:
        with pytest.raises((ValueError, TypeError), match=name):
            EvalConfig(**{"dataset": "digits", **bad})
    cfg = EvalConfig(dataset="digits", seeds=[0, 1])
    assert cfg.seeds == (0, 1) and cfg.n == 100 and cfg.eval_draws == 20  # the defaults run_eval always had


def test_run_eval_takes_a_config_or_keywords_alike(digits_classifier):
    from advpure.eval.runner import EvalConfig

    kw = dict(dataset="digits", n=12, subset_seed=2, batch_size=5, progress=False)
    by_kw = run_eval(classifier=digits_classifier, attack="none", **kw)
    cfg = EvalConfig(**kw)
    by_cfg = run_eval(cfg, classifier=digits_classifier, attack="none")
    by_override = run_eval(EvalConfig(dataset="digits", n=50), classifier=digits_classifier, attack="none",
                           n=12, subset_seed=2, batch_size=5, progress=False)
    for r in (by_cfg, by_override):
        assert r["clean_accuracy"] == by_kw["clean_accuracy"] and r["journal_key"] == by_kw["journal_key"]
    with pytest.raises(TypeError, match="'nn'.*settings: dataset, n,"):
        run_eval(cfg, classifier=digits_classifier, nn=3)
    with pytest.raises(TypeError, match="EvalConfig"):
        run_eval({"dataset": "digits"}, classifier=digits_classifier)


def test_sharded_runs_wait_longer_than_the_default_gather_timeout(monkeypatch):
    """A rank that finishes early waits in the final gather for the slowest one; torch's default 30-minute timeout
    ended a CPU run whose halves finished 30+ minutes apart. The process group gets a week (or ADVPURE_DIST_TIMEOUT_S)."""
    from datetime import timedelta

    import torch.distributed as dist

    from advpure.eval import runner

    seen = {}
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: seen.update(backend=backend, **kw))
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(runner.torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert runner._dist_info() == (1, 2)
    assert seen["backend"] == "gloo" and seen["timeout"] >= timedelta(days=7)
    monkeypatch.setenv("ADVPURE_DIST_TIMEOUT_S", "90")
    runner._dist_info()
    assert seen["timeout"] == timedelta(seconds=90)
