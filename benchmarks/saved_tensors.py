"""What a MAML meta-step's graph holds when the query loss is computed, by autograd op.

    python benchmarks/saved_tensors.py                     # ResNet18, standard vs ACDC-net, 84 px
    python benchmarks/saved_tensors.py --backbones resnet10,resnet18,resnet34 --image-size 224

One task (5-way 1-shot, 15 queries per class, 5 inner steps) runs the engine's inner loop and the
query forward; the autograd graph behind the query loss is then walked and every tensor its nodes
saved for backward is counted once (by storage), parameters excluded. This is the memory the
backward must keep until it runs, measured exactly and independently of the allocator: it
explains the peak memory of benchmarks/maml_step.py (which adds the transient buffers of the
backward itself) and shows which op keeps what (``ConvolutionBackward0`` saving kernels,
``MmBackward0`` the factored path's matrices, ...). Saved to
``benchmarks/results/saved_tensors.json``.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
from typing import Dict, Iterator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

from benchmarks.common import configuration_grid, created_now, random_episode, revision_at_start, save_report  # noqa: E402
from fewshot_acdc.meta import adapted_parameter_names  # noqa: E402
from fewshot_acdc.meta.functional import classification_loss, inner_loop  # noqa: E402
from fewshot_acdc.models import create_backbone  # noqa: E402

DEFAULT_OUT = os.path.join(ROOT, "benchmarks", "results", "saved_tensors.json")


def saved_tensors(node) -> Iterator[torch.Tensor]:
    """Tensors one autograd node keeps for backward: built-in ops expose them as ``_saved_*``
    attributes, custom ``autograd.Function`` nodes as ``saved_tensors``."""
    for attribute in dir(node):
        if not (attribute.startswith("_saved_") or attribute == "saved_tensors"):
            continue
        try:
            value = getattr(node, attribute)
        except RuntimeError:  # freed, or not a tensor attribute on this node
            continue
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(item, torch.Tensor):
                yield item


def graph_saved_bytes(loss: torch.Tensor, exclude: Iterator[torch.Tensor] = ()) -> Dict[str, int]:
    """Bytes saved by the graph behind ``loss``, per op name; each storage counted once, under
    the first op found holding it, storages of ``exclude`` (the parameters) not counted."""
    counted = {tensor.untyped_storage().data_ptr() for tensor in exclude}
    by_op: Dict[str, int] = collections.Counter()
    pending, visited = [loss.grad_fn], set()
    while pending:
        node = pending.pop()
        if node is None or node in visited:
            continue
        visited.add(node)
        for tensor in saved_tensors(node):
            storage = tensor.untyped_storage()
            if storage.data_ptr() in counted or storage.nbytes() == 0:
                continue
            counted.add(storage.data_ptr())
            by_op[type(node).__name__] += storage.nbytes()
        pending.extend(next_node for next_node, _ in node.next_functions)
    return dict(by_op)


def measure(backbone: str, conv: str, scope: str, order: str, image_size: int, inner_steps: int,
            queries: int) -> Dict:
    torch.manual_seed(0)
    conv_kind, _, compute = conv.partition(":")  # "acdc-net:kernel": every layer composes its kernel
    model = create_backbone(backbone, conv_kind, num_classes=5, image_size=image_size, track_running_stats=False)
    for module in model.modules():
        if compute and hasattr(module, "compute"):
            module.compute = compute
    episode = random_episode(torch.Generator().manual_seed(1), image_size, queries=queries)
    params = dict(model.named_parameters())
    adapted, _ = inner_loop(model, params, adapted_parameter_names(model, scope), episode.support_images,
                            episode.support_labels, inner_lr=0.01, steps=inner_steps, create_graph=order == "second")
    loss = classification_loss(model, adapted, episode.query_images, episode.query_labels)
    by_op = graph_saved_bytes(loss, exclude=params.values())
    return {"backbone": backbone, "conv": conv, "scope": scope, "order": order, "image_size": image_size,
            "saved_mb": sum(by_op.values()) / 2**20,
            "by_op_mb": {op: size / 2**20 for op, size in sorted(by_op.items(), key=lambda item: -item[1])}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", default="resnet18")
    parser.add_argument("--convs", default="standard,acdc-net,acdc-net:kernel")
    parser.add_argument("--scopes", default="all,atoms")
    parser.add_argument("--orders", default="second,first")
    parser.add_argument("--image-size", type=int, default=84)
    parser.add_argument("--inner-steps", type=int, default=5)
    parser.add_argument("--queries", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    revision_at_start()  # the code measured is the code now, whatever is committed meanwhile
    torch.set_num_threads(args.threads)
    rows = []
    for backbone, conv, scope, order in configuration_grid(args.backbones, args.convs, args.scopes, args.orders):
        row = measure(backbone, conv, scope, order, args.image_size, args.inner_steps, args.queries)
        top = ", ".join(f"{op} {size:.0f}" for op, size in list(row["by_op_mb"].items())[:4])
        print(f"{backbone} {args.image_size}px {conv} {scope} {order}: {row['saved_mb']:.0f} MB saved ({top})", flush=True)
        rows.append(row)
    report = {"created": created_now(),
              "command": "python benchmarks/saved_tensors.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "torch": torch.__version__, "rows": rows}
    save_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
