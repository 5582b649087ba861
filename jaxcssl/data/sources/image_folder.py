"""Image-folder source: ``<split>/<class>/*.{jpg,jpeg,png}`` in folders or archives.

The layout of the CIFAR-10 JPEG copy, Tiny-ImageNet and ImageNet-100. ``path`` names any of:

* a folder holding ``train/`` and ``val/`` or ``test/`` (each with one folder per class),
* an archive (``.tar``, ``.tar.gz``, ``.tgz``, ``.zip``) holding those split folders,
* a folder holding such archives (e.g. ``cifar10-jpeg-train.tar.gz`` and ``cifar10-jpeg-test.tar.gz``),
* a glob matching folders or archives (``/data/cifar10-jpeg-*.tar.gz``).

Split folders may sit under a top-level folder (``tiny-imagenet-200/train/...``). The test split is
``val/`` when present, else ``test/``. Images may be nested inside their class folder
(``train/n01443537/images/*.JPEG``), and a split may instead hold ``images/`` plus a
``*_annotations.txt`` (file name, tab, class), which is Tiny-ImageNet's ``val/`` layout.

Class ids are the sorted class folder names (alphabetical is the official order for CIFAR-10);
examples are ordered by class, then by file path. Archives are read in stream order: random access
into a ``.tar.gz`` decompresses from the start for every member (9x slower on CIFAR-10).
"""
from __future__ import annotations

import glob
import os
import pathlib
import posixpath
import tarfile
import zipfile
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from PIL import UnidentifiedImageError

from jaxcssl.data.sources import Arrays, cache, imaging

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")
TRAIN_SPLIT = "train"
TEST_SPLITS = ("val", "test")  # the first one present is the test split
ANNOTATIONS_SUFFIX = "_annotations.txt"
UNSORTED_FOLDER = "images"  # images labelled by an annotations file rather than their folder
LAYOUT_HELP = ("expected <split>/<class>/*.jpg with split train/ and val/ or test/, as folders or "
               ".tar/.tar.gz/.zip archives; see README 'Data sources'")


def _is_archive(path: pathlib.Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def resolve(path: str) -> list[pathlib.Path]:
    """The folders and archives that ``path`` names (see the module docstring), in sorted order."""
    if glob.has_magic(path):
        roots = [pathlib.Path(p) for p in sorted(glob.glob(os.path.expanduser(path)))]
        roots = [r for r in roots if r.is_dir() or _is_archive(r)]
        if not roots:
            raise FileNotFoundError(f"image_folder source: no folder or archive matches '{path}' ({LAYOUT_HELP})")
        return roots
    root = pathlib.Path(path).expanduser()
    if _is_archive(root):
        return [root]
    if root.is_file():
        raise ValueError(f"image_folder source: '{path}' is not a folder or a {'/'.join(ARCHIVE_SUFFIXES)} archive")
    if not root.is_dir():
        raise FileNotFoundError(f"image_folder source: '{path}' does not exist ({LAYOUT_HELP})")
    children = sorted(root.iterdir())
    if any(c.is_dir() and c.name in (TRAIN_SPLIT, *TEST_SPLITS) for c in children):
        return [root]
    archives = [c for c in children if _is_archive(c)]
    if archives:
        return archives
    subfolders = [c for c in children if c.is_dir() and (c / TRAIN_SPLIT).is_dir()]
    if len(subfolders) == 1:
        return subfolders
    raise FileNotFoundError(f"image_folder source: no train/ split and no archive under '{path}' ({LAYOUT_HELP})")


def _split_of(name: str) -> tuple[str, tuple[str, ...]] | None:
    """(split, parts below the split folder) for a path inside a split folder, else None."""
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    for i, part in enumerate(parts[:-1]):
        if part in (TRAIN_SPLIT, *TEST_SPLITS):
            return part, parts[i + 1:]
    return None


def _is_annotations(below: tuple[str, ...]) -> bool:
    return len(below) == 1 and below[0].lower().endswith(ANNOTATIONS_SUFFIX)


def _relevant(name: str, splits: Sequence[str], keep: Callable[[str], bool]) -> bool:
    """Whether ``name`` is, in one of ``splits``, an annotations file or an image of a kept (or not yet known) class."""
    located = _split_of(name)
    if located is None or located[0] not in splits:
        return False
    below = located[1]
    if _is_annotations(below):
        return True
    return (len(below) >= 2 and below[-1].lower().endswith(IMAGE_SUFFIXES)
            and (below[0] == UNSORTED_FOLDER or keep(below[0])))


def _read_files(root: pathlib.Path, relevant: Callable[[str], bool]) -> Iterator[tuple[str, bytes]]:
    """Yields (posix path inside root, bytes) of the relevant files, in storage order."""
    if root.is_dir():
        for folder, dirs, files in os.walk(root):
            dirs.sort()
            for file in sorted(files):
                name = pathlib.Path(folder, file).relative_to(root).as_posix()
                if relevant(name):
                    yield name, (root / name).read_bytes()
        return
    try:
        if root.name.lower().endswith(".zip"):
            with zipfile.ZipFile(root) as archive:
                for info in archive.infolist():
                    if not info.is_dir() and relevant(info.filename):
                        yield info.filename, archive.read(info)
        else:
            with tarfile.open(root, "r:*") as archive:
                for member in archive:  # stream order: never seek back into the compressed stream
                    if member.isfile() and relevant(member.name):
                        yield member.name, archive.extractfile(member).read()
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as error:
        kind = "truncated" if isinstance(error, EOFError) else "not a readable archive"
        detail = " ".join(str(error).split())  # tarfile's message spans several lines
        raise ValueError(f"image_folder source: '{root}' is {kind} ({type(error).__name__}: {detail})") from None


def _fingerprint(roots: Sequence[pathlib.Path]) -> list[tuple]:
    """(path, size, mtime) of every archive and every file under every folder: changes invalidate caches."""
    stats = []
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for file in files:
            st = file.stat()
            stats.append((str(file.resolve()), st.st_size, st.st_mtime_ns))
    return stats


def _decode_all(roots: Sequence[pathlib.Path], splits: Sequence[str], image_size: int, keep: Callable[[str], bool],
                ) -> dict[str, list[tuple[str, str, np.ndarray]]]:
    """Decodes every image of ``splits`` to (class, path, uint8 HWC), labelling annotated ones."""
    images: dict[str, list[tuple[str, str, np.ndarray]]] = {}
    annotations: dict[str, dict[str, str]] = {}
    seen: dict[str, pathlib.Path] = {}
    first_shape: tuple[str, tuple[int, ...]] | None = None
    for root in roots:
        for name, data in _read_files(root, lambda n: _relevant(n, splits, keep)):
            split, below = _split_of(name)
            key = "/".join((split, *below))
            if key in seen:
                raise ValueError(f"image_folder source: '{key}' is both in '{seen[key]}' and in '{root}'")
            seen[key] = root
            if _is_annotations(below):
                rows = (line.split("\t") for line in data.decode().splitlines() if line.strip())
                annotations.setdefault(split, {}).update((r[0], r[1].strip()) for r in rows)
                continue
            try:
                image = imaging.decode(data, image_size)
            except (UnidentifiedImageError, OSError) as e:
                raise ValueError(f"image_folder source: cannot decode '{name}' in '{root}': {e}") from e
            if first_shape is None:
                first_shape = (key, image.shape)
            elif image.shape != first_shape[1]:
                raise ValueError(f"image_folder source: '{key}' is {image.shape} but '{first_shape[0]}' is "
                                 f"{first_shape[1]}; pass image_size to resize all images to one size")
            images.setdefault(split, []).append((below[0], "/".join(below), image))
    for split, entries in images.items():
        labels = annotations.get(split, {})
        relabelled = []
        for cls, rel, image in entries:
            if cls == UNSORTED_FOLDER and labels:
                file = posixpath.basename(rel)
                if file not in labels:
                    raise ValueError(f"image_folder source: '{split}/{rel}' is not in {split}'s annotations file")
                cls = labels[file]
            if keep(cls):
                relabelled.append((cls, rel, image))
        images[split] = relabelled
    return images


def _stack(entries: list[tuple[str, str, np.ndarray]], class_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Images and int32 labels, ordered by class, then path."""
    index = {name: i for i, name in enumerate(class_names)}
    entries = sorted(entries, key=lambda e: (e[0], e[1]))
    return np.stack([image for _, _, image in entries]), np.array([index[cls] for cls, _, _ in entries], np.int32)


def read_split(path: str, split: str, *, image_size: int = 0) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Images, labels and sorted class names of one split alone (e.g. a test archive on its own)."""
    entries = _decode_all(resolve(path), (split,), image_size, lambda c: True).get(split)
    if not entries:
        raise FileNotFoundError(f"image_folder source: no images in a {split}/ split under '{path}' ({LAYOUT_HELP})")
    class_names = tuple(sorted({cls for cls, _, _ in entries}))
    return (*_stack(entries, class_names), class_names)


def load(path: str, *, image_size: int = 0, classes: Sequence[str] = (), cache_dir: str = "") -> Arrays:
    """Reads an image-folder dataset (module docstring); ``classes`` keeps only those class folders."""
    roots = resolve(path)
    wanted = set(classes)

    def decode() -> Arrays:
        splits = _decode_all(roots, (TRAIN_SPLIT, *TEST_SPLITS), image_size, lambda c: not wanted or c in wanted)
        where = ", ".join(f"'{r}'" for r in roots)
        if not splits.get(TRAIN_SPLIT):
            raise FileNotFoundError(f"image_folder source: no images in a train/ split under {where} ({LAYOUT_HELP})")
        test_split = next((s for s in TEST_SPLITS if splits.get(s)), None)
        if test_split is None:
            raise FileNotFoundError(f"image_folder source: no images in a val/ or test/ split under {where} ({LAYOUT_HELP})")
        class_names = tuple(sorted({cls for cls, _, _ in splits[TRAIN_SPLIT]}))
        missing = sorted(wanted - set(class_names))
        if missing:
            raise ValueError(f"image_folder source: classes {missing[:5]} have no folder in train/ under {where}")
        unknown = sorted({cls for cls, _, _ in splits[test_split]} - set(class_names))
        if unknown:
            raise ValueError(f"image_folder source: {test_split}/ has classes {unknown[:5]} that train/ lacks, under {where}")
        return Arrays(*_stack(splits[TRAIN_SPLIT], class_names), *_stack(splits[test_split], class_names), class_names)

    key = (_fingerprint(roots), image_size, sorted(wanted))
    return cache.cached(cache_dir, "image_folder", key, decode)
