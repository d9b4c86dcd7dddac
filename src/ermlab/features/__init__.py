"""Image features from before neural networks, and the linear classifiers fed with them.

Extractors map a batch of images (N, H, W) or (N, C, H, W), pixels in [0, 1],
to feature vectors (N, D); image steps map images to images:

* ``hog`` — histograms of oriented gradients (Dalal & Triggs 2005), a
  vectorized batch version of scikit-image's ``hog``;
* ``hsv_histogram`` — colour histograms in HSV (``rgb2hsv`` of scikit-image);
* ``ColourQuantization`` — a k-means palette and each image's palette histogram;
* ``BagOfWords`` — random patches → k-means codebook → per-image word counts;
* ``equalize`` — histogram equalization (an image step), as scikit-image's;
* ``FeaturePipeline`` / ``parse("hog,hsv-hist:10")`` — steps fitted on the
  training split, features concatenated, saved as safetensors + JSON.

Also: ``to_polar`` and ``polar_demo`` (a feature transform that makes circles
linearly separable), ``save_templates`` (a linear classifier's weights as one
image per class) and ``ermlab.features.compare`` (the table: linear classifiers
on pixels and on features, MLPs and a CNN). ``ermlab train --features hog,hsv-hist --model
linear`` and ``ermlab compare`` are the command-line faces.
"""

from ermlab.features import compare
from ermlab.features.bag_of_words import BagOfWords
from ermlab.features.equalize import Equalize, equalize
from ermlab.features.hog import HoG, hog
from ermlab.features.hsv import HSVHistogram, hsv_histogram, rgb_to_hsv
from ermlab.features.images import as_images
from ermlab.features.pipeline import STEPS, FeaturePipeline, parse
from ermlab.features.pixels import Pixels
from ermlab.features.polar import polar_demo, to_polar
from ermlab.features.quantize import ColourQuantization
from ermlab.features.templates import save_templates, template_images

__all__ = [
    "STEPS", "BagOfWords", "ColourQuantization", "Equalize", "FeaturePipeline", "HSVHistogram",
    "HoG", "Pixels", "as_images", "compare", "equalize", "hog", "hsv_histogram", "parse",
    "polar_demo", "rgb_to_hsv", "save_templates", "template_images", "to_polar",
]
