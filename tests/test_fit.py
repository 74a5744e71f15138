"""train/fit.py: a tiny run end to end, exact resumption after an interruption, and one-line errors."""
import importlib.util
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from hub_models import MLPGenerator
from pdetraversal import PotentialFlow

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("fit", ROOT / "train" / "fit.py")
fit = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fit)


@pytest.fixture(scope="module")
def generator_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("gen")
    torch.manual_seed(0)
    MLPGenerator(latent_dim=4, image_size=16).save_pretrained(path)
    return path


def args_for(generator_dir, out, *extra):
    return ["--generator", str(generator_dir), "--num-potentials", "3", "--num-timesteps", "4", "--batch-size", "8",
            "--output-dir", str(out), "--no-progress", *extra]


def test_tiny_fit_writes_loadable_potentials(generator_dir, tmp_path):
    out = tmp_path / "pots"
    assert fit.main(args_for(generator_dir, out, "--max-steps", "6", "--labels", "a,b,c")) == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    flow = PotentialFlow.from_pretrained(out)
    assert flow.config["generator"] == str(generator_dir) and flow.config["generator_revision"] is None
    assert flow.num_potentials == 3 and flow.label(2) == "c"
    path = flow.traverse(torch.randn(2, 4), k=1)
    assert path.shape == (5, 2, 4) and torch.isfinite(path).all()
    card = (out / "README.md").read_text()
    assert "library_name: pdetraversal" in card and "--max-steps 6" in card and "classifier accuracy" in card


def test_resume_continues_exactly(generator_dir, tmp_path, monkeypatch):
    full = tmp_path / "full"
    assert fit.main(args_for(generator_dir, full, "--max-steps", "8", "--checkpoint-every", "3")) == 0

    resumed = tmp_path / "resumed"
    real_step, calls = fit.training_step, []

    def crash_at_step_seven(*a, **kw):
        calls.append(1)
        if len(calls) == 8:
            raise KeyboardInterrupt  # the 8th step (index 7): checkpoints exist for steps 3 and 6
        return real_step(*a, **kw)

    monkeypatch.setattr(fit, "training_step", crash_at_step_seven)
    with pytest.raises(KeyboardInterrupt):
        fit.main(args_for(generator_dir, resumed, "--max-steps", "8", "--checkpoint-every", "3"))
    from safetensors import safe_open

    with safe_open(resumed / fit.CHECKPOINT, "pt") as f:
        assert f.metadata()["step"] == "6"
    assert not (resumed / "checkpoint.tmp").exists()

    monkeypatch.setattr(fit, "training_step", real_step)
    calls.clear()
    counting = lambda *a, **kw: (calls.append(1), real_step(*a, **kw))[1]  # noqa: E731
    monkeypatch.setattr(fit, "training_step", counting)
    assert fit.main(args_for(generator_dir, resumed, "--max-steps", "8", "--checkpoint-every", "3", "--resume")) == 0
    assert len(calls) == 2  # only steps 6 and 7 were run again
    a, b = PotentialFlow.from_pretrained(full), PotentialFlow.from_pretrained(resumed)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name  # the same weights as the run that was never interrupted


def test_resume_refuses_changed_settings(generator_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real_step, calls = fit.training_step, []

    def crash(*a, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_step(*a, **kw)

    monkeypatch.setattr(fit, "training_step", crash)
    with pytest.raises(KeyboardInterrupt):
        fit.main(args_for(generator_dir, out, "--max-steps", "5", "--checkpoint-every", "2"))
    with pytest.raises(SystemExit, match="--lr 0.001 -> 0.01"):
        fit.main(args_for(generator_dir, out, "--max-steps", "5", "--checkpoint-every", "2", "--resume", "--lr", "0.01"))


BAD_FLAGS = [
    (["--max-steps", "0"], "argument --max-steps: must be a finite number > 0, got 0"),
    (["--num-timesteps", "1"], "--num-timesteps must be >= 2"),
    (["--laplacian", "rowsum"], "invalid choice: 'rowsum'"),
    (["--push-to-hub"], "--push-to-hub needs --hub-model-id"),
    (["--labels", "a,b"], "--labels has 2 names for --num-potentials 3"),
    (["--resume"], "--resume: no checkpoint at"),
    (["--supervision", "dsprites"], "--supervision dsprites ties potentials 0-4 to the five factors: needs --num-potentials >= 5"),
]


@pytest.mark.parametrize("extra, message", BAD_FLAGS)
def test_bad_flags_give_one_line_errors(generator_dir, tmp_path, capfd, extra, message):
    # In this process: each case costs a parse, not the 4+ s of a fresh interpreter importing torch and diffusers.
    # The command-line path itself (exit status, nothing printed on import) is the next test's.
    with warnings.catch_warnings(record=True) as caught, pytest.raises(SystemExit) as exit_:
        warnings.simplefilter("always")  # a warning would be a second line on a real stderr
        fit.main(args_for(generator_dir, tmp_path / "o", *extra))
    err = capfd.readouterr().err
    assert exit_.value.code == 2 and caught == []
    assert message in err and len(err.strip().splitlines()) == 1


def test_a_bad_flag_is_one_line_from_the_command_line(generator_dir, tmp_path):
    extra, message = BAD_FLAGS[0]
    proc = subprocess.run([sys.executable, str(ROOT / "train" / "fit.py"), *args_for(generator_dir, tmp_path / "o"), *extra],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("extra, message", [
    (["--step-size", "nan"], "argument --step-size: must be a finite number > 0, got nan"),
    (["--lr", "inf"], "argument --lr: must be a finite number > 0, got inf"),
    (["--w-pde", "nan"], "argument --w-pde: must be a finite number >= 0, got nan"),
    (["--w-diversity", "-1"], "argument --w-diversity: must be a finite number >= 0, got -1"),
    (["--jacobian-saturation", "abc"], "argument --jacobian-saturation: expected a float, got 'abc'"),
])
def test_non_finite_and_negative_numbers_are_refused(generator_dir, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_:
        fit.parse_args(args_for(generator_dir, tmp_path / "o", *extra))
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_supervision_needs_an_encoder(generator_dir, tmp_path):
    with pytest.raises(SystemExit, match="--supervision dsprites needs a 64x64 one-channel generator with encode"):
        fit.main(args_for(generator_dir, tmp_path / "o", "--num-potentials", "6", "--supervision", "dsprites"))


def test_tiny_supervised_fit(tmp_path):
    from hub_models import DSpritesVAE

    torch.manual_seed(0)
    DSpritesVAE(latent_dim=4, width=4, hidden_dim=16).save_pretrained(tmp_path / "vae")
    out = tmp_path / "pots"
    assert fit.main(args_for(tmp_path / "vae", out, "--num-potentials", "6", "--max-steps", "3", "--num-timesteps", "2",
                             "--supervision", "dsprites", "--no-output-tanh",
                             "--factor-regressor", "hub_models/dsprites-factor-regressor", "--report-samples", "32")) == 0
    flow = PotentialFlow.from_pretrained(out)
    assert flow.num_potentials == 6 and flow.config["output_tanh"] is False
    card = (out / "README.md").read_text()
    assert "potentials 0-4 were tied to the dSprites factor moves" in card and "L_z = " in card
    # A generator that encodes is measured on encoded sprites, and the prior-start numbers are given too.
    assert "starts z0 = the generator's encoding (posterior mean) of a fresh dSprites image" in card
    assert "(32 starts z0 = the generator's encoding" in card
    assert "- The same measured from 32 starts z0 ~ N(0, I) instead: " in card


def test_unknown_generator_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="neither an existing folder nor a valid Hub repo id"):
        fit.main(["--generator", str(tmp_path / "missing"), "--output-dir", str(tmp_path / "o"), "--no-progress"])


def test_help_explains_every_flag():
    text = fit.build_parser().format_help()
    for action in fit.build_parser()._actions:
        assert action.help, f"{action.option_strings} has no help"
    assert "python train/fit.py --generator hub_models/dsprites-vae" in text


@pytest.mark.parametrize("method, cls, trained", [("linear", "LinearPotential", True), ("warped", "WarpedSpace", True),
                                                   ("sefa", "SeFa", False), ("axes", "LatentAxes", False)])
def test_every_method_fits_saves_and_loads_with_its_generator(generator_dir, tmp_path, method, cls, trained):
    from hub_models import load_flow_and_generator

    out = tmp_path / method
    assert fit.main(args_for(generator_dir, out, "--max-steps", "3", "--method", method)) == 0
    flow, gen = load_flow_and_generator(out)
    assert type(flow).__name__ == cls and json.loads((out / "config.json").read_text())["method"] == method
    card = (out / "README.md").read_text()
    assert f"Method: `{method}`" in card and ("closed form" in card) != trained and "## Along the paths" in card
    assert flow.traverse(gen.sample_latent(2, seed=0), k=2).shape == (5, 2, 4)


def test_remedy_flags_reach_the_model_and_the_loss(generator_dir, tmp_path):
    out = tmp_path / "remedies"
    assert fit.main(args_for(generator_dir, out, "--max-steps", "3", "--exact-initial", "--w-diversity", "1")) == 0
    flow = PotentialFlow.from_pretrained(out)
    assert flow.config["exact_initial"] is True
    assert flow.velocity(torch.randn(5, 4), 0.0, 1).abs().max() == 0  # ∇u(z, 0) = 0 exactly
    assert "L_div = " in (out / "README.md").read_text()


@pytest.mark.parametrize("latent_dim, expected", [(4, "exact"), (fit.EXACT_LAPLACIAN_MAX_DIM + 1, "hutchinson")])
def test_laplacian_auto_picks_by_latent_dim_and_says_so(latent_dim, expected, tmp_path, capsys):
    gen_dir = tmp_path / "gen"
    torch.manual_seed(0)
    MLPGenerator(latent_dim=latent_dim, hidden_dim=8, image_size=8).save_pretrained(gen_dir)
    out = tmp_path / "pots"
    assert fit.main(args_for(gen_dir, out, "--max-steps", "1", "--num-potentials", "2")) == 0
    err = capsys.readouterr().err
    assert ("by Hutchinson's estimate" in err) == (expected == "hutchinson")
    assert f"Laplacian: {expected}" in (out / "README.md").read_text()
