// Exact negatives for XLA:CPU (jax.ffi): what `sampling.negatives.missing_items_from_words`
// computes, one query at a time instead of one binary-search step at a time over all queries.
//
// XLA runs the vectorised search as `search_steps` passes over [T, n] arrays of bounds (each
// pass streams them through memory, and every query takes as many steps as the longest row
// needs); here each query runs its own branch-free search over its row's segment of `v`, whose
// length sets its steps, with the bounds in registers. The queries come in the matrix's row
// order (`sampling.epoch`), so consecutive searches share a row's segment in cache, and they
// are searched several at a time in lockstep, their loads overlapping. Integer
// arithmetic throughout: the result equals the XLA draw's exactly, for any number of threads.
//
//   uniform:  x = floor(words[k, j] * num_missing[u] / 2**32),
//             item = x + #{r in u's row : v[r] <= x}
//   weighted: x = floor(num_missing[u] * R / 2**48), R the 48 bits of words[0|1, k, j],
//             r = #{r in u's row : v[r] <= x}, before = prefix[start + r] (or the row's
//             weight when r is the row's length), item = #{i : cumulative[i] <= x + before}

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "common.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using tripjax::ParallelFor;

namespace {

using Ints = ffi::Buffer<ffi::S32, 1>;         // int32[...]
using Words = ffi::Buffer<ffi::U32, 2>;        // uint32[T, n]
using WideWords = ffi::Buffer<ffi::U32, 3>;    // uint32[2, T, n]
using ItemsBuffer = ffi::Buffer<ffi::S32, 2>;   // int32[T, n]
using Items = ffi::ResultBuffer<ffi::S32, 2>;

constexpr int64_t kBlock = 4096;  // queries per work item
constexpr int64_t kTable = int64_t{1} << 14;  // buckets of the weighted draw's item table
constexpr int64_t kFixedWidth = 64;  // widest bucket searched over a fixed width

// #{r in [0, n) : first[r] <= x} for non-decreasing first[0..n), without branches.
inline int64_t CountAtMost(const int32_t* first, int64_t n, int32_t x) {
  if (n <= 0) return 0;
  const int32_t* base = first;
  while (n > 1) {
    const int64_t half = n / 2;
    base = base[half] <= x ? base + half : base;
    n -= half;
  }
  return (base - first) + (*base <= x);
}

// CountAtMost for kLanes queries over the same first[0..n), in lockstep: the searches take the
// same steps, and their chains of dependent loads overlap instead of following one another
// (one search alone waits on each load in turn).
constexpr int kLanes = 8;

inline void CountAtMostLanes(const int32_t* first, int64_t n, const int32_t* x,
                             int64_t* count) {
  if (n <= 0) {
    for (int g = 0; g < kLanes; ++g) count[g] = 0;
    return;
  }
  int64_t at[kLanes] = {};
  while (n > 1) {
    const int64_t half = n / 2;
    for (int g = 0; g < kLanes; ++g) at[g] = first[at[g] + half] <= x[g] ? at[g] + half : at[g];
    n -= half;
  }
  for (int g = 0; g < kLanes; ++g) count[g] = at[g] + (first[at[g]] <= x[g]);
}

struct Rows {
  const int32_t* v;
  const int32_t* indptr;
  const int32_t* num_missing;
  const int32_t* users;
};

// Calls each(q, u, x, count) for the draws q in [begin * n, end * n): draw q belongs to query
// q / n, of row u = users[q / n], and counts the entries <= x = x_of(q, u) of that row's
// segment of v. The draws of a run of queries of one row (the row-order draw's runs) are
// searched kLanes at a time; any order gives the same counts.
template <typename X, typename Each>
void CountRows(const Rows& rows, int64_t n, int64_t begin, int64_t end, const X& x_of,
               const Each& each) {
  int32_t x[kLanes];
  int64_t count[kLanes];
  for (int64_t k = begin; k < end;) {
    const int32_t u = rows.users[k];
    int64_t k_end = k + 1;  // past the run of queries of this row
    while (k_end < end && rows.users[k_end] == u) ++k_end;
    const int32_t* segment = rows.v + rows.indptr[u];
    const int64_t length = rows.indptr[u + 1] - rows.indptr[u];
    int64_t q = k * n;
    for (; q + kLanes <= k_end * n; q += kLanes) {
      for (int g = 0; g < kLanes; ++g) x[g] = x_of(q + g, u);
      CountAtMostLanes(segment, length, x, count);
      for (int g = 0; g < kLanes; ++g) each(q + g, u, x[g], count[g]);
    }
    for (; q < k_end * n; ++q) {
      const int32_t xq = x_of(q, u);
      each(q, u, xq, CountAtMost(segment, length, xq));
    }
    k = k_end;
  }
}

ffi::Error CheckRows(const Ints& v, const Ints& indptr, const Ints& num_missing,
                     const Ints& users, int64_t num_queries) {
  if (num_missing.dimensions()[0] + 1 != indptr.dimensions()[0]) {
    return ffi::Error::InvalidArgument("indptr must have one more entry than num_missing");
  }
  if (users.dimensions()[0] != num_queries) {
    return ffi::Error::InvalidArgument("users and words must have one query length");
  }
  const int64_t rows = num_missing.dimensions()[0];
  const int32_t* u = users.typed_data();
  for (int64_t k = 0; k < num_queries; ++k) {
    if (u[k] < 0 || u[k] >= rows) return ffi::Error::InvalidArgument("a user is out of range");
  }
  const int32_t* p = indptr.typed_data();
  if (p[0] != 0 || p[rows] > v.dimensions()[0]) {
    return ffi::Error::InvalidArgument("indptr does not index v");
  }
  return ffi::Error::Success();
}

ffi::Error MissingItemsImpl(ffi::ThreadPool pool, Ints v, Ints indptr, Ints num_missing,
                            Ints users, Words words, Items items) {
  const int64_t t = words.dimensions()[0], n = words.dimensions()[1];
  if (ffi::Error e = CheckRows(v, indptr, num_missing, users, t); e.failure()) return e;
  const Rows rows{v.typed_data(), indptr.typed_data(), num_missing.typed_data(),
                  users.typed_data()};
  const uint32_t* w = words.typed_data();
  int32_t* out = items->typed_data();
  tripjax::AdviseHugePages(out, t * n * sizeof(int32_t));
  ParallelFor(pool, (t + kBlock - 1) / kBlock, [&](int64_t block) {
    const int64_t end = std::min(t, (block + 1) * kBlock);
    CountRows(
        rows, n, block * kBlock, end,
        [&](int64_t q, int32_t u) {
          return static_cast<int32_t>((w[q] * uint64_t{static_cast<uint32_t>(
                                          rows.num_missing[u])}) >> 32);
        },
        [&](int64_t q, int32_t, int32_t x, int64_t count) {
          out[q] = x + static_cast<int32_t>(count);
        });
  });
  return ffi::Error::Success();
}

ffi::Error WeightedMissingItemsImpl(ffi::ThreadPool pool, Ints v, Ints prefix, Ints cumulative,
                                    Ints row_weight, Ints indptr, Ints num_missing, Ints users,
                                    WideWords words, Items items) {
  const int64_t t = words.dimensions()[1], n = words.dimensions()[2];
  if (ffi::Error e = CheckRows(v, indptr, num_missing, users, t); e.failure()) return e;
  if (prefix.dimensions()[0] != v.dimensions()[0] ||
      row_weight.dimensions()[0] != num_missing.dimensions()[0]) {
    return ffi::Error::InvalidArgument("prefix must match v, row_weight num_missing");
  }
  const Rows rows{v.typed_data(), indptr.typed_data(), num_missing.typed_data(),
                  users.typed_data()};
  const int32_t* before_r = prefix.typed_data();
  const int32_t* cum = cumulative.typed_data();
  const int64_t num_items = cumulative.dimensions()[0];
  const int32_t* weight = row_weight.typed_data();
  const uint32_t* low = words.typed_data();
  const uint32_t* high = low + t * n;
  int32_t* out = items->typed_data();
  tripjax::AdviseHugePages(out, t * n * sizeof(int32_t));
  // The item search narrowed by a table: every cumulative weight is at most the total, below
  // kTable << shift; first[b] items have cumulative < b << shift, so for y in bucket b
  // (y >> shift == b) the items with cumulative <= y are those first[b] and some of the next
  // first[b + 1] - first[b], at most `most` of them. Where `most` is small (the popularity
  // exponents in use), each search counts among `most` entries from first[b] on (the later ones
  // are > y; `padded` ends in `most` entries above any y), so every search takes the same steps
  // and its loop never mispredicts; a steep exponent can pile thousands of light items into one
  // bucket, and then each search walks its own bucket's width instead.
  const int64_t total = num_items > 0 ? cum[num_items - 1] : 0;
  int shift = 0;
  while ((total >> shift) >= kTable) ++shift;
  std::vector<int32_t> first(kTable + 1);
  int64_t most = 0;
  for (int64_t b = 0, i = 0; b <= kTable; ++b) {
    while (i < num_items && cum[i] < (b << shift)) ++i;
    first[b] = i;
    if (b > 0) most = std::max<int64_t>(most, first[b] - first[b - 1]);
  }
  const bool fixed_width = most <= kFixedWidth;
  std::vector<int32_t> padded;
  if (fixed_width) {
    padded.assign(cum, cum + num_items);
    padded.resize(num_items + most, std::numeric_limits<int32_t>::max());
  }
  ParallelFor(pool, (t + kBlock - 1) / kBlock, [&](int64_t block) {
    const int64_t end = std::min(t, (block + 1) * kBlock);
    CountRows(
        rows, n, block * kBlock, end,
        [&](int64_t q, int32_t u) {
          // floor(maxval * R / 2**48) for R = low + (high mod 2**16) * 2**32, in 64 bits:
          // R = a * 2**16 + c with a = R >> 16 (32 bits) and c = low mod 2**16, so it is
          // floor((maxval * a + floor(maxval * c / 2**16)) / 2**32), no term above 2**63.
          const uint64_t maxval = static_cast<uint32_t>(rows.num_missing[u]);
          const uint64_t a = (uint64_t{high[q] & 0xFFFFu} << 16) | (low[q] >> 16);
          const uint64_t c = low[q] & 0xFFFFu;
          return static_cast<int32_t>((maxval * a + ((maxval * c) >> 16)) >> 32);
        },
        [&](int64_t q, int32_t u, int32_t x, int64_t r) {
          const int64_t start = rows.indptr[u];
          const int64_t length = rows.indptr[u + 1] - start;
          out[q] = x + (r < length ? before_r[start + r] : weight[u]);  // the unit drawn
        });
    // Apart from the row searches: the item searches are independent of one another, so their
    // cache misses overlap.
    if (fixed_width) {
      for (int64_t q = block * kBlock * n; q < end * n; ++q) {
        const int32_t y = out[q];
        const int64_t b = y >> shift;
        out[q] = static_cast<int32_t>(first[b] + CountAtMost(padded.data() + first[b], most, y));
      }
    } else {
      for (int64_t q = block * kBlock * n; q < end * n; ++q) {
        const int32_t y = out[q];
        const int64_t b = y >> shift;
        out[q] = static_cast<int32_t>(first[b] +
                                      CountAtMost(cum + first[b], first[b + 1] - first[b], y));
      }
    }
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(MissingItems, MissingItemsImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Ints>()    // v
                                  .Arg<Ints>()    // indptr
                                  .Arg<Ints>()    // num_missing
                                  .Arg<Ints>()    // users
                                  .Arg<Words>()   // words
                                  .Ret<ItemsBuffer>());  // items

XLA_FFI_DEFINE_HANDLER_SYMBOL(WeightedMissingItems, WeightedMissingItemsImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Ints>()        // v
                                  .Arg<Ints>()        // prefix
                                  .Arg<Ints>()        // cumulative
                                  .Arg<Ints>()        // row_weight
                                  .Arg<Ints>()        // indptr
                                  .Arg<Ints>()        // num_missing
                                  .Arg<Ints>()        // users
                                  .Arg<WideWords>()   // words
                                  .Ret<ItemsBuffer>());  // items
