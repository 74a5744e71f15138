"""train/fit.py under faults: a loss that turns non-finite, SIGINT / SIGTERM, kill -9, a corrupt checkpoint, a failed
checkpoint write. None of them may lose a completed step or leave NaN weights, and a resumed run must end with the
weights and the card of the run that was never interrupted."""
import importlib.util
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from test_fit import generator_dir  # noqa: F401 -- the fixture: a tiny MLP generator folder

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("fit", ROOT / "train" / "fit.py")
fit = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fit)

STEPS = 60  # the subprocess runs: long enough to be caught midway, a few seconds in all
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def args_for(generator_dir, out, *extra):
    return ["--generator", str(generator_dir), "--num-potentials", "3", "--num-timesteps", "4", "--batch-size", "8",
            "--output-dir", str(out), *extra]


def one_thread_main(argv):
    """fit.main with torch on one thread, as the subprocesses run (OMP_NUM_THREADS=1), so the sums agree bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fit.main(argv)
    finally:
        torch.set_num_threads(threads)


def checkpoint_step(path: Path) -> int:
    with safe_open(path, "pt") as f:
        return int(f.metadata()["step"])


def assert_same_weights(a: Path, b: Path):
    x, y = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert x.keys() == y.keys()
    for name in x:
        assert torch.equal(x[name], y[name]), name


def card_without_time(out: Path) -> str:
    """The card with its output folder named DIR and without the one line that may differ: the time it took."""
    text = (out / "README.md").read_text().replace(str(out), "DIR")
    assert text.count("\n- Time: ") == 1
    return "\n".join(line for line in text.splitlines() if not line.startswith("- Time: "))


@pytest.fixture(scope="module")
def reference(generator_dir, tmp_path_factory):
    """The uninterrupted run the subprocess tests are compared with (its progress bar on, as theirs)."""
    out = tmp_path_factory.mktemp("reference") / "pots"
    assert one_thread_main(args_for(generator_dir, out, "--max-steps", str(STEPS), "--checkpoint-every", "1000")) == 0
    return out


# ------------------------------------------------------------------------------------------------ non-finite loss
def test_nan_loss_stops_and_keeps_the_last_good_step(generator_dir, tmp_path, monkeypatch, capsys):
    real_step, calls = fit.training_step, []

    def nan_at_step_five(*a, **kw):
        calls.append(1)
        loss, logs = real_step(*a, **kw)
        if len(calls) == 6:  # step 5: checkpoints exist for step 3, and steps 0-4 are good
            return loss * float("nan"), {**logs, "L_f": float("nan"), "loss": float("nan")}
        return loss, logs

    monkeypatch.setattr(fit, "training_step", nan_at_step_five)
    out = tmp_path / "nan"
    assert one_thread_main(args_for(generator_dir, out, "--max-steps", "8", "--checkpoint-every", "3", "--no-progress")) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0]
    assert lines[0].startswith("error: not finite at step 5: loss = nan, L_f = nan; stopped before the update, ")
    assert "(step 5)" in lines[0] and "L_u" not in lines[0]  # only the terms that are not finite are named
    assert len(calls) == 6  # nothing ran after the bad step
    # Neither weights nor a card: only the checkpoint, holding the five good steps.
    assert sorted(p.name for p in out.iterdir()) == [fit.CHECKPOINT]
    assert checkpoint_step(out / fit.CHECKPOINT) == 5
    saved = load_file(out / fit.CHECKPOINT)
    assert all(torch.isfinite(v).all() for v in saved.values())

    monkeypatch.setattr(fit, "training_step", real_step)
    five = tmp_path / "five"
    assert one_thread_main(args_for(generator_dir, five, "--max-steps", "5", "--no-progress")) == 0
    good = load_file(five / "model.safetensors")
    for name, value in good.items():  # exactly the state after steps 0-4, not after the bad update
        assert torch.equal(saved[f"flow.{name}"], value), name


def test_non_finite_gradient_stops_before_the_update(generator_dir, tmp_path, monkeypatch, capsys):
    """A finite loss whose gradient is infinite (d/dx sqrt(x) at 0) must not reach the weights either."""
    real_step = fit.training_step

    def infinite_gradient(flow, *a, **kw):
        loss, logs = real_step(flow, *a, **kw)
        w = next(flow.parameters()).sum()
        return loss + (w - w.detach()).sqrt(), logs  # adds 0 to the loss, inf to the gradient

    monkeypatch.setattr(fit, "training_step", infinite_gradient)
    out = tmp_path / "grad"
    assert fit.main(args_for(generator_dir, out, "--max-steps", "4", "--no-progress")) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: not finite at step 0: the gradient, though every term is finite: loss = ")
    assert "no step had completed, nothing saved" in err and len(err.splitlines()) == 1
    assert list(out.iterdir()) == []


# ------------------------------------------------------------------------------------- checkpoint writes and reads
def test_checkpoint_is_fsynced_before_the_rename_and_a_failed_write_keeps_the_old_one(generator_dir, tmp_path, monkeypatch):
    out = tmp_path / "ck"
    out.mkdir()
    args = fit.parse_args(args_for(generator_dir, out))
    flow = fit.PotentialFlow(4, 3)
    classifier = fit.PairClassifier(3, channels=1, image_size=16)
    optimizer = torch.optim.Adam([*flow.parameters(), *classifier.parameters()])
    path = out / fit.CHECKPOINT
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.fstat(fd).st_size))
        real_fsync(fd)

    def replace(a, b):
        events.append(("replace", Path(a).name, Path(b).name))
        real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    fit.save_checkpoint(path, 7, flow, classifier, optimizer, args, [{"loss": 0.5, "acc": 0.25}], 3.0)
    size = path.stat().st_size
    # The temp file's bytes are on disk (all of them) before it replaces the checkpoint; then the folder, for the rename.
    assert events[:2] == [("fsync", size), ("replace", "checkpoint.tmp", fit.CHECKPOINT)]
    assert [e[0] for e in events] == ["fsync", "replace", "fsync"]
    good = path.read_bytes()

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with torch.no_grad():
        next(flow.parameters()).add_(1.0)
    with pytest.raises(OSError, match="No space left"):
        fit.save_checkpoint(path, 8, flow, classifier, optimizer, args, [], 4.0)
    assert path.read_bytes() == good and not (out / "checkpoint.tmp").exists()

    monkeypatch.setattr(os, "fsync", real_fsync)
    with torch.no_grad():
        next(flow.parameters()).fill_(float("nan"))
    with pytest.raises(RuntimeError, match="refusing to write a checkpoint with non-finite values in flow."):
        fit.save_checkpoint(path, 9, flow, classifier, optimizer, args, [], 5.0)
    assert path.read_bytes() == good


@pytest.fixture(scope="module")
def pristine_checkpoint(generator_dir, tmp_path_factory):
    """The bytes of a real checkpoint (step 2 of 6), written by a run stopped at its fourth step."""
    out = tmp_path_factory.mktemp("interrupted") / "pots"
    real_step, calls = fit.training_step, []

    def stop(*a, **kw):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_step(*a, **kw)

    fit.training_step = stop
    try:
        with pytest.raises(KeyboardInterrupt):
            fit.main(args_for(generator_dir, out, "--max-steps", "6", "--checkpoint-every", "2", "--no-progress"))
    finally:
        fit.training_step = real_step
    assert checkpoint_step(out / fit.CHECKPOINT) == 2
    return (out / fit.CHECKPOINT).read_bytes()


@pytest.mark.parametrize("damage, reason", [
    (lambda b: b[:len(b) // 2], "incomplete metadata, file not fully covered"),
    (lambda b: b[:6], "header too small"),
    (lambda b: b"\x00" * 8 + b[8:], "header"),
    (lambda b: b"", "header"),
], ids=["half", "six-bytes", "zeroed-length", "empty"])
def test_corrupt_checkpoint_is_a_one_line_error_and_stays_untouched(generator_dir, tmp_path, pristine_checkpoint,
                                                                     damage, reason):
    out = tmp_path / "pots"
    out.mkdir()
    broken = damage(pristine_checkpoint)
    (out / fit.CHECKPOINT).write_bytes(broken)
    with pytest.raises(SystemExit) as exit_:
        fit.main(args_for(generator_dir, out, "--max-steps", "6", "--checkpoint-every", "2", "--no-progress", "--resume"))
    message = str(exit_.value.code)
    assert message.startswith(f"error: checkpoint {out / fit.CHECKPOINT} is corrupt or truncated: ")
    assert message.endswith("; delete it or restore a copy") and reason in message and "\n" not in message
    assert (out / fit.CHECKPOINT).read_bytes() == broken
    assert sorted(p.name for p in out.iterdir()) == [fit.CHECKPOINT]


def test_checkpoint_without_its_metadata_is_corrupt(generator_dir, tmp_path, pristine_checkpoint):
    from safetensors.torch import save

    out = tmp_path / "pots"
    out.mkdir()
    (out.parent / "good.safetensors").write_bytes(pristine_checkpoint)
    bare = save(load_file(out.parent / "good.safetensors"))  # the same tensors, no metadata
    (out / fit.CHECKPOINT).write_bytes(bare)
    with pytest.raises(SystemExit, match=r"is corrupt or truncated: its metadata lacks 'step'; delete it or restore"):
        fit.main(args_for(generator_dir, out, "--max-steps", "6", "--checkpoint-every", "2", "--no-progress", "--resume"))


# -------------------------------------------------------------------------------- the card of a resumed run
def test_resumed_card_is_the_uninterrupted_card(generator_dir, tmp_path, monkeypatch, capsys):
    """The last 50 steps' terms and accuracy on the card: a run resumed at step 8 of 12 ran only 4 of them itself."""
    common = ["--max-steps", "12", "--checkpoint-every", "4", "--no-progress"]
    full = tmp_path / "a" / "pots"
    assert one_thread_main(args_for(generator_dir, full, *common)) == 0

    real_step, calls = fit.training_step, []

    def stop_at_step_ten(*a, **kw):
        calls.append(1)
        if len(calls) == 11:
            raise KeyboardInterrupt
        return real_step(*a, **kw)

    resumed = tmp_path / "b" / "pots"
    monkeypatch.setattr(fit, "training_step", stop_at_step_ten)
    with pytest.raises(KeyboardInterrupt):
        one_thread_main(args_for(generator_dir, resumed, *common))
    monkeypatch.setattr(fit, "training_step", real_step)
    capsys.readouterr()
    assert one_thread_main(args_for(generator_dir, resumed, *common, "--resume")) == 0
    assert_same_weights(full, resumed)
    assert card_without_time(resumed) == card_without_time(full)
    assert "--resume" not in (resumed / "README.md").read_text()
    assert "resuming from step 8 of 12 (" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ signals and kill -9
class Fit:
    """`python train/fit.py` in a subprocess, run from the repository root, its progress bar read as it goes."""

    def __init__(self, argv, script=str(ROOT / "train" / "fit.py")):
        self.proc = subprocess.Popen([sys.executable, script, *argv], cwd=ROOT, env=ENV,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.err = b""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        while chunk := os.read(self.proc.stderr.fileno(), 4096):
            self.err += chunk

    def steps_done(self) -> int:
        """The last count the progress bar showed (it lags the run by up to 0.1 s)."""
        counts = re.findall(rb"(\d+)/%d \[" % STEPS, self.err)
        return int(counts[-1]) if counts else 0

    def wait_until(self, ready, timeout=60.0):
        deadline = time.monotonic() + timeout
        while not ready():
            assert self.proc.poll() is None, f"fit.py ended early ({self.proc.returncode}): {self.err.decode()[-2000:]}"
            assert time.monotonic() < deadline, f"fit.py made no progress: {self.err.decode()[-2000:]}"
            time.sleep(0.02)

    def finish(self, timeout=60.0):
        self.proc.stdout.read()
        rc = self.proc.wait(timeout)
        self._reader.join(timeout)
        return rc, self.err.decode()


def interrupt(run: Fit, signum: signal.Signals, out: Path, after: int, command: str) -> tuple[int, str]:
    """Sends `signum` to `run` once its bar shows step `after`; checks that it stopped with the shell's code, saved
    the step it was in and printed `command` to resume; returns (the step the checkpoint holds, all it printed)."""
    run.wait_until(lambda: run.steps_done() >= after)
    seen = run.steps_done()
    run.proc.send_signal(signum)
    rc, err = run.finish()
    assert rc == 128 + signum, err  # 130 for SIGINT, 143 for SIGTERM: the shell's codes
    assert "Traceback" not in err
    lines = [line for line in re.split(r"[\r\n]", err) if line.strip()]
    message = lines[-1]
    assert sum("interrupted" in line for line in lines) == 1
    # Only the signal wrote a checkpoint (--checkpoint-every 1000): the step it names is the one on disk.
    step = checkpoint_step(out / fit.CHECKPOINT)
    assert seen <= step < STEPS, f"{signum.name} sent when the bar showed step {seen}; the checkpoint holds step {step}"
    assert message == (f"interrupted ({signum.name}): {out / fit.CHECKPOINT} holds step {step} of {STEPS}; "
                       f"resume with: {command}")
    return step, err


def test_sigint_then_sigterm_each_save_the_last_step_and_print_the_resume_command(generator_dir, tmp_path, reference,
                                                                                   capsys):
    """SIGINT to a run; its printed command, run as printed from the repository root, resumes it; SIGTERM to that
    run; its printed command, run here, finishes with the weights and card of the run never interrupted. (One
    process fewer than a fresh run per signal: each start imports torch and diffusers, 4+ s.)"""
    out = reference.parent.parent / f"{tmp_path.name}-signals" / "pots"  # as deep as the reference's folder
    argv = args_for(generator_dir, out, "--max-steps", str(STEPS), "--checkpoint-every", "1000")
    command = "python train/fit.py " + " ".join(shlex.quote(a) for a in argv) + " --resume"
    first, _ = interrupt(Fit(argv), signal.SIGINT, out, after=3, command=command)

    resume = shlex.split(command)
    run = Fit(resume[2:], script=resume[1])  # the printed train/fit.py, relative to the repository root
    # Interrupted in its turn, the resumed run prints the same command (its own, which has --resume already).
    second, err = interrupt(run, signal.SIGTERM, out, after=first + 3, command=command)
    assert f"resuming from step {first} of {STEPS} ({out / fit.CHECKPOINT})" in err
    assert second > first

    capsys.readouterr()
    assert one_thread_main(resume[2:]) == 0
    assert f"resuming from step {second} of {STEPS} ({out / fit.CHECKPOINT})" in capsys.readouterr().err
    assert_same_weights(reference, out)
    assert card_without_time(out) == card_without_time(reference)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    print(f"SIGINT at step {first}, SIGTERM at step {second}")  # after the last readouterr: shown by pytest -rP


def test_kill_9_loses_at_most_one_checkpoint_interval(generator_dir, tmp_path, reference, capsys):
    every = 5
    out = tmp_path / "pots"
    argv = args_for(generator_dir, out, "--max-steps", str(STEPS), "--checkpoint-every", str(every))
    run = Fit(argv)
    path = out / fit.CHECKPOINT
    run.wait_until(lambda: path.is_file() and checkpoint_step(path) >= 2 * every)
    time.sleep(random.uniform(0.0, 0.2))  # somewhere in a later interval, perhaps in the middle of a checkpoint write
    seen = run.steps_done()
    run.proc.kill()
    rc, err = run.finish()
    assert rc == -signal.SIGKILL, err
    step = checkpoint_step(path)
    measured = f"SIGKILL sent when the bar showed step {seen}; the checkpoint holds step {step}"
    assert step % every == 0 and step >= seen - every, (step, seen)

    capsys.readouterr()
    assert one_thread_main([*argv, "--no-progress", "--resume"]) == 0
    assert f"resuming from step {step} of {STEPS} (" in capsys.readouterr().err
    assert_same_weights(reference, out)
    # A temp file left by a kill mid-write goes too: the folder holds the published files only.
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    print(measured)


def test_card_links_its_generator_only_where_the_link_resolves(tmp_path):
    outside = tmp_path / "out"
    assert fit.folder_link("hub_models/dsprites-vae", str(outside)) == (
        "`hub_models/dsprites-vae` (the folder of that name in the pdetraversal repository)")
    inside = fit.REPO_ROOT / "runs" / "some-fit"
    assert fit.folder_link("hub_models/dsprites-vae", str(inside)) == "[`hub_models/dsprites-vae`](../../hub_models/dsprites-vae)"
    (tmp_path / "gen").mkdir()
    assert fit.folder_link(str(tmp_path / "gen"), str(outside)) == f"[`{tmp_path / 'gen'}`](../gen)"
    assert fit.folder_link(str(tmp_path / "gen"), str(inside)) == f"`{tmp_path / 'gen'}` (a local folder)"
