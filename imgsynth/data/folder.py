"""A folder of captioned images → the suite's record layout, as a TFDS builder.

Captions come from `captions.jsonl` in the folder (one `{"file": relative path, "caption": text}`
per line, optionally with a `"label"`: a class name) or, for images it does not list, from a
`.txt` file with the image's name next to it. Labels are all or nothing: when any record has one,
a captioned image without one is an error naming it (label following needs every test label).

What happens to each image (every skip and conversion is counted in `summary`):
  * no caption (or an empty one)                 → skipped, `missing_caption`
  * cannot be opened or fully decoded            → skipped, `corrupt`
  * shorter side < resolution / 2                → skipped, `too_small`
  * 16-bit, 32-bit integer or float pixels       → skipped, `unsupported_mode` (no sane 8-bit
    mapping without knowing the range)
  * grayscale / bilevel                          → replicated to RGB, `grayscale`
  * alpha (RGBA, LA, palette with transparency)  → composited over white, `alpha`
  * palette, CMYK, YCbCr, LAB, HSV               → converted to RGB, `other_mode`
  * EXIF orientation is applied; animations use their first frame.
Kept images are resized (short side to the resolution, antialiased) and centre-cropped. A
deterministic `test_fraction` and `validation_fraction` of the captioned files whose header passes
the checks above (chosen by hash of their relative path) form the test and validation splits; the
rest is train. The label names (or null) are stored in build_summary.json as `labels`.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import re

import tensorflow_datasets as tfds
from PIL import Image, ImageOps

from imgsynth.data import example_proto, records
from imgsynth.data.render import png_bytes

NAME = "captioned_folder"
VERSION = "1.1.0"
CAPTIONS_FILE = "captions.jsonl"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_GRAY_MODES = ("1", "L")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_OTHER_MODES = ("P", "CMYK", "YCbCr", "LAB", "HSV")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_]*$")


class SkipImage(Exception):
    """An image that cannot become a record; `reason` is its summary key."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclasses.dataclass
class FolderConfig(tfds.core.BuilderConfig):
    src: str = ""
    resolution: int = 32
    validation_fraction: float = 0.05
    test_fraction: float = 0.1


def config_name(name: str, resolution: int) -> str:
    if not _NAME_RE.match(name or ""):
        raise ValueError(f"folder dataset name {name!r} must be letters, digits and underscores")
    return f"{name}_r{resolution}"


Item = tuple[str, str, str]   # (relative path, caption, label or "")


def scan(src: str) -> tuple[list[Item], collections.Counter]:
    """Captioned images under `src` as sorted (relative path, caption, label), and what was
    skipped; a label missing from some captioned images is a ValueError naming the first."""
    if not os.path.isdir(src):
        raise FileNotFoundError(f"image folder {src!r} does not exist")
    images = []
    for root, dirs, files in os.walk(src):
        dirs.sort()
        images += [os.path.relpath(os.path.join(root, f), src) for f in sorted(files)
                   if f.lower().endswith(IMAGE_EXTENSIONS)]
    listed, labels = {}, {}
    skipped = collections.Counter()
    jsonl = os.path.join(src, CAPTIONS_FILE)
    if os.path.exists(jsonl):
        with open(jsonl) as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                    rel = os.path.normpath(entry["file"])
                    listed[rel] = str(entry["caption"]).strip()
                    if str(entry.get("label", "")).strip():
                        labels[rel] = str(entry["label"]).strip()
                except (ValueError, KeyError, TypeError):
                    skipped["bad_caption_line"] += 1
    skipped["missing_file"] += len(set(listed) - set(images))
    captioned = []
    for rel in images:
        caption = listed.get(rel)
        if caption is None:
            txt = os.path.join(src, os.path.splitext(rel)[0] + ".txt")
            if os.path.exists(txt):
                with open(txt, encoding="utf-8", errors="replace") as f:
                    caption = f.read().strip()
        if caption:
            captioned.append((rel, caption, labels.get(rel, "")))
        else:
            skipped["missing_caption"] += 1
    unlabelled = [rel for rel, _, label in captioned if not label]
    if labels and unlabelled:
        raise ValueError(f"{jsonl}: field 'label' is missing for {len(unlabelled)} of "
                         f"{len(captioned)} captioned images (first: {unlabelled[0]}); give every "
                         "record a label or none")
    return captioned, +skipped


def split_files(items: list[Item], validation_fraction: float, test_fraction: float = 0.0
                ) -> dict[str, list[Item]]:
    """The files whose path hashes lowest form test, the next ones validation: stable, and at
    least one image for each fraction asked for; a folder too small to leave a train split is
    a ValueError."""
    for key, value in (("validation_fraction", validation_fraction),
                       ("test_fraction", test_fraction)):
        if not 0 <= value < 1:
            raise ValueError(f"{key}={value} must be in [0, 1)")
    ranked = sorted(items, key=lambda it: hashlib.sha256(it[0].encode()).hexdigest())
    sizes = [max(round(f * len(items)), 1) if f > 0 else 0
             for f in (test_fraction, validation_fraction)]
    if sum(sizes) >= len(items):
        raise ValueError(f"{len(items)} usable images cannot fill a test split of {sizes[0]}, a "
                         f"validation split of {sizes[1]} and a train split; add images or lower "
                         "--test_fraction / --validation_fraction")
    test = {it[0] for it in ranked[:sizes[0]]}
    validation = {it[0] for it in ranked[sizes[0]:sum(sizes)]}
    return {"train": [it for it in items if it[0] not in test | validation],
            "validation": [it for it in items if it[0] in validation],
            "test": [it for it in items if it[0] in test]}


def _check_header(size: tuple[int, int], mode: str, path: str, resolution: int) -> None:
    if min(size) < resolution / 2:
        raise SkipImage("too_small", f"{path}: {size[0]}x{size[1]}")
    if mode not in ("RGB",) + _GRAY_MODES + _ALPHA_MODES + _OTHER_MODES:
        raise SkipImage("unsupported_mode", f"{path}: mode {mode}")


def probe(path: str, resolution: int) -> None:
    """Reads only the header: raises SkipImage for files that are clearly unusable, so the
    split assignment counts (almost) only images that will be written."""
    try:
        with Image.open(path) as im:
            size, mode = im.size, im.mode
    except Exception as e:  # PIL raises many types for bad files
        raise SkipImage("corrupt", f"{path}: {e}") from e
    _check_header(size, mode, path, resolution)


def load_image(path: str, resolution: int) -> tuple[Image.Image, str | None]:
    """The image as RGB and the conversion applied (None for none), or SkipImage."""
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
    except Exception as e:  # PIL raises many types for bad files
        raise SkipImage("corrupt", f"{path}: {e}") from e
    _check_header(im.size, im.mode, path, resolution)
    mode = im.mode
    if mode == "RGB":
        return im, None
    if mode in _GRAY_MODES:
        return im.convert("RGB"), "grayscale"
    if mode == "P" and "transparency" in im.info:
        im, mode = im.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB"), "alpha"
    if mode in _OTHER_MODES:
        return im.convert("RGB"), "other_mode"
    raise AssertionError(f"mode {mode} passed the header check but has no conversion")


class CaptionedFolder(records.OfflineBuilder):
    """Images and captions from a local folder, in the shapes dataset's record layout."""

    name = NAME
    VERSION = tfds.core.Version(VERSION)
    RELEASE_NOTES = {str(VERSION): "First release."}

    def __init__(self, *, config: FolderConfig, **kwargs):
        super().__init__(config=config, **kwargs)
        self.summary = {"found": 0, "written": {}, "skipped": collections.Counter(),
                        "converted": collections.Counter()}

    def _info(self) -> tfds.core.DatasetInfo:
        return records.OfflineInfo(
            builder=self,
            description=f"Captioned images from {self.builder_config.src}.",
            features=tfds.features.FeaturesDict({
                **records.features(self.builder_config.resolution),
                "label": tfds.features.Text()}),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        c = self.builder_config
        captioned, skipped = scan(c.src)
        self.summary["found"] = len(captioned) + skipped["missing_caption"]
        items = []
        for item in captioned:
            try:
                probe(os.path.join(c.src, item[0]), c.resolution)
                items.append(item)
            except SkipImage as skip:
                skipped[skip.reason] += 1
        self.summary["skipped"].update(skipped)
        if not items:
            raise ValueError(f"{c.src}: no usable captioned images ({dict(skipped)}); captions go "
                             f"in {CAPTIONS_FILE} or in a .txt file next to each image")
        labels = sorted({label for _, _, label in items})
        self.summary["labels"] = labels if labels != [""] else None
        return {split: self._generate_examples(split, files) for split, files
                in split_files(items, c.validation_fraction, c.test_fraction).items() if files}

    def _generate_examples(self, split: str, files: list[Item]):
        c = self.builder_config
        written = 0
        for rel, caption, label in files:
            try:
                image, conversion = load_image(os.path.join(c.src, rel), c.resolution)
            except SkipImage as skip:
                self.summary["skipped"][skip.reason] += 1
                continue
            if conversion:
                self.summary["converted"][conversion] += 1
            written += 1
            yield rel, example_proto.record(png_bytes(records.fit_image(image, c.resolution)),
                                            caption, "none", records.empty_objects(), label)
        self.summary["written"][split] = written
        if not written:
            raise ValueError(
                f"{c.src}: no usable image in the {split} split ({len(files)} captioned, all "
                f"skipped: {dict(self.summary['skipped'])})")
