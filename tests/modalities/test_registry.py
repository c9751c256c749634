"""The modality registry: built-ins, errors that list the valid choices, entry-point plugins, and a toy
adapter (examples/add_modality.py) registered at run time and trained without installing anything."""

import importlib.util
from pathlib import Path

import lightning as L
import pytest
import torch

from mmdit.recipe import load_recipe
from mmdit.training.build import build_adapters
from mmdit.training.module import DiffusionModule
from modalities import ModalityAdapter, adapter_class, available, build_adapter, registry
from modalities.image.adapter import ImageAdapter

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "add_modality.py"


@pytest.fixture(scope="module")
def example():
    """examples/add_modality.py as a module; its `@register` goes to a copy of the registry, undone after."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(registry, "_registered", dict(registry._registered))
        spec = importlib.util.spec_from_file_location("add_modality_example", EXAMPLE)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread, and a busy 2-core machine makes OpenMP threads wait on each
    other (ten times slower); restore the setting after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_builtin_image_is_listed():
    assert "image" in available()
    assert adapter_class("image") is ImageAdapter
    assert isinstance(build_adapter("image", channels=1, size=[8, 8]), ImageAdapter)


def test_unknown_modality_lists_the_available_ones():
    with pytest.raises(KeyError, match=r"unknown modality 'smell'.*available: .*image"):
        adapter_class("smell")


def test_unknown_option_is_named_with_the_valid_ones():
    with pytest.raises(KeyError, match=r"no option 'colour'; valid: \[.*'channels'.*'patch_size'"):
        build_adapter("image", colour=3)


class _FakeEntryPoint:
    """What importlib.metadata returns for `[project.entry-points."mmdit.modalities"] name = "pkg:Class"`."""

    def __init__(self, name, target):
        self.name, self.target, self.loads = name, target, 0

    def load(self):
        self.loads += 1
        return self.target


def test_entry_points_are_discovered_without_installing(monkeypatch):
    plugin = _FakeEntryPoint("plugin-audio", ImageAdapter)
    groups = []

    def fake_entry_points(*, group):
        groups.append(group)
        return [plugin] if group == "mmdit.modalities" else []

    monkeypatch.setattr(registry, "entry_points", fake_entry_points)
    assert "plugin-audio" in available() and "image" in available()
    assert plugin.loads == 0  # listing names does not import the plugin
    assert adapter_class("plugin-audio") is ImageAdapter and plugin.loads == 1
    assert isinstance(build_adapter("plugin-audio", channels=1), ImageAdapter)
    assert set(groups) == {"mmdit.modalities"}
    with pytest.raises(KeyError, match="plugin-audio"):
        adapter_class("missing")


def test_register_makes_the_example_adapter_available(example):
    assert issubclass(example.CurveAdapter, ModalityAdapter)
    assert "curves" in available() and adapter_class("curves") is example.CurveAdapter
    assert build_adapter("curves", length=16).size == (16,)
    with pytest.raises(KeyError, match=r"'width'.*valid: \['length', 'patch_size'\]"):
        build_adapter("curves", width=3)


def test_curve_round_trips_are_exact(example, tmp_path):
    adapter = example.CurveAdapter(length=32, patch_size=4)
    curves = torch.rand(3, 1, 32) * 2 - 1
    tokens = adapter.encode(curves)
    assert tokens.x.shape == (3, 8, 4) and tokens.mask.all()
    assert tokens.pos[0, :, 0].tolist() == list(range(8)) and tokens.pos.shape == (3, 8, 1)
    assert torch.equal(adapter.decode(tokens), curves)
    assert adapter.layout(2).x.shape == (2, 8, 4) and adapter.layout(2, size=[16]).pos.shape == (2, 4, 1)
    spec = adapter.stream("curve")
    assert (spec.features, spec.positions, spec.axes) == (4, "rope", 1)
    path = adapter.save(curves[0], tmp_path / f"one{adapter.file_suffix}")
    assert torch.equal(adapter.load(path), curves[0])


def test_curve_folders_name_their_label_and_a_bad_file(example, tmp_path):
    adapter = example.CurveAdapter(length=8)
    for rhythm in ("fast", "slow"):
        (tmp_path / rhythm).mkdir()
        for i in range(5):
            adapter.save(torch.rand(1, 8), tmp_path / rhythm / f"{i}.csv")
    train = adapter.dataset({"folder": tmp_path, "label": "rhythm"}, "train", seed=1)
    assert train.classes == {"rhythm": ["fast", "slow"]} and len(train) == 9  # 10% held out
    assert set(train[0]["labels"]) == {"rhythm"} and train[0]["media"].shape == (1, 8)
    other = adapter.dataset({"folder": tmp_path, "label": "rhythm"}, "train", seed=2)
    assert [f.name for f in train.files] != [f.name for f in other.files]  # the seed draws the split
    with pytest.raises(KeyError, match=r"unknown key\(s\) \['labels'\]"):
        adapter.dataset({"folder": tmp_path, "labels": "rhythm"}, "train")
    with pytest.raises(KeyError, match="'sines'.*'folder'"):
        adapter.dataset("cosines", "train")
    (tmp_path / "slow" / "3.csv").write_text("0.1,zero,0.3\n")
    splits = [adapter.dataset({"folder": tmp_path}, split) for split in ("train", "heldout")]
    with pytest.raises(ValueError, match=r"slow/3\.csv"):
        [split[i] for split in splits for i in range(len(split))]


def test_curve_datasets_and_metric(example, tmp_path):
    adapter = example.CurveAdapter()
    train, heldout = adapter.dataset("sines", "train"), adapter.dataset("sines", "heldout")
    assert (len(train), len(heldout)) == (600, 150) and heldout.classes == {"cycles": ["1", "2", "3"]}
    item = train[0]
    assert item["media"].shape == (1, 32) and item["media"].abs().max() <= 0.9
    assert torch.equal(adapter.dataset("sines", "train")[5]["media"], train[5]["media"])  # deterministic
    real = torch.stack([heldout[i]["media"] for i in range(len(heldout))])
    labels = torch.tensor([heldout[i]["labels"]["cycles"] for i in range(len(heldout))])
    report = adapter.evaluate(real, {"cycles": labels}, train, heldout)
    assert report["reference"]["frequency_accuracy"] == 1.0 and report["generated"] == report["reference"]
    wrong = adapter.evaluate(real, {"cycles": (labels + 1) % 3}, train, heldout)["generated"]
    assert wrong["frequency_accuracy"] == 0.0
    assert adapter.preview(real[:6], tmp_path / "p.png", columns=3).read_bytes()[:4] == b"\x89PNG"


class _Losses(L.Callback):
    def __init__(self):
        self.values = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.values.append(float(outputs["loss"]))


@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")
def test_a_registered_toy_adapter_trains(example, one_thread):
    """Installs nothing: the example's adapter, a recipe written as a dict, and Lightning's loop."""
    recipe = load_recipe(
        {
            "name": "curves-test",
            "streams": {"curve": {"modality": "curves", "options": {"length": 32, "patch_size": 4}}},
            "data": {"source": "sines", "batch_size": 64},
            "conditioning": {"labels": ["cycles"]},
            "model": {"width": 64, "heads": 4, "single_depth": 2},
            "optimizer": {"lr": 2e-3, "warmup_steps": 10},
        }
    )
    L.seed_everything(0)
    train = example.CurveAdapter().dataset("sines", "train")
    module = DiffusionModule(recipe, train.classes, build_adapters(recipe))
    losses = _Losses()
    trainer = L.Trainer(
        max_steps=100,
        callbacks=[losses],
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
    )
    loader = torch.utils.data.DataLoader(train, batch_size=64, shuffle=True, drop_last=True)
    trainer.fit(module, train_dataloaders=loader)
    first, last = sum(losses.values[:10]) / 10, sum(losses.values[-10:]) / 10
    print(f"loss: first 10 steps {first:.3f}, last 10 {last:.3f}")
    assert len(losses.values) == 100 and last < 0.6 * first, (first, last)
    curves = module.generate(6, {"cycles": torch.tensor([0, 1, 2, 0, 1, 2])}, steps=4)["curve"]
    assert curves.shape == (6, 1, 32) and curves.abs().max() <= 1
