"""Where a neuron's text labels come from: the image–concept matrix P of a dissection.

Dissection (DISCOVER §4, after CLIP-Dissect) needs, for every probe image i and concept c,
a score P[i, c] that says how much image i shows concept c.  Two backends make it:

``annotated`` (the offline default) — concepts whose presence is *known* for every probe
image, as in classic network dissection (Bau et al., CVPR 2017: a probe set with concept
annotations):

* the **class names** (an image shows its own class);
* **attribute concepts** of the classes, a fixed table (:data:`FASHION_MNIST_ATTRIBUTES`,
  concept → the classes that have it; an image shows the attributes of its class), which a
  YAML file can replace (``concept: [class, …]``);
* **visual concepts** computed from the pixels (:func:`visual_measures`): bright, dark,
  large, small, textured, wide, tall, symmetric.  Each is a measure of the object (the
  pixels above :data:`OBJECT_THRESHOLD`), and an image shows the concept when its measure
  lies in the top ``quantile`` of the probe set (bottom for dark, small, tall).

P is then 0/1.  ``clip`` — CLIP's image–text cosine similarities (CLIP-Dissect; the paper uses
CLIP ViT-B/16) through ``open_clip``, for users who have CLIP weights on disk; nothing is ever
downloaded.  Both backends also say which concepts belong to each class
(:meth:`class_concepts`), which the dissection-quality score needs.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ConceptError", "FASHION_MNIST_ATTRIBUTES", "VISUAL_CONCEPTS", "OBJECT_THRESHOLD", "visual_measures",
           "visual_concepts", "load_attribute_table", "AnnotatedConcepts", "ClipConcepts", "BACKENDS"]


class ConceptError(ValueError):
    """A concept backend cannot be built as configured; the message names the option and the fix."""


#: Attribute concepts of the Fashion-MNIST classes: concept → the classes that have it.  Chosen
#: from what the class names and the dataset's product photos show (Xiao et al. 2017, Table 1):
#: each class has 2–4 attributes, and most attributes are shared by 2–4 classes, so that a
#: neuron that responds to several related classes can still get a fitting label.
FASHION_MNIST_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "footwear": ("Sandal", "Sneaker", "Ankle boot"),
    "upper body": ("T-shirt/top", "Pullover", "Coat", "Shirt"),
    "long sleeves": ("Pullover", "Coat", "Shirt"),
    "short sleeves": ("T-shirt/top",),
    "worn on legs": ("Trouser",),
    "two legs": ("Trouser",),
    "one piece": ("Dress",),
    "flared hem": ("Dress",),
    "front opening": ("Coat", "Shirt"),
    "collar": ("Shirt", "Coat"),
    "has a heel": ("Sandal", "Ankle boot"),
    "covers the ankle": ("Ankle boot",),
    "straps": ("Sandal", "Bag"),
    "laced": ("Sneaker",),
    "carried": ("Bag",),
    "has a handle": ("Bag",),
}

#: visual concepts, in the column order of :func:`visual_concepts`: (name, measure, which tail)
VISUAL_CONCEPTS: tuple[tuple[str, str, str], ...] = (
    ("bright", "intensity", "high"), ("dark", "intensity", "low"), ("large", "area", "high"),
    ("small", "area", "low"), ("textured", "texture", "high"), ("wide", "aspect", "high"),
    ("tall", "aspect", "low"), ("symmetric", "symmetry", "high"))

#: a pixel belongs to the object when its (channel-mean) value exceeds this
OBJECT_THRESHOLD = 0.1


def visual_measures(images: Tensor) -> dict[str, Tensor]:
    """Per-image measures of the object in ``images`` (N, C, H, W) in [0, 1], each (N,):

    ``intensity`` mean value of the object's pixels; ``area`` the object's share of the image;
    ``texture`` mean |difference| between neighbouring object pixels (horizontal and vertical);
    ``aspect`` log(width / height) of the object's bounding box; ``symmetry`` 1 − Σ|x − mirror(x)| /
    Σ(x + mirror(x)), the mirror taken about the image's vertical centre line (1: symmetric).
    An image without object pixels has intensity, area, texture and aspect 0, symmetry 1.
    """
    if images.dim() != 4:
        raise ValueError(f"visual_measures expects images (N, C, H, W), got {tuple(images.shape)}")
    x = images.detach().float().mean(1)                                  # (N, H, W)
    mask = (x > OBJECT_THRESHOLD).float()
    n_obj = mask.sum((1, 2))
    intensity = (x * mask).sum((1, 2)) / n_obj.clamp_min(1)
    area = n_obj / mask[0].numel()
    dh = (x[:, :, 1:] - x[:, :, :-1]).abs() * mask[:, :, 1:] * mask[:, :, :-1]
    dv = (x[:, 1:] - x[:, :-1]).abs() * mask[:, 1:] * mask[:, :-1]
    pairs = (mask[:, :, 1:] * mask[:, :, :-1]).sum((1, 2)) + (mask[:, 1:] * mask[:, :-1]).sum((1, 2))
    texture = (dh.sum((1, 2)) + dv.sum((1, 2))) / pairs.clamp_min(1)
    rows, cols = mask.amax(2), mask.amax(1)                              # (N, H), (N, W): rows/cols with object

    def extent(v: Tensor) -> Tensor:
        idx = torch.arange(v.shape[1], dtype=torch.float32)
        first = torch.where(v > 0, idx, torch.full_like(idx, float("inf"))).amin(1)
        last = torch.where(v > 0, idx, torch.full_like(idx, -1.0)).amax(1)
        return (last - first + 1).clamp_min(0).nan_to_num(0.0, posinf=0.0, neginf=0.0)

    width, height = extent(cols), extent(rows)
    aspect = torch.where(n_obj > 0, (width.clamp_min(1) / height.clamp_min(1)).log(), torch.zeros_like(width))
    mirrored = x.flip(2)
    symmetry = 1 - (x - mirrored).abs().sum((1, 2)) / (x + mirrored).sum((1, 2)).clamp_min(1e-12)
    symmetry = torch.where(n_obj > 0, symmetry, torch.ones_like(symmetry))
    return {"intensity": intensity, "area": area, "texture": texture, "aspect": aspect, "symmetry": symmetry}


def visual_concepts(images: Tensor, quantile: float = 0.25) -> Tensor:
    """(N, len(VISUAL_CONCEPTS)) in {0, 1}: image i shows a concept when its measure lies in the
    top ``quantile`` of these images ("high" concepts) or in the bottom ``quantile`` ("low")."""
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must lie in (0, 1), got {quantile}")
    m = visual_measures(images)
    cols = []
    for _, measure, tail in VISUAL_CONCEPTS:
        v = m[measure]
        if tail == "high":
            cols.append(v >= torch.quantile(v, 1 - quantile))
        else:
            cols.append(v <= torch.quantile(v, quantile))
    return torch.stack(cols, 1).float()


def load_attribute_table(path: str | os.PathLike, classes: Sequence[str],
                         option: str = "evaluate.options.dissection.concepts") -> dict[str, tuple[str, ...]]:
    """A YAML table ``concept: [class, …]`` of attribute concepts, checked against ``classes``."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConceptError(f"{option}: the concept file {p} does not exist; give the path of a YAML table "
                           f"`concept: [class, …]` (relative to the project root), or '' for the built-in table")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConceptError(f"{option}: {p} is not valid YAML ({e})") from e
    if not isinstance(raw, dict) or not raw:
        raise ConceptError(f"{option}: {p} must be a non-empty mapping `concept: [class, …]`")
    return check_attribute_table(raw, classes, f"{option} ({p})")


def check_attribute_table(table: Mapping[str, Sequence[str]], classes: Sequence[str],
                          where: str = "attribute table") -> dict[str, tuple[str, ...]]:
    out = {}
    for concept, members in table.items():
        if not isinstance(concept, str) or not isinstance(members, (list, tuple)) or not members:
            raise ConceptError(f"{where}: entry {concept!r} must map a concept name to a non-empty list of classes")
        unknown = [c for c in members if c not in classes]
        if unknown:
            raise ConceptError(f"{where}: concept {concept!r} names unknown class(es) {unknown}; "
                               f"the dataset's classes are: {', '.join(classes)}")
        if concept in classes:
            raise ConceptError(f"{where}: {concept!r} is a class name (class names are concepts already)")
        out[concept] = tuple(members)
    return out


class AnnotatedConcepts:
    """Class names + attribute table + visual concepts; P[i, c] ∈ {0, 1} (module docstring)."""

    name = "annotated"

    def __init__(self, classes: Sequence[str], attributes: Mapping[str, Sequence[str]] | None = None,
                 visual: bool = True, quantile: float = 0.25):
        self.classes = tuple(classes)
        if attributes is None:
            attributes = FASHION_MNIST_ATTRIBUTES if set(self.classes) >= _fmnist_classes() else {}
        self.attributes = check_attribute_table(attributes, self.classes)
        self.visual, self.quantile = visual, quantile
        self.concepts = list(self.classes) + list(self.attributes) + (
            [v[0] for v in VISUAL_CONCEPTS] if visual else [])
        self.kinds = (["class"] * len(self.classes) + ["attribute"] * len(self.attributes)
                      + (["visual"] * len(VISUAL_CONCEPTS) if visual else []))

    def class_concepts(self, k: int) -> set[str]:
        """The concepts of class ``k``: its name and its attributes."""
        name = self.classes[k]
        return {name} | {a for a, members in self.attributes.items() if name in members}

    def similarity(self, images: Tensor, labels: Tensor) -> Tensor:
        """P (N, concepts) for probe ``images`` with their class ``labels``."""
        n = len(images)
        onehot = F.one_hot(labels.long(), len(self.classes)).float()
        member = torch.tensor([[float(c in m) for m in self.attributes.values()] for c in self.classes])
        parts = [onehot, onehot @ member if len(self.attributes) else torch.zeros(n, 0)]
        if self.visual:
            parts.append(visual_concepts(images, self.quantile))
        return torch.cat(parts, 1)


def _fmnist_classes() -> set[str]:
    from ...core.data import FASHION_MNIST_CLASSES
    return set(FASHION_MNIST_CLASSES)


class ClipConcepts:
    """CLIP image–text cosine similarities (CLIP-Dissect) from an ``open_clip`` model whose weights
    are a file on disk (``weights``); ``model`` may instead be an open_clip CLIP model itself."""

    name = "clip"

    def __init__(self, concepts: Sequence[str], classes: Sequence[str], model_name: str = "ViT-B-16",
                 weights: str | os.PathLike = "", model=None, device: torch.device | str = "cpu",
                 batch_size: int = 64, option: str = "evaluate.options.dissection"):
        import open_clip

        self.concepts = [str(c) for c in concepts]
        if not self.concepts:
            raise ConceptError(f"{option}.concepts: the CLIP backend needs a list of concepts "
                               "(a text file, one per line)")
        self.classes, self.device, self.batch_size = tuple(classes), torch.device(device), batch_size
        self.kinds = ["class" if c in self.classes else "concept" for c in self.concepts]
        if model is None:
            if model_name not in open_clip.list_models():
                raise ConceptError(f"{option}.clip_model: {model_name!r} is not an open_clip architecture; "
                                   f"known: {', '.join(open_clip.list_models()[:12])}, … (open_clip.list_models())")
            path = Path(weights) if weights else None
            if path is None or not path.is_file():
                raise ConceptError(
                    f"{option}.clip_weights: {'no file given' if path is None else f'{path} does not exist'}. CLIP "
                    f"weights are never downloaded here: put an open_clip checkpoint of {model_name} on disk (e.g. "
                    f"open_clip_pytorch_model.bin of laion/CLIP-{model_name}-…) and give its path, or use "
                    f"backend: annotated")
            model = open_clip.create_model(model_name, pretrained=str(path), device=self.device)
            self.tokenizer = open_clip.get_tokenizer(model_name)
        else:
            self.tokenizer = open_clip.get_tokenizer("")  # the CLIP BPE tokenizer shipped with open_clip
            model = model.to(self.device)
        self.model = model.eval()
        size = self.model.visual.image_size
        self.image_size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        cfg = getattr(self.model.visual, "preprocess_cfg", None) or {}
        self.mean = torch.tensor(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.get("std", open_clip.OPENAI_DATASET_STD)).view(1, 3, 1, 1)

    def class_concepts(self, k: int) -> set[str]:
        """The class's name and its attributes from the built-in table, where they are in the concept list."""
        name = self.classes[k]
        mine = {name} | {a for a, m in FASHION_MNIST_ATTRIBUTES.items() if name in m}
        return mine & set(self.concepts)

    def _prepare(self, images: Tensor) -> Tensor:
        x = images.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=self.image_size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        return ((x - self.mean) / self.std).to(self.device)

    @torch.no_grad()
    def similarity(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        """P (N, concepts): cosine similarity of CLIP's image and concept-text embeddings."""
        text = F.normalize(self.model.encode_text(self.tokenizer(self.concepts).to(self.device)).float(), dim=-1)
        feats = [F.normalize(self.model.encode_image(self._prepare(images[i:i + self.batch_size])).float(), dim=-1)
                 for i in range(0, len(images), self.batch_size)]
        return (torch.cat(feats) @ text.T).cpu()


#: backend name → class (the ``backend`` option of the dissection metric)
BACKENDS = {"annotated": AnnotatedConcepts, "clip": ClipConcepts}
