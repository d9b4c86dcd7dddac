"""Loss functions l(f(x), y): the "criteria" of Torch7, with a forward and a backward.

The empirical risk of a batch is the weighted mean of the per-sample losses

    L = Σ_i w_i l(f(x_i), y_i) / Σ_i w_i          (w_i = 1 by default: the plain mean)

A loss is a plain object, not a Module (it has no parameters and sits at the
end of the flow graph):

    value = loss.forward(scores, y, sample_weight=None)   # a Python float
    grad = loss.backward()                               # ∂L/∂scores, shape and dtype of scores

``forward`` validates its inputs, computes L and caches what ``backward`` needs;
``backward`` builds the gradient from that cache and applies the sample weights
(∂L/∂f(x_i) = w_i/Σ_j w_j · ∂l_i/∂f(x_i)). Arrays keep the dtype of the
scores: float32 in, float32 out. ``backward`` answers for the *last* ``forward``
(it takes no argument to say which), so a risk with two terms uses two loss
objects, one per term, unlike a Module, which may be called at several places.

Sample weights. ``sample_weight`` is a non-negative array of N weights, not all
zero. The loss is the weighted *mean* Σ w_i l_i / Σ w_i: scaling every weight by
the same constant changes nothing, a weight of 0 drops a sample, and an integer
weight counts a sample that many times (``numpy.average`` and scikit-learn's
``sample_weight`` convention). PyTorch's ``cross_entropy(..., weight=c)`` weights
*classes*; it equals ours with ``sample_weight = c[y]``, since torch divides by
Σ_i c[y_i] as well.

``LOSSES`` maps the names used by the command line to the classes;
``get(name, **kwargs)`` builds one.
"""

from __future__ import annotations

from typing import Any

import numpy

from ermlab.backend import array_module
from ermlab.nn import _fused


class Loss:
    """Base class: ``forward(scores, y, sample_weight=None) -> float`` and ``backward()``."""

    def __init__(self) -> None:
        self._cache: tuple | None = None

    def forward(self, scores: Any, y: Any, sample_weight: Any = None) -> float:
        raise NotImplementedError

    def backward(self) -> Any:
        """∂L/∂scores for the batch of the last ``forward``, with the sample weights applied."""
        if self._cache is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward called before forward: call "
                "loss.forward(scores, y) first, then loss.backward()"
            )
        return self._gradient(*self._cache)

    def _gradient(self, *cache: Any) -> Any:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


class SoftmaxCrossEntropy(Loss):
    """Cross-entropy of the softmax of the scores, fused with the softmax (Bridle, 1990).

    With f(x) = softmax(s), s the scores (pre-activations) of one sample,

        l(s, y) = −log f_y(s) = log Σ_c e^{s_c} − s_y
                = log1p(r) + (m − s_y),    m = s_k = max_c s_c,  r = Σ_{c≠k} e^{s_c − m}

    (log-sum-exp with a max shift: no overflow, finite for scores of ±1e4).
    Both terms are ≥ 0, so nothing cancels: a confident, right prediction
    (y = k) keeps its tiny loss log1p(r) ≈ r to a few ulps, where
    log(1 + r) + m − s_y would round it to an ulp of m (logits [1e4, 1e4 − 7]:
    9.766e-4 instead of 9.1147e-4 in float32). The gradient is

        ∂l/∂s = −(e(y) − f(x)) = softmax(s) − onehot(y),   ∂l/∂s_y = −Σ_{c≠y} f_c(s),

    with 1 − f_y = r/(1 + r) when y = k, never 1 − f_y by subtraction (f_y ≈ 1);
    scaled by w_i/Σw (1/N without weights). Fusing the two avoids the ill-
    conditioned log of a probability that rounded to 0 (Goodfellow, Bengio &
    Courville, *Deep Learning*, 2016, §6.2.2.3).

    Args (to ``forward``):
        scores: (N, C) raw class scores (logits), float32 or float64.
        y: (N,) integer class indices in [0, C) (integral floats accepted).
        sample_weight: optional (N,) non-negative weights (weighted mean).

    Equals ``torch.nn.functional.cross_entropy(scores, y)`` (reduction 'mean').
    torch's ``weight`` argument weights classes, not samples (see the module
    docstring); its ``label_smoothing`` and probability targets are not supported.
    """

    def forward(self, scores: Any, y: Any, sample_weight: Any = None) -> float:
        self._cache = None
        xp, scores, labels, scale = _classification_batch(self, scores, y, sample_weight)
        kernels = _fused.kernels("_softmax_kernels", scores)
        if kernels is not None and scores.shape[1] <= kernels.BLOCK:
            return self._forward_fused(kernels, scores, labels, scale)
        n = scores.shape[0]
        rows = xp.arange(n)
        best = scores.argmax(axis=1)
        top = scores[rows, best]
        prob = scores - top[:, None]
        xp.exp(prob, out=prob)  # e^{s_c − m}, exactly 1 at c = k
        prob[rows, best] = 0
        rest = prob.sum(axis=1)  # r = Σ_{c≠k} e^{s_c − m}
        prob[rows, best] = 1
        total = rest + 1
        prob /= total[:, None]
        per_sample = xp.log1p(rest)
        per_sample += top - scores[rows, labels]
        # 1 − f_y: r/(1 + r) when y = k; otherwise f_y ≤ ½ and the subtraction is exact enough
        complement = xp.where(labels == best, rest / total, 1 - prob[rows, labels])
        self._cache = (prob, labels, complement.astype(scores.dtype, copy=False), scale)
        return _mean(per_sample, scale)

    def _forward_fused(self, kernels: Any, scores: Any, labels: Any, scale: Any) -> float:
        """``forward``'s values in two compiled passes around NumPy's exponential and
        ``log1p`` (``nn._softmax_kernels``), bit for bit the NumPy path's: NumPy and
        float32/float64 scores, with Numba."""
        n = scores.shape[0]
        prob = numpy.empty_like(scores)
        best = numpy.empty(n, dtype=numpy.intp)
        top, rest, per_sample, complement = numpy.empty((4, n), dtype=scores.dtype)
        kernels.shifted(scores, prob, best, top)
        numpy.exp(prob, out=prob)
        labels = numpy.ascontiguousarray(labels)
        kernels.normalize(scores, labels, prob, best, top, rest, per_sample, complement)
        per_sample += numpy.log1p(rest, out=rest)  # log1p(r) + (m − s_y)
        self._cache = (prob, labels, complement, scale)
        return _mean(per_sample, scale)

    def _gradient(self, prob: Any, labels: Any, complement: Any, scale: Any) -> Any:
        xp = array_module(prob)
        weights = None if isinstance(scale, float) else scale
        kernels = _fused.kernels("_softmax_kernels", prob, complement,
                                 *(() if weights is None else (weights,)))
        if kernels is not None:
            grad = numpy.empty_like(prob)
            per_row = prob.dtype.type(scale if weights is None else 0)
            kernels.gradient(prob, numpy.ascontiguousarray(labels), complement, per_row,
                             weights, grad)
            return grad
        grad = prob * _rows(scale, prob.ndim)
        grad[xp.arange(len(labels)), labels] = -complement * scale
        return grad


class NegativeLogLikelihood(Loss):
    """Negative log-likelihood of class probabilities: l(p, y) = −log p_y;  ∂l/∂p_y = −1/p_y.

    The input is probabilities (e.g. the output of a ``Softmax`` module), in
    [0, 1]; the loss is not clipped, so p_y = 0 gives an infinite loss. To
    train a softmax classifier prefer ``SoftmaxCrossEntropy`` on the scores:
    it is the same loss, fused and numerically stable.

    Framework differences: ``torch.nn.functional.nll_loss`` takes *log*-
    probabilities (ours equals ``nll_loss(log(p), y)``); Keras'
    ``categorical_crossentropy`` clips p to [1e-7, 1 − 1e-7], we do not.
    """

    def forward(self, scores: Any, y: Any, sample_weight: Any = None) -> float:
        self._cache = None
        xp, prob = _check_scores(scores, self, classes=True, what="probabilities")
        bad = (prob < 0) | (prob > 1)
        if bool(bad.any()):
            where, value = _first(bad, prob)
            raise ValueError(
                f"probabilities must lie in [0, 1]; got {value} at index {where}. "
                "Pass softmax outputs, or use SoftmaxCrossEntropy on the raw scores"
            )
        n, c = prob.shape
        labels = check_labels(xp, y, n, c)
        scale = _sample_scale(xp, sample_weight, n, prob.dtype)
        picked = prob[xp.arange(n), labels]
        per_sample = xp.log(picked)
        xp.negative(per_sample, out=per_sample)
        self._cache = (picked, labels, scale, prob.shape, prob.dtype)
        return _mean(per_sample, scale)

    def _gradient(self, picked: Any, labels: Any, scale: Any, shape: tuple, dtype: Any) -> Any:
        xp = array_module(picked)
        grad = xp.zeros(shape, dtype=dtype)
        grad[xp.arange(len(labels)), labels] = -scale / picked
        return grad


class _Hinge(Loss):
    """A hinge loss with margin Δ ≥ 0 (``margin``, default 1)."""

    def __init__(self, margin: float = 1.0) -> None:
        super().__init__()
        margin = float(margin)
        if not margin >= 0:
            raise ValueError(f"margin must be a non-negative number; got {margin}")
        self.margin = margin

    def extra_repr(self) -> str:
        return f"margin={self.margin}"


class MulticlassHinge(_Hinge):
    """Multiclass SVM (hinge) loss of Weston & Watkins (1999), as in cs231n:

        l(s, y) = Σ_{j≠y} max(0, Δ + s_j − s_y)          (Δ = ``margin``, default 1)

        ∂l/∂s_j = 1[Δ + s_j − s_y > 0] for j ≠ y,   ∂l/∂s_y = −Σ_{j≠y} 1[Δ + s_j − s_y > 0]

    (a subgradient: at a kink, margin exactly 0, the term counts as inactive, as in torch).

    Framework difference: ``torch.nn.MultiMarginLoss`` (p=1) additionally
    divides each sample's loss by the number of classes C, so ours equals
    C · ``multi_margin_loss(s, y, margin=Δ)``. Crammer & Singer (2001) take the
    max over j ≠ y instead of the sum; that is a different loss.
    """

    def forward(self, scores: Any, y: Any, sample_weight: Any = None) -> float:
        self._cache = None
        xp, scores, labels, scale = _classification_batch(self, scores, y, sample_weight)
        n = scores.shape[0]
        rows = xp.arange(n)
        margins = scores - scores[rows, labels][:, None]
        margins += self.margin
        margins[rows, labels] = 0
        xp.maximum(margins, 0, out=margins)
        self._cache = (margins > 0, labels, scale, scores.dtype)
        return _mean(margins.sum(axis=1), scale)

    def _gradient(self, active: Any, labels: Any, scale: Any, dtype: Any) -> Any:
        xp = array_module(active)
        grad = active.astype(dtype)
        grad[xp.arange(len(labels)), labels] = -grad.sum(axis=1)
        grad *= _rows(scale, grad.ndim)
        return grad


class OneVsAllHinge(_Hinge):
    """One-vs-all (one-vs-rest) linear SVMs: one binary hinge loss per class, summed,
    so that one SGD run trains all C machines at once (the 2011 ImageNet winner's
    classifiers, features + one-vs-all SVMs):

        l(s, y) = Σ_c max(0, Δ − t_c s_c),   t_c = +1 if c = y, −1 otherwise

        ∂l/∂s_c = −t_c 1[Δ − t_c s_c > 0]

    (Δ = ``margin``, default 1; a subgradient: at a kink the term counts as inactive).
    Class c's machine sees only its own score s_c; prediction takes argmax_c s_c. Unlike
    ``MulticlassHinge`` (Weston & Watkins), no term compares two classes' scores.
    scikit-learn's ``SGDClassifier(loss="hinge")`` trains the same C binary problems,
    each with its own mean; summing them here only scales each machine's step.
    """

    def forward(self, scores: Any, y: Any, sample_weight: Any = None) -> float:
        self._cache = None
        xp, scores, labels, scale = _classification_batch(self, scores, y, sample_weight)
        n = scores.shape[0]
        signs = xp.full(scores.shape, -1, dtype=scores.dtype)
        signs[xp.arange(n), labels] = 1
        margins = signs * scores
        xp.subtract(self.margin, margins, out=margins)
        xp.maximum(margins, 0, out=margins)
        self._cache = (margins > 0, signs, scale)
        return _mean(margins.sum(axis=1), scale)

    def _gradient(self, active: Any, signs: Any, scale: Any) -> Any:
        grad = -(signs * active)
        grad *= _rows(scale, grad.ndim)
        return grad


class MeanSquaredError(Loss):
    """Squared error, averaged over the K output components of each sample:

        l(f, y) = (1/K) Σ_k (f_k − y_k)²;   ∂l/∂f = (2/K)(f − y)

    Scores have shape (N,) or (N, K) (any trailing shape works), targets the
    same shape; 1-D targets are accepted with (N, 1) scores. Without weights
    the value equals ``torch.nn.MSELoss(reduction='mean')`` (mean over all N·K
    entries). There is no ½ in front (some texts use ½(f − y)², with gradient f − y).
    """

    def forward(self, scores: Any, y: Any, sample_weight: Any = None) -> float:
        self._cache = None
        xp, scores = _check_scores(scores, self, classes=False)
        target = _check_targets(xp, y, scores, self)
        _check_finite(xp, target, "targets")
        n = scores.shape[0]
        scale = _sample_scale(xp, sample_weight, n, scores.dtype)
        diff = scores - target
        flat = diff.reshape(n, -1)
        per_sample = xp.einsum("ij,ij->i", flat, flat)
        per_sample /= flat.shape[1]
        self._cache = (diff, scale)
        return _mean(per_sample, scale)

    def _gradient(self, diff: Any, scale: Any) -> Any:
        k = diff.size // diff.shape[0]
        return diff * (_rows(scale, diff.ndim) * (2.0 / k))


class BinaryCrossEntropyWithLogits(Loss):
    """Binary cross-entropy of sigmoid(s), fused with the sigmoid, per output component:

        l(s, y) = −y log σ(s) − (1 − y) log(1 − σ(s))
                = max(s, 0) − s·y + log1p(e^{−|s|})
                = |s|·w + log1p(e^{−|s|}),    w = y for s < 0,  1 − y for s ≥ 0

        ∂l/∂s = σ(s) − y = ±(w − q),          q = σ(−|s|) = e^{−|s|}/(1 + e^{−|s|}),
                                               sign + for s ≥ 0, − for s < 0

    Both terms of l are ≥ 0 and e^{−|s|} ≤ 1: no overflow and no cancellation,
    so a confident, right prediction keeps its tiny loss log1p(e^{−|s|}) to
    a few ulps (max(s, 0) − s·y + … rounds it to an ulp of s: 0 at logit 15
    in float32) and its gradient −q (σ(s) − 1 by subtraction rounds to 0).

    l is averaged over the K components of each sample. Scores have shape (N,) or
    (N, K), targets the same shape (1-D targets accepted with (N, 1) scores)
    with values in [0, 1] (soft labels allowed). Without weights the value
    equals ``torch.nn.BCEWithLogitsLoss()`` (mean over all entries); torch's
    ``pos_weight`` and per-entry ``weight`` are not supported.
    """

    def forward(self, scores: Any, y: Any, sample_weight: Any = None) -> float:
        self._cache = None
        xp, scores = _check_scores(scores, self, classes=False)
        target = _check_targets(xp, y, scores, self)
        outside = ~((target >= 0) & (target <= 1))
        if bool(outside.any()):
            where, value = _first(outside, target)
            raise ValueError(
                f"BinaryCrossEntropyWithLogits targets must lie in [0, 1]; got {value} at index "
                f"{where}. Pass 0/1 labels (or probabilities), not ±1 or class indices"
            )
        n = scores.shape[0]
        scale = _sample_scale(xp, sample_weight, n, scores.dtype)
        signed = ~xp.signbit(scores) - target  # ±w: 1 − y for s ≥ 0, −y for s < 0 (exact)
        decay = xp.abs(scores)
        loss = decay * xp.abs(signed)
        xp.negative(decay, out=decay)
        xp.exp(decay, out=decay)  # e^{−|s|}, in (0, 1]
        loss += xp.log1p(decay)
        per_sample = loss.reshape(n, -1).mean(axis=1)
        decay /= decay + 1  # q = σ(−|s|)
        signed -= xp.copysign(decay, scores)  # σ(s) − y = ±(w − q)
        self._cache = (signed, scale)
        return _mean(per_sample, scale)

    def _gradient(self, residual: Any, scale: Any) -> Any:
        k = residual.size // residual.shape[0]
        return residual * (_rows(scale, residual.ndim) * (1.0 / k))


LOSSES: dict[str, type[Loss]] = {
    "cross_entropy": SoftmaxCrossEntropy,
    "softmax_cross_entropy": SoftmaxCrossEntropy,
    "nll": NegativeLogLikelihood,
    "hinge": MulticlassHinge,
    "multiclass_hinge": MulticlassHinge,
    "ova_hinge": OneVsAllHinge,
    "one_vs_all_hinge": OneVsAllHinge,
    "mse": MeanSquaredError,
    "bce_with_logits": BinaryCrossEntropyWithLogits,
}


def get(name: str | Loss, **kwargs: Any) -> Loss:
    """A new loss by its ``LOSSES`` name, e.g. ``get("hinge", margin=2.0)``; a Loss is kept."""
    if isinstance(name, Loss):
        return name
    key = str(name).strip().lower().replace("-", "_")
    if key not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(sorted(LOSSES))}")
    return LOSSES[key](**kwargs)


# -- validation at the boundary ---------------------------------------------


def _classification_batch(loss: Loss, scores: Any, y: Any, sample_weight: Any) -> tuple:
    """(xp, scores, labels, scale) of a classification loss's batch, checked at the boundary."""
    xp, scores = _check_scores(scores, loss, classes=True)
    n, c = scores.shape
    return xp, scores, check_labels(xp, y, n, c), _sample_scale(xp, sample_weight, n,
                                                                  scores.dtype)


def _check_scores(
    scores: Any, loss: Loss, classes: bool, what: str = "scores"
) -> tuple[Any, Any]:
    """The array module and ``scores`` as an array, after checking shape, dtype and finiteness."""
    xp = array_module(scores)
    scores = xp.asarray(scores)
    name = type(loss).__name__
    if classes and scores.ndim != 2:
        raise ValueError(
            f"{name} needs {what} of shape (N, C), one row per sample; got shape "
            f"{tuple(scores.shape)}. For a single sample pass {what}[None, :]"
        )
    if scores.ndim == 0:
        raise ValueError(f"{name} needs {what} of shape (N,) or (N, K); got a scalar")
    if scores.shape[0] == 0:
        raise ValueError(f"{name} got an empty batch (0 samples); pass at least one sample")
    if scores.dtype.kind != "f":
        raise ValueError(
            f"{what} must be floating point (float32 or float64); got {scores.dtype}. "
            f"Convert with {what}.astype(numpy.float32)"
        )
    _check_finite(xp, scores, what)
    return xp, scores


def _check_finite(xp: Any, array: Any, what: str) -> None:
    if bool(xp.isfinite(array).all()):
        return
    bad = ~xp.isfinite(array)
    where, _ = _first(bad, array)
    raise ValueError(
        f"{what} contain {int(bad.sum())} NaN or infinite values (first at index {where}); "
        "check the model and data (a diverging run: lower the learning rate)"
    )


def check_labels(xp: Any, y: Any, n: int, c: int) -> Any:
    """``y`` as an (N,) array of integer class indices in [0, C)."""
    labels = xp.asarray(y)
    expected = f"labels must be integers in [0, {c})"
    if labels.ndim != 1:
        raise ValueError(
            f"{expected}, one per sample, shape ({n},); got shape {tuple(labels.shape)}. "
            "For one-hot labels pass labels.argmax(axis=1); for (N, 1) pass labels.reshape(-1)"
        )
    if labels.shape[0] != n:
        raise ValueError(
            f"scores and labels have different lengths: {n} rows of scores, {labels.shape[0]} "
            "labels; pass one label per row of scores"
        )
    if labels.dtype.kind == "b":
        raise ValueError(f"{expected}; got booleans. Convert with labels.astype(int)")
    if labels.dtype.kind in "iu":
        bad = (labels < 0) | (labels >= c)
    elif labels.dtype.kind == "f":
        bad = ~((labels >= 0) & (labels < c) & (labels == xp.floor(labels)))
    else:
        raise ValueError(f"{expected}; got dtype {labels.dtype}. Convert with labels.astype(int)")
    if bool(bad.any()):
        where, value = _first(bad, labels)
        raise LabelError(expected, value, int(where))
    return labels.astype(xp.intp, copy=False)


class LabelError(ValueError):
    """A class label outside [0, C) (or not a whole number): ``value`` at row ``where`` of the
    labels given, which a caller holding a batch of a larger set can renumber (the Trainer
    names the row of the whole ``y``)."""

    def __init__(self, expected: str, value: str, where: int, name: str = "") -> None:
        self.expected, self.value, self.where, self.name = expected, value, where, name
        prefix = f"{name}: " if name else ""
        super().__init__(f"{prefix}{expected}; got {value} at index {where}")


def _check_targets(xp: Any, y: Any, scores: Any, loss: Loss) -> Any:
    """Regression/binary targets with the shape of ``scores`` ((N,) also for (N, 1) scores)."""
    target = xp.asarray(y, dtype=scores.dtype)
    if target.shape == scores.shape:
        return target
    if scores.ndim == 2 and scores.shape[1] == 1 and target.shape == scores.shape[:1]:
        return target.reshape(scores.shape)
    raise ValueError(
        f"{type(loss).__name__} targets must have the shape of the scores, "
        f"{tuple(scores.shape)}; got {tuple(target.shape)}. Give one target per output "
        "component (reshape the targets, or size the last layer to the number of targets)"
    )


def _sample_scale(xp: Any, sample_weight: Any, n: int, dtype: Any) -> Any:
    """w_i / Σ_j w_j as an (N,) array, or the scalar 1/N without weights: w / max w first,
    so that weights whose sum overflows the dtype (float32 [2e38, 2e38]) are not all
    divided by ∞ into zeros."""
    if sample_weight is None:
        return 1.0 / n
    weight = xp.asarray(sample_weight, dtype=dtype)
    if weight.shape != (n,):
        raise ValueError(
            f"sample_weight must hold one weight per sample, shape ({n},); got shape "
            f"{tuple(weight.shape)}"
        )
    bad = ~(xp.isfinite(weight) & (weight >= 0))
    if bool(bad.any()):
        where, value = _first(bad, weight)
        raise ValueError(
            f"sample_weight must be finite and non-negative; got {value} at index {where}"
        )
    peak = weight.max()
    if not bool(peak > 0):
        raise ValueError(
            "sample_weight sums to 0; give at least one sample a positive weight"
        )
    weight = weight / peak  # Σ of values ≤ 1: finite where Σ w overflows the dtype
    return weight / weight.sum()


def _first(bad: Any, array: Any) -> tuple[str, str]:
    """Index (as text) and value of the first True entry of ``bad``, in C order."""
    flat = int(bad.reshape(-1).argmax())
    index = numpy.unravel_index(flat, bad.shape)
    value = array.reshape(-1)[flat].item()
    where = str(index[0]) if len(index) == 1 else f"({', '.join(map(str, index))})"
    return where, repr(float(value)) if isinstance(value, float) else str(value)


def _rows(scale: Any, ndim: int) -> Any:
    """The per-sample scale, shaped to broadcast against an array of ``ndim`` axes."""
    if isinstance(scale, float):
        return scale
    return scale.reshape(scale.shape + (1,) * (ndim - 1))


def _mean(per_sample: Any, scale: Any) -> float:
    """Σ_i scale_i l_i: the plain mean without weights, the weighted mean with. (The plain
    mean as ``ndarray.mean`` makes it, a sum divided by the count in the array's dtype,
    without its Python wrapper: 1.3 µs a batch where ``mean`` took 5.)"""
    if isinstance(scale, float):
        return float(per_sample.sum() / per_sample.size)
    return float(per_sample.dot(scale))
