// Checks: fused residual + RMSNorm (fp32, bf16) and the gated MLP epilogue against their CPU twins.
#include "harness.h"

using harness::DevBuf;

namespace {

const float kEps = 1e-6f;

void rmsnorm_f32_case(int64_t rows, int64_t dim, bool with_x) {
  const size_t n = size_t(rows * dim);
  auto x = harness::randn(n), res = harness::randn(n), gamma = harness::randn(size_t(dim));
  std::vector<float> res_cpu = res, out_cpu(n, NAN);
  minmo_rmsnorm_residual_f32_cpu(with_x ? x.data() : nullptr, res_cpu.data(), gamma.data(), out_cpu.data(), rows,
                                 dim, kEps);
  DevBuf<float> dx(x), dr(res), dg(gamma), dout = DevBuf<float>::poisoned(n);
  const int rc = minmo_rmsnorm_residual_f32(with_x ? dx.data() : nullptr, dr.data(), dg.data(), dout.data(), rows,
                                            dim, kEps, nullptr);
  harness::sync();
  const double err = std::max(harness::rel_err(dr.host(), res_cpu), harness::rel_err(dout.host(), out_cpu));
  harness::record("rmsnorm_residual_f32", harness::shape_str({{"rows", rows}, {"dim", dim}, {"x", with_x}}), err,
                  1e-5, rc);
}

void rmsnorm_bf16_case(int64_t rows, int64_t dim, bool with_x) {
  const size_t n = size_t(rows * dim);
  auto x = harness::randn_bf16(n), gamma = harness::randn_bf16(size_t(dim));
  auto res = harness::randn(n, 4.f);
  std::vector<float> res_cpu = res;
  std::vector<uint16_t> out_cpu(n);
  minmo_rmsnorm_residual_bf16_cpu(with_x ? x.data() : nullptr, res_cpu.data(), gamma.data(), out_cpu.data(), rows,
                                  dim, kEps);
  DevBuf<uint16_t> dx(x), dg(gamma), dout = DevBuf<uint16_t>::poisoned(n);
  DevBuf<float> dr(res);
  const int rc = minmo_rmsnorm_residual_bf16(with_x ? dx.data() : nullptr, dr.data(), dg.data(), dout.data(), rows,
                                             dim, kEps, nullptr);
  harness::sync();
  const double err = std::max(harness::rel_err(dr.host(), res_cpu), harness::rel_err(dout.host(), out_cpu));
  harness::record("rmsnorm_residual_bf16", harness::shape_str({{"rows", rows}, {"dim", dim}, {"x", with_x}}), err,
                  8e-3, rc);
}

void silu_mul_case(int64_t rows, int64_t ffn) {
  const size_t n = size_t(rows * ffn);
  {
    auto gu = harness::randn_bf16(2 * n, 2.f);
    std::vector<uint16_t> out_cpu(n);
    minmo_silu_mul_bf16_cpu(gu.data(), out_cpu.data(), rows, ffn);
    DevBuf<uint16_t> dgu(gu), dout = DevBuf<uint16_t>::poisoned(n);
    const int rc = minmo_silu_mul_bf16(dgu.data(), dout.data(), rows, ffn, nullptr);
    harness::sync();
    harness::record("silu_mul_bf16", harness::shape_str({{"rows", rows}, {"ffn", ffn}}),
                    harness::rel_err(dout.host(), out_cpu), 8e-3, rc);
  }
  {
    auto gu = harness::randn(2 * n, 2.f);
    std::vector<float> out_cpu(n);
    minmo_silu_mul_f32_cpu(gu.data(), out_cpu.data(), rows, ffn);
    DevBuf<float> dgu(gu), dout = DevBuf<float>::poisoned(n);
    const int rc = minmo_silu_mul_f32(dgu.data(), dout.data(), rows, ffn, nullptr);
    harness::sync();
    harness::record("silu_mul_f32", harness::shape_str({{"rows", rows}, {"ffn", ffn}}),
                    harness::rel_err(dout.host(), out_cpu), 1e-5, rc);
  }
}

}  // namespace

MINMO_CHECK(norm) {
  std::vector<std::pair<int64_t, int64_t>> shapes = {{1, 1}, {3, 31}, {2, 130}};
  // Widths cover 4 / 8 / 16 register-resident elements per thread and the strided loop (> 16384).
  if (!harness::small()) shapes = {{1, 1}, {3, 31}, {7, 896}, {1, 3584}, {5, 3584}, {2, 8193}, {1, 12000}, {300, 257}, {2, 20001}};
  for (const auto& s : shapes)
    for (bool with_x : {true, false}) {
      rmsnorm_f32_case(s.first, s.second, with_x);
      rmsnorm_bf16_case(s.first, s.second, with_x);
    }
  harness::record("rmsnorm_residual_f32", "null pointers", 0, 0,
                  minmo_rmsnorm_residual_f32(nullptr, nullptr, nullptr, nullptr, 1, 1, kEps, nullptr),
                  MINMO_KERNEL_INVALID_ARGUMENT);
  harness::record("rmsnorm_residual_bf16", "dim=0", 0, 0,
                  minmo_rmsnorm_residual_bf16(nullptr, reinterpret_cast<float*>(16), reinterpret_cast<uint16_t*>(16),
                                              reinterpret_cast<uint16_t*>(32), 1, 0, kEps, nullptr),
                  MINMO_KERNEL_INVALID_ARGUMENT);
}

MINMO_CHECK(mlp) {
  silu_mul_case(1, 33);
  silu_mul_case(3, 257);
  if (!harness::small()) {
    silu_mul_case(1, 18944);
    silu_mul_case(5, 4864);
  }
  harness::record("silu_mul_bf16", "out overlaps input", 0, 0,
                  minmo_silu_mul_bf16(reinterpret_cast<uint16_t*>(256), reinterpret_cast<uint16_t*>(260), 1, 8,
                                      nullptr),
                  MINMO_KERNEL_INVALID_ARGUMENT);
}
