"""Tests of tripjax.models.user_rows: a block of CSR training rows expanded on the device."""

import jax
import numpy as np
import scipy.sparse as sp

from tripjax.models import user_rows


def test_dense_rows_equal_the_matrix_rows_including_empty_ones():
  rng = np.random.default_rng(0)
  dense = rng.random((9, 13)) < 0.3
  dense[4] = False  # an empty row
  train = sp.csr_matrix(dense)
  params = user_rows.csr_params(train)
  users = np.array([4, 0, 8, 8, 3], np.int32)
  got = jax.jit(user_rows.dense_rows, static_argnums=(3, 4))(
      params["indptr"], params["indices"], users, 13, user_rows.max_row_length(train.indptr))
  np.testing.assert_array_equal(np.asarray(got), dense[users].astype(np.float32))
  like = user_rows.csr_like(*train.shape[:1], train.nnz)
  assert jax.tree.map(lambda x: x.shape, like) == jax.tree.map(lambda x: x.shape, params)
