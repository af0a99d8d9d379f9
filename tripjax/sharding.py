"""Device meshes (`jax.sharding`) for training and evaluation: batches over `data`, tables
replicated or split by rows over `model`.

`--mesh=data:N` or `data:N,model:M` (the product must equal the number of devices, those of
every process under `jax.distributed`: `tripjax.distributed`). The jitted step and the evaluation are the same programs as on
one device: the arrays carry `NamedSharding`s and XLA's SPMD partitioner splits the work and
adds the collectives (the gradient of a replicated table is summed over `data`).

- batches `[C, S, B, ...]`: B split over `data`;
- embedding tables `[N, D]` (and the optimizer state shaped like them): rows split over
  `model` (replicated when `model` is 1); everything else replicated;
- evaluation: each block's users split over `data`.
"""

from __future__ import annotations

import math

from absl import logging
import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from tripjax import errors

AXES = ("data", "model")


def parse_mesh(spec: str) -> dict[str, int]:
  """`"data:4"` / `"data:2,model:2"` -> {"data": 4, "model": 1} / {"data": 2, "model": 2}.

  Raises:
    errors.InvalidInput: naming `--mesh`: an unknown axis, a repeated one, a size below 1.
  """
  sizes = {"data": 1, "model": 1}
  seen = set()
  for part in filter(None, (p.strip() for p in str(spec).split(","))):
    name, sep, size = part.partition(":")
    if not sep or name not in AXES or name in seen or not size.isdigit() or int(size) < 1:
      raise errors.InvalidInput(f"--mesh={spec}: expected data:N or data:N,model:M with sizes "
                                f">= 1, got {part!r}.")
    seen.add(name)
    sizes[name] = int(size)
  return sizes


def make_mesh(spec: str, devices=None) -> Mesh:
  """The mesh of `spec` over the first data * model of `devices` (default `jax.devices()`).

  Raises:
    errors.InvalidInput: the mesh needs more devices than there are, or does not use them all
      (`data * model` must equal the device count), naming both numbers.
  """
  sizes = parse_mesh(spec)
  devices = list(jax.devices() if devices is None else devices)
  need = sizes["data"] * sizes["model"]
  if need != len(devices):
    raise errors.InvalidInput(
        f"--mesh={spec}: data x model = {need} devices, but there are {len(devices)} "
        f"({jax.default_backend()}); use sizes whose product is {len(devices)}.")
  grid = np.array(devices[:need], dtype=object).reshape(sizes["data"], sizes["model"])
  return Mesh(grid, AXES)


def put(x, sharding: NamedSharding) -> jax.Array:
  """`x` as an array with `sharding`: `jax.device_put` in one process; with several
  (`jax.distributed`), built from this process's copy of `x` (the same on every process) by
  `jax.make_array_from_callback`, each process filling its own devices' shards."""
  if jax.process_count() == 1:
    return jax.device_put(x, sharding)
  host = np.asarray(x)
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def batch_sharding(mesh: Mesh, ndim: int, axis: int) -> NamedSharding:
  """Split axis `axis` of an `ndim`-dimensional array over `data`."""
  spec = [None] * ndim
  spec[axis] = "data"
  return NamedSharding(mesh, P(*spec))


def _check_batch(mesh: Mesh, batch: int) -> None:
  """Raises errors.InvalidInput (naming --batch_size) unless `data` divides the batch."""
  if batch % mesh.shape["data"]:
    raise errors.InvalidInput(f"--batch_size={batch} must be a multiple of the mesh's data "
                              f"axis ({mesh.shape['data']}).")


def place_batches(batches, mesh: Mesh, axis: int = 2):
  """A `sampling.Batches` ([C, S, B, ...] leaves) with B split over `data`.

  Raises:
    errors.InvalidInput: B is not a multiple of the `data` size (naming --batch_size).
  """
  _check_batch(mesh, batches.users.shape[axis])
  return jax.tree.map(lambda x: put(x, batch_sharding(mesh, x.ndim, axis)), batches)


def batch_columns(mesh: Mesh, batch_size: int) -> np.ndarray:
  """int32[b], sorted: the positions of a batch (its B axis) that this process's devices hold
  under `place_batches` (all of them in one process)."""
  held = batch_sharding(mesh, 1, 0).addressable_devices_indices_map((batch_size,)).values()
  return np.unique(np.concatenate([np.arange(batch_size)[index[0]] for index in held])
                   ).astype(np.int32)


def place_epoch(sampler, epoch: int, mesh: Mesh, prefetch_next: bool = False):
  """One epoch of `sampler` (`tripjax.sampling.EpochSampler`) as `place_batches` places it.

  Under `jax.distributed` each process draws only its share, the batch positions its devices
  hold (`batch_columns`; the sampler searches only those triplets' negatives), and the global
  arrays are assembled from the shares: the same triplets as one process drawing them all.

  Raises:
    errors.InvalidInput: B is not a multiple of the `data` size (naming --batch_size).
  """
  batch = sampler.batch_size
  _check_batch(mesh, batch)
  if jax.process_count() == 1:
    return place_batches(sampler.epoch(epoch, prefetch_next), mesh)
  columns = batch_columns(mesh, batch)
  share = jax.device_get(sampler.epoch(epoch, prefetch_next, columns=columns))
  logging.log_first_n(logging.INFO, "Process %d of %d draws batch positions %d-%d of %d (%d "
                      "triplets of every batch: its devices' share).", 1, jax.process_index(),
                      jax.process_count(), columns[0], columns[-1], batch,
                      share.users.shape[2])

  def assemble(x):
    def shard(index):
      where = np.searchsorted(columns, np.arange(batch)[index[2]])
      return x[index[:2] + (where,) + index[3:]]
    return jax.make_array_from_callback(x.shape[:2] + (batch,) + x.shape[3:],
                                        batch_sharding(mesh, x.ndim, 2), shard)

  return jax.tree.map(assemble, share)


def host_copy(tree):
  """`tree`'s arrays as numpy on this process, whole, even when their shards live on other
  processes (then a collective: every process calls it at the same point). An array this
  process holds whole (its own copy, without a mesh) is copied as it is."""
  def one(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))

  return jax.tree.map(one, tree)


def table_sharding(mesh: Mesh, shape) -> NamedSharding:
  """Rows over `model` when they divide evenly (else replicated); 2-D leaves only split."""
  rows_split = (len(shape) == 2 and mesh.shape["model"] > 1
                and shape[0] % mesh.shape["model"] == 0)
  return NamedSharding(mesh, P("model", None) if rows_split else P())


def state_shardings(mesh: Mesh, state):
  """The sharding of every leaf of a pytree (params, optimizer state): tables by rows over
  `model`, the rest replicated."""
  return jax.tree.map(lambda x: table_sharding(mesh, np.shape(x)), state)


def place(tree, mesh: Mesh):
  """`tree` on the mesh with `state_shardings`."""
  return jax.tree.map(put, tree, state_shardings(mesh, tree))


def users_per_block(block_size: int, mesh: Mesh | None) -> int:
  """The evaluation block rounded up to a multiple of the `data` size."""
  if mesh is None:
    return block_size
  size = mesh.shape["data"]
  return int(math.ceil(block_size / size) * size)


def mesh_of(x: jax.Array) -> Mesh | None:
  """The mesh `x` is placed on, or None (an array on one device)."""
  return x.sharding.mesh if isinstance(x.sharding, NamedSharding) else None


def replicate(x, mesh: Mesh | None):
  """`x` (the same on every process) whole on every device of `mesh` (without a mesh: on the
  default device)."""
  if mesh is None:
    return jnp.asarray(x)
  return put(x, NamedSharding(mesh, P()))


def place_users(users, mesh: Mesh | None):
  """A block of user indices split over `data` (unchanged without a mesh)."""
  if mesh is None:
    return users
  return put(users, NamedSharding(mesh, P("data")))
