"""`config.data`, read once and checked, so a bad data config fails before anything is built."""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

NAMES = ("shapes", "folder", "tfds")
TOKENIZERS = ("word", "byte")
SHAPES_RESOLUTIONS = (16, 32, 64)


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """The data keys of a run's config (`config.data`); see docs/data.md for each."""
    name: str = "shapes"
    data_dir: str = ""
    resolution: int = 32
    builder_config: str = ""  # shapes: 'r32', 'r32_small', 'r32_tiny', ...; '' → f"r{resolution}"
    text_max_len: int = 16
    tokenizer: str = "word"
    src: str = ""  # folder: the image folder
    folder_name: str = ""  # folder: the dataset's name under data_dir
    tfds_name: str = ""  # tfds: e.g. 'cifar10' or 'coco_captions/2017'
    image_key: str = "image"
    text_key: str = ""  # tfds: caption field; '/' walks into nested features ('captions/text')
    label_key: str = ""  # tfds: class-label field, turned into text by caption_template
    caption_template: str = "a photo of a {label}"

    @classmethod
    def of(cls, config: Any) -> DataSpec:
        """From a `config.data` ConfigDict, a dict, or a DataSpec; unknown keys are ignored
        (config.data may carry keys for other stages)."""
        if isinstance(config, DataSpec):
            return config
        if not isinstance(config, Mapping) and hasattr(config, "to_dict"):
            config = config.to_dict()
        if not isinstance(config, Mapping):
            raise TypeError(f"expected config.data (ConfigDict or dict), got {type(config)}")
        values = {f.name: config[f.name] for f in dataclasses.fields(cls)
                  if f.name in config and config[f.name] is not None}
        for key in ("data_dir", "src"):
            if key in values:
                values[key] = os.path.expandvars(os.path.expanduser(str(values[key])))
        return cls(**values).checked()

    @property
    def shapes_config(self) -> str:
        return self.builder_config or f"r{self.resolution}"

    def checked(self) -> DataSpec:
        def fail(msg):
            raise ValueError(f"config.data: {msg}")

        if self.name not in NAMES:
            fail(f"name={self.name!r} must be one of {NAMES}")
        if self.tokenizer not in TOKENIZERS:
            fail(f"tokenizer={self.tokenizer!r} must be one of {TOKENIZERS}")
        if int(self.text_max_len) < 3:
            fail(f"text_max_len={self.text_max_len} must be >= 3 (bos, a token, eos)")
        if int(self.resolution) < 4:
            fail(f"resolution={self.resolution} is too small")
        if self.name in ("shapes", "folder") and not self.data_dir:
            fail(f"data_dir is required for name={self.name!r}")
        if self.name == "shapes":
            from imgsynth.data import shapes  # TFDS import only when needed
            if self.shapes_config not in shapes.CONFIG_NAMES:
                fail(f"builder_config={self.shapes_config!r} is not one of {shapes.CONFIG_NAMES}")
            config_res = int(self.shapes_config[1:].split("_")[0])
            if config_res != int(self.resolution):
                fail(f"builder_config={self.shapes_config!r} is {config_res} px but resolution="
                     f"{self.resolution}; set both to the same resolution")
        if self.name == "folder":
            from imgsynth.data.folder import config_name
            if not self.folder_name:
                fail("folder_name is required for name='folder'")
            config_name(self.folder_name, self.resolution)  # raises on a bad name
        if self.name == "tfds":
            if not self.tfds_name:
                fail("tfds_name is required for name='tfds'")
            if bool(self.text_key) == bool(self.label_key):
                fail("set exactly one of text_key and label_key for name='tfds'")
            if self.label_key and "{label}" not in self.caption_template:
                fail(f"caption_template={self.caption_template!r} must contain '{{label}}'")
        return self
