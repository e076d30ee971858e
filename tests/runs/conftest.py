import pytest

from fewshot_acdc.config import load_config


@pytest.fixture
def tiny_config(tmp_path):
    """A run that takes seconds: Conv4 ACDC-net on 20 px built-in images, 3-way 1-shot."""
    return load_config(None, {
        "dataset": "builtin", "backbone": "conv4", "acdc": "net", "atoms": 4, "atom_drop": 0.1,
        "image_size": 20, "ways": 3, "shots": 1, "queries": 2, "queries_eval": 2,
        "inner_steps": 1, "inner_steps_eval": 2, "inner_lr": 0.1, "meta_lr": 0.003, "meta_batch": 2,
        "iterations": 6, "log_every": 1, "val_every": 3, "val_episodes": 4, "test_episodes": 5,
        "episode_dir": str(tmp_path / "episodes"), "device": "cpu",
    })
