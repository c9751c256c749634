"""The recipe schema: every bundled recipe loads, defaults fill in, and every kind of bad key or value is an
error that names the key (and lists the valid ones) before anything trains."""

import pytest
from omegaconf.errors import ReadonlyConfigError

from mmdit.recipe import available, load_recipe

TINY = {"name": "tiny", "streams": {"image": {"modality": "image"}}, "data": {"source": "digits"}}


@pytest.mark.parametrize("name", sorted(available()))
def test_every_bundled_recipe_loads_with_a_description(name):
    recipe = load_recipe(name)
    assert recipe.name == name and available()[name] and recipe.streams


def test_a_python_dict_gets_the_schema_defaults_and_is_read_only():
    recipe = load_recipe(TINY, ["eval.samples=7", "data.split_seed=3"])
    assert recipe.objective.type == "flow" and recipe.objective.prediction == "velocity"
    assert (recipe.eval.samples, recipe.data.split_seed, recipe.seed) == (7, 3, 0)
    assert load_recipe(TINY).eval.samples is None and load_recipe(TINY).data.split_seed == 0
    with pytest.raises(ReadonlyConfigError):
        recipe.seed = 1


@pytest.mark.parametrize(
    ("override", "error", "message"),
    [
        ("modelx.width=3", KeyError, r"unknown recipe key 'modelx'; valid here: \[.*'model'"),
        ("model.widht=3", KeyError, r"'model.widht'; valid here: \[.*'width'"),
        ("data.batch_size=abc", ValueError, r"bad value for 'data.batch_size'"),
        ("objective.steps=10", KeyError, r"'steps' is not a key of a flow objective; valid: \[.*'shift'"),
        ("objective.type=magic", ValueError, r"objective.type must be one of \['flow', 'gaussian'\]"),
        ("nokey", ValueError, r"override 'nokey' is not key=value"),
    ],
)
def test_bad_keys_and_values_are_named(override, error, message):
    with pytest.raises(error, match=message):
        load_recipe("image-digits", [override])


def test_an_objective_override_of_another_type_starts_that_type_afresh():
    recipe = load_recipe("image-digits", ["objective.type=gaussian"])
    assert dict(recipe.objective) == {
        "type": "gaussian",
        "prediction": "epsilon",
        "steps": 1000,
        "learn_sigma": False,
        "diffusion_weight": 1.0,
    }
    with pytest.raises(KeyError, match=r"'shift' is not a key of a gaussian objective"):
        load_recipe({**TINY, "objective": {"type": "gaussian", "shift": 3.0}})


def test_a_missing_recipe_file_or_name_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.yaml"):
        load_recipe(str(tmp_path / "nothing.yaml"))
    with pytest.raises(KeyError, match=r"unknown recipe 'image-digit'; bundled recipes: .*image-digits"):
        load_recipe("image-digit")
