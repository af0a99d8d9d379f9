// One sparse-SGD step of the cosine-margin triplet loss, fused, for XLA:CPU (jax.ffi).
//
// `tripjax.kernels` compiles this file on first use and calls it from the jitted training
// step. It computes exactly what `train.make_train_step` computes with `sparse_sgd`, i.e. the
// hand-written VJP of `losses.triplet_cosine_loss` (plus the optional l2 term) followed by
// scatter-adds of -lr * gradient, but in two passes over the batch instead of XLA's
// gather / five reductions / gradient / scatter chain (each a pass over [B, D] arrays):
//
//   pass 1 (parallel over blocks of triplets): read the three rows of each triplet once,
//     compute its five dot products, its loss and its three gradient rows (eight floats at a
//     time where the dim allows);
//   pass 2 (one thread per table): add -lr * gradient to the rows, in the batch's order
//     (users; then positives followed by negatives, as the XLA step concatenates them).
//
// Triplets whose gradient is exactly zero (a hinge at 0 without l2, or a weight of 0, with
// finite rows) are skipped by both passes: XLA adds their zeros, which leaves every entry as it
// was. A triplet with a NaN or Inf in its rows is never skipped (its NaN spreads, as in XLA).
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
  const float* cotangent;     // d objective / d hinge_k (weight_k * scale_k / denominator)
  const float* l2_cotangent;  // the l2 term's weight of triplet k (weight_k / denominator)
  float margin, l2;
  float* loss;             // [B]
  float* grads;            // [3, B, dim]: users', positives', negatives' gradient rows
  int64_t size;
};

// A triplet's gradient coefficients: each gradient row is a combination of the three rows,
//   g_user = un * n - up * p - (uu - l2) * u,  g_pos = (pp + l2) * p - up * u,
//   g_neg = un * u - (nn - l2) * n,
// from the five dot products (norms clamped at eps, as in losses._EPS).
struct Coefficients {
  float loss, un, up, uu, pp, nn, l2;
};

inline Coefficients TripletCoefficients(float uu, float pp, float nn, float up, float un,
                                        float cotangent, float l2_cotangent, float margin,
                                        float l2) {
  const float iu = 1.0f / std::sqrt(std::max(uu, kEps2));
  const float ip = 1.0f / std::sqrt(std::max(pp, kEps2));
  const float in = 1.0f / std::sqrt(std::max(nn, kEps2));
  const float cos_p = up * iu * ip;
  const float cos_n = un * iu * in;
  const float loss = std::max(cos_n - cos_p + margin, 0.0f);
  // The hinge's gradient; a norm clamped at eps passes no gradient through the norm.
  const float a = loss > 0 ? cotangent : 0.0f;
  return {loss,
          a * iu * in,                                      // u's coefficient in g_neg, n's in g_user
          a * iu * ip,                                      // u's coefficient in g_pos, p's in g_user
          uu > kEps2 ? a * (cos_n - cos_p) * iu * iu : 0.0f,
          pp > kEps2 ? a * cos_p * ip * ip : 0.0f,
          nn > kEps2 ? a * cos_n * in * in : 0.0f,
          2.0f * l2 * l2_cotangent};  // d/dx of l2 * c * |x|^2, hinge or not
}

// Whether triplet k's gradient rows are exactly zero, so both passes may skip it: no hinge
// gradient (the loss is 0, or the hinge weighs 0), no l2 term (l2 is 0, or it weighs 0), and
// every number finite. A non-finite entry in any of the three rows makes the loss NaN, and
// then, as in XLA, its zero coefficients times the rows spread NaN: such triplets are updated.
inline bool ZeroGradient(float loss, float cotangent, float l2_cotangent, float l2) {
  return std::isfinite(loss) && std::isfinite(cotangent) && std::isfinite(l2_cotangent) &&
         (loss == 0.0f || cotangent == 0.0f) && (l2 == 0.0f || l2_cotangent == 0.0f);
}

// Eight floats, as GCC's and Clang's vector extension (one AVX register, or two SSE ones).
typedef float Float8 __attribute__((vector_size(32)));

inline Float8 Load8(const float* p) {
  Float8 v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}

inline void Store8(float* p, Float8 v) { __builtin_memcpy(p, &v, sizeof v); }

inline float Sum8(Float8 v) {
  return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

// Pass 1 for triplets [begin, end): the loss and the three gradient rows of each (none for a
// triplet whose gradient is zero). kDim: the rows' length when known at compile time (the
// loops unroll), 0 for b.dim; with kVector the rows are read eight floats at a time (b.dim a
// multiple of 8), else one at a time (any dim).
template <int64_t kDim, bool kVector>
void TripletGrads(const Batch& b, int64_t begin, int64_t end) {
  const int64_t d = kDim ? kDim : b.dim;
  auto user_row = [&](int64_t k) { return b.user_table + Clamp(b.users[k], b.num_users) * d; };
  auto pos_row = [&](int64_t k) { return b.item_table + Clamp(b.pos[k], b.num_items) * d; };
  auto neg_row = [&](int64_t k) { return b.item_table + Clamp(b.neg[k], b.num_items) * d; };
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
    if constexpr (kVector) {
      Float8 uu8 = {}, pp8 = {}, nn8 = {}, up8 = {}, un8 = {};
      for (int64_t j = 0; j < d; j += 8) {
        const Float8 x = Load8(u + j), y = Load8(p + j), z = Load8(n + j);
        uu8 += x * x;
        pp8 += y * y;
        nn8 += z * z;
        up8 += x * y;
        un8 += x * z;
      }
      uu = Sum8(uu8), pp = Sum8(pp8), nn = Sum8(nn8), up = Sum8(up8), un = Sum8(un8);
    } else {
#pragma omp simd reduction(+ : uu, pp, nn, up, un)
      for (int64_t j = 0; j < d; ++j) {
        uu += u[j] * u[j];
        pp += p[j] * p[j];
        nn += n[j] * n[j];
        up += u[j] * p[j];
        un += u[j] * n[j];
      }
    }
    const Coefficients c = TripletCoefficients(uu, pp, nn, up, un, b.cotangent[k],
                                               b.l2_cotangent[k], b.margin, b.l2);
    b.loss[k] = c.loss;
    if (ZeroGradient(c.loss, b.cotangent[k], b.l2_cotangent[k], b.l2)) continue;
    float* __restrict gu = b.grads + k * d;
    float* __restrict gp = b.grads + (b.size + k) * d;
    float* __restrict gn = b.grads + (2 * b.size + k) * d;
    const float uu_l2 = c.uu - c.l2, pp_l2 = c.pp + c.l2, nn_l2 = c.nn - c.l2;
    if constexpr (kVector) {
      for (int64_t j = 0; j < d; j += 8) {
        const Float8 x = Load8(u + j), y = Load8(p + j), z = Load8(n + j);
        Store8(gu + j, c.un * z - c.up * y - uu_l2 * x);
        Store8(gp + j, pp_l2 * y - c.up * x);
        Store8(gn + j, c.un * x - nn_l2 * z);
      }
    } else {
#pragma omp simd
      for (int64_t j = 0; j < d; ++j) {
        gu[j] = c.un * n[j] - c.up * p[j] - uu_l2 * u[j];
        gp[j] = pp_l2 * p[j] - c.up * u[j];
        gn[j] = c.un * u[j] - nn_l2 * n[j];
      }
    }
  }
}

// Pass 1 over [begin, end) with the loops that suit the rows' length.
void TripletGradsAnyDim(const Batch& b, int64_t begin, int64_t end) {
  switch (b.dim) {
    case 32: return TripletGrads<32, true>(b, begin, end);
    case 64: return TripletGrads<64, true>(b, begin, end);
    case 128: return TripletGrads<128, true>(b, begin, end);
    default:
      if (b.dim % 8 == 0) return TripletGrads<0, true>(b, begin, end);
      return TripletGrads<0, false>(b, begin, end);
  }
}

// Pass 2 for one table: table[indices[k]] += -(lr * grads[k]), in k order (across the index
// arrays, one after the other); skips triplets whose gradient is zero and drops indices
// outside the table (after counting negative ones from the end).
void ScatterSgd(const Batch& b, float* table, int64_t rows, const int32_t* const* indices,
                const float* grads, int num_index_arrays, float lr) {
  const int64_t dim = b.dim, size = b.size;
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
      if (ZeroGradient(b.loss[k], b.cotangent[k], b.l2_cotangent[k], b.l2)) continue;
      float* __restrict row = table + r * dim;
      const float* __restrict g = grads + k_all * dim;
#pragma omp simd
      for (int64_t j = 0; j < dim; ++j) row[j] += -(lr * g[j]);
    }
  }
}

ffi::Error TripletSgdUpdateImpl(ffi::ThreadPool pool, Table user_table, Table item_table,
                                Indices users, Indices pos, Indices neg, Vector cotangent,
                                Vector l2_cotangent,
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
      cotangent.dimensions()[0] != size || l2_cotangent.dimensions()[0] != size) {
    return ffi::Error::InvalidArgument(
        "users, pos, neg, cotangent and l2_cotangent must have one length");
  }
  if (new_user_table->typed_data() != user_table.typed_data() ||
      new_item_table->typed_data() != item_table.typed_data()) {
    return ffi::Error::InvalidArgument("the tables must be aliased to the outputs");
  }
  const Batch batch{user_table.typed_data(), item_table.typed_data(),
                    user_table.dimensions()[0], item_table.dimensions()[0], dim,
                    users.typed_data(), pos.typed_data(), neg.typed_data(),
                    cotangent.typed_data(), l2_cotangent.typed_data(), margin, l2,
                    loss->typed_data(), grads->typed_data(), size};
  const int64_t blocks = (size + kBlock - 1) / kBlock;
  ParallelFor(pool, blocks, [&batch](int64_t i) {
    TripletGradsAnyDim(batch, i * kBlock, std::min(batch.size, (i + 1) * kBlock));
  });
  const float lr = *learning_rate.typed_data();
  const int32_t* user_index[] = {users.typed_data()};
  const int32_t* item_index[] = {pos.typed_data(), neg.typed_data()};
  ParallelFor(pool, 2, [&](int64_t table) {
    if (table == 0) {
      ScatterSgd(batch, new_user_table->typed_data(), batch.num_users, user_index, batch.grads,
                 1, lr);
    } else {
      ScatterSgd(batch, new_item_table->typed_data(), batch.num_items, item_index,
                 batch.grads + size * dim, 2, lr);
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
                                  .Arg<Vector>()   // cotangent (the hinge's)
                                  .Arg<Vector>()   // l2_cotangent
                                  .Arg<Scalar>()   // learning_rate
                                  .Attr<float>("margin")
                                  .Attr<float>("l2")
                                  .Ret<Table>()    // new user_table (aliased to user_table)
                                  .Ret<Table>()    // new item_table (aliased to item_table)
                                  .Ret<Vector>()   // per-triplet loss
                                  .Ret<Grads>());  // gradient rows (scratch)
