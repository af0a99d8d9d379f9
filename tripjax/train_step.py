"""The training step: ONE `jax.jit` (state donated) over a chunk of batches.

`make_train_step` runs `lax.scan` over a chunk of S batches; each batch picks its hardest
negative, differentiates the triplet loss (`losses.triplet_cosine_loss` through `batch_loss`)
and applies the optimizer. The loss is a function of the gathered rows (user, positive,
negative), so one step serves both optimizer kinds (`tripjax.optimizers`):

- dense optax (`adam`, `adagrad`, `sgd`): gradient w.r.t. the full tables, `optax` update;
- row-sparse (`sparse_*`, `tripjax.sparse_optim`): gradient w.r.t. the gathered rows, then
  `RowOptimizer.update(row_grads, row_indices, ...)` touches only them.

With `fused_cpu=True` (sparse_sgd on CPU) the loss, gradient and update of a batch are one
custom call instead (`tripjax.kernels`); the scan, hardest-of-n and padding are the same. The
variant is chosen once, when the step is built, never inside traced code.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tripjax import errors
from tripjax import kernels
from tripjax import losses
from tripjax import model
from tripjax import sampling
from tripjax import sparse_optim
from tripjax.optimizers import is_row_optimizer


class TrainState(NamedTuple):
  """Everything the step updates (the optimizer's functions stay outside)."""
  params: model.Params  # {"user": float32[U, D], "item": float32[I, D]}
  opt_state: Any  # the optimizer's state pytree (optax, or a sparse_optim state)
  step: jax.Array  # int32[]: optimizer steps applied (empty padded batches not counted)


def init_state(key: jax.Array, optimizer, num_users: int, num_items: int, dim: int,
               scale: float = 0.1, **features) -> TrainState:
  """Fresh parameters (`model.init_params`, `features` its keywords) and optimizer state.

  The optimizer's state covers `model.trainable(params)` (the features' ids and weights are
  data).
  """
  params = model.init_params(key, num_users, num_items, dim, scale, **features)
  return TrainState(params, optimizer.init(model.trainable(params)), jnp.zeros([], jnp.int32))


def batch_denominator(weights: jax.Array) -> jax.Array:
  """What `batch_loss` divides the weighted sums by: float32[], max(sum(weights), 1)."""
  return jnp.maximum(jnp.sum(weights), 1.0)


def batch_loss(user_rows: jax.Array, pos_rows: jax.Array, neg_rows: jax.Array,
               weights: jax.Array, margin: float, l2: float, temperature: float = 0.0,
               scale: jax.Array | None = None, adaptive_margin: bool = False,
               pos_grad: jax.Array | None = None):
  """The batch objective as a function of the gathered rows.

  Args:
    user_rows: float32[B, D].
    pos_rows: float32[B, D].
    neg_rows: float32[B, D] (one negative per triplet), or float32[B, n, D]: n candidates,
      whose hinge losses are averaged with softmax(loss / temperature) weights (no gradient
      through the weights): temperature -> 0 is the hardest candidate, large is their mean.
    weights: float32[B], each triplet's weight in the batch's weighted mean: 1 for a
      positive, `--low_rating_weight` for a low rating (`sampling.EpochSampler`'s weak
      positives), times its user's weight (`--user_weight_exponent`); 0 for padding.
    margin: the triplet margin.
    l2: weight of the mean squared norm of the gathered rows.
    temperature: > 0 with [B, n, D] negatives.
    scale: optional float32[B], each triplet's hinge weight in the objective (WARP's rank
      weights, `sampling.warp_negatives`); the denominator and the l2 term keep `weights`.
    adaptive_margin: each triplet's margin is `margin * (1 - cos(p, n)) / 2` (no gradient
      through it): a negative much like the positive needs less separating from it.
    pos_grad: optional float32[B], the share of each triplet's hinge gradient that reaches
      its positive's row (the objective's value is unchanged; the l2 term's gradient reaches
      the row whole).

  Returns:
    (objective float32[], per-triplet hinge losses float32[B], unscaled).
  """
  rows = (user_rows, pos_rows)  # the l2 term's
  if pos_grad is not None:  # the same value; d(hinge)/d pos_rows scaled by pos_grad
    fixed = jax.lax.stop_gradient(pos_rows)
    pos_rows = fixed + pos_grad[:, None] * (pos_rows - fixed)
  if adaptive_margin:  # [B] or [B, n]
    alike = losses.cosine(pos_rows if neg_rows.ndim == 2 else pos_rows[:, None], neg_rows)
    margin = margin * jax.lax.stop_gradient((1.0 - alike) / 2.0)
  if neg_rows.ndim == 3:
    shape = neg_rows.shape
    per_candidate = losses.triplet_cosine_loss(
        jnp.broadcast_to(user_rows[:, None], shape), jnp.broadcast_to(pos_rows[:, None], shape),
        neg_rows, margin)  # [B, n]
    mix = jax.lax.stop_gradient(jax.nn.softmax(per_candidate / temperature, axis=-1))
    per_triplet = jnp.sum(mix * per_candidate, axis=-1)
  else:
    per_triplet = losses.triplet_cosine_loss(user_rows, pos_rows, neg_rows, margin)
  denom = batch_denominator(weights)
  scaled = per_triplet if scale is None else scale * per_triplet
  objective = jnp.sum(weights * scaled) / denom
  if l2:
    squares = sum(jnp.sum(jnp.square(r), axis=-1) for r in rows)
    squares += jnp.sum(jnp.square(neg_rows), axis=-1).reshape(neg_rows.shape[0], -1).mean(-1)
    objective += l2 * jnp.sum(weights * squares) / denom
  return objective, per_triplet


def _check_fused_cpu(optimizer) -> None:
  """Raises InvalidInput (not sparse_sgd) or kernels.Unavailable (not CPU, no kernel)."""
  if not is_row_optimizer(optimizer) or optimizer.sgd_learning_rate is None:
    raise errors.InvalidInput("the fused CPU step (--fused_cpu_step) applies plain row-sparse "
                              "SGD: it needs --optimizer=sparse_sgd.")
  if jax.default_backend() != "cpu":
    raise kernels.Unavailable(
        "the fused CPU step (--fused_cpu_step) runs on the CPU backend only; this process's "
        f"default backend is {jax.default_backend()!r} (set JAX_PLATFORMS=cpu, or drop "
        "--fused_cpu_step).")
  kernels.register()  # build errors surface here, before any tracing


def _make_apply(optimizer, margin: float, l2: float, fused_cpu: bool, temperature: float = 0.0,
                adaptive_margin: bool = False, weak_item_grad: float = 1.0):
  """The update of one batch for this optimizer kind, chosen once (not inside traced code).

  Weak triplets (`sampling.Batches.weak`) pass `weak_item_grad` of their gradient to their
  positive's row (`batch_loss`'s pos_grad) when it is below 1.

  Returns:
    `apply(state, users, pos, neg, weights, scale, weak) -> (state, (loss_sum, active_sum))`
    with users/pos/neg int32[B], weights float32[B], scale float32[B] or None (`batch_loss`)
    and weak bool[B] or None.
  """
  # The objective of the non-fused updates as a function of the gathered rows, the batch's
  # weights and its optional per-triplet scale.
  weighted_loss = functools.partial(batch_loss, margin=margin, l2=l2, temperature=temperature,
                                    adaptive_margin=adaptive_margin)

  def loss(user_rows, pos_rows, neg_rows, weights, scale=None, weak=None):
    pos_grad = None
    if weak is not None and weak_item_grad < 1.0:
      pos_grad = jnp.where(weak, jnp.float32(weak_item_grad), 1.0)
    return weighted_loss(user_rows, pos_rows, neg_rows, weights, scale=scale,
                         pos_grad=pos_grad)
  if fused_cpu:
    _check_fused_cpu(optimizer)
    update_rows = _fused_update(optimizer, margin, l2)
  elif is_row_optimizer(optimizer):
    update_rows = _row_sparse_update(optimizer, loss)
  else:
    update_rows = _dense_update(optimizer, loss)

  def apply(state, users, pos, neg, weights, scale, weak):
    params, opt_state, per = update_rows(state.params, state.opt_state, users, pos, neg,
                                         weights, scale, weak)
    sums = (jnp.sum(weights * per), jnp.sum(weights * (per > 0)))
    return TrainState(params, opt_state, state.step + 1), sums

  return apply


def _fused_update(optimizer, margin: float, l2: float):
  """Loss, gradient and sparse SGD update of a batch as one custom call (`tripjax.kernels`)."""
  def update(params, opt_state, users, pos, neg, weights, scale, weak):
    del weak  # make_train_step refuses a share below 1 with this step
    count = opt_state.count
    cotangent = weights / batch_denominator(weights)  # d batch_loss / d per-triplet loss
    user, item, per = kernels.triplet_sgd_update(  # WARP's scale weighs the hinge, not l2
        params["user"], params["item"], users, pos, neg,
        cotangent if scale is None else cotangent * scale,
        sparse_optim.learning_rate_at(optimizer.sgd_learning_rate, count), margin, l2,
        l2_cotangent=cotangent)
    return ({"user": user, "item": item},
            opt_state._replace(count=optax.safe_increment(count)), per)
  return update


def _row_sparse_update(optimizer, loss):
  """Gradient w.r.t. the gathered rows; the row optimizer updates only those rows.

  `loss(user_rows, pos_rows, neg_rows, weights, scale=, weak=)`: `batch_loss` with its
  settings.
  """
  def update(params, opt_state, users, pos, neg, weights, scale, weak):
    rows = (params["user"][users], params["item"][pos], params["item"][neg])
    (_, per), (g_user, g_pos, g_neg) = jax.value_and_grad(
        loss, argnums=(0, 1, 2), has_aux=True)(*rows, weights, scale=scale, weak=weak)
    dim = g_user.shape[-1]
    params, opt_state = optimizer.update(
        {"user": g_user, "item": jnp.concatenate([g_pos, g_neg.reshape(-1, dim)])},
        {"user": users, "item": jnp.concatenate([pos, neg.reshape(-1)])}, opt_state, params,
        param_rows={"user": rows[0],
                    "item": jnp.concatenate([rows[1], rows[2].reshape(-1, dim)])})
    return params, opt_state, per
  return update


def _dense_update(optimizer, loss):
  """Gradient w.r.t. the whole tables (feature tables included); an optax update.

  `loss` as in `_row_sparse_update`.
  """
  def update(params, opt_state, users, pos, neg, weights, scale, weak):
    def objective(trained):
      merged = model.merge(trained, params)
      return loss(model.rows(merged, "user", users), model.rows(merged, "item", pos),
                  model.rows(merged, "item", neg), weights, scale=scale, weak=weak)
    trained = model.trainable(params)
    (_, per), grads = jax.value_and_grad(objective, has_aux=True)(trained)
    updates, opt_state = optimizer.update(grads, opt_state, trained)
    return model.merge(optax.apply_updates(trained, updates), params), opt_state, per
  return update


@functools.lru_cache(maxsize=32)
def make_train_step(optimizer, margin: float = 0.5, l2: float = 0.0, fused_cpu: bool = False,
                    negative_temperature: float = 0.0, warp: bool = False,
                    adaptive_margin: bool = False, weak_item_grad: float = 1.0
                    ) -> Callable[[TrainState, sampling.Batches], tuple[TrainState, dict]]:
  """Builds the jitted, state-donating training step over a chunk of batches.

  Cached on its arguments (the optimizer by identity: `optimizers.make_optimizer` returns one
  object per setting), so fits of one process with the same settings (a run's split or
  validation seeds, a resumed run) trace and compile their step once.

  Args:
    optimizer: an `optax.GradientTransformation`, or a `sparse_optim.RowOptimizer` (then the
      gradient is taken w.r.t. the gathered rows and only those rows are updated).
    margin: the triplet margin.
    l2: L2 weight on the gathered embeddings.
    fused_cpu: apply each batch with `tripjax.kernels`' fused kernel (the same loss, gradient and
      update, in two passes over the batch and on all cores; compiled on first use). Needs
      `sparse_sgd` and the CPU backend.
    negative_temperature: 0 trains each triplet on its hardest of the n candidates; T > 0 on
      all of them, their hinge losses weighted by softmax(loss / T) (`batch_loss`).
    warp: train each triplet on the first of its n candidates that violates the margin, its
      hinge weighted by WARP's log rank estimate (`sampling.warp_negatives`), instead of the
      hardest; not with a temperature.
    adaptive_margin: each triplet's margin scaled by (1 - cos(p, n)) / 2 (`batch_loss`); not
      with the fused kernel, whose margin is one number.
    weak_item_grad: the share of a weak triplet's (`sampling.Batches.weak`) gradient that
      reaches its positive's row (`--low_rating_item_grad`); below 1, not with the fused
      kernel.

  Returns:
    `step(state, batches, skip_empty=True) -> (state, metrics)`, where `batches` is a
    `sampling.Batches` with users/pos int32[S, B], neg int32[S, B, n], weights float32[S, B]
    and weak bool[S, B] or None.
    With n > 1 each triplet trains on its hardest (highest-cosine) candidate, or on all of them
    (`negative_temperature` > 0). Batches whose
    weights are all 0 (an epoch's padding) leave the state untouched; `skip_empty=False`
    (static) drops that check, for chunks whose every batch holds a real triplet (a
    conditional around the update costs about 5% on CPU; `run_epoch` chooses). metrics:
    `loss` (weighted mean hinge loss), `active_fraction` (weighted share of triplets with
    positive loss), their weighted sums `loss_sum`, `active_sum` and the weights' sum
    `weight` (the number of real triplets when every weight is 1 or 0), and `triplets`, the
    real triplets (weight > 0). `state` is donated: do not reuse it after the call.
  """
  if negative_temperature and fused_cpu:
    raise errors.InvalidInput("the fused CPU step trains on the hardest negative only; drop "
                              "--negative_temperature or --fused_cpu_step.")
  if adaptive_margin and fused_cpu:
    raise errors.InvalidInput("the fused CPU step takes one margin for every triplet; drop "
                              "--adaptive_margin or --fused_cpu_step.")
  if negative_temperature and warp:
    raise errors.InvalidInput("--warp trains on one candidate negative and "
                              "--negative_temperature on all of them: drop one of them.")
  if not 0.0 <= weak_item_grad <= 1.0:
    raise errors.InvalidInput(f"weak_item_grad must be in [0, 1], got {weak_item_grad!r}.")
  if weak_item_grad < 1.0 and fused_cpu:
    raise errors.InvalidInput("the fused CPU step takes each triplet's gradient whole; drop "
                              "--low_rating_item_grad or --fused_cpu_step.")
  apply = _make_apply(optimizer, margin, l2, fused_cpu, negative_temperature, adaptive_margin,
                      weak_item_grad)

  def skip(state, *unused):
    del unused
    return state, (jnp.zeros([], jnp.float32), jnp.zeros([], jnp.float32))

  def one_batch(state, batch, skip_empty):
    users, pos, neg, weights, weak = batch
    scale = None
    if warp:
      item = functools.partial(model.rows, state.params, "item")
      neg, scale = sampling.warp_negatives(
          model.rows(state.params, "user", users), item(pos), item(neg), neg, margin,
          state.params["item"].shape[0])
    elif neg.shape[-1] > 1 and negative_temperature:
      pass  # every candidate is trained on (batch_loss weighs them).
    elif neg.shape[-1] > 1:
      neg = sampling.hardest_negatives(model.rows(state.params, "user", users),
                                       model.rows(state.params, "item", neg), neg)
    else:
      neg = neg[:, 0]
    if skip_empty:
      state, (loss_sum, active_sum) = jax.lax.cond(
          jnp.any(weights > 0), apply, skip, state, users, pos, neg, weights, scale, weak)
    else:
      state, (loss_sum, active_sum) = apply(state, users, pos, neg, weights, scale, weak)
    return state, (loss_sum, active_sum, jnp.sum(weights), jnp.sum(weights > 0))

  def step(state: TrainState, batches: sampling.Batches, skip_empty: bool = True):
    batches = (batches.users, batches.pos, batches.neg, batches.weights, batches.weak)
    state, sums = jax.lax.scan(functools.partial(one_batch, skip_empty=skip_empty), state,
                               batches)
    loss_sum, active_sum, weight, triplets = (jnp.sum(x) for x in sums)
    denom = jnp.maximum(weight, 1e-30)
    return state, {"loss": loss_sum / denom, "active_fraction": active_sum / denom,
                   "loss_sum": loss_sum, "active_sum": active_sum, "weight": weight,
                   "triplets": triplets.astype(jnp.float32)}

  return jax.jit(step, donate_argnums=0, static_argnames="skip_empty")


def epoch_chunk_kinds(sampler: sampling.EpochSampler) -> tuple[bool, ...]:
  """The `skip_empty` values `run_epoch` passes over the sampler's epochs.

  Chunks before the last are full; the last holds empty (all-padding) batches unless the
  batches fill it exactly.
  """
  kinds = {sampler.num_chunks * sampler.batches_per_chunk > sampler.num_batches}
  if sampler.num_chunks > 1:
    kinds.add(False)
  return tuple(sorted(kinds))


def compile_step(step_fn, state: TrainState, chunk: sampling.Batches,
                 kinds: tuple[bool, ...] = (False, True)):
  """`make_train_step`'s step compiled ahead of time, once per `skip_empty` value in `kinds`.

  Returns:
    `step(state, batches, skip_empty=True)` calling the compiled program (donation kept).
  """
  compiled = {kind: step_fn.lower(state, chunk, skip_empty=kind).compile() for kind in kinds}

  def step(state, batches, skip_empty=True):
    if skip_empty not in compiled:
      raise errors.InvalidInput(f"compile_step: skip_empty={skip_empty} was not compiled (kinds "
                                f"{tuple(compiled)}).")
    return compiled[skip_empty](state, batches)

  return step


@jax.jit
def chunk_of(batches: sampling.Batches, c: jax.Array) -> sampling.Batches:
  """Chunk `c` ([S, B] leading axes) of an epoch's `batches`, in one dispatch (taking it out
  one array at a time with eager `x[c]` was ~20 dispatches an epoch: a fifth of an
  ML-1M-shaped epoch's steps with the fused kernel)."""
  return jax.tree.map(lambda x: jax.lax.dynamic_index_in_dim(x, c, keepdims=False), batches)


@jax.jit
def _has_empty_batch(weights: jax.Array) -> jax.Array:
  """bool[C]: whether each chunk of weights float32[C, S, B] holds an all-padding batch."""
  return jnp.any(jnp.max(weights, axis=-1) <= 0, axis=-1)


def run_epoch(step_fn, state: TrainState, batches: sampling.Batches):
  """Runs every chunk of an epoch's `batches` ([C, S, B] leading axes) through `step_fn`.

  Chunks without an empty (all-padding) batch, all but the last of a sampler's epoch, run
  without the empty-batch check (`make_train_step`'s `skip_empty=False`).

  Returns:
    (state, per-chunk metrics as host numpy dict of float[C]).
  """
  has_empty = np.asarray(_has_empty_batch(batches.weights))
  chunk_metrics = []
  for c in range(batches.users.shape[0]):
    state, metrics = step_fn(state, chunk_of(batches, np.int32(c)), skip_empty=bool(has_empty[c]))
    chunk_metrics.append(metrics)
  fetched = jax.device_get(chunk_metrics)  # one host transfer per epoch
  return state, {k: np.array([m[k] for m in fetched], np.float64) for k in fetched[0]}
