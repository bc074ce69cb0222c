"""The engine: many epochs of training for a whole ensemble inside one compiled call.

Parameters are stacked pytrees with leading axes ``(groups, 1 + M)``: each group is a reference network (copy 0)
and its M perturbed copies. The members are flattened into one batch axis and the epoch map
(``dynamics.member_epoch``: full-batch GD by default, any optimiser and minibatches with an ``UpdateRule``) is
``vmap``-ed over it, so XLA sees one wide matrix product per layer instead of K narrow ones; a compiled loop
runs the epochs, one program for every length of a run's segments.
"""

from __future__ import annotations

import itertools
import math
import os
from functools import partial
from typing import Callable, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from chaosgd.dynamics import FULL_BATCH_GD, UpdateRule, check_parts, group_epoch, member_epoch, noisy
from chaosgd.errors import ChaosgdError
from chaosgd.objective import Objective, over_chunks
from chaosgd.precision import float64
from chaosgd.records import Records, concatenate

# The run is cut into about this many segments (calls of its compiled program), for progress; results do not depend
# on it. Each call allocates the program's work buffers afresh (on CPU, page faults over hundreds of MB), so a
# segment is at least _MIN_SEGMENT epochs long (but a run's last) to make that cost negligible.
_SEGMENTS = 20
_MIN_SEGMENT = 10

# Progress reporters of the runs in flight, by key: the compiled program passes a run's key to its host callback, so the
# program does not depend on the reporter and is not recompiled for each run (and concurrent runs stay apart).
_REPORTERS: dict[int, Callable[[int], None]] = {}
_KEYS = itertools.count()

DISTANCES = ("parameters", "state")  # what the distance between a copy and its reference sums over


class StopRule(Protocol):
    """When a group's perturbed copies may stop (``run(stop_copies=...)``); ``lyapunov.CopiesSettled`` is the
    paper's rule. The engine owns no estimator: it only calls the rule on the records so far.

    Attributes:
        first_check: epoch of the first check; the run's first stretch goes to it (at least), so the rule is asked
            there and after each later segment. Copies that stop at a check are recorded up to that epoch.

    ``rule(distance, checked)`` gets, for the groups whose copies still run and whose reference is alive, their
    copies' distances ``(G, M, t + 1)`` up to the current epoch t and ``checked`` ``(G,)``, the last epoch each group
    was already checked at (0 before the first check); it returns a bool array ``(G,)``: True where the copies may
    stop now. (Groups whose reference died stop without asking the rule.)
    """

    @property
    def first_check(self) -> int: ...

    def __call__(self, distance: np.ndarray, checked: np.ndarray) -> np.ndarray: ...


class BudgetError(ChaosgdError, ValueError):
    """Not even one group (a reference and its M copies) fits in the memory budget of ``run``.

    Attributes:
        needed: bytes one group needs (an upper estimate); budget: the budget in bytes.
    """

    def __init__(self, message: str, needed: int, budget: float):
        super().__init__(message)
        self.needed, self.budget = needed, budget


@float64
def run(objective: Objective, params, eta, data, *, epochs: int, initial_condition=None,
        groups_per_chunk: int | None = None, memory_budget: float | None = None,
        progress: bool | Callable[[int], None] = False, stop_copies: StopRule | None = None,
        stop_references_at: float | None = None, rule: UpdateRule | None = None,
        records_per_epoch: int = 1, distance: str = "parameters", examples_per_chunk: int | None = None) -> Records:
    """Train every member of an ensemble for ``epochs`` epochs and record what DESIGN.md asks for.

    Args:
        objective: the loss and the test metric (``objective.classification(model)`` for the paper's networks).
        params: stacked parameters with leading axes ``(G, 1 + M)``; copy 0 of each group is its reference.
        eta: learning rates: a scalar, one per group ``(G,)``, or one per member ``(G, 1 + M)``.
        data: pytree passed to the objective (``Dataset.arrays()`` for classification).
        epochs: number of epochs T; records hold t = 0 .. T (with ``records_per_epoch`` r: t = 0, 1/r, .. T).
        initial_condition: index of each group's initial condition, stored in the records (default 0 .. G-1).
        groups_per_chunk: run at most this many groups at once (given, no budget is checked); default: as many as
            ``memory_budget`` allows.
        memory_budget: bytes a chunk may use; default half of the machine's memory (``CHAOSGD_MEMORY_BUDGET``).
            ``BudgetError`` if not even one group fits.
        progress: False (default): silent. True: a progress bar over network-epochs. A callable: called with
            increments of network-records done (e.g. to add up in another process). Updated every record; the
            increments sum to ``G * (1 + M) * epochs * records_per_epoch``, work skipped by stopping counting as
            done when it is skipped.
        stop_copies: a ``StopRule`` saying when a group's perturbed copies may stop, e.g.
            ``lyapunov.CopiesSettled(plateau)``: once the causal fit of its exponent is settled. Copies also stop
            once their reference diverged. Their later records are NaN and ``Records.copies_stopped_at`` says when.
            None (default): copies run every epoch.
        stop_references_at: a target test accuracy: stop a reference once it has reached it (or diverged) and its
            copies have stopped (or it has none); its later records are NaN and ``Records.references_stopped_at``
            says when. The time to the target is unchanged; final losses then exist only for the references that
            never reached it. None (default): references run to the end.
        rule: the optimiser and minibatches (``dynamics.UpdateRule``); None (default): full-batch gradient descent,
            one step per epoch. Every member starts from the optimiser's initial state; minibatch orders and
            dropout masks come from (``rule.seed``, initial condition, epoch).
        records_per_epoch: r, records per epoch (default 1): with minibatches, record every ``steps / r`` steps so
            that an expansion faster than an epoch is resolved; r must divide the steps of an epoch. The records'
            time axis then counts records (``Records.records_per_epoch``), and so do ``stop_copies``' epochs, and
            the ``*_at`` and ``*_computed_epochs`` fields.
        distance: what ``Records.distance`` sums |differences| over: "parameters" (default, the paper's) or "state"
            (the parameters and the optimiser's state, e.g. heavy ball's momentum buffer or Adam's moments).
        examples_per_chunk: compute full-batch gradients and the losses and accuracies over the training and test
            sets in chunks of this many examples (summed: the same to roundoff, in the memory of one chunk). None
            (default): with ``groups_per_chunk`` None, all examples at once when one group fits in ``memory_budget``
            that way, else the largest chunks that fit (``fit_examples``); with ``groups_per_chunk`` given, all.

    A member whose loss or parameters stop being finite is frozen and recorded as NaN from that epoch on
    (``Records.diverged_at``); the others go on. Results do not depend on the chunking beyond roundoff in the last
    bit (matrix products over a different number of members may round differently; see the README).
    """
    if int(epochs) != epochs or epochs < 0:
        raise ValueError(f"epochs must be an integer >= 0; got {epochs}")
    epochs = int(epochs)
    leaves = jax.tree_util.tree_leaves(params)
    if not leaves or any(leaf.ndim < 2 for leaf in leaves):
        raise ValueError("params must be stacked with leading axes (groups, 1 + M); build them with "
                         "chaosgd.ensemble.epsilon_ball")
    n_groups, n_members = leaves[0].shape[:2]
    dtype = leaves[0].dtype
    eta = np.asarray(eta, dtype=dtype)
    eta = eta[:, None] if eta.ndim == 1 else eta
    try:
        eta = np.broadcast_to(eta, (n_groups, n_members)).copy()
    except ValueError:
        raise ValueError(f"eta must be a scalar, one per group ({n_groups},) or one per member "
                         f"({n_groups}, {n_members}); got shape {np.shape(eta)}") from None
    if not np.all(np.isfinite(eta)) or np.any(eta <= 0):
        raise ValueError(f"learning rates must be finite and > 0; got {np.unique(eta)}")
    ic = np.arange(n_groups) if initial_condition is None else np.asarray(initial_condition)
    if ic.shape != (n_groups,):
        raise ValueError(f"initial_condition must have one entry per group ({n_groups}); got shape {ic.shape}")

    rule = FULL_BATCH_GD if rule is None else rule
    if not isinstance(rule, UpdateRule):
        raise ValueError(f"rule must be None or a chaosgd.dynamics.UpdateRule; got {rule!r}")
    if (rule.batch_size or objective.dropout) and not (isinstance(data, dict) and "x_train" in data):
        raise ValueError("minibatches and dropout need data as a dict with 'x_train' and 'y_train' (examples on the "
                         "first axis)")
    n_train = data["x_train"].shape[0] if isinstance(data, dict) and "x_train" in data else 0
    check_parts(rule, n_train, records_per_epoch)
    parts = int(records_per_epoch)
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {list(DISTANCES)}; got {distance!r}")

    if stop_copies is not None:
        first = getattr(stop_copies, "first_check", None)
        is_epoch = isinstance(first, (int, np.integer)) and not isinstance(first, bool) and first >= 0
        if not callable(stop_copies) or not is_epoch:
            raise ValueError("stop_copies must be None or a StopRule (e.g. lyapunov.CopiesSettled(plateau)): a "
                             f"callable with an integer first_check >= 0; got {stop_copies!r}")
        if getattr(stop_copies, "records_per_epoch", parts) != parts:
            raise ValueError(f"stop_copies counts {stop_copies.records_per_epoch} record(s) an epoch, this run "
                             f"{parts}: give the rule the run's records_per_epoch (CopiesSettled(plateau, "
                             f"records_per_epoch={parts}))")

    if examples_per_chunk is not None and (isinstance(examples_per_chunk, bool) or examples_per_chunk < 1
                                           or int(examples_per_chunk) != examples_per_chunk):
        raise ValueError(f"examples_per_chunk must be None or an integer >= 1; got {examples_per_chunk!r}")
    if examples_per_chunk is not None and examples_per_chunk < _n_examples(data) and not objective.chunkable:
        raise ValueError("examples_per_chunk: this objective does not say its loss and accuracies are means over the "
                         "examples (Objective(chunkable=True)), so they cannot be computed over chunks of them")
    data = jax.tree_util.tree_map(jnp.asarray, data)
    if groups_per_chunk is None:
        groups_per_chunk, examples_per_chunk = _groups_that_fit(objective, params, data, n_members, memory_budget,
                                                                examples_per_chunk)
    groups_per_chunk = max(1, min(int(groups_per_chunk), n_groups))

    bar = None if callable(progress) else _progress_bar(n_groups * n_members * epochs, progress, parts)
    report = progress if callable(progress) else None if bar is None else bar.update
    key = next(_KEYS)
    if report is not None:
        _REPORTERS[key] = report
    try:
        chunks = []
        for start in range(0, n_groups, groups_per_chunk):
            stop = min(start + groups_per_chunk, n_groups)
            chunk = jax.tree_util.tree_map(lambda x: np.asarray(x[start:stop]), params)
            chunks.append(_run_chunk(objective, rule, chunk, eta[start:stop], ic[start:stop], data, epochs, parts,
                                     examples_per_chunk, distance, stop_copies, stop_references_at, report, key))
    finally:
        if report is not None:
            jax.effects_barrier()  # every epoch's callback has reported before the bar closes
            del _REPORTERS[key]
        if bar is not None:
            bar.close()
    return concatenate(chunks)


def _run_chunk(objective, rule, params, eta, ic, data, n_epochs, parts, examples, distance, stop_copies,
               stop_references_at, report, key) -> Records:
    """One chunk, in segments (calls of one compiled program) over two flat batches of networks: "joint" holds
    the groups whose copies still run, each as its reference followed by its M copies (a reference and its copies
    always share a batch, so an unperturbed copy stays at distance exactly 0); "solo" holds the references of the
    groups whose copies have stopped. References that are done (``stop_references_at``) leave the batches.
    ``report(n)`` (or None) gets the network-epochs done: each epoch's from inside the program, skipped work at once.
    With ``parts`` records per epoch, "epoch" below (and in what ``report`` gets) is a record, a part of an epoch."""
    epochs = n_epochs * parts
    n_groups, n_members = eta.shape
    n_copies = n_members - 1
    shape = (n_groups, n_members, epochs + 1)
    loss, train_acc = np.full(shape, np.nan), np.full(shape, np.nan)
    test_acc = np.full((n_groups, epochs + 1), np.nan)
    dist = np.full((n_groups, n_copies, epochs + 1), np.nan)
    diverged_at = np.full((n_groups, n_members), -1, dtype=np.int32)
    stopped_at = np.full(n_groups, -1, dtype=np.int64)
    copy_steps = np.zeros(n_groups, dtype=np.int64)  # epochs each group's copies were actually advanced
    checked = np.zeros(n_groups, dtype=np.int64)
    ref_stopped_at = np.full(n_groups, -1, dtype=np.int64)
    ref_steps = np.zeros(n_groups, dtype=np.int64)

    joint = _Members.start(jax.tree_util.tree_map(lambda x: x.reshape(-1, *x.shape[2:]), params), eta.reshape(-1),
                           np.repeat(ic, n_members), np.tile(np.arange(n_members), n_groups), rule.optimizer)
    n_train = data["x_train"].shape[0] if isinstance(data, dict) and "x_train" in data else 0
    program = (objective, rule, n_train, n_epochs if rule.optimizer.schedule != "constant" else 0, parts,
               None if examples is None or examples >= _n_examples(data) else int(examples), distance)
    solo = joint.take(np.array([], dtype=int))
    joint_groups, solo_groups = np.arange(n_groups), np.array([], dtype=int)
    seg = max(_MIN_SEGMENT, math.ceil(epochs / _SEGMENTS))
    # A call's length is an argument of the compiled program, at most its `capacity`: one program serves every call
    # of a run, and every run of the same shapes whose segments round up to the same power of two (16 for all runs
    # of up to 200 records; long runs, whose records in a call take memory, keep their segment's length).
    capacity = 1 << (seg - 1).bit_length() if seg <= 64 else seg
    # The checks (stopping rules, moves between batches, references retiring) come after the first stretch, which
    # runs to the rule's first check (quiet curves settle there), and after each later segment; the first stretch
    # runs in as few calls as the capacity allows, of balanced lengths (no check between them).
    first = min(max(seg, stop_copies.first_check + 1) if stop_copies is not None else seg, epochs)
    t0 = 0
    while joint_groups.size + solo_groups.size:
        final = t0 >= epochs  # the last call evaluates theta(T) without a step
        if final:
            length = 1
        elif t0 < first:
            length = -(-(first - t0) // -(-(first - t0) // capacity))  # the rest of the stretch, in balanced calls
        else:
            length = min(seg, epochs - t0)
        # Stopped copies and references that have not yet left their batch were counted when they stopped.
        advanced = (int((ref_stopped_at[joint_groups] < 0).sum() + (ref_stopped_at[solo_groups] < 0).sum())
                    + int((stopped_at[joint_groups] < 0).sum()) * n_copies)
        joint.state, solo.state, recs = _segment(program, capacity, n_members, report is not None, joint.state,
                                                 solo.state, data, jnp.int32(t0), jnp.int32(0 if final else length),
                                                 jnp.bool_(final), (jnp.int32(key), jnp.int32(advanced)))
        j_loss, j_acc, j_test, j_dist, s_loss, s_acc, s_test = (np.moveaxis(r[:length], 0, -1)
                                                                for r in jax.device_get(recs))
        window = slice(t0, t0 + length)
        loss[joint_groups, :, window] = j_loss.reshape(-1, n_members, length)
        train_acc[joint_groups, :, window] = j_acc.reshape(-1, n_members, length)
        test_acc[joint_groups, window], dist[joint_groups, :, window] = j_test, j_dist
        loss[solo_groups, 0, window], train_acc[solo_groups, 0, window] = s_loss, s_acc
        test_acc[solo_groups, window] = s_test
        if not final:
            copy_steps[joint_groups] += length
            ref_steps[joint_groups] += length
            ref_steps[solo_groups] += length
        if final:
            break
        if t0 + length < first:  # within the first stretch: no check yet
            t0 += length
            continue
        if stop_copies is not None and n_copies and joint_groups.size:
            last = t0 + length - 1  # records run to epoch `last`
            reference_alive = joint.alive_host().reshape(-1, n_members)[:, 0]
            fresh = stopped_at[joint_groups] < 0
            done = ~fresh
            done[fresh] = ~reference_alive[fresh]
            ask = fresh & reference_alive
            done[ask] = stop_copies(dist[joint_groups[ask], :, :last + 1], checked[joint_groups[ask]])
            checked[joint_groups] = last
            stopped_at[joint_groups[done & fresh]] = last
            if report is not None:  # the work skipped counts as done, so the bar's ETA stays right
                _report(report, int((done & fresh).sum()) * n_copies * (epochs - last - 1))
            # Moving networks between batches recompiles for the new shapes, so stopped groups leave the joint
            # batch only once they are at least half of it: at most log2(G) moves (their extra epochs are dropped).
            if 2 * done.sum() >= done.size:
                diverged_at[joint_groups[done]] = joint.diverged_host().reshape(-1, n_members)[done]
                members = np.arange(joint_groups.size * n_members).reshape(-1, n_members)
                solo = solo.concatenate(joint.take(members[done, 0]))
                joint = joint.take(members[~done].ravel())
                solo_groups, joint_groups = np.concatenate([solo_groups, joint_groups[done]]), joint_groups[~done]
        if stop_references_at is not None:
            last = t0 + length - 1
            # Only batches of references alone: the solo batch, and the joint one when there are no copies.
            newly, solo, solo_groups = _retire(solo, solo_groups, test_acc, stop_references_at, last, ref_stopped_at,
                                               diverged_at)
            if n_copies == 0:
                more, joint, joint_groups = _retire(joint, joint_groups, test_acc, stop_references_at, last,
                                                    ref_stopped_at, diverged_at)
                newly += more
            if report is not None:  # the work skipped counts as done
                _report(report, newly * (epochs - last - 1))
        t0 += length
    diverged_at[joint_groups] = joint.diverged_host().reshape(-1, n_members)
    diverged_at[solo_groups, 0] = solo.diverged_host()
    for g in np.flatnonzero(ref_stopped_at >= 0):  # nor what a reference computed after its stop
        after = slice(ref_stopped_at[g] + 1, None)
        loss[g, 0, after], train_acc[g, 0, after], test_acc[g, after] = np.nan, np.nan, np.nan
        diverged_at[g, 0] = -1 if diverged_at[g, 0] > ref_stopped_at[g] else diverged_at[g, 0]
    for g in np.flatnonzero(stopped_at >= 0):  # what copies computed after their stop is not part of the record
        after = slice(stopped_at[g] + 1, None)
        loss[g, 1:, after], train_acc[g, 1:, after], dist[g, :, after] = np.nan, np.nan, np.nan
        diverged_at[g, 1:] = np.where(diverged_at[g, 1:] > stopped_at[g], -1, diverged_at[g, 1:])
    return Records(eta=eta, initial_condition=ic, loss=loss, train_accuracy=train_acc, test_accuracy=test_acc,
                   distance=dist, diverged_at=diverged_at, copies_stopped_at=stopped_at,
                   copies_computed_epochs=copy_steps, references_stopped_at=ref_stopped_at,
                   references_computed_epochs=ref_steps,
                   steps_per_epoch=np.full(n_groups, rule.steps_per_epoch(n_train), dtype=np.int64),
                   records_per_epoch=np.full(n_groups, parts, dtype=np.int64))


def _retire(batch, groups, test_acc, target, last, ref_stopped_at, diverged_at):
    """Mark the references of a batch of references alone that reached ``target`` (or died) as stopped at ``last``,
    and take them out once they are at least half of the batch (as for copies: few recompilations). Returns how
    many were newly stopped, the batch and its groups."""
    if not groups.size:
        return 0, batch, groups
    done = ~batch.alive_host() | (test_acc[groups, :last + 1] >= target).any(axis=1)
    fresh = done & (ref_stopped_at[groups] < 0)
    ref_stopped_at[groups[fresh]] = last
    if 2 * done.sum() >= done.size:
        diverged_at[groups[done], 0] = batch.diverged_host()[done]
        batch, groups = batch.take(np.flatnonzero(~done)), groups[~done]
    return int(fresh.sum()), batch, groups


class _State(NamedTuple):
    """What the compiled program carries for a flat batch of networks (every leaf has the member axis first)."""

    params: object
    opt: object  # the optimiser's state
    eta: jax.Array
    ic: jax.Array  # initial condition and copy index: they pick the minibatch order and dropout masks
    copy: jax.Array
    alive: jax.Array
    diverged_at: jax.Array  # first epoch not finite; -1: never


class _Members:
    """A flat batch of networks and its state (``_State``)."""

    def __init__(self, state: _State):
        self.state = state

    @classmethod
    def start(cls, params, eta, ic, copy, optimizer) -> "_Members":
        n = np.shape(eta)[0]
        params = jax.tree_util.tree_map(jnp.asarray, params)
        return cls(_State(params, jax.vmap(optimizer.init)(params), jnp.asarray(eta), jnp.asarray(ic, jnp.int32),
                          jnp.asarray(copy, jnp.int32), jnp.ones(n, dtype=bool), jnp.full(n, -1, dtype=jnp.int32)))

    def take(self, index) -> "_Members":
        index = jnp.asarray(index, dtype=jnp.int32)
        return _Members(jax.tree_util.tree_map(lambda x: x[index], self.state))

    def concatenate(self, other: "_Members") -> "_Members":
        return _Members(jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), self.state, other.state))

    def alive_host(self):
        return np.asarray(self.state.alive)

    def diverged_host(self):
        return np.asarray(self.state.diverged_at)


def _report(report, n):
    if n:
        report(n)


def _tick(key, n):
    """Host side of the per-epoch progress callback: ``n`` networks advanced one epoch in run ``key``."""
    report = _REPORTERS.get(int(key))
    if report is not None:
        _report(report, int(n))


def _advance(epoch, members: _State, t, data, per_group: int | None):
    """One epoch of a flat batch; returns the new state and the masked loss and accuracy of theta(t). ``epoch`` is
    ``dynamics.member_epoch`` vmapped over the members (``per_group`` None), or ``group_epoch`` vmapped over groups
    of ``per_group`` consecutive members that share their noise."""
    s = members
    if per_group is None:
        params, opt, loss, acc = epoch(s.params, s.opt, s.eta, data, s.ic, s.copy, t)
    else:
        split = lambda x: x.reshape(-1, per_group, *x.shape[1:])  # noqa: E731
        join = lambda x: x.reshape(-1, *x.shape[2:])  # noqa: E731
        params, opt, loss, acc = epoch(jax.tree_util.tree_map(split, s.params), jax.tree_util.tree_map(split, s.opt),
                                       split(s.eta), data, split(s.ic)[:, 0], split(s.copy), t)
        params, opt, loss, acc = (jax.tree_util.tree_map(join, x) for x in (params, opt, loss, acc))
    valid = s.alive & jnp.isfinite(loss)
    finite = jnp.all(jnp.stack([jnp.isfinite(x).reshape(x.shape[0], math.prod(x.shape[1:])).all(-1)
                                for x in jax.tree_util.tree_leaves(params) if jnp.issubdtype(x.dtype, jnp.inexact)]),
                     axis=0)
    diverged_at = jnp.where(s.alive & ~valid, t, jnp.where(valid & ~finite, t + 1, s.diverged_at))
    alive = valid & finite
    keep = lambda x_new, x_old: jnp.where(alive.reshape(-1, *(1,) * (x_new.ndim - 1)), x_new, x_old)  # noqa: E731
    new = s._replace(params=jax.tree_util.tree_map(keep, params, s.params),
                     opt=jax.tree_util.tree_map(keep, opt, s.opt), alive=alive, diverged_at=diverged_at)
    return new, jnp.where(valid, loss, jnp.nan), jnp.where(valid, acc, jnp.nan), valid


def _observe(objective, members: _State, t, data, chunk):
    """Loss and accuracy of theta(t) without stepping (the final epoch)."""
    loss, acc = jax.vmap(lambda p: over_chunks(lambda part: objective.loss(p, part), data, chunk))(members.params)
    valid = members.alive & jnp.isfinite(loss)
    diverged_at = jnp.where(members.alive & ~valid, t, members.diverged_at)
    new = members._replace(alive=valid, diverged_at=diverged_at)
    return new, jnp.where(valid, loss, jnp.nan), jnp.where(valid, acc, jnp.nan), valid


@partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _segment(program, capacity, n_members, progress, joint, solo, data, t0, length, final, tick):
    """``length`` (at most ``capacity``) epochs of both batches from epoch ``t0``; with ``final`` (and length 0),
    one evaluation of theta(t0) and no step. Returns both batches' states and the records, ``capacity`` of them
    (the first ``length``, or 1 with ``final``, hold the segment's).

    The length and ``final`` are arguments of the program, not part of it: one compiled program serves every call of
    a run (and of other runs of the same shapes), and the loop inside computes what a scan of that length would.
    ``program`` is (objective, update rule, training-set size, epochs of the run or 0 when no schedule needs them,
    records per epoch, examples per chunk or None, what distances are over); with more than one record per epoch,
    "epoch" here is a part of one.
    With ``progress``, each epoch calls back ``_tick(*tick)``, ``tick`` being (run key, networks advanced per
    epoch); without it the program holds no callback (a host round trip per epoch is not free)."""
    objective, rule, n_train, chunk = *program[:3], program[5]
    over_state, program = program[6] == "state", program[:6]
    # Minibatches and dropout masks are drawn once for each group that shares them; full-batch epochs draw none,
    # and one flat batch of members gives the same program as earlier versions (bit-identical records).
    if noisy(objective, rule, n_train):
        step = jax.vmap(group_epoch(*program), in_axes=(0, 0, 0, None, 0, 0, None))
        joint_group, solo_group = (n_members if rule.shared_noise else 1), 1
    else:
        step = jax.vmap(member_epoch(*program), in_axes=(0, 0, 0, None, 0, 0, None))
        joint_group = solo_group = None
    test = jax.vmap(lambda p, data: over_chunks(lambda part: objective.test_accuracy(p, part), data, chunk,
                                                ("x_test", "y_test")), in_axes=(0, None))

    def epoch(joint, solo, t, observe_only):
        """The record of theta(t) and, unless ``observe_only``, the step to theta(t + 1)."""
        n_joint = joint.eta.shape[0] // n_members
        grouped = jax.tree_util.tree_map(lambda x: x.reshape(n_joint, n_members, *x.shape[1:]), joint.params)
        measured = jax.tree_util.tree_leaves(grouped)
        if over_state:  # the optimiser's real-valued state too (not its step counters, the same in every copy)
            measured += [x.reshape(n_joint, n_members, *x.shape[1:]) for x in jax.tree_util.tree_leaves(joint.opt)
                         if jnp.issubdtype(x.dtype, jnp.inexact)]
        dist = sum(jnp.abs(x[:, 1:] - x[:, :1]).reshape(n_joint, n_members - 1, math.prod(x.shape[2:])).sum(-1)
                   for x in measured) if n_members > 1 else None
        j_test = test(jax.tree_util.tree_map(lambda x: x[:, 0], grouped), data)
        s_test = test(solo.params, data)
        if observe_only:
            joint, j_loss, j_acc, j_valid = _observe(objective, joint, t, data, chunk)
            solo, s_loss, s_acc, s_valid = _observe(objective, solo, t, data, chunk)
        else:
            joint, j_loss, j_acc, j_valid = _advance(step, joint, t, data, joint_group)
            solo, s_loss, s_acc, s_valid = _advance(step, solo, t, data, solo_group)
            if progress:
                jax.debug.callback(_tick, *tick)
        valid = j_valid.reshape(n_joint, n_members)
        if dist is None:
            dist = jnp.zeros((valid.shape[0], 0), dtype=j_loss.dtype)
        record = (j_loss, j_acc, jnp.where(valid[:, 0], j_test, jnp.nan),
                  jnp.where(valid[:, 1:] & valid[:, :1], dist, jnp.nan),
                  s_loss, s_acc, jnp.where(s_valid, s_test, jnp.nan))
        return joint, solo, record

    # The records of the segment, written in place as lax.scan writes its stacked outputs.
    shapes = jax.eval_shape(lambda: epoch(joint, solo, t0, False)[2])
    records = jax.tree_util.tree_map(lambda r: jnp.full((capacity, *r.shape), jnp.nan, r.dtype), shapes)

    def write(records, i, record):
        return jax.tree_util.tree_map(lambda rs, r: jax.lax.dynamic_update_index_in_dim(rs, r, i, 0), records, record)

    def step_body(i, carry):
        joint, solo, records = carry
        joint, solo, record = epoch(joint, solo, t0 + i, False)
        return joint, solo, write(records, i, record)

    def observe(carry):
        joint, solo, records = carry
        joint, solo, record = epoch(joint, solo, t0, True)
        return joint, solo, write(records, 0, record)

    carry = jax.lax.fori_loop(0, length, step_body, (joint, solo, records))
    return jax.lax.cond(final, observe, lambda carry: carry, carry)


def _groups_that_fit(objective, params, data, n_members, memory_budget, examples=None) -> tuple[int, int | None]:
    """Groups per chunk under ``memory_budget`` and examples per chunk (``fit_examples``; ``examples`` if given),
    from the sizes of all intermediates of one member's step."""
    budget, source = memory_budget_and_source(memory_budget)
    one = jax.tree_util.tree_map(lambda x: x[0, 0], params)
    if examples is None:
        examples = fit_examples(objective, one, data, n_members, budget)
    needed = group_bytes(objective, one, data, n_members, examples)
    if needed > budget:
        raise BudgetError(
            f"one group (a reference and its {n_members - 1} copies) needs about {needed / 2**30:.3g} GiB "
            f"({needed} bytes) even with {examples or 'all'} example(s) at a time, more than the memory budget of "
            f"{budget / 2**30:.3g} GiB ({int(budget)} bytes, from {source}). Use fewer copies (ensemble.copies), "
            f"float32 (model.dtype, with a larger ensemble.epsilon), a smaller model, or a larger budget "
            f"(CHAOSGD_MEMORY_BUDGET=<bytes>, or run(memory_budget=...)).", needed, budget)
    return int(budget // needed), examples


@float64
def fit_examples(objective, one, data, n_members: int, budget: float) -> int | None:
    """Examples per chunk for one group's step in ``budget`` bytes: None (all at once) when that fits or the
    objective is not ``chunkable``, else chunks of equal size (but the last), as large as fit; 1 if nothing fits
    (``group_bytes`` then says by how much)."""
    n = _n_examples(data)
    if n == 0 or not getattr(objective, "chunkable", False) or group_bytes(objective, one, data, n_members) <= budget:
        return None
    # The bytes are affine in the chunk's size: two sizes give the slope and the intercept.
    small, large = min(n, 8), min(n, 16)
    low, high = (group_bytes(objective, one, data, n_members, c) for c in (small, large))
    per_example = (high - low) / max(1, large - small)
    fits = int((budget - (low - per_example * small)) // per_example) if per_example > 0 else n
    fits = max(1, min(n, fits))
    return -(-n // -(-n // fits))  # the number of chunks that fit, with their sizes balanced


@float64
def configured_examples(objective, one, data, n_members: int) -> int:
    """Examples per chunk for a group's step as experiments fix it, from shapes alone (``defaults.ALL_AT_ONCE_MAX``,
    ``defaults.CHUNK_BYTES``): all of them (the training set's size) when that step fits in ALL_AT_ONCE_MAX."""
    from chaosgd.defaults import ALL_AT_ONCE_MAX, CHUNK_BYTES
    n = _n_examples(data)
    if group_bytes(objective, one, data, n_members) <= ALL_AT_ONCE_MAX:
        return max(n, 1)
    return fit_examples(objective, one, data, n_members, CHUNK_BYTES) or max(n, 1)


def _n_examples(data) -> int:
    """Training examples of a data dict (0 for other data pytrees: nothing is chunked)."""
    return int(data["x_train"].shape[0]) if isinstance(data, dict) and "x_train" in data else 0


@float64
def group_bytes(objective, one, data, n_members: int, examples: int | None = None) -> int:
    """Bytes one group's step needs: the sizes of all intermediates of one member's loss and gradient, plus four
    copies of its parameters, times the group's members. ``one`` (one member's parameters) and ``data`` may be
    arrays or ``jax.ShapeDtypeStruct``s: only shapes are read. ``examples``: the step's gradient is computed that
    many training examples at a time (``run(examples_per_chunk=...)``).

    Summing every intermediate of the traced program over-counts what XLA keeps alive at once, so this errs on the
    safe side.
    """
    if examples is not None and examples < _n_examples(data):
        data = dict(data, **{f: jax.ShapeDtypeStruct((int(examples), *data[f].shape[1:]), data[f].dtype)
                             for f in ("x_train", "y_train")})
    jaxpr = jax.make_jaxpr(jax.value_and_grad(objective.loss, has_aux=True))(one, data)
    # (Python integers: a configuration's absurd width must give an absurd size, not an int64 overflow.)
    per_member = sum(math.prod(v.aval.shape) * v.aval.dtype.itemsize
                     for eqn in jaxpr.jaxpr.eqns for v in eqn.outvars if hasattr(v.aval, "shape"))
    per_member += 4 * sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree_util.tree_leaves(one))
    return int(per_member * n_members)


def memory_budget_and_source(memory_budget: float | None = None) -> tuple[float, str]:
    """The budget in bytes (``memory_budget``, else the default) and where it comes from, for messages."""
    if memory_budget is not None:
        return float(memory_budget), "memory_budget"
    told = _budget_from_environment()
    return default_memory_budget(), ("CHAOSGD_MEMORY_BUDGET" if told else "half the machine's memory")


def default_memory_budget() -> float:
    """Bytes a run may use when not told: ``$CHAOSGD_MEMORY_BUDGET``, else half of the device's memory (the
    executors give each worker process its share through that variable)."""
    return _budget_from_environment() or 0.5 * _machine_memory()


def _budget_from_environment() -> float:
    """``$CHAOSGD_MEMORY_BUDGET`` in bytes (0 when unset or empty); refused when it is not a number > 0."""
    text = os.environ.get("CHAOSGD_MEMORY_BUDGET", "").strip()
    if not text:
        return 0.0
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise BudgetError(f"CHAOSGD_MEMORY_BUDGET={text!r} is not a memory budget: give bytes as a number > 0 "
                          "(e.g. 8e9), or unset it for half the machine's memory", 0, math.nan)
    return value


def _machine_memory() -> float:
    stats = jax.devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return float(stats["bytes_limit"])
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _progress_bar(total, enabled, parts):
    if not enabled or total == 0:
        return None
    from chaosgd.progress import ProgressBar
    return ProgressBar(total, "training", parts)
