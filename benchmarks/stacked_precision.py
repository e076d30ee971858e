"""Is a stacked evaluation's difference from sequential the stacking, or float32 itself?

    python benchmarks/stacked_precision.py      # ResNet18 ACDC-net, 84 px, 5-way 1-shot, 4 episodes

The same random episodes (benchmarks.common.random_episode, as benchmarks/evaluation.py draws
them) and the same initialisation, scored sequentially (``MAML.evaluate_episode``) and stacked
(``MAML.evaluate_episodes``) in float32 and in float64. For each precision it records the largest
query-loss and accuracy differences between the two, and the float32 sequential losses' largest
difference from the float64 ones: when stacking differs from sequential by about as much as float32
differs from float64, the difference is float32's rounding in another summation order, not the
stacking (docs/batched_evaluation.md).
"""
from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import created_now, random_episode, revision_at_start, save_report  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--conv", default="acdc-net")
    parser.add_argument("--image-size", type=int, default=84)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--inner-steps-eval", type=int, default=5)
    parser.add_argument("--inner-lr", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "stacked_precision.json"))
    args = parser.parse_args(argv)
    revision_at_start()
    import torch

    from fewshot_acdc.meta import MAML, Episode
    from fewshot_acdc.models import create_backbone
    from fewshot_acdc.runs import provenance
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(1234)
    drawn = [random_episode(generator, args.image_size, 5, args.shots, 15) for _ in range(args.episodes)]
    rows, sequential_losses = [], {}
    for dtype in (torch.float32, torch.float64):
        torch.manual_seed(0)
        model = create_backbone(args.backbone, args.conv, num_classes=5, image_size=args.image_size,
                                track_running_stats=False).to(dtype)
        maml = MAML(model, scope="all", inner_lr=args.inner_lr, inner_steps=args.inner_steps_eval,
                    inner_steps_eval=args.inner_steps_eval)
        episodes = [Episode(e.support_images.to(dtype), e.support_labels, e.query_images.to(dtype), e.query_labels)
                    for e in drawn]
        sequential = [maml.evaluate_episode(episode) for episode in episodes]
        stacked = maml.evaluate_episodes(episodes, batch_size=len(episodes))
        name = str(dtype).removeprefix("torch.")
        sequential_losses[name] = [loss for loss, _ in sequential]
        rows.append({"dtype": name, "sequential": sequential, "stacked": stacked,
                     "max_query_loss_difference": max(abs(a[0] - b[0]) for a, b in zip(sequential, stacked)),
                     "max_accuracy_difference": max(abs(a[1] - b[1]) for a, b in zip(sequential, stacked))})
        print(f"{name}: stacked vs sequential: max query-loss difference {rows[-1]['max_query_loss_difference']:.1e}, "
              f"max accuracy difference {rows[-1]['max_accuracy_difference']:.3f}")
    float32_vs_float64 = max(abs(a - b) for a, b in zip(sequential_losses["float32"], sequential_losses["float64"]))
    print(f"float32 vs float64, both sequential: max query-loss difference {float32_vs_float64:.1e}")
    save_report({"created": created_now(), "command": "python benchmarks/stacked_precision.py " + " ".join(
                     argv if argv is not None else sys.argv[1:]),
                 "torch": torch.__version__, "cpu_count": os.cpu_count(), "machine": provenance.machine(), "settings": vars(args) | {"ways": 5, "queries": 15},
                 "rows": rows, "float32_vs_float64_sequential_max_query_loss_difference": float32_vs_float64}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
