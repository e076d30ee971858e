"""How accurate is a MAML meta-gradient in float32, and with the forward under bfloat16 autocast?

    python benchmarks/precision.py                                  # ResNet10/18 + Conv4, 84 px, CPU
    python benchmarks/precision.py --device cuda --backbones resnet18 --convs standard,acdc-net

The question behind it (issue 7): can the forward run under bf16 autocast, the usual GPU speed-up,
without spoiling the meta-gradient? For each backbone x conv kind x scope x order, one task's
meta-gradient (5-way 1-shot, 15 queries per class, ``--inner-steps`` inner steps) is computed by
this engine three times from the same initialization and episode: in float64 (the reference), in
float32, and in float32 with every forward under ``torch.autocast(dtype=bfloat16)`` (the backward
outside it, as autocast wants). Printed and saved (``benchmarks/results/precision.json``): the
relative error ``|g - g64| / |g64|`` and the cosine to the float64 gradient, per precision.

``--inner-lr`` takes one rate or rates per parameter role (``atoms=1e-4,default=0.01``): issue 15
asks whether per-role step sizes, which stop the inner loop from rescaling the atoms several-fold
per step, also make the float32 meta-gradient of ACDC-nets accurate again.

The float32 row is the yardstick: how sensitive the meta-gradient of this setting is to rounding
at all (batch-statistics BatchNorm on a 5-image support set makes it very sensitive in deep
ResNets).
"""
from __future__ import annotations

import argparse
import copy
import itertools
import os
import sys
from typing import Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks.common import configuration_grid, created_now, random_episode, revision_at_start, save_report  # noqa: E402
from fewshot_acdc.cli.train import parse_inner_lr  # noqa: E402
from fewshot_acdc.meta import MAML, Episode  # noqa: E402
from fewshot_acdc.models import create_backbone  # noqa: E402

DEFAULT_OUT = os.path.join(ROOT, "benchmarks", "results", "precision.json")
PRECISIONS = ("float64", "float32", "bfloat16-autocast")


def autocast_forward(model: torch.nn.Module, device_type: str) -> None:
    """Make every forward of ``model`` (also through ``functional_call``) run under bf16 autocast
    and return float32 logits; gradients are then computed outside the autocast region."""
    plain_forward = type(model).forward

    def forward(images: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type, dtype=torch.bfloat16):
            logits = plain_forward(model, images)
        return logits.float()
    model.forward = forward


def meta_gradient(model: torch.nn.Module, episode: Episode, precision: str, config: Dict) -> torch.Tensor:
    model = copy.deepcopy(model)
    dtype = torch.float64 if precision == "float64" else torch.float32
    model.to(dtype)
    if precision == "bfloat16-autocast":
        autocast_forward(model, episode.support_images.device.type)
    cast = Episode(episode.support_images.to(dtype), episode.support_labels,
                   episode.query_images.to(dtype), episode.query_labels)
    maml = MAML(model, scope=config["scope"], inner_lr=config["inner_lr"], inner_steps=config["inner_steps"],
                first_order=config["order"] == "first")
    maml.meta_train_step([cast], torch.optim.SGD(model.parameters(), lr=0.0))
    return torch.cat([parameter.grad.flatten().double() for parameter in model.parameters()])


def compare(config: Dict, device: torch.device) -> Dict:
    torch.manual_seed(0)
    size = config["image_size"]
    model = create_backbone(config["backbone"], config["conv"], image_size=size, track_running_stats=False).to(device)
    generator = torch.Generator().manual_seed(1)
    queries = config["queries"]
    episode = random_episode(generator, size, queries=queries, device=device)
    gradients = {precision: meta_gradient(model, episode, precision, config)
                 for precision in ("float64", *config.setdefault("precisions", list(PRECISIONS[1:])))}
    reference = gradients["float64"]
    row = dict(config)
    for precision in config["precisions"]:
        error = gradients[precision] - reference
        row[precision] = {"relative_error": float(error.norm() / reference.norm()),
                          "cosine": float(F.cosine_similarity(gradients[precision], reference, dim=0))}
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", default="conv4,resnet10,resnet18")
    parser.add_argument("--convs", default="standard,acdc-net")
    parser.add_argument("--scopes", default="all,atoms")
    parser.add_argument("--orders", default="second,first")
    parser.add_argument("--image-size", type=int, default=84)
    parser.add_argument("--queries", type=int, default=15)
    parser.add_argument("--inner-steps", type=int, default=2)
    parser.add_argument("--inner-lr", type=parse_inner_lr, nargs="+", default=[0.01],
                        help="one rate, or per role (atoms=1e-4,default=0.01); several: compared side by side")
    parser.add_argument("--precisions", default=",".join(PRECISIONS[1:]),
                        help="compared with float64: " + ", ".join(PRECISIONS[1:]))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    revision_at_start()  # the code measured is the code now, whatever is committed meanwhile
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows: List[Dict] = []
    for (backbone, conv, scope, order), inner_lr in itertools.product(
            configuration_grid(args.backbones, args.convs, args.scopes, args.orders), args.inner_lr):
        if isinstance(inner_lr, dict) and conv == "standard" and set(inner_lr) - {"default"} <= {"atoms"}:
            continue  # the standard conv has no atoms: the same as the single default rate
        config = {"backbone": backbone, "conv": conv, "scope": scope, "order": order, "image_size": args.image_size,
                  "queries": args.queries, "inner_steps": args.inner_steps, "inner_lr": inner_lr,
                  "precisions": [name for name in args.precisions.split(",") if name]}
        row = compare(config, device)
        rows.append(row)
        print(f"{backbone:9s} {conv:9s} {scope:6s} {order:6s} {inner_lr} " + "  ".join(
            f"{precision}: rel. error {row[precision]['relative_error']:.2e}, cos {row[precision]['cosine']:.4f}"
            for precision in config["precisions"]), flush=True)
    report = {"created": created_now(),
              "command": "python benchmarks/precision.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "device": str(device), "device_name": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "rows": rows}
    save_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
