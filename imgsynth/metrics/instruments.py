"""What evaluating a run needs, loaded together: the run's decoder, the dataset's judge and
alignment model, real test images, and the ceilings each instrument sets."""
from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np

from imgsynth import io
from imgsynth.data import images as images_lib
from imgsynth.metrics import _data, alignment as alignment_lib, judge as judge_lib
from imgsynth.metrics import prompt_following
from imgsynth.models import autoencoder_files


@dataclasses.dataclass
class Instruments:
    autoencoder: object
    autoencoder_info: dict
    autoencoder_dir: str
    judge: object
    alignment: object
    data_dir: str
    builder_config: str

    def decode(self, latents):
        return self.autoencoder.decode_latents(latents)

    def real_images(self, n: int) -> np.ndarray:
        return _data.read_split(self.data_dir, self.builder_config, "test", limit=n).images

    def autoencoder_ceilings(self, n: int) -> dict:
        """The judge on autoencoder reconstructions of real test images: the best a generator in
        this latent space can score, with per-attribute accuracy. Computed once per (autoencoder,
        dataset) and cached."""
        path = os.path.join(self.autoencoder_dir, f"ceilings-v2-{self.builder_config}-{n}.json")
        cached = io.read_json(path)
        if cached is not None:
            return cached
        real = _data.read_split(self.data_dir, self.builder_config, "test", limit=n)
        roundtrip = jax.jit(lambda x: self.decode(self.autoencoder.encode_latents(x)))
        recon = np.concatenate([
            images_lib.to_uint8(roundtrip(images_lib.to_float(real.images[i:i + 256])))
            for i in range(0, len(real.images), 256)])
        out = prompt_following.reconstruction_ceilings(self.judge, real, recon)
        io.write_json(path, out)
        return out

    def ceilings(self, n: int) -> dict:
        return {**self.autoencoder_ceilings(n),
                "judge_prompt_following": self.judge.ceiling,
                "judge_fd_real_floor": (self.judge.info.get("fd_real_floor") or {}).get("value"),
                "alignment_retrieval_accuracy": self.alignment.retrieval_accuracy,
                "autoencoder_psnr": self.autoencoder_info["validation"].get("psnr")}


def load(autoencoder_dir: str, kind: str, data_dir: str, builder_config: str) -> Instruments:
    """Loads (never trains) the instruments; a clear error names the command that makes each."""
    model, info = autoencoder_files.load(autoencoder_dir, kind=kind)
    return Instruments(model, info, autoencoder_dir,
                       judge_lib.load_judge(data_dir, builder_config),
                       alignment_lib.load_alignment(data_dir, builder_config),
                       data_dir, builder_config)
