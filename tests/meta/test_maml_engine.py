"""MAML engine behaviour: API and validation, scopes, tied tensors, BN policy, modes, syncs."""
from __future__ import annotations

import copy
import io
import os
import zipfile

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

import fewshot_acdc.meta.maml as maml_module
from fewshot_acdc.data.paths import data_root_from_env
from fewshot_acdc.meta import MAML, Episode, adapted_parameter_names
from fewshot_acdc.meta.batchnorm import DecomposedBatchNorm
from fewshot_acdc.meta.functional import classification_loss, inner_loop, vmapped_meta_losses
from fewshot_acdc.models import create_backbone
from .maml_testing import build_model, random_episode, structured_episode

HOST_READS = {"item", "tolist", "__bool__", "__float__", "__int__", "__index__", "cpu", "numpy", "is_nonzero"}


class HostReadRecorder(TorchFunctionMode):
    """Records tensor methods that copy a value to the host (a device sync on an accelerator)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = []
        self.paused = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if not self.paused and name in HOST_READS:
            self.reads.append(name)
        return func(*args, **(kwargs or {}))


def sgd_noop(model):
    return torch.optim.SGD(model.parameters(), lr=0.0)


# --------------------------------------------------------------------------- construction
@pytest.mark.parametrize("kwargs, message", [
    ({"scope": "atom"}, "did you mean 'atoms'"),
    ({"inner_lr": 0.0}, "inner_lr"),
    ({"inner_lr": float("nan")}, "inner_lr"),
    ({"inner_lr": True}, "inner_lr"),
    ({"inner_steps": 0}, "inner_steps"),
    ({"inner_steps": 2.0}, "inner_steps"),
    ({"inner_steps_eval": -1}, "inner_steps_eval"),
    ({"first_order": "yes"}, "first_order"),
    ({"task_batching": "parallel"}, "task_batching"),
    ({"n_way": 0}, "n_way"),
])
def test_constructor_rejects_bad_values(kwargs, message):
    model = build_model("conv4", "acdc-net")
    with pytest.raises(ValueError, match=message):
        MAML(model, **kwargs)


def test_atoms_scope_on_a_standard_backbone_is_an_error():
    with pytest.raises(ValueError, match="selects no parameter.*acdc"):
        MAML(build_model("conv4", "standard"), scope="atoms")


@pytest.mark.parametrize("scope", ["all", "atoms", "head", "atoms+head"])
def test_adapted_names_and_count(scope):
    model = build_model("resnet10", "acdc-net")
    maml = MAML(model, scope=scope)
    assert maml.adapted_names == adapted_parameter_names(model, scope)
    sizes = {name: p.numel() for name, p in model.named_parameters()}
    assert maml.adapted_parameter_count == sum(sizes[name] for name in maml.adapted_names)
    if scope == "all":
        assert maml.adapted_parameter_count == sum(sizes.values())
    if scope == "atoms":
        assert all(name.endswith(".atoms") for name in maml.adapted_names)
    assert isinstance(maml.adapted_parameter_count, int) and scope in repr(maml)


# --------------------------------------------------------------------------- BatchNorm policy
def test_model_with_running_statistics_is_refused():
    model = create_backbone("conv4", "acdc-net", image_size=32)  # track_running_stats=True
    with pytest.raises(ValueError, match="track_running_stats=False"):
        MAML(model)


def test_maml_backbones_have_no_buffers_and_forwards_change_none():
    model = build_model("resnet10", "acdc-block")
    assert list(model.buffers()) == []  # no running statistics to corrupt
    # A buffer someone adds is read by the functional forwards, never written.
    model.stages[0][0].bn1.register_buffer("probe", torch.randn(64, dtype=torch.float64))
    before = {name: b.clone() for name, b in model.named_buffers()}
    maml = MAML(model, scope="all", inner_lr=0.05, inner_steps=2, inner_steps_eval=2)
    episode = random_episode(0)
    maml.meta_train_step([episode], torch.optim.Adam(model.parameters(), lr=1e-3))
    maml.evaluate_episode(episode)
    maml.adapt(maml.parameters(), episode.support_images, episode.support_labels)
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, before[name]), name


def test_batch_norm_uses_batch_statistics_in_eval_mode_too():
    """What eval() means after training: no stored statistics, the batch's own are used."""
    model = build_model("conv4", "acdc-net").eval()
    images = random_episode(0).query_images
    alone = model(images[:3])
    together = model(images)[:3]
    assert not torch.allclose(alone, together)  # transductive: depends on the batch
    model.train()
    torch.testing.assert_close(model(images[:3]), alone)  # no atom drop: train == eval


def test_decomposed_batch_norm_is_the_same_function():
    torch.manual_seed(0)
    images = torch.randn(6, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, requires_grad=True)

    def second_order(function):
        output = function(images, None, None, weight, bias, training=True, eps=1e-5)
        grads = torch.autograd.grad((output ** 3).sum(), (images, weight, bias), create_graph=True)
        return [output] + list(torch.autograd.grad(sum(g.pow(2).sum() for g in grads), (images, weight, bias)))

    reference = second_order(F.batch_norm)
    with DecomposedBatchNorm():
        decomposed = second_order(F.batch_norm)
    for ours, theirs in zip(decomposed, reference):
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------- scopes and ties
def test_atoms_scope_leaves_every_other_tensor_bit_identical():
    model = build_model("resnet10", "acdc-net")
    maml = MAML(model, scope="atoms", inner_lr=0.05, inner_steps=3)
    params = maml.parameters()
    snapshot = {name: p.detach().clone() for name, p in params.items()}
    episode = random_episode(1)
    adapted = maml.adapt(params, episode.support_images, episode.support_labels)
    for name in params:
        if name in maml.adapted_names:
            assert not torch.equal(adapted[name], snapshot[name]), name
        else:
            assert adapted[name] is params[name], name
            assert torch.equal(adapted[name], snapshot[name]), name
    for name, p in model.named_parameters():  # the model itself is never mutated
        assert torch.equal(p, snapshot[name]), name


def _count_stem_calls(model):
    calls = []
    model.stem[0].register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    return calls


def test_head_scope_computes_the_support_features_once_per_task():
    """ANIL-style: with only the head adapted and nothing random in the trunk, the trunk runs once
    on the support set (then once on the query set) instead of once per inner step; the
    meta-gradient is the one of recomputing it every step (learn2learn/higher agree:
    test_maml_agreement.py, scope head)."""
    model = build_model("resnet10", "acdc-net")
    calls = _count_stem_calls(model)
    maml = MAML(model, scope="head", inner_lr=0.1, inner_steps=4, inner_steps_eval=4)
    episode = random_episode(3, queries=3)
    maml.meta_train_step([episode], sgd_noop(model))
    assert calls == [5, 15]
    calls.clear()
    maml.evaluate_episode(episode)
    assert calls == [5, 15]


def test_head_scope_recomputes_the_trunk_every_step_when_atom_drop_is_on():
    model = build_model("resnet10", "acdc-net", atom_drop=0.2)
    calls = _count_stem_calls(model)
    maml = MAML(model, scope="head", inner_lr=0.1, inner_steps=3, inner_steps_eval=3)
    episode = random_episode(3, queries=3)
    maml.meta_train_step([episode], sgd_noop(model))
    # a new atom-drop mask per forward, as without the shortcut; the fourth support forward is the
    # diagnostic support loss after the last update
    assert calls == [5, 5, 5, 5, 15]
    calls.clear()
    maml.evaluate_episode(episode)  # eval mode: no atom drop, features computed once
    assert calls == [5, 15]


def test_shared_coefficients_are_updated_once_and_stay_tied():
    model = build_model("resnet10", "acdc-net")
    shared = model.coefficient_bank.net
    users = [m for m in model.modules() if getattr(m, "coefficients", None) is shared]
    assert len(users) == 8  # every 3x3 conv of ResNet10 uses the one tensor
    inner_lr = 0.05
    maml = MAML(model, scope="all", inner_lr=inner_lr, inner_steps=1)
    episode = random_episode(2)
    params = maml.parameters()
    loss = classification_loss(model, params, episode.support_images, episode.support_labels)
    total_gradient = torch.autograd.grad(loss, shared)[0]  # summed over the 8 layers
    adapted = maml.adapt(params, episode.support_images, episode.support_labels, create_graph=False)
    names = [name for name in adapted if adapted[name] is not params[name] and "coefficient" in name]
    assert names == ["coefficient_bank.net"]  # one tensor, one update
    torch.testing.assert_close(adapted["coefficient_bank.net"], shared - inner_lr * total_gradient,
                               rtol=0, atol=1e-15)
    # Every layer sees the adapted tensor: same output as a copy whose shared tensor is updated in place.
    updated = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in updated.named_parameters():
            p.copy_(adapted[name])
    assert updated.stages[3][0].conv2.coefficients is updated.coefficient_bank.net
    images = episode.query_images
    torch.testing.assert_close(torch.func.functional_call(model, adapted, (images,)), updated(images))


@pytest.mark.reference
def test_reference_libraries_keep_tied_tensors_tied():
    from .maml_testing import import_reference
    l2l = import_reference("learn2learn")
    higher = import_reference("higher")
    model = build_model("conv4", "acdc-net")
    episode = random_episode(3)
    learner = l2l.algorithms.MAML(model, lr=0.05).clone()
    learner.adapt(F.cross_entropy(learner(episode.support_images), episode.support_labels))
    bank = learner.module.coefficient_bank.net
    assert bank is not model.coefficient_bank.net
    assert all(block[0].coefficients is bank for block in list(learner.module.blocks)[1:])
    assert len(list(learner.module.parameters())) == len(list(model.parameters()))
    with higher.innerloop_ctx(model, torch.optim.SGD(model.parameters(), lr=0.05),
                              copy_initial_weights=False) as (fmodel, diffopt):
        diffopt.step(F.cross_entropy(fmodel(episode.support_images), episode.support_labels))
        fast_bank = fmodel.coefficient_bank.net
        assert all(block[0].coefficients is fast_bank for block in list(fmodel.blocks)[1:])
        assert len(list(fmodel.parameters())) == len(list(model.parameters()))


# --------------------------------------------------------------------------- the inner loop works
@pytest.mark.parametrize("scope", ["all", "atoms", "head", "atoms+head"])
def test_inner_loop_lowers_the_support_loss(scope):
    model = build_model("conv4", "acdc-net", dtype=torch.float32)
    maml = MAML(model, scope=scope, inner_lr=0.01, inner_steps=5)
    episode = structured_episode(3)
    params = maml.parameters()
    before = classification_loss(model, params, episode.support_images, episode.support_labels)
    adapted = maml.adapt(params, episode.support_images, episode.support_labels, create_graph=False)
    after = classification_loss(model, adapted, episode.support_images, episode.support_labels)
    assert after < 0.75 * before


def omniglot_episode(ways: int = 5, image_size: int = 28) -> Episode:
    """Five characters of the first Omniglot background alphabet, one support and one query image each."""
    root = data_root_from_env()
    if root is None:
        pytest.skip("FEWSHOT_DATA is not set (real-data test; set it to the folder holding omniglot/)")
    path = root / "omniglot" / "images_background_small1.zip"
    if not path.exists():
        pytest.skip(f"{path} is absent (real-data test; FEWSHOT_DATA={os.environ['FEWSHOT_DATA']})")
    from PIL import Image
    with zipfile.ZipFile(path) as archive:
        pngs = sorted(name for name in archive.namelist() if name.endswith(".png"))
        characters = sorted({name.rsplit("/", 1)[0] for name in pngs})[:ways]
        support, query = [], []
        for character in characters:
            first, second = [name for name in pngs if name.startswith(character + "/")][:2]
            for target, name in ((support, first), (query, second)):
                image = Image.open(io.BytesIO(archive.read(name))).convert("L").resize((image_size, image_size))
                target.append(1.0 - torch.tensor(list(image.getdata()), dtype=torch.float32).reshape(
                    1, image_size, image_size) / 255.0)
    labels = torch.arange(ways)
    return Episode(torch.stack(support), labels, torch.stack(query), labels.clone())


@pytest.mark.real_data
@pytest.mark.parametrize("scope", ["all", "atoms"])
def test_inner_loop_lowers_the_support_loss_on_omniglot(scope):
    episode = omniglot_episode()
    model = build_model("conv4", "acdc-net", image_size=28, in_channels=1, dtype=torch.float32)
    maml = MAML(model, scope=scope, inner_lr=0.05, inner_steps=5, inner_steps_eval=5)
    params = maml.parameters()
    before = classification_loss(model, params, episode.support_images, episode.support_labels)
    adapted = maml.adapt(params, episode.support_images, episode.support_labels, create_graph=False)
    after = classification_loss(model, adapted, episode.support_images, episode.support_labels)
    assert after < 0.75 * before
    loss, accuracy = maml.evaluate_episode(episode)
    assert loss > 0 and 0.0 <= accuracy <= 1.0


# --------------------------------------------------------------------------- meta-training step
def test_meta_train_step_steps_the_optimizer_and_returns_floats():
    model = build_model("conv4", "acdc-net")
    maml = MAML(model, scope="atoms", inner_lr=0.05, inner_steps=2)
    episodes = [random_episode(seed) for seed in (4, 5)]
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    stats = maml.meta_train_step(episodes, torch.optim.Adam(model.parameters(), lr=1e-3))
    assert {"meta_loss", "accuracy", "support_loss", "grad_norm"} <= set(stats)
    assert all(type(stats[key]) is float for key in ("meta_loss", "accuracy", "support_loss", "grad_norm"))
    assert 0.0 <= stats["accuracy"] <= 1.0 and stats["meta_loss"] > 0
    assert len(stats["support_loss_by_step"]) == 2 and stats["support_loss_by_step"][0] == stats["support_loss"]
    # diagnostics: the per-role meta-gradient norms make up the global norm
    assert stats["grad_norm"] == pytest.approx(sum(v * v for v in stats["grad_norm_by_role"].values()) ** 0.5)
    assert set(stats["inner_grad_norm_by_role"]) == {"atoms"} and len(stats["inner_grad_norm_by_role"]["atoms"]) == 2
    changed = [name for name, p in model.named_parameters() if not torch.equal(p, before[name])]
    assert set(changed) == set(before)  # atoms scope: still every tensor is meta-learned


def test_meta_train_step_zeroes_stale_gradients():
    episodes = [random_episode(6)]
    fresh = build_model("conv4", "acdc-block")
    MAML(fresh, inner_steps=1).meta_train_step(episodes, sgd_noop(fresh))
    stale = build_model("conv4", "acdc-block")
    for p in stale.parameters():
        p.grad = torch.full_like(p, 1e3)
    MAML(stale, inner_steps=1).meta_train_step(episodes, sgd_noop(stale))
    for (name, a), b in zip(fresh.named_parameters(), stale.parameters()):
        assert torch.equal(a.grad, b.grad), name


def test_gradient_clipping():
    model = build_model("conv4", "acdc-net")
    maml = MAML(model, inner_lr=0.05, inner_steps=1)
    stats = maml.meta_train_step([random_episode(7)], sgd_noop(model), grad_clip=1e-3)
    assert stats["grad_norm"] > 1e-3  # reported before clipping
    total = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert float(total) <= 1e-3 * (1 + 1e-6)
    for bad in (0, -1.0, float("inf"), "1"):
        with pytest.raises(ValueError, match="grad_clip"):
            maml.meta_train_step([random_episode(7)], sgd_noop(model), grad_clip=bad)


def test_modes_training_for_meta_training_eval_for_evaluation_and_restored():
    model = build_model("conv4", "acdc-net")
    seen = []
    model.head.register_forward_hook(lambda module, args, output: seen.append(module.training))
    maml = MAML(model, inner_steps=1, inner_steps_eval=1)
    model.eval()
    maml.meta_train_step([random_episode(8)], sgd_noop(model))
    assert seen and all(seen) and not model.training
    seen.clear()
    model.train()
    maml.evaluate_episode(random_episode(8))
    assert seen and not any(seen) and model.training


def test_evaluate_episode_builds_no_meta_graph_and_changes_nothing():
    model = build_model("resnet10", "acdc-net")
    maml = MAML(model, scope="all", inner_lr=0.05, inner_steps_eval=3)
    snapshot = {name: p.detach().clone() for name, p in model.named_parameters()}
    episode = random_episode(9)
    loss, accuracy = maml.evaluate_episode(episode)
    assert type(loss) is float and type(accuracy) is float and 0.0 <= accuracy <= 1.0
    assert all(p.grad is None for p in model.parameters())
    for name, p in model.named_parameters():
        assert torch.equal(p, snapshot[name])
    assert maml.evaluate_episode(episode) == (loss, accuracy)  # deterministic
    no_adaptation = MAML(model, inner_steps_eval=0).evaluate_episode(episode)
    assert no_adaptation != (loss, accuracy)


def test_vmap_with_atom_drop_runs():
    model = build_model("conv4", "acdc-net", atom_drop=0.2)
    maml = MAML(model, scope="atoms", inner_lr=0.05, inner_steps=2, task_batching="vmap")
    stats = maml.meta_train_step([random_episode(s) for s in (1, 2)], torch.optim.Adam(model.parameters()))
    assert stats["meta_loss"] > 0


# --------------------------------------------------------------------------- host synchronisation
@pytest.mark.parametrize("first_order", [False, True])
def test_inner_loop_reads_nothing_on_the_host(first_order):
    model = build_model("resnet10", "acdc-net")
    names = adapted_parameter_names(model, "atoms")
    episode = random_episode(10)
    with HostReadRecorder() as recorder:
        adapted, _ = inner_loop(model, dict(model.named_parameters()), names, episode.support_images,
                                episode.support_labels, inner_lr=0.05, steps=3, create_graph=not first_order)
        stacked = [torch.stack([getattr(random_episode(s), f) for s in (1, 2)]) for f in
                   ("support_images", "support_labels", "query_images", "query_labels")]
        vmapped_meta_losses(model, dict(model.named_parameters()), names, *stacked,
                            inner_lr=0.05, steps=2, first_order=first_order)
    assert recorder.reads == []


@pytest.mark.parametrize("task_batching", ["sequential", "vmap"])
def test_meta_train_step_reads_the_host_once(monkeypatch, task_batching):
    model = build_model("conv4", "acdc-net")
    maml = MAML(model, scope="atoms", inner_lr=0.05, inner_steps=3, task_batching=task_batching)
    recorder = HostReadRecorder()
    prepare = maml_module.prepare_episodes

    def prepare_unrecorded(*args, **kwargs):  # labels on the CPU are read there: no device sync
        recorder.paused = True
        try:
            return prepare(*args, **kwargs)
        finally:
            recorder.paused = False

    monkeypatch.setattr(maml_module, "prepare_episodes", prepare_unrecorded)
    with recorder:
        # SGD: Adam reads its CPU step counters with item(), which is not a device sync either.
        maml.meta_train_step([random_episode(s) for s in (1, 2, 3)], torch.optim.SGD(model.parameters(), lr=1e-3),
                             grad_clip=1.0)
    assert recorder.reads == ["cpu", "tolist"]  # one copy of one small tensor


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("recompute", [False, True], ids=["plain", "recomputed"])
def test_no_device_synchronisation_on_cuda(recompute):
    """The inner loop and the backward through it (where recomputed steps run again, with the
    generators' states replayed) make no host synchronisation (benchmarks/gpu_check.sh runs this;
    tests/meta/test_maml_device.py checks the same on the meta device on every CPU run)."""
    model = build_model("resnet10", "acdc-net", dtype=torch.float32, atom_drop=0.2).cuda()
    maml = MAML(model, scope="atoms", inner_lr=0.05, inner_steps=3)
    episodes = [random_episode(s, dtype=torch.float32) for s in (1, 2)]
    maml.meta_train_step(episodes, torch.optim.Adam(model.parameters()))  # warm up
    names = maml.adapted_names
    episode = Episode(*(getattr(episodes[0], f).cuda() for f in
                        ("support_images", "support_labels", "query_images", "query_labels")))
    torch.cuda.set_sync_debug_mode("error")
    try:
        adapted, _ = inner_loop(model, maml.parameters(), names, episode.support_images, episode.support_labels,
                                inner_lr=0.05, steps=3, create_graph=True, recompute=recompute)
        classification_loss(model, adapted, episode.query_images, episode.query_labels).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
