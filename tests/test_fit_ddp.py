"""train/fit.py data parallel under `accelerate launch` (two gloo processes on the CPU): both processes end with the
same weights, which are one Adam step on the mean of their gradients; process 0 alone writes DIR; a SIGTERM or a
non-finite term on process 1 alone stops both at the same step; a two-process run resumes a one-process
checkpoint. A single process keeps its old seeds and does not need accelerate.

Run as a script (`accelerate launch ... tests/test_fit_ddp.py FIT_ARGS`) this file is the launched worker: it runs
fit.main with a fault injected where FIT_DDP_FAULT says, and writes what its process held and wrote to FIT_DDP_DUMP.
"""
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("fit", ROOT / "train" / "fit.py")
fit = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fit)

# After fit.py, which puts the repository root on sys.path: this file also runs as a script from tests/.
from test_fit import generator_dir  # noqa: E402, F401 -- the fixture: a tiny MLP generator folder

STEPS = 10


def worker(argv) -> int:
    """fit.main in one launched process, instrumented: FIT_DDP_FAULT = 'nan:RANK:CALL' makes the CALL-th training
    step (0-based, counted from this run's first) of process RANK non-finite; 'sigterm:RANK:CALL' sends that process
    SIGTERM during it. Writes rankR.safetensors (the final flow and classifier) and rankR.json (what it wrote, its
    exit code) to FIT_DDP_DUMP."""
    torch.set_num_threads(1)
    rank, dump = int(os.environ["RANK"]), Path(os.environ["FIT_DDP_DUMP"])
    fault = os.environ.get("FIT_DDP_FAULT", "none:-1:-1").split(":")
    kind, fault_rank, fault_call = fault[0], int(fault[1]), int(fault[2])
    held, writes, calls = {}, {"save_checkpoint": 0, "write_card": 0, "save_pretrained": 0}, []

    def counted(name, function):
        def run(*a, **kw):
            writes[name] += 1
            return function(*a, **kw)
        return run

    real_build, real_classifier, real_step = fit.build_method, fit.PairClassifier, fit.training_step

    def build_method(*a, **kw):
        held["flow"] = flow = real_build(*a, **kw)
        flow.save_pretrained = counted("save_pretrained", flow.save_pretrained)
        return flow

    def classifier(*a, **kw):
        held["classifier"] = c = real_classifier(*a, **kw)
        return c

    def training_step(*a, **kw):
        call = len(calls)
        calls.append(1)
        loss, logs = real_step(*a, **kw)
        if rank == fault_rank and call == fault_call:
            if kind == "nan":
                return loss * float("nan"), {**logs, "L_f": float("nan"), "loss": float("nan")}
            os.kill(os.getpid(), signal.SIGTERM)
        return loss, logs

    fit.build_method, fit.PairClassifier, fit.training_step = build_method, classifier, training_step
    fit.save_checkpoint = counted("save_checkpoint", fit.save_checkpoint)
    fit.write_card = counted("write_card", fit.write_card)
    rc = fit.main(argv)
    save_file(state_of(held["flow"], held["classifier"]), dump / f"rank{rank}.safetensors")
    (dump / f"rank{rank}.json").write_text(json.dumps({"rc": rc, "steps": len(calls), **writes}))
    # Neither process exits before both have written their report: the launcher stops the rest when one exits
    # with an error code (as both do here after a fault), which could cut the other's report short.
    torch.distributed.barrier()
    return rc


def state_of(flow, classifier) -> dict:
    state = {f"flow.{k}": v for k, v in flow.state_dict().items()}
    state.update({f"classifier.{k}": v for k, v in classifier.state_dict().items()})
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def args_for(generator_dir, out, *extra):
    return ["--generator", str(generator_dir), "--num-potentials", "3", "--num-timesteps", "4", "--batch-size", "8",
            "--output-dir", str(out), "--no-progress", "--device", "cpu", "--max-steps", str(STEPS), *extra]


def launch(argv, dump: Path, fault: str = "none:-1:-1") -> tuple[subprocess.CompletedProcess, dict]:
    """Two processes of this file's worker under `accelerate launch`; returns the launcher's result and, per rank,
    the worker's report."""
    dump.mkdir(parents=True, exist_ok=True)
    for old in dump.iterdir():
        old.unlink()
    # --multi_gpu is what starts several processes (torchrun); without a GPU (or with --device cpu) fit.py's
    # Accelerator(cpu=True) joins them over gloo. A plain `--cpu --num_processes 2` would start one process only.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
           "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
           str(Path(__file__).resolve()), *argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FIT_DDP_DUMP": str(dump), "FIT_DDP_FAULT": fault}
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    reports = {r: json.loads((dump / f"rank{r}.json").read_text()) for r in (0, 1) if (dump / f"rank{r}.json").exists()}
    return proc, reports


def checkpoint_step(path: Path) -> int:
    with safe_open(path, "pt") as f:
        return int(f.metadata()["step"])


def one_process_checkpoint(generator_dir, out, stop_at: int):
    """A one-process run (in this process, one thread) interrupted in step `stop_at`; checkpoints every 3 steps."""
    real_step, calls = fit.training_step, []

    def stop(*a, **kw):
        calls.append(1)
        if len(calls) == stop_at + 1:
            raise KeyboardInterrupt
        return real_step(*a, **kw)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    fit.training_step = stop
    try:
        fit.main(args_for(generator_dir, out, "--checkpoint-every", "3"))
    except KeyboardInterrupt:
        pass
    finally:
        fit.training_step = real_step
        torch.set_num_threads(threads)


def one_step_by_hand(generator_dir, checkpoint: Path, argv, step: int) -> tuple[dict, list]:
    """What the two processes must hold after `step`: the checkpoint's state, then one Adam step on the mean of the
    gradients of process 0's and process 1's batches, computed here one after the other, and the classifier's
    BatchNorm statistics the mean of those each batch left. Returns (that state, the two processes' gradients)."""
    from hub_models import load_generator

    args = fit.parse_args(argv)
    generator = load_generator(str(generator_dir))
    fit.pick_laplacian(args, generator.latent_dim)
    x = generator.decode(generator.sample_latent(1, seed=0))
    flow = fit.build_method(args, generator, None)
    classifier = fit.PairClassifier(args.num_potentials, channels=x.shape[1], image_size=max(x.shape[2:]))
    params = [*flow.parameters(), *classifier.parameters()]
    optimizer = torch.optim.Adam(params, lr=args.lr)
    assert fit.load_checkpoint(checkpoint, flow, classifier, optimizer, args)[0] == step
    losses = fit.LossConfig(args.w_initial, args.w_pde, args.w_jacobian, args.w_classifier, args.jacobian_saturation,
                            args.laplacian, args.num_probes, args.w_diversity)
    grads, stats = [], []
    buffers = list(classifier.buffers())  # the running statistics, and the count of batches (the same on both)
    before = [b.clone() for b in buffers]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for rank in (0, 1):
            for b, value in zip(buffers, before):
                b.copy_(value)
            seed = fit.step_seed(args.seed, step, rank)
            rng = torch.Generator().manual_seed(seed)
            loss, _ = fit.training_step(flow, classifier, generator, generator.sample_latent(8, seed=seed), losses, rng)
            grads.append(torch.autograd.grad(loss, params))
            stats.append([b.clone() for b in buffers])
    finally:
        torch.set_num_threads(threads)
    for b, s0, s1 in zip(buffers, *stats):
        assert torch.equal(s0, s1) != b.is_floating_point()
        b.copy_((s0 + s1) / 2 if b.is_floating_point() else s0)
    for q, g0, g1 in zip(params, *grads):
        q.grad = (g0 + g1) / 2
    optimizer.step()
    return state_of(flow, classifier), grads


# ------------------------------------------------------------------------------------------- without a launcher
def test_one_process_keeps_its_seeds_and_processes_draw_their_own():
    # The stream every single-process run (and the shipped models) drew: seed * 1_000_003 + step, and (seed, step).
    assert [fit.step_seed(3, s) for s in (0, 1, 7)] == [3_000_009, 3_000_010, 3_000_016]
    assert fit.step_seed(3, 7, 0) == 3_000_016 and fit.matching_seed(3, 7, 0) == (3, 7)
    # torch's generator keeps the low 32 bits of a seed: those must differ for every (step, process) of a run.
    seeds = {fit.step_seed(5, s, r) % 2**32 for s in [*range(1000), 2**20 - 1] for r in range(8)}
    assert len(seeds) == 8008
    draws = [torch.randn(3, generator=torch.Generator().manual_seed(fit.step_seed(5, 7, r))) for r in (0, 1)]
    assert not torch.equal(*draws)
    assert fit.matching_seed(3, 7, 1) == (3, 7, 1)
    assert fit.launcher(1) == "python train/fit.py"
    assert fit.launcher(2) == "accelerate launch --multi_gpu --num_processes 2 train/fit.py"


def test_one_process_does_not_need_accelerate(generator_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "accelerate", None)  # `import accelerate` now fails
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert fit.main(args_for(generator_dir, tmp_path / "one", "--max-steps", "2")) == 0
    monkeypatch.setenv("WORLD_SIZE", "2")
    try:
        fit.main(args_for(generator_dir, tmp_path / "two", "--max-steps", "2"))
    except SystemExit as e:
        assert str(e.code) == ("error: launched as 2 processes (WORLD_SIZE=2), which needs accelerate: "
                               "pip install accelerate==1.15.0")
    else:
        raise AssertionError("WORLD_SIZE=2 without accelerate must stop")
    try:  # checked before accelerate is needed: more steps than the processes have distinct seeds for
        fit.main(args_for(generator_dir, tmp_path / "two", "--max-steps", str(2**20 + 1)))
    except SystemExit as e:
        assert str(e.code).startswith("error: 2 processes and --max-steps 1048577: data parallel runs give each "
                                      "process distinct seeds for up to 1048576 steps")
    else:
        raise AssertionError("too many steps for distinct seeds must stop")
    monkeypatch.setenv("WORLD_SIZE", "two")
    try:
        fit.main(args_for(generator_dir, tmp_path / "three", "--max-steps", "2"))
    except SystemExit as e:
        assert "WORLD_SIZE='two' in the environment is not a number of processes" in str(e.code)
    else:
        raise AssertionError("a WORLD_SIZE that is not a number must stop")


# ------------------------------------------------------------------------------------------ two processes
@pytest.mark.slow  # over 10 s: run by .ci/run's second step
def test_two_processes_resume_a_one_process_checkpoint(generator_dir, tmp_path):
    out, dump = tmp_path / "pots", tmp_path / "dump"
    one_process_checkpoint(generator_dir, out, stop_at=4)
    assert checkpoint_step(out / fit.CHECKPOINT) == 3
    argv = args_for(generator_dir, out, "--checkpoint-every", "3", "--resume")

    # SIGTERM reaches process 1 alone, in its second step (step 4): both finish that step and stop after it.
    proc, reports = launch(argv, dump, fault="sigterm:1:1")
    assert proc.returncode != 0, proc.stderr[-3000:]
    assert reports[0]["rc"] == reports[1]["rc"] == 128 + signal.SIGTERM, (reports, proc.stderr[-3000:])
    assert reports[0]["steps"] == reports[1]["steps"] == 2
    assert checkpoint_step(out / fit.CHECKPOINT) == 5
    assert reports[0]["save_checkpoint"] == 1 and reports[1]["save_checkpoint"] == 0
    assert proc.stderr.count("resuming from step 3 of 10") == 1
    assert proc.stderr.count("note: the checkpoint was written by 1 process(es), this run has 2") == 1
    expected = (f"interrupted (SIGTERM): {out / fit.CHECKPOINT} holds step 5 of {STEPS}; resume with: "
                "accelerate launch --multi_gpu --num_processes 2 train/fit.py ")
    assert proc.stderr.count(expected) == 1, proc.stderr[-3000:]  # process 0 alone says it
    assert sorted(p.name for p in out.iterdir()) == [fit.CHECKPOINT]
    with safe_open(out / fit.CHECKPOINT, "pt") as f:
        assert json.loads(f.metadata()["processes"]) == [[0, 1], [3, 2]]
    at_five = tmp_path / "at-five.safetensors"
    at_five.write_bytes((out / fit.CHECKPOINT).read_bytes())

    # Resumed again, now to the end: step 5 is the one step left to --max-steps 6 (not a setting a resume must keep).
    six = [*argv[:-3], "--max-steps", "6", "--checkpoint-every", "3", "--resume"]
    proc, reports = launch(six, dump)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [reports[r]["rc"] for r in (0, 1)] == [0, 0] and reports[0]["steps"] == reports[1]["steps"] == 1
    # One writer: process 0 saved the potentials and the card once (and the last checkpoint); process 1 nothing.
    assert {k: reports[0][k] for k in ("save_checkpoint", "write_card", "save_pretrained")} == \
        {"save_checkpoint": 1, "write_card": 1, "save_pretrained": 1}
    assert {k: reports[1][k] for k in ("save_checkpoint", "write_card", "save_pretrained")} == \
        {"save_checkpoint": 0, "write_card": 0, "save_pretrained": 0}
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert proc.stdout.count("saved 3 potentials to") == 1

    # Both processes hold the same weights, and they are those of one Adam step on the mean gradient.
    rank0, rank1 = load_file(dump / "rank0.safetensors"), load_file(dump / "rank1.safetensors")
    assert rank0.keys() == rank1.keys()
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    expected, grads = one_step_by_hand(generator_dir, at_five, six[:-1], step=5)
    g0, g1 = torch.cat([g.flatten() for g in grads[0]]), torch.cat([g.flatten() for g in grads[1]])
    assert (g0 - g1).abs().max() > 1e-3 * g0.abs().max()  # the two batches differ: the mean is not either one
    for name, value in expected.items():
        torch.testing.assert_close(rank0[name], value, rtol=0, atol=1e-6, msg=name)
    saved = load_file(out / "model.safetensors")
    for name, value in saved.items():
        assert torch.equal(value, rank0[f"flow.{name}"]), name
    card = (out / "README.md").read_text()
    assert "- Command: `accelerate launch --multi_gpu --num_processes 2 train/fit.py --generator " in card
    assert "batch 8 per process" in card
    assert "Data parallel (steps 0-2 on 1 process; steps 3-5 on 2 processes)" in card


def test_non_finite_on_one_process_stops_both(generator_dir, tmp_path):
    out, dump = tmp_path / "pots", tmp_path / "dump"
    proc, reports = launch(args_for(generator_dir, out, "--checkpoint-every", "3"), dump, fault="nan:1:4")
    assert proc.returncode != 0
    assert reports[0]["rc"] == reports[1]["rc"] == 1, (reports, proc.stderr[-3000:])
    assert reports[0]["steps"] == reports[1]["steps"] == 5  # nothing ran after step 4 on either
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: not finite")]
    assert lines == [f"error: not finite at step 4 (process 1 of 2): loss = nan, L_f = nan; stopped before the update, "
                     f"{out / fit.CHECKPOINT} holds the last good state (step 4); no potentials written"]
    assert sorted(p.name for p in out.iterdir()) == [fit.CHECKPOINT]
    assert checkpoint_step(out / fit.CHECKPOINT) == 4
    # The checkpoint is the state after steps 0-3 that both processes held, not the update of step 4.
    saved, rank0, rank1 = load_file(out / fit.CHECKPOINT), *(load_file(dump / f"rank{r}.safetensors") for r in (0, 1))
    for name, value in rank0.items():
        assert torch.equal(value, rank1[name]) and torch.equal(value, saved[name]), name


if __name__ == "__main__":
    sys.exit(worker(sys.argv[1:]))
