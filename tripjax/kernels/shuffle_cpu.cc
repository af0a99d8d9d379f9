// The epoch's shuffle for XLA:CPU (jax.ffi): a uniform random permutation of the triplets,
// applied to them and padded to whole batches (Rao and Sandelius' bucket shuffle).
//
// numpy's permutation (Fisher-Yates over the whole epoch) and a gather by it touch memory at
// random, a cache miss per triplet and array; at 10M triplets that was most of an epoch's
// sampling. Here the triplets are dealt into kBuckets buckets in one sequential pass (a stream
// per bucket), then each bucket, now cache-resident, is shuffled by Fisher-Yates. The random
// words are splitmix64's outputs for the 64-bit key k (two uint32, low then high):
//   h(i) = mix(k + (i + 1) * 0x9E3779B97F4A7C15)  (splitmix64's i-th output, i from 0)
//
//   bucket(i) = high 32 bits of h(i) >> (32 - kBucketBits)  (input index i)
//   dealt:    the triplets of bucket 0, then 1, ..., each bucket's in their input order
//   then for each bucket's segment s (length m, starting at dealt position a), j = m - 1 down
//   to 1: swap s[j] and s[(low 32 bits of h(a + j)) * (j + 1) >> 32]
//
// Each element lands in a uniform bucket independently and each bucket's order is uniform, so
// the permutation is uniform (Rao and Sandelius, 1961) up to the generator and the
// multiply-shift's bias in the swaps (relative, below m / 2**32). Outputs, of length T >= P:
// the inputs taken in the permutation and, unless its output is empty, the permutation `order`
// itself (position -> input index); positions t >= P (padding) repeat the last batch's,
// position a + (t - a) % (P - a) with a the last batch's start (as `sampling.epoch._source`).
// The result does not depend on the thread count.

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <type_traits>
#include <vector>

#include "common.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using tripjax::ParallelFor;

namespace {

using Key = ffi::Buffer<ffi::U32, 1>;    // uint32[2]
using Ints = ffi::Buffer<ffi::S32, 1>;   // int32[P] (outputs: [T])
using Rows = ffi::Buffer<ffi::S32, 2>;   // int32[P, n] (outputs: [T, n])
using IntsOut = ffi::ResultBuffer<ffi::S32, 1>;
using RowsOut = ffi::ResultBuffer<ffi::S32, 2>;

constexpr int kBucketBits = 10;
constexpr int64_t kBuckets = int64_t{1} << kBucketBits;
constexpr int kParts = 2;  // the deal's input parts (fixed: the order must not depend on threads)
constexpr int64_t kBlock = 65536;  // positions per work item of the last pass

inline uint64_t SplitMix64(uint64_t key, int64_t i) {
  uint64_t z = key + (static_cast<uint64_t>(i) + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Copies a record's n negatives: most epochs draw one, and std::copy of a few ints is a call to
// memmove per record (a fifth of the shuffle's time at one negative).
inline void CopyInts(const int32_t* from, int64_t n, int32_t* to) {
  if (n == 1) {
    *to = *from;
  } else {
    std::copy(from, from + n, to);
  }
}

inline int64_t Bucket(uint64_t key, int64_t i) {
  return static_cast<int64_t>(SplitMix64(key, i) >> (64 - kBucketBits));
}

ffi::Error ShuffleImpl(ffi::ThreadPool pool, Key key_words, Ints users, Ints items, Rows neg,
                       Ints scratch, int64_t batch_size, IntsOut order, IntsOut users_out,
                       IntsOut items_out, RowsOut neg_out, IntsOut scratch_out) {
  const int64_t p = users.dimensions()[0];
  const int64_t n = neg.dimensions()[1];
  const int64_t t = users_out->dimensions()[0];
  const bool with_order = order->dimensions()[0] != 0;
  if (key_words.dimensions()[0] != 2 || items.dimensions()[0] != p || neg.dimensions()[0] != p) {
    return ffi::Error::InvalidArgument("the key must be [2], users, items and neg [P, ...]");
  }
  if (p == 0 || batch_size <= 0 || t < p || (with_order && order->dimensions()[0] != t)) {
    return ffi::Error::InvalidArgument("need P > 0, batch_size > 0, T >= P and order [T] or [0]");
  }
  const uint64_t key = key_words.typed_data()[0] | (uint64_t{key_words.typed_data()[1]} << 32);
  // Each part of the input counts its buckets; a bucket's segment holds part 0's elements of
  // it, then part 1's, each in input order: the stable deal, in parallel.
  std::vector<int64_t> cursor(kParts * kBuckets, 0);
  const int64_t part_size = (p + kParts - 1) / kParts;
  ParallelFor(pool, kParts, [&](int64_t part) {
    int64_t* count = cursor.data() + part * kBuckets;
    for (int64_t i = part * part_size, end = std::min(p, i + part_size); i < end; ++i) {
      ++count[Bucket(key, i)];
    }
  });
  std::vector<int64_t> start(kBuckets + 1, 0);
  int64_t offset = 0;
  for (int64_t b = 0; b < kBuckets; ++b) {
    start[b] = offset;
    for (int part = 0; part < kParts; ++part) {
      const int64_t count = cursor[part * kBuckets + b];
      cursor[part * kBuckets + b] = offset;
      offset += count;
    }
  }
  start[kBuckets] = offset;
  // Each triplet travels as one record (user, item, n negatives and, when asked for, its
  // index), so the deal writes one stream per bucket and a swap moves one record. The records
  // live in the scratch buffer the caller passes in and gets back (aliased): a buffer that
  // stays with the sampler from epoch to epoch is not faulted in again each time.
  const int64_t width = 2 + n + (with_order ? 1 : 0);
  if (scratch.dimensions()[0] < p * width || scratch_out->typed_data() != scratch.typed_data()) {
    return ffi::Error::InvalidArgument("the scratch must hold P * (3 + n) int32, aliased");
  }
  int32_t* records = scratch_out->typed_data();
  const int32_t* in_users = users.typed_data();
  const int32_t* in_items = items.typed_data();
  const int32_t* in_neg = neg.typed_data();
  // An epoch's records without the order (what the sampler asks for) and with 1, 2 or 4
  // negatives take the passes' code with their layout as constants (kNeg): a record is then a
  // few moves at fixed offsets, where a layout read at run time cost a large part of each
  // pass's time. Other layouts (kNeg 0) read it at run time.
  auto dispatch = [&](const auto& passes) {
    if (with_order) return passes(std::integral_constant<int64_t, 0>{});
    switch (n) {
      case 1: return passes(std::integral_constant<int64_t, 1>{});
      case 2: return passes(std::integral_constant<int64_t, 2>{});
      case 4: return passes(std::integral_constant<int64_t, 4>{});
      default: return passes(std::integral_constant<int64_t, 0>{});
    }
  };
  dispatch([&](auto layout) {
    constexpr int64_t kNeg = decltype(layout)::value;
    const int64_t negatives = kNeg ? kNeg : n, stride = kNeg ? 2 + kNeg : width;
    const bool ordered = kNeg ? false : with_order;
    // The scalars by value: the deal's stores through `next` (int64) could otherwise alias
    // them, and each would be loaded again, through the closures, after every record.
    ParallelFor(pool, kParts, [&, key, negatives, stride, ordered](int64_t part) {
      int64_t* next = cursor.data() + part * kBuckets;
      for (int64_t i = part * part_size, end = std::min(p, i + part_size); i < end; ++i) {
        int32_t* record = records + next[Bucket(key, i)]++ * stride;
        record[0] = in_users[i];
        record[1] = in_items[i];
        CopyInts(in_neg + i * negatives, negatives, record + 2);
        if (ordered) record[2 + negatives] = static_cast<int32_t>(i);
      }
    });
    ParallelFor(pool, kBuckets, [&, key, stride](int64_t b) {
      int32_t* segment = records + start[b] * stride;
      for (int64_t j = start[b + 1] - start[b] - 1; j >= 1; --j) {
        const uint64_t word = SplitMix64(key, start[b] + j) & 0xFFFFFFFFu;
        const int64_t r = (word * static_cast<uint64_t>(j + 1)) >> 32;
        std::swap_ranges(segment + j * stride, segment + (j + 1) * stride, segment + r * stride);
      }
    });
  });
  int32_t* out_order = order->typed_data();
  int32_t* out_users = users_out->typed_data();
  int32_t* out_items = items_out->typed_data();
  int32_t* out_neg = neg_out->typed_data();
  for (int32_t* out : {out_order, out_users, out_items}) {
    if (out != out_order || with_order) tripjax::AdviseHugePages(out, t * sizeof(int32_t));
  }
  tripjax::AdviseHugePages(out_neg, t * n * sizeof(int32_t));
  const int64_t last_start = (p - 1) / batch_size * batch_size;
  // Position k takes record source(k): k itself for the real triplets, and for the padding the
  // place in the last batch that `sampling.epoch._source` gives.
  auto emit = [&](auto layout, int64_t begin, int64_t end, const auto& source) {
    constexpr int64_t kNeg = decltype(layout)::value;
    const int64_t negatives = kNeg ? kNeg : n, stride = kNeg ? 2 + kNeg : width;
    const bool ordered = kNeg ? false : with_order;
    for (int64_t k = begin; k < end; ++k) {
      const int32_t* record = records + source(k) * stride;
      out_users[k] = record[0];
      out_items[k] = record[1];
      CopyInts(record + 2, negatives, out_neg + k * negatives);
      if (ordered) out_order[k] = record[2 + negatives];
    }
  };
  ParallelFor(pool, (t + kBlock - 1) / kBlock, [&](int64_t block) {
    const int64_t begin = block * kBlock, end = std::min(t, begin + kBlock);
    dispatch([&](auto layout) {
      emit(layout, begin, std::min(end, p), [](int64_t k) { return k; });
    });
    emit(std::integral_constant<int64_t, 0>{}, std::max(begin, p), end, [&](int64_t k) {
      return last_start + (k - last_start) % (p - last_start);
    });
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(Shuffle, ShuffleImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Key>()    // key
                                  .Arg<Ints>()   // users
                                  .Arg<Ints>()   // items
                                  .Arg<Rows>()   // neg
                                  .Arg<Ints>()   // scratch
                                  .Attr<int64_t>("batch_size")
                                  .Ret<Ints>()    // order, padded (or empty)
                                  .Ret<Ints>()    // users, shuffled and padded
                                  .Ret<Ints>()    // items, shuffled and padded
                                  .Ret<Rows>()    // neg, shuffled and padded
                                  .Ret<Ints>());  // scratch (aliased to the scratch input)
