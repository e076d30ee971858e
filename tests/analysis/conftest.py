"""Two trained run directories shared by the analysis tests: Conv4 ACDC-net and Conv4 standard,
3 meta-steps on 16 px built-in images (seconds each), scored on the same saved episodes."""
import pytest

from fewshot_acdc.config import load_config
from fewshot_acdc.runs.training import train


def tiny_run_config(episode_dir, acdc: str):
    return load_config(None, {
        "dataset": "builtin", "backbone": "conv4", "acdc": acdc, **({} if acdc == "none" else {"atoms": 4}),
        "image_size": 16, "ways": 3, "shots": 1, "queries": 2, "queries_eval": 2,
        "inner_steps": 1, "inner_steps_eval": 2, "inner_lr": 0.1, "meta_lr": 0.003, "meta_batch": 2,
        "iterations": 3, "log_every": 1, "val_every": 3, "val_episodes": 2, "test_episodes": 4,
        "episode_dir": str(episode_dir), "device": "cpu",
    })


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("analysis-runs")
    runs = {}
    for name, acdc in (("acdc", "net"), ("standard", "none")):
        runs[name] = root / name
        train(tiny_run_config(root / "episodes", acdc), runs[name], progress=False)
    return runs


@pytest.fixture(scope="session")
def acdc_run(trained_runs):
    return trained_runs["acdc"]


@pytest.fixture(scope="session")
def standard_run(trained_runs):
    return trained_runs["standard"]
