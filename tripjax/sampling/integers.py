"""Uniform random words mapped onto integer ranges, in int32/uint32 arithmetic only.

JAX without x64 has no 64-bit integers, so the products are computed in 16-bit limbs.
"""

import jax
import jax.numpy as jnp


def _low16(a: jax.Array) -> jax.Array:
  return a & 0xFFFF


def _high16(a: jax.Array) -> jax.Array:
  return a >> 16


def multiply_high(bits: jax.Array, maxval: jax.Array) -> jax.Array:
  """`floor(bits * maxval / 2**32)`: uniform 32-bit words mapped onto [0, maxval).

  Each value in [0, maxval) is hit by floor or ceil of 2**32 / maxval words, so the relative
  bias is below maxval / 2**32 (2**-15 for 131,072 items).

  Args:
    bits: uint32[...], uniform random words.
    maxval: int32, broadcastable to `bits`, each in [1, 2**31).

  Returns:
    int32[...] in [0, maxval).
  """
  m = jnp.broadcast_to(maxval, bits.shape).astype(jnp.uint32)
  r_low, r_high, m_low, m_high = _low16(bits), _high16(bits), _low16(m), _high16(m)
  middle = (_high16(r_low * m_low) + _low16(r_high * m_low)
            + _low16(r_low * m_high))  # < 3 * 2**16
  return (r_high * m_high + _high16(r_high * m_low) + _high16(r_low * m_high)
          + _high16(middle)).astype(jnp.int32)


def multiply_high48(bits: jax.Array, maxval: jax.Array) -> jax.Array:
  """`floor(maxval * R / 2**48)` for the 48-bit R = bits[0] + (bits[1] mod 2**16) * 2**32.

  Args:
    bits: uint32[2, ...], uniform random words.
    maxval: int32, broadcastable to `bits[0]`, each in [1, 2**31).

  Returns:
    int32[...] in [0, maxval) (see `uniform_below`).
  """
  shape = bits.shape[1:]
  r_low, r_mid, r_high = _low16(bits[0]), _high16(bits[0]), _low16(bits[1])
  m = jnp.broadcast_to(maxval, shape).astype(jnp.uint32)
  m_low, m_high = _low16(m), _high16(m)  # m_high < 2**15: every product below fits in 32 bits
  p00, p01, p02 = m_low * r_low, m_low * r_mid, m_low * r_high
  p10, p11, p12 = m_high * r_low, m_high * r_mid, m_high * r_high
  # Columns of 16 bits (each sum < 5 * 2**16), carries propagated upwards.
  c1 = _high16(p00) + _low16(p01) + _low16(p10)
  c2 = _high16(p01) + _high16(p10) + _low16(p02) + _low16(p11) + _high16(c1)
  c3 = _high16(p02) + _high16(p11) + _low16(p12) + _high16(c2)
  return (_low16(c3) + ((_high16(p12) + _high16(c3)) << 16)).astype(jnp.int32)


def uniform_below(key: jax.Array, maxval: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Integers uniform in [0, maxval), for maxval up to 2**31 - 1, with a relative bias < 2**-17.

  `jax.random.randint` multiplies in 32 bits: for a span beyond 2**16 that does not divide
  2**32 it gives the low values up to 1 + 1 / floor(2**32 / span) times the mass of the high
  ones (7/6 at 0.6 * 2**30). Here x = floor(maxval * R / 2**48) for a uniform 48-bit R
  (`multiply_high48`): each x is hit by floor or ceil of 2**48 / maxval values of R.

  Args:
    key: a PRNG key.
    maxval: int32, broadcastable to `shape`, each >= 1.
    shape: the output shape.

  Returns:
    int32[shape].
  """
  return multiply_high48(jax.random.bits(key, (2,) + tuple(shape), jnp.uint32), maxval)
