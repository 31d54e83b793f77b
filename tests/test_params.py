"""Parameters: layering, validation messages that name key and file, flat notebook names."""
from __future__ import annotations

import textwrap

import pytest

from lib import params as P
from lib import stages
from lib.paths import PARAMS_DIR


def write(tmp_path, name, text):
    f = tmp_path / name
    f.write_text(textwrap.dedent(text))
    return f


@pytest.fixture
def child(tmp_path):
    """A params file extending the real tiny.yaml from a temp folder."""
    def make(body: str):
        return write(tmp_path, "child.yaml", f"extends: {PARAMS_DIR / 'tiny.yaml'}\n" + textwrap.dedent(body))
    return make


@pytest.mark.parametrize("name", ["tiny", "smoke", "phi4-mini"])
def test_shipped_params_validate(name):
    p = P.load(PARAMS_DIR / f"{name}.yaml")
    assert p.run.name == name


def test_layers_override_only_what_differs():
    base, tiny, smoke = (P.load(PARAMS_DIR / f"{n}.yaml") for n in ("base", "tiny", "smoke"))
    assert smoke.model.hidden_size < tiny.model.hidden_size
    # smoke.yaml does not set these: they flow from base.yaml through tiny.yaml
    assert smoke.eval.temperature == tiny.eval.temperature == base.eval.temperature == 0.6
    assert smoke.model.architecture == "llama"
    # per-key merge inside a section: overriding run.name keeps run.seed
    assert smoke.run.seed == base.run.seed


def test_unknown_key_names_key_file_and_suggestion(child):
    f = child("model:\n  hiden_size: 64\n")
    with pytest.raises(P.ParamsError) as e:
        P.load(f)
    msg = str(e.value)
    assert "unknown key 'model.hiden_size'" in msg
    assert "child.yaml" in msg and "did you mean 'hidden_size'" in msg
    assert "Allowed keys in 'model'" in msg


def test_unknown_section(child):
    with pytest.raises(P.ParamsError, match=r"unknown section 'evl' \(did you mean 'eval'\?\)"):
        P.load(child("evl:\n  n_runs: 3\n"))


@pytest.mark.parametrize("body,needle", [
    ("base_pretrain:\n  lr: fast\n", "'base_pretrain.lr' = 'fast' is not allowed"),
    ("base_pretrain:\n  epochs: 0\n", "'base_pretrain.epochs' = 0 is not allowed: Input should be greater than 0"),
    ("eval:\n  top_p: 1.5\n", "'eval.top_p' = 1.5"),
    ("run:\n  device: tpu\n", "'run.device' = 'tpu'"),
    ("problems:\n  levels: [1, 9]\n", "unknown level(s) [9]"),
    ("problems:\n  domains: [calculus]\n", "unknown domain(s) ['calculus']"),
    ("model:\n  num_heads: 3\n", "num_heads=3 must divide hidden_size=128"),
    ("problems:\n  source: hub\n", "source 'hub' needs 'dataset'"),
    ("rl:\n  stream_low: 0.9\n  stream_high: 0.1\n", "stream_low=0.9 is above stream_high=0.1"),
    ("rl:\n  max_steps: -1\n", "prompt_source 'stream' draws max_steps x prompts-per-step fresh problems"),
    ("problems:\n  source: hub\n  dataset: someone/math\n",
     "rl.prompt_source 'stream' draws fresh problems from the synthetic generator, but problems.source is 'hub'"),
    ("rl:\n  reward: work\n", "'rl.reward' = 'work' is not allowed"),
])
def test_wrong_values_are_named(child, body, needle):
    with pytest.raises(P.ParamsError) as e:
        P.load(child(body))
    assert needle in str(e.value)
    assert "child.yaml" in str(e.value)


def test_a_key_left_out_takes_its_schema_default(tmp_path):
    f = write(tmp_path, "lonely.yaml", "run:\n  name: x\nsft:\n  lr: 0.25\n")
    p = P.load(f)
    assert (p.run.name, p.run.seed, p.sft.lr) == ("x", 0, 0.25)
    assert p.mid_train.lr == P.SECTIONS["mid_train"].model_fields["lr"].default
    assert isinstance(p.mid_train.epochs, float)  # defaults are validated (coerced) like written values


def test_each_key_is_written_once():
    """base.yaml holds only what differs from the schema's defaults (a key's default lives in one place)."""
    import yaml

    base = yaml.safe_load((PARAMS_DIR / "base.yaml").read_text())
    same = [f"{s}.{k}" for s, body in base.items() if s != "extends" for k, v in body.items()
            if P.SECTIONS[s].model_fields[k].default == v and (s, k) != ("run", "name")]
    assert not same, f"base.yaml repeats schema defaults: {same}"
    declared = [name for name, model in P.SECTIONS.items() if "eval_problems" in model.__annotations__]
    assert declared == [], f"eval_problems declared again in {declared} (it lives in Train)"


def test_extends_cycle_and_bad_yaml(tmp_path):
    write(tmp_path, "a.yaml", "extends: b.yaml\n")
    write(tmp_path, "b.yaml", "extends: a.yaml\n")
    with pytest.raises(P.ParamsError, match="cycle"):
        P.load(tmp_path / "a.yaml")
    with pytest.raises(P.ParamsError, match="section 'run' must be a mapping"):
        P.load(write(tmp_path, "c.yaml", "run: 3\n"))
    with pytest.raises(P.ParamsError, match="not found"):
        P.load(tmp_path / "nope.yaml")


def test_overrides():
    p = P.load(PARAMS_DIR / "tiny.yaml", ["run.seed=7", "eval.temperature=0.0"])
    assert p.run.seed == 7 and p.eval.temperature == 0.0
    with pytest.raises(P.ParamsError, match="section.key=value"):
        P.load(PARAMS_DIR / "tiny.yaml", ["seed=7"])
    with pytest.raises(P.ParamsError, match="--set run.seed"):
        P.load(PARAMS_DIR / "tiny.yaml", ["run.seed=-1"])


def test_hash_is_stable_and_sensitive():
    a = P.load(PARAMS_DIR / "tiny.yaml")
    b = P.load(PARAMS_DIR / "tiny.yaml", ["eval.temperature=0.7"])
    assert a.hash() == P.load(PARAMS_DIR / "tiny.yaml").hash()
    assert a.hash() != b.hash()
    assert a.hash(["model"]) == b.hash(["model"])  # a stage not reading eval is not invalidated
    assert P.params_hash({"x": 1, "y": 2}) == P.params_hash({"y": 2, "x": 1})


@pytest.mark.parametrize("stage", [s.name for s in stages.STAGES])
def test_flat_round_trip(stage, smoke_params):
    sections = stages.get(stage).sections
    flat = P.to_flat(smoke_params, sections)
    back = P.from_flat(flat, sections)
    assert back.subset(sections) == smoke_params.subset(sections)


def test_from_flat_validates():
    tiny = P.load(PARAMS_DIR / "tiny.yaml")
    flat = P.to_flat(tiny, ("run", "model"))
    flat["model_hidden_size"] = "wide"
    with pytest.raises(P.ParamsError, match="model.hidden_size"):
        P.from_flat(flat, ("run", "model"))
    del flat["run_seed"]
    with pytest.raises(P.ParamsError, match="run_seed"):
        P.from_flat(flat, ("run", "model"))


def test_every_parameter_is_documented():
    for name, model in P.SECTIONS.items():
        for key, f in model.model_fields.items():
            assert f.description and len(f.description) > 10, f"{name}.{key} has no documentation"
            # papermill cannot parse a parameters-cell line whose comment contains '='
            assert "=" not in f.description, f"{name}.{key}: no '=' in descriptions (papermill)"
    text = P.describe()
    assert "base_pretrain:" in text and "Peak learning rate" in text
