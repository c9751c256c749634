"""The recipe schema: every bundled recipe loads, defaults fill in, and every kind of bad key or value is an
error that names the key (and lists the valid ones) before anything trains."""

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ReadonlyConfigError

from mmdit.errors import UserError
from mmdit.recipe import available, load_recipe, recipe_file

TINY = {"name": "tiny", "streams": {"image": {"modality": "image"}}, "data": {"source": "digits"}}


@pytest.mark.parametrize("name", sorted(available()))
def test_every_bundled_recipe_loads_with_a_description(name, teacher_export):
    written = OmegaConf.create(recipe_file(name).read_text())
    overrides = [f"distill.teacher={teacher_export}"] if "distill" in written else []
    recipe = load_recipe(name, overrides)
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


def test_a_folder_named_like_a_bundled_recipe_does_not_hide_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "image-digits").mkdir()  # e.g. run_dir=image-digits of an earlier run
    assert load_recipe("image-digits").name == "image-digits"
    (tmp_path / "folder.yaml").mkdir()
    with pytest.raises(FileNotFoundError, match="folder.yaml does not exist or is not a file"):
        load_recipe("folder.yaml")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_steps=abc", r"bad value for trainer.max_steps='abc' \(expected int\)"),
        ("trainer.max_steps=-5", r"trainer.max_steps must be at least 1, got -5"),
        ("trainer.max_steps=0", r"trainer.max_steps must be at least 1, got 0"),
        ("trainer.max_steps=2.5", r"trainer.max_steps=2.5 \(expected int\)"),
        ("trainer.log_every_n_steps=0", r"trainer.log_every_n_steps must be at least 1, got 0"),
        ("trainer.gradient_clip_val=-1.0", r"trainer.gradient_clip_val must be at least 0, got -1.0"),
        ("trainer.val_check_interval=0", r"trainer.val_check_interval must be above 0, got 0"),
        ("trainer.precision=17", r"bad value for trainer.precision=17"),
        ("trainer.enable_progress_bar=maybe", r"trainer.enable_progress_bar='maybe'"),
        ("data.batch_size=[1,", r"override 'data.batch_size=\[1,': cannot read its value"),
    ],
)
def test_trainer_values_and_unreadable_overrides_name_the_key(override, message):
    with pytest.raises(UserError, match=message):
        load_recipe("image-digits", [override])


def test_valid_trainer_values_pass():
    recipe = load_recipe("image-digits", ["trainer.max_steps=3", "trainer.precision=bf16-mixed"])
    assert (recipe.trainer.max_steps, recipe.trainer.precision) == (3, "bf16-mixed")


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: broken\nstreams:\n  image: {modality: image\ndata: {source: digits}\n")
    with pytest.raises(UserError, match=rf"{path}:4:\d+: YAML syntax error: "):
        load_recipe(str(path))
    path.write_text("- a list\n- not a recipe\n")
    with pytest.raises(UserError, match=rf"{path}: a recipe is a mapping of sections"):
        load_recipe(str(path))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.batch_size=0", r"data.batch_size must be at least 1, got 0"),
        ("data.num_workers=-1", r"data.num_workers must be at least 0, got -1"),
        ("conditioning.dropout=1.5", r"conditioning.dropout must be in \[0, 1\], got 1.5"),
        ("optimizer.lr=0", r"optimizer.lr must be above 0, got 0"),
        ("optimizer.lr=-1e-3", r"optimizer.lr must be above 0, got -0.001"),
        ("optimizer.lr=nan", r"optimizer.lr must be a finite number, got nan"),
        ("optimizer.warmup_steps=-3", r"optimizer.warmup_steps must be at least 0, got -3"),
        ("sample.steps=0", r"sample.steps must be at least 1, got 0"),
        ("sample.cfg=inf", r"sample.cfg must be a finite number, got inf"),
        ("objective.logit_std=nan", r"objective.logit_std must be a finite number, got nan"),
        ("model.heads=0", r"model.heads must be at least 1, got 0"),
    ],
)
def test_numbers_out_of_their_range_name_the_key(override, message):
    with pytest.raises(UserError, match=message):
        load_recipe("image-digits", [override])


def test_a_distillation_recipe_takes_the_teachers_network_and_data_and_keeps_its_own_run(teacher_export):
    teacher = load_recipe("image-digits", ["model.width=32", "model.heads=2", "model.single_depth=1"])
    student = load_recipe("image-digits-turbo", [f"distill.teacher={teacher_export}", "model.mlp_ratio=2"])
    assert student.streams == teacher.streams and student.objective == teacher.objective
    assert (student.model.width, student.model.single_depth, student.model.mlp_ratio) == (32, 1, 2.0)
    assert student.data.source == teacher.data.source == "digits"
    # Its own keys win inside the inherited sections; the sections it does not take stay its own.
    assert student.conditioning.labels == ["digit"] and student.conditioning.dropout == 0.0
    assert (student.name, student.sample.sampler, student.sample.steps) == ("image-digits-turbo", "euler", 2)
    assert student.trainer.max_steps != teacher.trainer.max_steps and student.run_dir is None


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ([], KeyError, r"image-digits-turbo.yaml: distill.teacher is not set; give the teacher's export"),
        (["distill.teacher=none.safetensors"], FileNotFoundError, r"distill.teacher none.safetensors does"),
        (["distill.teacher=TEACHER", "distill.teacher_sample.grid=4"], KeyError, r"keys \['grid'\] are not"),
    ],
)
def test_a_distillation_recipe_names_a_missing_or_wrong_teacher(overrides, error, message, teacher_export):
    overrides = [o.replace("TEACHER", str(teacher_export)) for o in overrides]
    with pytest.raises(error, match=message):
        load_recipe("image-digits-turbo", overrides)


def test_a_file_that_is_not_an_export_is_named(tmp_path):
    (tmp_path / "weights.ckpt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"distill.teacher .*weights.ckpt: expected a .safetensors export"):
        load_recipe({**TINY, "distill": {"teacher": str(tmp_path / "weights.ckpt")}})


def test_a_truncated_teacher_export_is_named(tmp_path, teacher_export):
    truncated = tmp_path / "teacher.safetensors"
    truncated.write_bytes(teacher_export.read_bytes()[:100])
    with pytest.raises(UserError, match=rf"{truncated} is not a readable .safetensors file"):
        load_recipe("image-digits-turbo", [f"distill.teacher={truncated}"])
