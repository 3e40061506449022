"""What evaluating a run needs, loaded together: the run's decoder, the dataset's metric models
(alignment model always; judge for datasets with scenes; label classifier for labelled data;
Inception and CLIP when their weights are given), real images, the ceilings each instrument sets
(and the false positives it gives images that carry no scene), whether the autoencoder meets the
quality bar a dataset without a shipped one is held to (`quality_bar`), and, for every metric
the dataset cannot support, the reason."""
from __future__ import annotations

import dataclasses
import hashlib
import os

import jax
import numpy as np

from imgsynth import io
from imgsynth.data import images as images_lib
from imgsynth.metrics import _data, alignment as alignment_lib, corruptions, frechet
from imgsynth.metrics import inception
from imgsynth.metrics import judge as judge_lib, labels as labels_lib, prompt_following
from imgsynth.models import autoencoder_files, clip as clip_lib
from imgsynth.models.clip_tokenizer import ClipTokenizer

NO_SCENES = "the dataset stores no scenes (only the shapes dataset does)"
NO_LABELS = ("the dataset has no labels (a TFDS label_key, or a 'label' per record in the "
             "folder's captions.jsonl)")
NO_INCEPTION = ("no Inception weights given (--inception_weights or eval.inception_weights; "
                "convert pytorch-fid's checkpoint once with `python -m imgsynth.metrics.inception "
                "--convert pt_inception-2015-12-05-6726825d.pth --out inception_fid.npz`)")
NO_CLIP = ("no CLIP weights and vocabulary given (--clip_weights and --clip_vocab, or "
           "eval.clip_weights and eval.clip_vocab; convert OpenAI's checkpoint once with "
           "`python -m imgsynth.models.clip --convert ViT-B-32.pt --out clip_vit_b32.npz`)")

# The autoencoder quality bar (docs/autoencoders.md#own-data): its reconstructions of real
# evaluation images must keep the class the label classifier reads in the originals (label
# following ≥ 0.9 × the classifier's on the originals) and sit no farther from them in the
# alignment model's features than a second real sample does (fd_align ≤ the real-vs-real floor);
# without either instrument, validation PSNR ≥ 25 dB.
BAR = {"label_following_ratio": 0.9, "fd_align_ratio": 1.0, "psnr": 25.0}


def evaluation_records(dataset: _data.Dataset, n: int) -> _data.Split:
    """The first `n` records of the evaluation split: the real images every generated set is
    compared with (and, for data without scenes, the prompts). Too few is an error naming the
    dataset, raised before any sampling."""
    split = dataset.eval_split()
    real = dataset.read(split, limit=n)
    if len(real.captions) < n:
        raise ValueError(f"{dataset.name}: evaluation asks for {n} samples but its {split} split "
                         f"holds {len(real.captions)} records; lower --num_samples "
                         "(eval.num_samples) or rebuild with a larger test split")
    return real


@dataclasses.dataclass
class Instruments:
    autoencoder: object
    autoencoder_info: dict
    autoencoder_dir: str
    dataset: _data.Dataset
    alignment: alignment_lib.Alignment
    judge: judge_lib.Judge | None = None
    labels: labels_lib.LabelClassifier | None = None
    inception: inception.InceptionV3FID | None = None
    clip: tuple[clip_lib.CLIP, ClipTokenizer] | None = None
    unavailable: dict[str, str] = dataclasses.field(default_factory=dict)

    def real(self, n: int) -> _data.Split:
        return evaluation_records(self.dataset, n)

    def _identity(self) -> str:
        """A short hash of what the metric models were measured to be: a cached ceiling computed
        with other instruments (a retrained judge) is never read back."""
        infos = [m.info if m is not None else None for m in (self.alignment, self.judge,
                                                               self.labels)]
        return hashlib.sha256(io.json_text(infos).encode()).hexdigest()[:10]

    def costly_ceilings(self, n: int) -> dict:
        """`autoencoder_ceilings` and `false_positive_ceilings` of the first `n` evaluation
        records, computed once per (autoencoder, dataset, instruments) and cached beside the
        autoencoder."""
        path = os.path.join(self.autoencoder_dir,
                            f"ceilings-v4-{self.dataset.key}-{n}-{self._identity()}.json")
        cached = io.read_json(path)
        if cached is not None:
            return cached
        real = self.real(n)
        out = {**self.autoencoder_ceilings(real), **self.false_positive_ceilings(real)}
        io.write_json(path, out)
        return out

    def autoencoder_ceilings(self, real: _data.Split) -> dict:
        """The metrics on autoencoder reconstructions of real test images (with the judge's
        per-attribute accuracy where the data stores scenes): the best a generator in this latent
        space can score."""
        recon = reconstructions(self.autoencoder, real.images)
        out = {"autoencoder_alignment_score": alignment_lib.alignment_score(
            self.alignment, recon, real.captions),
               "autoencoder_fd_align": frechet.fd(self.alignment.image_features(recon),
                                                  self.alignment.image_features(real.images))}
        if self.judge is not None:
            out |= prompt_following.reconstruction_ceilings(self.judge, real, recon)
        if self.labels is not None:
            out["autoencoder_label_following"] = self.labels.following(recon, real.labels)
        return out

    def false_positive_ceilings(self, real: _data.Split, seed: int = 0) -> dict:
        """What the judge, the alignment model and the label classifier credit in images that
        carry no scene: the real images destroyed (`corruptions.destroyed`) and as many images
        this autoencoder decodes from random latents or tokens, each read against the real
        image's caption (and label)."""
        destroyed = corruptions.destroyed(real.images, seed)
        destroyed["autoencoder_random_decodes"] = corruptions.random_decodes(
            self.autoencoder, len(real.images), self.dataset.resolution, seed)
        out = alignment_lib.false_positive_rates(self.alignment, real.images, real.captions,
                                                 destroyed)
        if self.judge is not None:
            rates = prompt_following.false_positive_rates(self.judge, real, destroyed)
            out |= {f"judge_{k}": v for k, v in rates.items()}
        if self.labels is not None:   # label following of garbage: at most chance
            per = {k: self.labels.following(x, real.labels) for k, x in destroyed.items()}
            out |= {"label_false_positive": max(per.values()),
                    "label_false_positive_per_corruption": per,
                    "label_chance": 1 / len(self.labels.names)}
        return out

    def real_floors(self, real_images: np.ndarray, seed: int = 0) -> dict:
        """fd_align and KID between the real evaluation images and as many real training
        images: the score of a generator that draws real images (finite-sample floor)."""
        other = self.dataset.read("train", limit=len(real_images)).images
        a, b = (self.alignment.image_features(x) for x in (real_images, other))
        kid = frechet.kid(a, b, subset_size=100, seed=seed)
        return {"fd_align_real_floor": frechet.fd(a, b), "kid_real_floor": kid.mean}

    def quality_bar(self, n: int) -> dict:
        """Whether the autoencoder meets `BAR` on the first `n` evaluation records: each measure
        (`measured`), its bar and `met`."""
        real = self.real(n)
        recon = reconstructions(self.autoencoder, real.images)
        measured = {"fd_align_ratio": frechet.fd(
            self.alignment.image_features(recon), self.alignment.image_features(real.images))
            / self.real_floors(real.images)["fd_align_real_floor"]}
        if self.labels is not None:
            on_real = self.labels.following(real.images, real.labels)
            measured["label_following_ratio"] = (self.labels.following(recon, real.labels)
                                                 / max(on_real, 1e-12))
        return bar_verdict(measured, self.autoencoder_info["validation"].get("psnr"))

    def ceilings(self, real_images: np.ndarray) -> dict:
        n = len(real_images)
        out = {**self.costly_ceilings(n), **self.real_floors(real_images),
               "alignment_retrieval_accuracy": self.alignment.retrieval_accuracy,
               "autoencoder_psnr": self.autoencoder_info["validation"].get("psnr")}
        if self.judge is not None:
            out |= {"judge_prompt_following": self.judge.ceiling,
                    "judge_fd_real_floor": (self.judge.info.get("fd_real_floor") or {}).get("value")}
        if self.labels is not None:
            out["label_classifier_accuracy"] = self.labels.accuracy
        return out


def bar_verdict(measured: dict, psnr: float | None) -> dict:
    """`measured` (ratios named as in `BAR`) against `BAR`; PSNR decides only without them."""
    measured = {**measured, "psnr": psnr}
    judged = [k for k in BAR if k != "psnr" and k in measured] or ["psnr"]
    ok = {k: measured[k] is not None and (measured[k] <= BAR[k] if k == "fd_align_ratio"
                                          else measured[k] >= BAR[k]) for k in judged}
    return {"measured": measured, "bar": {k: BAR[k] for k in judged}, "passed": ok,
            "met": all(ok.values())}


def _weights_file(path: str, load):
    """`load(path)`, with an architecture mismatch named by the file."""
    try:
        return load(path)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


@dataclasses.dataclass
class External:
    """The optional evaluators with published weights the user gives: loaded (and their files
    checked against the architecture) before any sampling."""
    inception: inception.InceptionV3FID | None = None
    clip: tuple[clip_lib.CLIP, ClipTokenizer] | None = None
    unavailable: dict[str, str] = dataclasses.field(default_factory=dict)


def load_external(inception_weights: str = "", clip_weights: str = "",
                  clip_vocab: str = "") -> External:
    out = External()
    if inception_weights:
        out.inception = _weights_file(inception_weights, inception.load_inception)
    else:
        out.unavailable["inception_fid"] = NO_INCEPTION
    if clip_weights and clip_vocab:
        out.clip = (_weights_file(clip_weights, clip_lib.load_clip), ClipTokenizer(clip_vocab))
    elif clip_weights or clip_vocab:
        raise ValueError("the CLIP score needs both --clip_weights and --clip_vocab")
    else:
        out.unavailable["clip_score"] = NO_CLIP
    return out


def load(autoencoder_dir: str, kind: str, dataset: _data.Dataset,
         external: External | None = None) -> Instruments:
    """Loads (never trains) the instruments; a clear error names how each trained one is made."""
    external = external or load_external()
    model, info = autoencoder_files.load(autoencoder_dir, kind=kind)
    out = Instruments(model, info, autoencoder_dir, dataset, alignment_lib.load_alignment(dataset),
                      inception=external.inception, clip=external.clip,
                      unavailable=dict(external.unavailable))
    if dataset.has_scenes:
        out.judge = judge_lib.load_judge(dataset.spec.data_dir, dataset.spec.shapes_config)
    else:
        out.unavailable |= {"prompt_following": NO_SCENES, "fd_judge": NO_SCENES}
    if dataset.label_names():
        out.labels = labels_lib.load_labels(dataset)
    else:
        out.unavailable["label_following"] = NO_LABELS
    return out


def reconstructions(autoencoder, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """uint8 images → uint8 round trips through `autoencoder` (encode, decode), in batches."""
    roundtrip = jax.jit(lambda x: autoencoder.decode_latents(autoencoder.encode_latents(x)))
    return np.concatenate([
        images_lib.to_uint8(roundtrip(images_lib.to_float(images[i:i + batch_size])))
        for i in range(0, len(images), batch_size)])
