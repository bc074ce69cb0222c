"""The learning-rate range test and the suggestions practitioners read off it: the benchmark's baselines.

The range test (Smith, "Cyclical Learning Rates for Training Neural Networks", arXiv:1506.01186) trains for
``num_iter`` steps while the learning rate grows geometrically from ``start_lr`` to ``end_lr`` and records the
(smoothed) training loss at each step. Three rules turn that curve into one learning rate:

- torch-lr-finder's suggestion (``LRFinder.plot(suggest_lr=True)``): the steepest descent of the smoothed loss;
- fastai's ``steep``: where the loss falls fastest per unit of log learning rate;
- fastai's ``valley`` (the default of fastai's ``lr_find``): a point in the middle of the longest
  descending stretch of the curve.

``range_test`` runs torch-lr-finder (plain SGD, float64, cross-entropy, seeded: the same seed gives the same
curve and the same suggestions) and applies all three to the one curve; ``valley`` and ``steep`` are written here
from fastai's definitions (docs: https://docs.fast.ai/callback.schedule.html, "Learner.lr_find" and its
suggestion functions). Every suggestion is a float: NaN, with the reason in ``RangeTest.notes``, where a rule has no
answer, never None.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

FASTAI_SKIP_END = 5  # fastai's lr_find drops the last 5 points of the curve before suggesting
TLF_SKIP_START, TLF_SKIP_END = 10, 5  # torch-lr-finder's LRFinder.plot defaults, used for its suggestion


@dataclass(frozen=True, eq=False)
class RangeTest:
    """One learning-rate range test and its suggestions.

    ``lrs[i]`` is the learning rate of step i (geometric from ``start_lr``; the last is ``end_lr`` unless the test
    stopped early) and ``losses[i]`` the loss recorded at step i: the training loss of the batch it trained on,
    computed before that step's update, exponentially smoothed by torch-lr-finder (``smooth_f``; the first is
    raw). Both are read-only float64 arrays of length ``steps``.

    ``suggestion`` is torch-lr-finder's, ``valley`` and ``steep`` fastai's rules (``valley``, ``steep`` below, with
    fastai's window); each is a float, NaN where the rule has no answer. ``notes`` says why a suggestion is NaN or
    a fallback, and whether the test diverged. ``diverged``: torch-lr-finder stopped the test because the smoothed
    loss exceeded ``diverge_th`` times its best (that loss is the last recorded). ``examples`` is the number of
    training examples the steps saw (the cost of the test: ``examples / n_train`` epochs); ``batch_size`` the
    examples of a full step (``n_train`` for full batches). Instances compare by identity (``eq=False``: fields are
    arrays).
    """

    lrs: np.ndarray
    losses: np.ndarray
    suggestion: float
    valley: float
    steep: float
    steps: int
    examples: int
    batch_size: int
    diverged: bool
    notes: tuple[str, ...]


def range_test(make_module: Callable, x_train, y_train, *, seed: int, batch_size: int | None = None,
               start_lr: float = 1e-5, end_lr: float = 10.0, num_iter: int = 100, smooth_f: float = 0.05,
               diverge_th: float = 5) -> RangeTest:
    """Run torch-lr-finder's range test on ``make_module()`` and return the curve with its three suggestions.

    ``make_module()`` is called after ``torch.manual_seed(seed)`` (so seeded initialisations repeat) inside
    ``torch.random.fork_rng``: the caller's global torch RNG is left as it was. The module is cast to float64 and
    trained by plain ``torch.optim.SGD`` (no momentum, no weight decay; its ``lr`` is ``start_lr``, which
    torch-lr-finder takes as the first learning rate) on the mean cross-entropy of ``y_train`` (integer labels, or
    float class probabilities). ``batch_size=None`` is full batch: every step sees the whole training set (a
    ``DataLoader`` with ``batch_size=n_train``; torch's own ``batch_size=None`` would mean single examples, unbatched);
    otherwise minibatches of ``batch_size`` reshuffled each epoch by a ``torch.Generator`` seeded with ``seed``, the
    last batch of an epoch smaller when ``batch_size`` does not divide ``n_train`` (``drop_last=False``, counted
    exactly in ``examples``).

    torch-lr-finder (0.2.2): ``LRFinder.range_test(loader, end_lr, num_iter, step_mode="exp", smooth_f, diverge_th)``
    sets step i's learning rate to ``start_lr * (end_lr / start_lr) ** (i / (num_iter - 1))`` and stops after the
    step whose smoothed loss exceeds ``diverge_th`` times the best so far (a NaN loss never stops it). Its
    suggestion is ``LRFinder.plot(skip_start=10, skip_end=5, suggest_lr=True)``: ``lrs[argmin(np.gradient(loss))]``
    over ``lrs[10:-5]``, central differences in the step index, which on this geometric grid is the steepest
    descent in log learning rate; drawn on a matplotlib ``Figure`` that is never shown (no pyplot state). With
    fewer than 17 recorded steps it has none (0.2.2 raises; earlier versions print "Failed to compute the
    gradients" and return no learning rate): NaN. ``valley`` and ``steep``
    use fastai's window: ``skip_start=num_iter // 10`` (the requested ``num_iter``, as fastai), ``skip_end=5``.
    The module's weights are restored afterwards (``LRFinder.reset``). torch-lr-finder's print-outs and progress
    bar are swallowed (warnings are passed on).
    """
    import torch
    from matplotlib.figure import Figure
    from torch.utils.data import DataLoader, TensorDataset
    from torch_lr_finder import LRFinder

    x = torch.as_tensor(np.asarray(x_train, dtype=np.float64))
    y_np = np.asarray(y_train)
    y = torch.as_tensor(y_np, dtype=torch.int64 if np.issubdtype(y_np.dtype, np.integer) else torch.float64)
    n_train = len(x)
    if len(y) != n_train or n_train == 0:
        raise ValueError(f"x_train and y_train must hold the same positive number of examples, got {n_train}, "
                         f"{len(y)}")
    if batch_size is not None and not 1 <= batch_size <= n_train:
        raise ValueError(f"batch_size must be None (full batch) or in 1 .. {n_train}, got {batch_size}")
    if not 0 < start_lr < end_lr:
        raise ValueError(f"need 0 < start_lr < end_lr, got {start_lr}, {end_lr}")
    if num_iter < 2:
        raise ValueError(f"num_iter must be at least 2, got {num_iter}")
    batch = n_train if batch_size is None else int(batch_size)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = make_module().double()
        generator = torch.Generator().manual_seed(seed)
        loader = DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=batch_size is not None,
                            generator=generator)
        optimizer = torch.optim.SGD(module.parameters(), lr=start_lr, momentum=0.0)
        finder = LRFinder(module, optimizer, torch.nn.CrossEntropyLoss())
        out = io.StringIO()
        # stdout: its print-outs; stderr: its tqdm bar (warnings are recorded here and re-issued below)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), \
                warnings.catch_warnings(record=True) as caught:
            finder.range_test(loader, end_lr=end_lr, num_iter=num_iter, step_mode="exp", smooth_f=smooth_f,
                              diverge_th=diverge_th)
            lrs = np.array(finder.history["lr"], dtype=np.float64)
            losses = np.array(finder.history["loss"], dtype=np.float64)
            notes = []
            try:
                shown = finder.plot(skip_start=TLF_SKIP_START, skip_end=TLF_SKIP_END, suggest_lr=True,
                                    ax=Figure().subplots())
            except (RuntimeError, ValueError) as error:  # 0.2.2: too few steps for its window
                suggestion, reason = None, f"{type(error).__name__}: {error}"
            else:  # (ax, lr); earlier versions print "Failed to compute the gradients" and give no lr
                suggestion = shown[1] if isinstance(shown, tuple) and len(shown) == 2 else None
                reason = "too few points to compute the gradient"
        finder.reset()
    diverged = len(lrs) < num_iter or "diverged" in out.getvalue()  # it prints "Stopping early, the loss has ..."

    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)

    steps = len(lrs)
    if suggestion is None:
        suggestion = math.nan
        notes.append(f"torch-lr-finder: no suggestion from {steps} steps, {reason}")
    elif not np.all(np.isfinite(losses[TLF_SKIP_START:max(steps - TLF_SKIP_END, 0)])):
        notes.append("torch-lr-finder: its window holds a non-finite loss (it does not drop those points)")
    if diverged:
        notes.append(f"diverged at step {steps} of {num_iter}: the smoothed loss exceeded {diverge_th:g} x its best")
    window = dict(skip_start=num_iter // 10, skip_end=FASTAI_SKIP_END)
    valley_lr, valley_note = _valley(*_window(lrs, losses, **window))
    steep_lr, steep_note = _steep(*_window(lrs, losses, **window))
    for rule, note in (("valley", valley_note), ("steep", steep_note)):
        if note is not None:
            notes.append(f"{rule}: {note}")
    epoch_sizes = [batch] * (n_train // batch) + [n_train % batch] * (n_train % batch > 0)
    examples = (steps // len(epoch_sizes)) * n_train + sum(epoch_sizes[:steps % len(epoch_sizes)])
    lrs.setflags(write=False)
    losses.setflags(write=False)
    return RangeTest(lrs=lrs, losses=losses, suggestion=float(suggestion), valley=valley_lr, steep=steep_lr,
                     steps=steps, examples=int(examples), batch_size=batch, diverged=diverged, notes=tuple(notes))


def valley(lrs, losses, *, skip_start: int | None = None, skip_end: int = FASTAI_SKIP_END) -> float:
    """fastai's ``valley`` suggestion: a learning rate in the middle of the longest descending stretch of the curve.

    Rule (fastai 2.8, ``fastai.callback.schedule.valley``, from ESRI's suggester; docs:
    https://docs.fast.ai/callback.schedule.html#valley), on the window (see below) of ``n`` points:
    ``L`` is the length of the longest strictly decreasing subsequence of the losses, ``e`` the first index where
    one of length ``L`` ends; the stretch is taken as the ``L`` points ending at ``e`` and the suggestion is
    ``lrs[idx]`` with ``idx = e - L + L // 3 + L // 6``: from one point before the stretch, its first third and
    half of its second: its point number ``L // 3 + L // 6`` of ``L``, about its middle (``L = 3, 4``: its first
    point; ``L = 12``: its 6th; ``L = 21``: its 10th; ``L = 30``: its 15th). fastai's docs say "roughly 2/3 through
    the longest valley"; this is what its code computes.
    The index counts points, so on a geometric grid of learning rates it is the same fraction in log lr.

    Fallbacks: with no descent at all (``L = 1``) the suggestion is the first, smallest learning rate, ``lrs[0]``,
    as in fastai (whose start and end of the valley then stay at 0). With ``L = 2`` ending at index 1 (only the
    first two points descend) fastai's index is -1, which Python wraps round to the last, largest learning rate;
    here it is ``lrs[0]`` as well (the formula's index clamped at 0). NaN for an empty window. Otherwise equal to
    fastai's ``valley(lrs, losses, num_it)[0]`` on the same window.

    Window (fastai's ``Learner.lr_find``): the first ``skip_start`` points (fastai: ``num_it // 10`` of the
    requested iterations; ``None``: ``len(lrs) // 10``, the same unless the test stopped early) and the last
    ``skip_end`` (fastai: 5) are dropped, then everything from the first non-finite loss (fastai: from the first
    NaN). ``skip_start=0, skip_end=0`` applies the rule to the whole curve, as fastai's function itself does.
    """
    return _valley(*_window(lrs, losses, skip_start, skip_end))[0]


def steep(lrs, losses, *, skip_start: int | None = None, skip_end: int = FASTAI_SKIP_END) -> float:
    """fastai's ``steep`` suggestion: the learning rate where the loss falls fastest per unit of log learning rate.

    Rule (fastai 2.8, ``fastai.callback.schedule.steep``; docs: https://docs.fast.ai/callback.schedule.html#steep):
    the slopes of the segments between consecutive points, ``s_i = (loss[i+1] - loss[i]) / (log lr[i+1] -
    log lr[i])`` (forward differences in log lr, so uneven spacing is accounted for), and the suggestion is
    ``lrs[argmin s]``, the left end of the steepest segment (the first on ties). If the loss never falls in the
    window this is still the start of the segment where it rises least (as fastai). NaN when the window has fewer
    than 2 points (fastai raises there). The window is ``valley``'s (fastai's ``lr_find``: drop the first
    ``num_it // 10`` points and the last 5, then from the first non-finite loss on).
    """
    return _steep(*_window(lrs, losses, skip_start, skip_end))[0]


def _window(lrs, losses, skip_start: int | None, skip_end: int) -> tuple[np.ndarray, np.ndarray]:
    """The points fastai's ``lr_find`` suggests from: ``[skip_start : len - skip_end]``, cut at the first non-finite
    loss."""
    lrs = np.asarray(lrs, dtype=np.float64).ravel()
    losses = np.asarray(losses, dtype=np.float64).ravel()
    if lrs.shape != losses.shape:
        raise ValueError(f"lrs and losses must have the same length, got {lrs.size} and {losses.size}")
    if lrs.size and (not np.all(np.isfinite(lrs)) or np.any(lrs <= 0) or np.any(np.diff(lrs) <= 0)):
        raise ValueError("lrs must be finite, positive and strictly increasing")
    skip_start = len(lrs) // 10 if skip_start is None else skip_start
    if skip_start < 0 or skip_end < 0:
        raise ValueError(f"skip_start and skip_end must be non-negative, got {skip_start}, {skip_end}")
    stop = max(len(lrs) - skip_end, 0)
    lrs, losses = lrs[skip_start:stop], losses[skip_start:stop]
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size:
        lrs, losses = lrs[:bad[0]], losses[:bad[0]]
    return lrs, losses


def _valley(lrs: np.ndarray, losses: np.ndarray) -> tuple[float, str | None]:
    """``valley`` on a window, with a note when it falls back."""
    if len(losses) == 0:
        return math.nan, "no finite points left in the window"
    # The longest strictly decreasing subsequence ending at each point, by patience sorting on -loss: tails[k] is
    # the smallest -loss that ends a strictly increasing (in -loss) subsequence of length k + 1 seen so far.
    tails: list[float] = []
    length, end = 0, 0
    for i, value in enumerate(-losses):
        k = bisect_left(tails, value)
        if k == len(tails):
            tails.append(value)
        else:
            tails[k] = value
        if k + 1 > length:
            length, end = k + 1, i
    idx = end - length + length // 3 + length // 6
    if length == 1:
        return float(lrs[0]), "the loss never falls in the window: the smallest learning rate (as fastai)"
    if idx < 0:
        return float(lrs[0]), ("only the first two points descend: the smallest learning rate (fastai's index -1 "
                               "wraps round to the largest)")
    return float(lrs[idx]), None


def _steep(lrs: np.ndarray, losses: np.ndarray) -> tuple[float, str | None]:
    """``steep`` on a window, with a note when it has no answer or the loss never falls."""
    if len(losses) < 2:
        return math.nan, f"{len(losses)} finite point(s) in the window, 2 needed"
    slopes = np.diff(losses) / np.diff(np.log(lrs))
    i = int(np.argmin(slopes))
    return float(lrs[i]), None if slopes[i] < 0 else "the loss never falls in the window"
