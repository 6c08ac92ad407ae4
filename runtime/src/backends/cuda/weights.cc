#include "backends/cuda/weights.h"

#include <algorithm>
#include <cstring>

#include "backends/cpu/quant_linear.h"
#include "cpu/cpu_util.h"

namespace minmo {
namespace cuda {

namespace {

const char* format_of(cpu::WeightQuant k) {
  switch (k) {
    case cpu::WeightQuant::None: return "bf16";
    case cpu::WeightQuant::Int8: return "int8";
    case cpu::WeightQuant::Int4: return "int4";
    case cpu::WeightQuant::Fp8: return "fp8";
  }
  return "?";
}

// y = x W^T for rows <= MINMO_GEMV_MAX_BATCH.
void product_rows(const Stream& d, const Arena& weights, const DeviceLinear& l, const minmo_bf16* x, minmo_bf16* y,
                  int64_t rows, bool gated) {
  const int64_t n = gated ? l.n / 2 : l.n;
  const uint8_t* q = weights.at<uint8_t>(l.w);
  const float* scale = weights.at<float>(l.scale);
  const auto* w8 = reinterpret_cast<const int8_t*>(q);
  const auto* wb = reinterpret_cast<const minmo_bf16*>(q);
  if (l.kind == cpu::WeightQuant::None) {
    if (gated) MINMO_DEVICE_CALL(d, gemv_silu_bf16, x, wb, y, rows, n, l.k);
    else MINMO_DEVICE_CALL(d, gemv_bf16, x, wb, y, rows, n, l.k);
  } else if (l.kind == cpu::WeightQuant::Int8) {
    if (gated) MINMO_DEVICE_CALL(d, gemv_silu_int8, x, w8, scale, y, rows, n, l.k);
    else MINMO_DEVICE_CALL(d, gemv_int8, x, w8, scale, y, rows, n, l.k);
  } else if (l.kind == cpu::WeightQuant::Fp8) {
    if (gated) MINMO_DEVICE_CALL(d, gemv_silu_fp8, x, q, scale, y, rows, n, l.k);
    else MINMO_DEVICE_CALL(d, gemv_fp8, x, q, scale, y, rows, n, l.k);
  } else {
    const auto* sb = weights.at<minmo_bf16>(l.scale);
    const uint8_t* z = weights.at<uint8_t>(l.zero);
    if (gated) MINMO_DEVICE_CALL(d, gemv_silu_int4, x, q, sb, z, y, rows, n, l.k, l.group);
    else MINMO_DEVICE_CALL(d, gemv_int4, x, q, sb, z, y, rows, n, l.k, l.group);
  }
}

}  // namespace

const char* DeviceLinear::format() const { return format_of(kind); }

void to_bf16(const float* src, int64_t n, uint8_t* dst) {
  auto* out = reinterpret_cast<minmo_bf16*>(dst);
#pragma omp parallel for schedule(static) if (n > (int64_t{1} << 20))
  for (int64_t i = 0; i < n; ++i) out[i] = minmo_cpu::f32_to_bf16(src[i]);
}

size_t Uploads::add(size_t bytes, std::function<void(uint8_t*)> fill) {
  const size_t offset = arena_.add(bytes);
  jobs_.push_back({offset, bytes, std::move(fill)});
  return offset;
}

size_t Uploads::add_bf16(const float* src, int64_t n) {
  return add(sizeof(minmo_bf16) * static_cast<size_t>(n), [src, n](uint8_t* dst) { to_bf16(src, n, dst); });
}

void Uploads::run(const std::shared_ptr<Device>& device) {
  const Stream stream(device);
  std::vector<uint8_t> staging;
  for (const Job& j : jobs_) {
    staging.resize(j.bytes);
    j.fill(staging.data());
    stream.upload(arena_.at<void>(j.offset), staging.data(), j.bytes);
    stream.sync();  // the staging buffer is reused by the next job
  }
  jobs_.clear();
}

DeviceLinear stack_linears(Uploads& up, const std::vector<LinearW>& parts, const std::string& what) {
  cpu::WeightQuant kind = parts[0].qw.kind;
  DeviceLinear d;
  d.k = parts[0].in;
  d.group = parts[0].qw.group;
  for (const LinearW& p : parts) {
    MINMO_CHECK(p.in == d.k, ErrorCode::BundleError, what << ": the stacked weights differ in input width");
    if (p.qw.kind != kind || p.qw.group != d.group) kind = cpu::WeightQuant::None;
    d.n += p.out;
  }
  d.kind = kind;
  const int64_t K = d.k;
  // Copies every part's rows of one per-row array (row_bytes(part) bytes per output row).
  auto stacked = [parts](std::function<const uint8_t*(const LinearW&)> src, size_t row_bytes,
                         std::function<void(const uint8_t*, int64_t, uint8_t*)> convert) {
    return [parts, src, row_bytes, convert](uint8_t* dst) {
      for (const LinearW& p : parts) {
        convert(src(p), p.out, dst);
        dst += row_bytes * static_cast<size_t>(p.out);
      }
    };
  };
  auto copy_rows = [](size_t row_bytes) {
    return [row_bytes](const uint8_t* s, int64_t rows, uint8_t* dst) { std::memcpy(dst, s, row_bytes * rows); };
  };
  auto bf16_rows = [](int64_t per_row) {
    return [per_row](const uint8_t* s, int64_t rows, uint8_t* dst) {
      to_bf16(reinterpret_cast<const float*>(s), rows * per_row, dst);
    };
  };
  const size_t N = static_cast<size_t>(d.n);
  switch (kind) {
    case cpu::WeightQuant::None:
      d.w = up.add(N * K * 2, [parts, K](uint8_t* dst) {
        std::vector<float> row(static_cast<size_t>(K));
        for (const LinearW& p : parts) {
          for (int64_t n = 0; n < p.out; ++n, dst += 2 * K) {
            const float* src = p.w ? p.w + n * K : row.data();
            if (!p.w) cpu::dequantize_row(p.qw, n, K, row.data());
            to_bf16(src, K, dst);
          }
        }
      });
      break;
    case cpu::WeightQuant::Int8:
    case cpu::WeightQuant::Fp8:
      d.w = up.add(N * K, stacked([](const LinearW& p) { return p.qw.q; }, K, copy_rows(K)));
      d.scale = up.add(N * 4, stacked([](const LinearW& p) { return reinterpret_cast<const uint8_t*>(p.qw.scale); }, 4,
                                      copy_rows(4)));
      break;
    case cpu::WeightQuant::Int4: {
      MINMO_CHECK(d.group % 32 == 0 && K % d.group == 0, ErrorCode::BundleError,
                  what << ": int4 group size " << d.group << " is not run by the CUDA kernels (a multiple of 32 that "
                       << "divides " << K << ")");
      const int64_t groups = K / d.group;
      d.w = up.add(N * (K / 2), stacked([](const LinearW& p) { return p.qw.q; }, K / 2, copy_rows(K / 2)));
      d.scale = up.add(N * groups * 2,
                       stacked([](const LinearW& p) { return reinterpret_cast<const uint8_t*>(p.qw.scale); },
                               groups * 2, bf16_rows(groups)));
      d.zero = up.add(N * groups, stacked([](const LinearW& p) { return p.qw.zero; }, groups, copy_rows(groups)));
      break;
    }
  }
  return d;
}


void linear_product(const Stream& st, const Arena& weights, const DeviceLinear& l, const minmo_bf16* x, minmo_bf16* y,
                    int64_t rows, bool gated, const Gemm* gemm, minmo_bf16* gated_scratch) {
  const int64_t n = gated ? l.n / 2 : l.n;
  if (gemm && rows >= Gemm::kMinRows && l.kind == cpu::WeightQuant::None && (!gated || gated_scratch)) {
    const auto* w = weights.at<minmo_bf16>(l.w);
    if (!gated) {
      gemm->bf16(x, w, y, rows, l.n, l.k);
    } else {
      gemm->bf16(x, w, gated_scratch, rows, l.n, l.k);
      MINMO_DEVICE_CALL(st, silu_mul_bf16, gated_scratch, y, rows, n);
    }
    return;
  }
  for (int64_t r = 0; r < rows; r += MINMO_GEMV_MAX_BATCH) {
    const int64_t m = std::min<int64_t>(MINMO_GEMV_MAX_BATCH, rows - r);
    product_rows(st, weights, l, x + r * l.k, y + r * n, m, gated);
  }
}

}  // namespace cuda
}  // namespace minmo
