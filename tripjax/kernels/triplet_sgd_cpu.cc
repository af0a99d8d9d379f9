// One sparse-SGD step of the cosine-margin triplet loss, fused, for XLA:CPU (jax.ffi).
//
// `tripjax.kernels` compiles this file on first use and calls it from the jitted training
// step. It computes exactly what `train.make_train_step` computes with `sparse_sgd`, i.e. the
// hand-written VJP of `losses.triplet_cosine_loss` (plus the optional l2 term) followed by
// scatter-adds of -lr * gradient, but in two passes over the batch instead of XLA's
// gather / five reductions / gradient / scatter chain (each a pass over [B, D] arrays):
//
//   pass 1 (parallel over blocks of triplets): read the three rows of each triplet once,
//     compute its five dot products, its loss and its three gradient rows;
//   pass 2 (one thread per table): add -lr * gradient to the rows, in the batch's order
//     (users; then positives followed by negatives, as the XLA step concatenates them).
//
// Every gradient is computed from the tables as they were before the step (batch semantics,
// as in the XLA step), and the result does not depend on the number of threads.
// Indices behave as in the XLA step: negative ones count from the end (JAX's indexing), and
// out-of-range ones are clamped into the table by the forward pass (JAX's gather) and dropped
// by the update (the scatter's mode="drop").

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "common.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using tripjax::ParallelFor;

namespace {

using Table = ffi::Buffer<ffi::F32, 2>;     // float32[rows, dim]
using Indices = ffi::Buffer<ffi::S32, 1>;   // int32[B]
using Vector = ffi::Buffer<ffi::F32, 1>;    // float32[B]
using Scalar = ffi::Buffer<ffi::F32, 0>;    // float32[]
using TableOut = ffi::ResultBuffer<ffi::F32, 2>;
using VectorOut = ffi::ResultBuffer<ffi::F32, 1>;
using Grads = ffi::Buffer<ffi::F32, 3>;     // float32[3, B, dim]
using GradsOut = ffi::ResultBuffer<ffi::F32, 3>;

constexpr float kEps2 = 1e-16f;       // losses._EPS ** 2: norms below 1e-8 count as 1e-8.
constexpr int64_t kBlock = 256;       // triplets per pass-1 work item.
constexpr int64_t kPrefetchAhead = 8;  // triplets between a row's prefetch and its use.

// JAX's indexing: a negative index counts from the end (NumPy's rule).
inline int64_t Wrap(int32_t index, int64_t rows) { return index < 0 ? index + rows : index; }

// The row a gather reads: out-of-range indices are clamped into the table.
inline int64_t Clamp(int32_t index, int64_t rows) {
  const int64_t i = Wrap(index, rows);
  return i < 0 ? 0 : (i >= rows ? rows - 1 : i);
}

inline void PrefetchRow(const float* row, int64_t dim) {
  for (int64_t j = 0; j < dim; j += 16) __builtin_prefetch(row + j);
}

struct Batch {
  const float* user_table;
  const float* item_table;
  int64_t num_users, num_items, dim;
  const int32_t* users;
  const int32_t* pos;
  const int32_t* neg;
  const float* cotangent;  // d objective / d loss_k (weight_k / denominator)
  float margin, l2;
  float* loss;             // [B]
  float* grads;            // [3, B, dim]: users', positives', negatives' gradient rows
  int64_t size;
};

// Pass 1 for triplets [begin, end): the loss and the three gradient rows of each.
void TripletGrads(const Batch& b, int64_t begin, int64_t end) {
  const int64_t d = b.dim;
  auto user_row = [&b](int64_t k) { return b.user_table + Clamp(b.users[k], b.num_users) * b.dim; };
  auto pos_row = [&b](int64_t k) { return b.item_table + Clamp(b.pos[k], b.num_items) * b.dim; };
  auto neg_row = [&b](int64_t k) { return b.item_table + Clamp(b.neg[k], b.num_items) * b.dim; };
  for (int64_t k = begin; k < end; ++k) {
    if (k + kPrefetchAhead < end) {
      PrefetchRow(user_row(k + kPrefetchAhead), d);
      PrefetchRow(pos_row(k + kPrefetchAhead), d);
      PrefetchRow(neg_row(k + kPrefetchAhead), d);
    }
    const float* __restrict u = user_row(k);
    const float* __restrict p = pos_row(k);
    const float* __restrict n = neg_row(k);
    float uu = 0, pp = 0, nn = 0, up = 0, un = 0;
#pragma omp simd reduction(+ : uu, pp, nn, up, un)
    for (int64_t j = 0; j < d; ++j) {
      uu += u[j] * u[j];
      pp += p[j] * p[j];
      nn += n[j] * n[j];
      up += u[j] * p[j];
      un += u[j] * n[j];
    }
    const float iu = 1.0f / std::sqrt(std::max(uu, kEps2));
    const float ip = 1.0f / std::sqrt(std::max(pp, kEps2));
    const float in = 1.0f / std::sqrt(std::max(nn, kEps2));
    const float cos_p = up * iu * ip;
    const float cos_n = un * iu * in;
    const float loss = std::max(cos_n - cos_p + b.margin, 0.0f);
    b.loss[k] = loss;
    // The hinge's gradient; a norm clamped at eps passes no gradient through the norm.
    const float c = b.cotangent[k];
    const float a = loss > 0 ? c : 0.0f;
    const float un_coef = a * iu * in;  // u's coefficient in g_neg, n's in g_user
    const float up_coef = a * iu * ip;  // u's coefficient in g_pos, p's in g_user
    const float uu_coef = uu > kEps2 ? a * (cos_n - cos_p) * iu * iu : 0.0f;
    const float pp_coef = pp > kEps2 ? a * cos_p * ip * ip : 0.0f;
    const float nn_coef = nn > kEps2 ? a * cos_n * in * in : 0.0f;
    const float l2_coef = 2.0f * b.l2 * c;  // d/dx of l2 * c * |x|^2, hinge or not
    float* __restrict gu = b.grads + k * d;
    float* __restrict gp = b.grads + (b.size + k) * d;
    float* __restrict gn = b.grads + (2 * b.size + k) * d;
#pragma omp simd
    for (int64_t j = 0; j < d; ++j) {
      gu[j] = un_coef * n[j] - up_coef * p[j] - uu_coef * u[j] + l2_coef * u[j];
      gp[j] = pp_coef * p[j] - up_coef * u[j] + l2_coef * p[j];
      gn[j] = un_coef * u[j] - nn_coef * n[j] + l2_coef * n[j];
    }
  }
}

// Pass 2 for one table: table[indices[k]] += -(lr * grads[k]), in k order; drops indices
// outside the table (after counting negative ones from the end).
void ScatterSgd(float* table, int64_t rows, int64_t dim, const int32_t* const* indices,
                const float* grads, int64_t size, int num_index_arrays, float lr) {
  int64_t k_all = 0;
  for (int a = 0; a < num_index_arrays; ++a) {
    const int32_t* index = indices[a];
    for (int64_t k = 0; k < size; ++k, ++k_all) {
      if (k + kPrefetchAhead < size) {
        const int64_t ahead = Wrap(index[k + kPrefetchAhead], rows);
        if (ahead >= 0 && ahead < rows) PrefetchRow(table + ahead * dim, dim);
      }
      const int64_t r = Wrap(index[k], rows);
      if (r < 0 || r >= rows) continue;
      float* __restrict row = table + r * dim;
      const float* __restrict g = grads + k_all * dim;
#pragma omp simd
      for (int64_t j = 0; j < dim; ++j) row[j] += -(lr * g[j]);
    }
  }
}

ffi::Error TripletSgdUpdateImpl(ffi::ThreadPool pool, Table user_table, Table item_table,
                                Indices users, Indices pos, Indices neg, Vector cotangent,
                                Scalar learning_rate, float margin, float l2,
                                TableOut new_user_table, TableOut new_item_table,
                                VectorOut loss, GradsOut grads) {
  const int64_t dim = user_table.dimensions()[1];
  const int64_t size = users.dimensions()[0];
  if (item_table.dimensions()[1] != dim) {
    return ffi::Error::InvalidArgument("user and item tables must have the same dim");
  }
  if (size > 0 && (user_table.dimensions()[0] == 0 || item_table.dimensions()[0] == 0)) {
    return ffi::Error::InvalidArgument("a table with no rows cannot be gathered from");
  }
  if (pos.dimensions()[0] != size || neg.dimensions()[0] != size ||
      cotangent.dimensions()[0] != size) {
    return ffi::Error::InvalidArgument("users, pos, neg and cotangent must have one length");
  }
  if (new_user_table->typed_data() != user_table.typed_data() ||
      new_item_table->typed_data() != item_table.typed_data()) {
    return ffi::Error::InvalidArgument("the tables must be aliased to the outputs");
  }
  const Batch batch{user_table.typed_data(), item_table.typed_data(),
                    user_table.dimensions()[0], item_table.dimensions()[0], dim,
                    users.typed_data(), pos.typed_data(), neg.typed_data(),
                    cotangent.typed_data(), margin, l2,
                    loss->typed_data(), grads->typed_data(), size};
  const int64_t blocks = (size + kBlock - 1) / kBlock;
  ParallelFor(pool, blocks, [&batch](int64_t i) {
    TripletGrads(batch, i * kBlock, std::min(batch.size, (i + 1) * kBlock));
  });
  const float lr = *learning_rate.typed_data();
  const int32_t* user_index[] = {users.typed_data()};
  const int32_t* item_index[] = {pos.typed_data(), neg.typed_data()};
  ParallelFor(pool, 2, [&](int64_t table) {
    if (table == 0) {
      ScatterSgd(new_user_table->typed_data(), batch.num_users, dim, user_index, batch.grads,
                 size, 1, lr);
    } else {
      ScatterSgd(new_item_table->typed_data(), batch.num_items, dim, item_index,
                 batch.grads + size * dim, size, 2, lr);
    }
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(TripletSgdUpdate, TripletSgdUpdateImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Table>()    // user_table
                                  .Arg<Table>()    // item_table
                                  .Arg<Indices>()  // users
                                  .Arg<Indices>()  // pos
                                  .Arg<Indices>()  // neg
                                  .Arg<Vector>()   // cotangent
                                  .Arg<Scalar>()   // learning_rate
                                  .Attr<float>("margin")
                                  .Attr<float>("l2")
                                  .Ret<Table>()    // new user_table (aliased to user_table)
                                  .Ret<Table>()    // new item_table (aliased to item_table)
                                  .Ret<Vector>()   // per-triplet loss
                                  .Ret<Grads>());  // gradient rows (scratch)
