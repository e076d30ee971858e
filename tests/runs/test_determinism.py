"""Training determinism, pinned: the first meta-steps of small fixed runs, one per scope and conv
kind, give these losses and these parameters. A change to the code that alters training (the
data stream, the initialisation, the inner loop, the meta-gradient, the optimiser) fails here;
updating the pinned values is a deliberate edit, in the same commit, whose message says why.

float32 on one CPU thread (the engine trains in float32); values are compared to a relative
1e-6, far below what any change to training moves them by and above the last-bit differences
that another CPU's vector unit may give.
"""
import json

import pytest
import torch

from fewshot_acdc.config import load_config
from fewshot_acdc.runs.checkpoint import load_checkpoint
from fewshot_acdc.runs.training import train

BASE = {"dataset": "builtin", "backbone": "conv4", "atom_drop": 0.1, "image_size": 20,
        "ways": 3, "shots": 1, "queries": 2, "queries_eval": 2, "inner_steps": 1, "inner_steps_eval": 1,
        "inner_lr": 0.1, "meta_lr": 0.003, "meta_batch": 2, "iterations": 3, "log_every": 1, "val_every": 3,
        "val_episodes": 2, "test_episodes": 2, "device": "cpu", "seed": 7}

# scope -> (meta-loss at steps 1, 2, 3; sum of the parameters; sum of their absolute values)
PINNED = {
    ("standard", "all"): ([1.3224420547485352, 1.2704246044158936, 1.3623149394989014], 261.6154064138573, 5864.969124116393),
    ("standard", "head"): ([1.4551766514778137, 1.2062249779701233, 1.4644302129745483], 261.9595612711855, 5866.584374890983),
    ("acdc-net", "all"): ([1.319441795349121, 1.3636540174484253, 1.3894906044006348], 87.82522735767998, 26704.142739689094),
    ("acdc-net", "atoms"): ([1.2991746664047241, 1.2067698240280151, 1.0482694208621979], 97.73177624581149, 26707.021401746722),
    ("acdc-net", "head"): ([1.084769368171692, 1.2179787755012512, 1.361234962940216], 110.52467991426238, 26705.104403750418),
}


def trained(tmp_path, conv, adapt):
    torch.set_num_threads(1)
    size = {} if conv == "standard" else {"atoms": 4}
    config = load_config(None, {**BASE, **size, "conv": conv, "adapt": adapt, "episode_dir": str(tmp_path / "episodes")})
    train(config, tmp_path / "run", progress=False)
    losses = [json.loads(line)["meta_loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    model = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["model"]
    tensors = [model[name].double() for name in sorted(model)]
    return losses, float(sum(t.sum() for t in tensors)), float(sum(t.abs().sum() for t in tensors))


@pytest.mark.parametrize("conv, adapt", list(PINNED), ids=[f"{c}-{a}" for c, a in PINNED])
def test_the_first_meta_steps_are_pinned(tmp_path, conv, adapt):
    threads = torch.get_num_threads()
    try:
        losses, total, magnitude = trained(tmp_path, conv, adapt)
    finally:
        torch.set_num_threads(threads)
    expected = PINNED[conv, adapt]
    assert losses == pytest.approx(expected[0], rel=1e-6)
    assert (total, magnitude) == pytest.approx(expected[1:], rel=1e-6)
