from pathlib import Path

import pytest

from wsolbench.config import DEFAULTS, parse_set, resolve
from wsolbench.errors import UserError

REPO = Path(__file__).resolve().parents[2]


def test_defaults_are_the_paper_values():
    c = DEFAULTS["classifier"]
    assert (c["epochs"], c["batch_size"], c["lr"], c["weight_decay"], c["lr_step"], c["lr_gamma"]) == \
        (200, 16, 0.001, 1e-4, 80, 0.1)
    assert DEFAULTS["model"]["backbone"] == "resnet18"
    assert (DEFAULTS["data"]["resize"], DEFAULTS["data"]["crop"]) == (256, 224)


def test_precedence_defaults_file_cli(tmp_path):
    f = tmp_path / "b.toml"
    f.write_text("[classifier]\nepochs = 7\nlr = 0.5\n")
    c = resolve(f, ["classifier.lr=0.25"], dataset="cub")
    assert c["classifier"]["epochs"] == 7  # file beats default
    assert c["classifier"]["lr"] == 0.25  # CLI beats file
    assert c["classifier"]["batch_size"] == 16  # default kept


def test_cli_beats_dataset_override():
    c = resolve(None, ["classifier.epochs=2"], dataset="synthetic")
    assert c["classifier"]["epochs"] == 2
    c = resolve(None, [], dataset="synthetic")
    assert c["classifier"]["epochs"] == DEFAULTS["datasets"]["synthetic"]["classifier"]["epochs"]


def test_dataset_override_applies_only_to_that_dataset():
    assert resolve(None, [], dataset="cub")["classifier"]["epochs"] == 200
    assert resolve(None, [], dataset="tinyimagenet")["model"]["backbone"] == "resnet50"


@pytest.mark.parametrize("item,msg", [
    ("classifer.epochs=3", "unknown configuration key 'classifer' (did you mean 'classifier'?)"),
    ("classifier.epoch=3", "unknown configuration key 'classifier.epoch' (did you mean 'epochs'?)"),
    ("classifier.epochs=abc", "'classifier.epochs' must be int"),
    ("run.amp=1", "'run.amp' must be bool"),
    ("model.pretrained=3", "'model.pretrained' must be true, false or a weight file path"),
])
def test_bad_keys_and_types_name_the_key(item, msg):
    with pytest.raises(UserError) as exc:
        resolve(None, [item])
    assert msg in str(exc.value)


def test_bad_key_in_file_and_in_dataset_table(tmp_path):
    f = tmp_path / "b.toml"
    f.write_text("[datasets.cub.clasifier]\nepochs = 1\n")
    with pytest.raises(UserError, match="did you mean 'classifier'"):
        resolve(f)
    f.write_text("[run]\nseed = 'x'\n")
    with pytest.raises(UserError, match="'run.seed' must be int"):
        resolve(f)


def test_invalid_toml_and_missing_file(tmp_path):
    f = tmp_path / "b.toml"
    f.write_text("[run\n")
    with pytest.raises(UserError, match="not valid TOML"):
        resolve(f)
    with pytest.raises(UserError, match="does not exist"):
        resolve(tmp_path / "nope.toml")


def test_parse_set_values_are_toml_with_bare_strings():
    assert parse_set("a.b=3") == (["a", "b"], 3)
    assert parse_set("a=true") == (["a"], True)
    assert parse_set("a=[1, 2]") == (["a"], [1, 2])
    assert parse_set("model.pretrained=/w/r18.pth") == (["model", "pretrained"], "/w/r18.pth")
    with pytest.raises(UserError):
        parse_set("novalue")


def test_benchmark_toml_equals_builtin_defaults():
    """benchmark.toml states the built-in defaults explicitly; the two must not drift."""
    from wsolbench.methods import METHODS

    for ds in ("synthetic", "cub", "cars", "flowers", "tinyimagenet"):
        a, b = resolve(REPO / "benchmark.toml", [], dataset=ds), resolve(None, [], dataset=ds)
        a_methods, b_methods = a.pop("methods"), b.pop("methods")
        a.pop("datasets"), b.pop("datasets")
        assert a == b, ds
        for name, table in a_methods.items():  # [methods.X] restates the class's declared options
            declared = {**METHODS.get(name).options, **b_methods.get(name, {})}
            assert {k: declared[k] for k in table} == table, (ds, name)
