"""README.md's "Your own generator" example, run as written: the class registers itself, saves in Hub layout,
fit.py trains potentials for it, and they load with it and render through the Space's handler."""
import re
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "train"))


def readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- own-generator-example: run by tests/test_own_generator.py -->\n```python\n(.*?)```",
                      text, flags=re.S)
    assert found, "README.md lost its own-generator example"
    return found.group(1)


def test_the_readme_generator_saves_fits_loads_and_renders(tmp_path, monkeypatch):
    import fit
    from pdetraversal.space import handlers, public
    from pdetraversal.space.models import ModelCache
    from hub_models import REGISTRY, load_flow_and_generator, load_generator

    namespace = {"__name__": "hub_models.my_decoder"}
    exec(compile(readme_example(), "README.md", "exec"), namespace)  # noqa: S102 -- our own README's code
    decoder = namespace["MyDecoder"]
    assert REGISTRY["MyDecoder"] is decoder
    torch.manual_seed(0)
    decoder().save_pretrained(tmp_path / "gen")
    gen = load_generator(tmp_path / "gen")
    z = gen.sample_latent(2, seed=0)
    assert gen.decode(z).shape == (2, 3, 16, 16) and gen.latent_weight().shape == (64, 8)

    assert fit.main(["--generator", str(tmp_path / "gen"), "--num-potentials", "3", "--max-steps", "3",
                     "--batch-size", "4", "--output-dir", str(tmp_path / "pots"), "--no-progress"]) == 0
    flow, loaded = load_flow_and_generator(tmp_path / "pots")
    assert flow.latent_dim == 8 and torch.equal(loaded.decode(z), gen.decode(z))

    monkeypatch.setenv(public.ALLOW_LOCAL_ENV, "1")
    strip = handlers.traverse(ModelCache(), 0, 2, 4, 1.0, str(tmp_path / "pots"), "")[0]
    assert strip.size[1] == 4 * 16  # 16-px frames shown at the 64-px minimum
    del REGISTRY["MyDecoder"]  # the registry is global: leave it as other tests expect it
