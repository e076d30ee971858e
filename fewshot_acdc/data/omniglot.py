"""Omniglot (Lake et al. 2015): handwritten characters, 20 drawings each, 105x105 binary PNGs.

Sources looked for in ``root`` and then ``root/omniglot``, ``root/omniglot-py`` (torchvision's
folder) and ``root/omniglot/python`` (Lake's repository), each as a folder or a ``.zip``:
``images_background``, ``images_evaluation`` (Lake's full 30 + 20 alphabets) and
``images_background_small1``, ``images_background_small2`` (Lake's two "minimal" 5-alphabet
background sets). Inside each: ``<alphabet>/<character>/<drawing>.png``.

How train/val/test are formed (classes are characters; splits never share a character):

* Full data (``images_background`` and ``images_evaluation`` both present): train = all 30
  background alphabets (964 characters), the protocol Lake et al. require so that the one-shot
  benchmark (all_runs, drawn from evaluation alphabets) stays unseen. The 20 evaluation alphabets,
  sorted by name, alternate val, test, val, test, ... (10 alphabets each).
* Otherwise every character found is pooled (duplicates removed: small1 and small2 share Greek
  and Latin, whose files are identical) and split by alphabet: alphabets sorted by name, the i-th
  goes to val if i % 4 == 2, test if i % 4 == 3, train otherwise. With the two small sets (8
  alphabets, 242 characters): train = Balinese, Early_Aramaic, Korean, Latin (112 characters);
  val = Greek, Sanskrit (66); test = Japanese_(katakana), Tagalog (64).

Splitting by alphabet means val/test alphabets are never seen in training, as in Lake's protocol.

* ``background="small1"`` or ``"small2"``: Lake's minimal setting, one 5-alphabet set alone (the
  one-shot benchmark's hardest case; Lake et al. report ~24% / 22% all_runs error for a deep
  convnet). Alphabets sorted by name: the third (Greek in small1, Latin in small2) is held out for validation,
  the other four train; there is no test split, the test is ``all_runs`` (drawn from the 20
  evaluation alphabets, none of which is in either small set).

``rotations=True`` (default, as in Santoro et al., Vinyals et al. and MAML) adds each character
rotated by 90, 180 and 270 degrees (counter-clockwise) as three further classes, in every split:
class ``4 * c + r`` is character ``c`` rotated by ``r * 90`` degrees. Rotated images are produced
on the fly from the stored ones.

Pixels: Lake's PNGs are black strokes on white. Here they are inverted (strokes 255, background
0), as the MAML/Santoro Omniglot pipelines feed them, so that zero is "no ink"; the same
inversion is applied to the background sets and to all_runs. Images are resized (antialiased
bilinear) from 105 to ``image_size`` (28 by default) and stored as uint8, 1 channel.

The official one-shot benchmark: :func:`load_omniglot_all_runs` reads ``all_runs.zip`` (20 runs
of 20-way within-alphabet one-shot classification); :func:`omniglot_all_runs_error_rate` scores
predictions as Lake's ``demo_classification.py`` does; :func:`all_runs_episodes` draws 5-way
episodes from the same images.
"""

from __future__ import annotations

import hashlib
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image

from .cache import cached_images, file_signature, parallel_fill
from .dataset import ArrayDataset
from .episodes import Episode, _PortableRandom
from .errors import CorruptDataError, DatasetNotFoundError
from .images import decode_image
from .paths import candidate_roots, describe_searched, how_to_look_elsewhere
from .transforms import to_model_input
from ..utils import closest_name
from ..vocabulary import OMNIGLOT_BACKGROUNDS

# Mean and std of inverted (ink = 1) Omniglot pixels at 28 x 28, measured over all 242 characters
# of images_background_small1/2. The mean hardly depends on the size; the std grows with it
# (0.252 at 84, 0.267 at 105) as less antialiasing blur is left, which only rescales the input.
OMNIGLOT_MEAN = (0.0805,)
OMNIGLOT_STD = (0.2182,)
OMNIGLOT_DEFAULT_IMAGE_SIZE = 28

SOURCE_NAMES = ("images_background", "images_evaluation", "images_background_small1",
                "images_background_small2")
MINIMAL_VALIDATION_ALPHABET = 2  # index, in sorted order, of a minimal set's validation alphabet
ROOT_ALIASES = ("omniglot", "omniglot-py", "omniglot/omniglot-py", "omniglot/python")
_RESAMPLE = Image.Resampling.BILINEAR

WHERE_TO_GET = (
    "Get the data from https://github.com/brendenlake/omniglot (python/images_background.zip and "
    "python/images_evaluation.zip, or the minimal sets python/images_background_small1.zip and "
    "python/images_background_small2.zip; the one-shot benchmark is "
    "python/one-shot-classification/all_runs.zip). The zips can stay zipped. torchvision's "
    "datasets.Omniglot(download=True) folder omniglot-py/ also works. See data/README.md. To "
    "run without any download, use --dataset builtin."
)


# --------------------------------------------------------------------------------------- sources
@dataclass
class _Source:
    """One of the image sets, as a folder or a zip."""

    name: str
    path: Path

    @property
    def is_zip(self) -> bool:
        return self.path.suffix.lower() == ".zip"

    def signature(self) -> Any:
        if self.is_zip:
            return file_signature(self.path)
        digest = hashlib.sha256()
        for key, files in sorted(self.characters().items()):
            for f in files:
                stat = Path(f).stat()
                digest.update(f"{f}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return [str(self.path.resolve()), digest.hexdigest()]

    def characters(self) -> dict[tuple[str, str], list[str]]:
        """(alphabet, character) -> sorted drawing locations (zip member names or file paths)."""
        found: dict[tuple[str, str], list[str]] = {}
        if self.is_zip:
            try:
                with zipfile.ZipFile(self.path) as archive:
                    names = archive.namelist()
            except (zipfile.BadZipFile, OSError) as exc:
                raise CorruptDataError(self.path, f"not a readable zip archive ({exc})") from exc
            for member in names:
                parts = PurePosixPath(member).parts
                if member.lower().endswith(".png") and len(parts) >= 3 and not parts[-1].startswith("."):
                    found.setdefault((parts[-3], parts[-2]), []).append(member)
        else:
            for alphabet in sorted((e for e in os.scandir(self.path) if e.is_dir()), key=lambda e: e.name):
                for character in sorted((e for e in os.scandir(alphabet.path) if e.is_dir()),
                                        key=lambda e: e.name):
                    files = [e.path for e in os.scandir(character.path)
                             if e.is_file() and e.name.lower().endswith(".png")]
                    if files:
                        found[(alphabet.name, character.name)] = files
        return {key: sorted(files, key=lambda f: PurePosixPath(f).name) for key, files in found.items()}


def find_sources(folder: Path) -> dict[str, _Source]:
    sources = {}
    for name in SOURCE_NAMES:
        as_dir, as_zip = folder / name, folder / f"{name}.zip"
        if as_dir.is_dir() and any(as_dir.iterdir()):
            sources[name] = _Source(name, as_dir)
        elif as_zip.is_file():
            sources[name] = _Source(name, as_zip)
    return sources


def _read_all(source: _Source, locations: Sequence[str]) -> list[bytes]:
    if not source.is_zip:
        return [Path(p).read_bytes() for p in locations]
    try:
        with zipfile.ZipFile(source.path) as archive:
            return [archive.read(member) for member in locations]
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise CorruptDataError(source.path, f"cannot read from the zip archive ({exc})") from exc


def _decode_omniglot(data: bytes, name: str, image_size: int) -> np.ndarray:
    return decode_image(data, name=name, size=image_size, mode="L", resample=_RESAMPLE, invert=True)


# --------------------------------------------------------------------------------------- splits
CharacterKey = tuple[str, str]  # (alphabet, character)


def select_background(sources: dict[str, _Source], background: str, folder: Path) -> dict[str, _Source]:
    """The sources a run with ``background`` (one of OMNIGLOT_BACKGROUNDS) learns from."""
    if background not in OMNIGLOT_BACKGROUNDS:
        raise ValueError(f"Omniglot background {background!r}: choose one of {', '.join(OMNIGLOT_BACKGROUNDS)}"
                         f"{closest_name(str(background), OMNIGLOT_BACKGROUNDS)}")
    if background == "all":
        return sources
    name = f"images_background_{background}"
    if name not in sources:
        raise DatasetNotFoundError(
            f"Omniglot background {background!r} needs {folder / name}[.zip]; {folder} holds "
            f"{', '.join(s.path.name for s in sources.values())}. {WHERE_TO_GET}")
    return {name: sources[name]}


def split_characters(sources: dict[str, _Source], minimal: bool = False) -> tuple[
        dict[str, list[CharacterKey]], dict[CharacterKey, _Source], dict[CharacterKey, list[str]], str]:
    """(characters of each split (sorted), the source holding each character, its drawings'
    locations, a description of the split rule used). ``minimal``: one small background set
    alone, whose alphabets are all for training but one for validation (no test split)."""
    owner: dict[tuple[str, str], _Source] = {}
    drawings: dict[tuple[str, str], list[str]] = {}
    for name in SOURCE_NAMES:
        if name in sources:
            for key, files in sources[name].characters().items():
                if key not in owner:  # small1/small2 share identical characters: keep the first
                    owner[key] = sources[name]
                    drawings[key] = files
    if minimal:
        alphabets = sorted({k[0] for k in owner})
        held_out = alphabets[MINIMAL_VALIDATION_ALPHABET] if len(alphabets) > MINIMAL_VALIDATION_ALPHABET else None
        splits = {"train": sorted(k for k in owner if k[0] != held_out),
                  "val": sorted(k for k in owner if k[0] == held_out), "test": []}
        rule = (f"minimal background set alone: alphabet {held_out} = val, the others train; "
                f"the test is all_runs")
    elif "images_background" in sources and "images_evaluation" in sources:
        background = {k for k, s in owner.items() if s.name == "images_background"}
        evaluation = sorted({k[0] for k, s in owner.items() if s.name == "images_evaluation"})
        val_alphabets = set(evaluation[0::2])
        test_alphabets = set(evaluation[1::2])
        splits = {
            "train": sorted(background),
            "val": sorted(k for k in owner if k[0] in val_alphabets and k not in background),
            "test": sorted(k for k in owner if k[0] in test_alphabets and k not in background),
        }
        rule = "background alphabets = train; evaluation alphabets alternate val/test"
    else:
        alphabets = sorted({k[0] for k in owner})
        role = {a: ("val" if i % 4 == 2 else "test" if i % 4 == 3 else "train") for i, a in enumerate(alphabets)}
        splits = {s: sorted(k for k in owner if role[k[0]] == s) for s in ("train", "val", "test")}
        rule = "all characters found, split by alphabet (sorted; i%4==2 val, i%4==3 test, else train)"
    return splits, owner, drawings, rule


def _not_found(split: str, searched: list[Path], root: str | os.PathLike | None) -> DatasetNotFoundError:
    first = searched[0]
    return DatasetNotFoundError(
        f"Omniglot '{split}' split: no Omniglot images found; searched {describe_searched(searched)}.\n"
        f"Layouts looked for (in each searched folder, shown for {first}):\n"
        f"  full:    {first}/images_background[.zip] and {first}/images_evaluation[.zip]\n"
        f"  minimal: {first}/images_background_small1[.zip] and/or images_background_small2[.zip]\n"
        f"  each containing <alphabet>/<character>/<drawing>.png\n{how_to_look_elsewhere(root)}\n"
        f"{WHERE_TO_GET}")


def load_omniglot(split: str, root: str | os.PathLike | None = None, *, image_size: int | None = None,
                  augment: bool = False, seed: int = 0, rotations: bool = True, background: str = "all",
                  cache_dir: Any = None, cache: bool = True) -> ArrayDataset:
    """One Omniglot split as a grayscale :class:`ArrayDataset` (see module docstring for splits;
    ``background``: ``all`` sets found, or ``small1`` / ``small2`` alone)."""
    size = int(image_size or OMNIGLOT_DEFAULT_IMAGE_SIZE)
    searched = candidate_roots(root, ROOT_ALIASES)
    for folder in searched:
        sources = find_sources(folder) if folder.is_dir() else {}
        if sources:
            break
    else:
        raise _not_found(split, searched, root)
    sources = select_background(sources, background, folder)
    splits, owner, drawings, rule = split_characters(sources, minimal=background != "all")
    characters = splits[split]
    if not characters and background != "all" and split == "test":
        raise DatasetNotFoundError(
            f"Omniglot background {background!r} (Lake's minimal setting) has no test split: its test is "
            f"the one-shot benchmark all_runs. Score a run with `python evaluate.py --run RUN_DIR "
            f"--benchmark omniglot-all-runs` (run_maml.py does this itself for such runs).")
    if not characters:
        raise DatasetNotFoundError(
            f"Omniglot in {folder} ({', '.join(s.path.name for s in sources.values())}) gives no "
            f"characters to the '{split}' split under the rule: {rule}. Add more alphabets "
            f"(e.g. both small sets or the full background/evaluation sets). {WHERE_TO_GET}")

    items = [(owner[key], location) for key in characters for location in drawings[key]]
    base_labels = np.repeat(np.arange(len(characters)), [len(drawings[k]) for k in characters])

    def fill(out: np.ndarray) -> None:
        by_source: dict[str, list[int]] = {}
        for i, (source, _) in enumerate(items):
            by_source.setdefault(source.name, []).append(i)
        for name, rows in by_source.items():
            source = sources[name]
            blobs = _read_all(source, [items[i][1] for i in rows])
            labels_for_errors = [f"{source.path}:{items[i][1]}" if source.is_zip else items[i][1] for i in rows]
            decoded = np.empty((len(rows), size, size, 1), dtype=np.uint8)
            parallel_fill(decoded, list(range(len(rows))),
                          lambda j: _decode_omniglot(blobs[j], labels_for_errors[j], size),
                          description=f"decoding {name}")
            out[np.asarray(rows)] = decoded

    used = sorted({s.name for s, _ in items})
    # Which drawings the split holds depends on every source present (the split rule sorts all
    # alphabets found), so the item list itself is part of the fingerprint.
    item_list = hashlib.sha256("\n".join(f"{s.name}:{loc}" for s, loc in items).encode()).hexdigest()
    fingerprint = {"layout": "omniglot", "rule": rule, "split": split, "image_size": size,
                   "invert": True, "resample": "bilinear", "items": item_list,
                   "sources": {name: sources[name].signature() for name in used}}
    images = cached_images(prefix=f"omniglot-{split}-{size}px", fingerprint=fingerprint,
                           count=len(items), shape=(size, size, 1), fill=fill, cache_dir=cache_dir,
                           cache=cache)
    base_names = [f"{alphabet}/{character}" for alphabet, character in characters]
    common = dict(name="omniglot", split=split, mean=OMNIGLOT_MEAN, std=OMNIGLOT_STD,
                  augment=augment, seed=seed, root=folder,
                  layout=f"omniglot ({', '.join(str(sources[n].path) for n in used)}); {rule}")
    if not rotations:
        return ArrayDataset(images, base_labels, base_names, identifier="omniglot-norot", **common)
    # Class 4c + r is character c rotated by r quarter turns; its items are c's drawings.
    counts = np.bincount(base_labels, minlength=len(characters))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    source_index, turns, labels = [], [], []
    for c in range(len(characters)):
        drawings_of_c = np.arange(starts[c], starts[c] + counts[c])
        for r in range(4):
            source_index.append(drawings_of_c)
            turns.append(np.full(counts[c], r))
            labels.append(np.full(counts[c], 4 * c + r))
    names = [f"{name}/rot{r * 90:03d}" for name in base_names for r in range(4)]
    return ArrayDataset(images, np.concatenate(labels), names, identifier="omniglot",
                        source_index=np.concatenate(source_index), quarter_turns=np.concatenate(turns),
                        **common)


# --------------------------------------------------------------------------------------- all_runs
_RUN_RE = re.compile(r"^run(\d+)$")


def find_all_runs(path: str | os.PathLike | None = None, *, data_root: str | None = None) -> Path:
    """Where Lake's ``all_runs`` benchmark is: in ``path`` when given (all_runs.zip, a folder with
    run01 ... run20, or a folder holding either), else in the folders the Omniglot loader searches
    (``data_root``, $FEWSHOT_DATA, ./data, and their omniglot/ sub-folders), the first that holds
    all_runs.zip or all_runs/. The one finder of both the loader and the evaluation."""
    if path is None:
        candidates = candidate_roots(data_root, ("omniglot",))
        found = next((folder for folder in candidates
                      if (folder / "all_runs.zip").is_file() or (folder / "all_runs").is_dir()), None)
        if found is None:
            raise FileNotFoundError(
                "Omniglot's all_runs benchmark (all_runs.zip or all_runs/) was not found in "
                + ", ".join(str(c) for c in candidates)
                + "; pass --all-runs PATH (it is in Lake's omniglot repository, python/one-shot-classification)")
        path = found
    path = Path(path).expanduser()
    if path.is_file():
        return path
    for candidate in (path, path / "all_runs", path / "all_runs.zip",
                      path / "one-shot-classification" / "all_runs.zip",
                      path / "omniglot" / "all_runs.zip", path / "omniglot" / "all_runs"):
        if candidate.is_file() or (candidate.is_dir() and any(_RUN_RE.match(p.name) for p in candidate.iterdir())):
            return candidate
    raise DatasetNotFoundError(
        f"Omniglot all_runs not found at {path} (looked for a zip, or a folder with run01 ... run20, "
        f"or all_runs.zip / all_runs/ inside it). {WHERE_TO_GET}")


def _read_run_files(path: Path) -> dict[str, dict[str, Any]]:
    """run name -> {"training": {file: (bytes, where)}, "test": {...}, "labels": (text, where)}."""
    runs: dict[str, dict[str, Any]] = {}

    def add(parts: Sequence[str], data: bytes, where: str) -> None:
        for i, part in enumerate(parts):
            if _RUN_RE.match(part):
                run = runs.setdefault(part, {"training": {}, "test": {}, "labels": None})
                rest = tuple(parts[i + 1:])
                if rest == ("class_labels.txt",):
                    run["labels"] = (data.decode("utf-8"), where)
                elif len(rest) == 2 and rest[0] in ("training", "test") and rest[1].lower().endswith(".png"):
                    run[rest[0]][rest[1]] = (data, where)
                return

    if path.is_file():
        try:
            with zipfile.ZipFile(path) as archive:
                for member in archive.namelist():
                    parts = PurePosixPath(member).parts
                    if not member.endswith("/") and any(_RUN_RE.match(p) for p in parts):
                        add(parts, archive.read(member), f"{path}:{member}")
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise CorruptDataError(path, f"not a readable zip archive ({exc})") from exc
    else:
        for file in sorted(path.rglob("*")):
            if file.is_file() and (file.suffix == ".png" or file.name == "class_labels.txt"):
                add(file.relative_to(path).parts, file.read_bytes(), str(file))
    return runs


def load_omniglot_all_runs(path: str | os.PathLike, image_size: int = OMNIGLOT_DEFAULT_IMAGE_SIZE) -> list[Episode]:
    """Lake et al.'s 20-way within-alphabet one-shot benchmark: 20 runs, each an :class:`Episode`.

    ``path``: all_runs.zip, a folder with run01 ... run20, or a folder holding either. In each run
    the 20 ``training/classNN.png`` images are the support (label = position in sorted file order,
    i.e. classNN -> NN - 1) and the 20 ``test/itemNN.png`` images the queries (sorted by file name),
    labelled through ``class_labels.txt`` ("runXX/test/itemNN.png runXX/training/classMM.png").
    Pixels are inverted and normalized exactly like the Omniglot splits.
    """
    location = find_all_runs(path)
    runs = _read_run_files(location)
    if not runs:
        raise CorruptDataError(location, "no runNN/ folders found")
    episodes = []
    for run_name in sorted(runs, key=lambda r: int(_RUN_RE.match(r).group(1))):
        run = runs[run_name]
        if run["labels"] is None:
            raise CorruptDataError(location, f"{run_name} has no class_labels.txt")
        labels_text, labels_where = run["labels"]
        training = sorted(run["training"])
        tests = sorted(run["test"])
        if not training or not tests:
            raise CorruptDataError(location, f"{run_name} needs training/ and test/ images")
        answer: dict[str, str] = {}
        for line_number, line in enumerate(labels_text.splitlines(), start=1):
            if not line.strip():
                continue
            fields = line.split()
            if len(fields) != 2:
                raise CorruptDataError(labels_where, f"line {line_number}: expected 'test_image training_image'")
            answer[PurePosixPath(fields[0]).name] = PurePosixPath(fields[1]).name
        missing = [t for t in tests if t not in answer or answer[t] not in run["training"]]
        if missing:
            raise CorruptDataError(labels_where, f"no valid label for {run_name}/test/{missing[0]}")
        support = np.stack([_decode_omniglot(run["training"][f][0], run["training"][f][1], image_size) for f in training])
        query = np.stack([_decode_omniglot(run["test"][f][0], run["test"][f][1], image_size) for f in tests])
        episodes.append(Episode(
            support_images=to_model_input(support, OMNIGLOT_MEAN, OMNIGLOT_STD),
            support_labels=torch.arange(len(training), dtype=torch.int64),
            query_images=to_model_input(query, OMNIGLOT_MEAN, OMNIGLOT_STD),
            query_labels=torch.tensor([training.index(answer[t]) for t in tests], dtype=torch.int64),
            class_ids=torch.arange(len(training), dtype=torch.int64),
        ))
    return episodes


class AllRunsErrorRate(NamedTuple):
    """``error_rate``: mean over runs of each run's fraction of misclassified test images."""

    error_rate: float
    per_run_error_rate: list[float]


def omniglot_all_runs_error_rate(per_run_predictions: Sequence[Any], runs: Sequence[Episode]) -> AllRunsErrorRate:
    """Error rate as Lake et al.'s benchmark defines it (``demo_classification.py``).

    For each run, the fraction of its test (query) images assigned the wrong training class; the
    benchmark's error rate is the mean of those fractions over the runs (Lake reports percent;
    this returns fractions, e.g. 0.388 for the Modified Hausdorff Distance baseline).

    ``per_run_predictions[r]``: predicted support labels [20] for run r's queries, or scores
    [20, 20] (argmax over the last axis is taken). Tensors or arrays.
    """
    if len(per_run_predictions) != len(runs):
        raise ValueError(f"{len(per_run_predictions)} prediction sets for {len(runs)} runs")
    per_run = []
    for r, (predictions, run) in enumerate(zip(per_run_predictions, runs)):
        predicted = torch.as_tensor(np.asarray(predictions.detach().cpu() if torch.is_tensor(predictions) else predictions))
        if predicted.dim() == 2:
            predicted = predicted.argmax(dim=-1)
        truth = run.query_labels.cpu()
        if predicted.shape != truth.shape:
            raise ValueError(f"run {r + 1}: predictions have shape {tuple(predicted.shape)}, "
                             f"expected [{truth.shape[0]}] labels or [{truth.shape[0]}, ways] scores")
        per_run.append(float((predicted.to(torch.int64) != truth).to(torch.float64).mean()))
    return AllRunsErrorRate(float(np.mean(per_run)), per_run)


def all_runs_episodes(path_or_runs: str | os.PathLike | Sequence[Episode], ways: int = 5,
                      episodes_per_run: int = 30, seed: int = 0,
                      image_size: int = OMNIGLOT_DEFAULT_IMAGE_SIZE) -> list[Episode]:
    """N-way 1-shot 1-query episodes drawn within each all_runs run (so within one alphabet).

    Episode e uses run ``e % 20`` (runs are used equally) and ``ways`` of its 20 classes chosen
    with the portable generator keyed by (seed, e); support = those classes' training images,
    queries = their test images, both class-major. 20 * ``episodes_per_run`` episodes in total
    (600 by default), identical on every machine for the same seed.
    """
    if isinstance(path_or_runs, (str, os.PathLike)):
        runs = load_omniglot_all_runs(path_or_runs, image_size=image_size)
    else:
        runs = list(path_or_runs)
    if ways < 1 or ways > min(r.support_labels.shape[0] for r in runs):
        raise ValueError(f"ways must be in 1..{min(r.support_labels.shape[0] for r in runs)}, got {ways}")
    episodes = []
    stream = 0x414C4C52  # "ALLR"
    for e in range(episodes_per_run * len(runs)):
        run = runs[e % len(runs)]
        chosen = _PortableRandom(stream, seed, e).sample(run.support_labels.shape[0], ways)
        query_positions = []
        for c in chosen:
            matches = torch.nonzero(run.query_labels == c).flatten().tolist()
            if not matches:
                raise ValueError(f"run {e % len(runs) + 1}: class {c} has no test image")
            query_positions.append(matches[0])
        episodes.append(Episode(
            support_images=run.support_images[chosen],
            support_labels=torch.arange(ways, dtype=torch.int64),
            query_images=run.query_images[query_positions],
            query_labels=torch.arange(ways, dtype=torch.int64),
            class_ids=torch.tensor(chosen, dtype=torch.int64),
        ))
    return episodes
