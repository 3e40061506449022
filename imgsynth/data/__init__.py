"""Datasets and input pipeline: captioned shapes, image folders, mapped TFDS datasets, caption
tokenizers and grain iterators (see docs/data.md).

Nothing is imported here: generation workers import `imgsynth.data.render` alone and must not pay
for TensorFlow Datasets.
"""
