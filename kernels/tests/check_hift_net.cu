// HiFT filter-network kernels (minmo_kernels/hift_net.h) against their CPU twins, at CosyVoice2's
// shapes (the last stage's Snake ResBlock conv, the ConvTranspose col2im with the reflection pad,
// the source STFT of a first-chunk window) and odd small ones.
#include "harness.h"

using harness::DevBuf;

namespace {

void im2col_case(int64_t t_in, int64_t C, int k, int stride, int pad, int dil, int act) {
  const int64_t t_out = (t_in + 2 * pad - dil * (k - 1) - 1) / stride + 1, ld = (C * k + 1 + 3) / 4 * 4;
  auto x = harness::randn(size_t(t_in * C), 2.f), alpha = harness::randn(size_t(C));
  for (auto& a : alpha) a = std::fabs(a) + 0.1f;
  std::vector<float> cpu(size_t(t_out * ld), NAN);
  minmo_conv1d_im2col_f32_cpu(x.data(), alpha.data(), cpu.data(), t_in, C, t_out, ld, k, stride, pad, dil, act, 0.1f);
  DevBuf<float> dx(x), da(alpha), dout = DevBuf<float>::poisoned(size_t(t_out * ld));
  const int rc =
      minmo_conv1d_im2col_f32(dx.data(), da.data(), dout.data(), t_in, C, t_out, ld, k, stride, pad, dil, act, 0.1f,
                              nullptr);
  harness::sync();
  harness::record("conv1d_im2col_f32",
                  harness::shape_str({{"t", t_in}, {"C", C}, {"k", k}, {"s", stride}, {"d", dil}, {"act", act}}),
                  harness::rel_err(dout.host(), cpu), 1e-6, rc);
}

void col2im_case(int64_t t_in, int64_t C, int k, int stride, int reflect) {
  const int pad = (k - stride) / 2;
  const int64_t rows = (t_in - 1) * stride + k - 2 * pad + reflect;
  auto z = harness::randn(size_t(t_in * C * k)), b = harness::randn(size_t(C));
  std::vector<float> cpu(size_t(rows * C), NAN);
  minmo_conv_transpose1d_col2im_f32_cpu(z.data(), b.data(), cpu.data(), t_in, C, k, stride, pad, reflect);
  DevBuf<float> dz(z), db(b), dy = DevBuf<float>::poisoned(size_t(rows * C));
  const int rc = minmo_conv_transpose1d_col2im_f32(dz.data(), db.data(), dy.data(), t_in, C, k, stride, pad, reflect,
                                                   nullptr);
  harness::sync();
  harness::record("conv_transpose1d_col2im_f32",
                  harness::shape_str({{"t", t_in}, {"C", C}, {"k", k}, {"s", stride}, {"reflect", reflect}}),
                  harness::rel_err(dy.host(), cpu), 1e-6, rc);
}

void stft_case(int64_t n, int n_fft, int hop) {
  const int64_t frames = n / hop + 1;
  auto x = harness::randn(size_t(n));
  std::vector<float> cpu(size_t(frames * (n_fft + 2)), NAN);
  minmo_hift_stft_f32_cpu(x.data(), cpu.data(), n, n_fft, hop);
  DevBuf<float> dx(x), ds = DevBuf<float>::poisoned(cpu.size());
  const int rc = minmo_hift_stft_f32(dx.data(), ds.data(), n, n_fft, hop, nullptr);
  harness::sync();
  harness::record("hift_stft_f32", harness::shape_str({{"n", n}, {"n_fft", n_fft}, {"hop", hop}}),
                  harness::rel_err(ds.host(), cpu), 2e-6, rc);
}

void axpby_case(int64_t n, float a, float b) {
  auto x = harness::randn(size_t(n)), y = harness::randn(size_t(n));
  std::vector<float> cpu = y;
  minmo_axpby_f32_cpu(x.data(), cpu.data(), n, a, b);
  DevBuf<float> dx(x), dy(y);
  const int rc = minmo_axpby_f32(dx.data(), dy.data(), n, a, b, nullptr);
  harness::sync();
  harness::record("axpby_f32", harness::shape_str({{"n", n}, {"b0", b == 0.f}}), harness::rel_err(dy.host(), cpu),
                  1e-6, rc);
}

}  // namespace

MINMO_CHECK(hift_net) {
  im2col_case(37, 5, 7, 1, 3, 1, MINMO_CONV_ACT_NONE);
  im2col_case(53, 9, 11, 1, 25, 5, MINMO_CONV_ACT_SNAKE);
  im2col_case(41, 6, 3, 1, 1, 1, MINMO_CONV_ACT_ELU);
  im2col_case(97, 18, 30, 15, 7, 1, MINMO_CONV_ACT_NONE);
  im2col_case(29, 8, 1, 1, 0, 1, MINMO_CONV_ACT_LEAKY_RELU);
  if (!harness::small()) {
    im2col_case(66 * 120 + 1, 64, 11, 1, 25, 5, MINMO_CONV_ACT_SNAKE);  // CosyVoice2 last stage, 66 frames
    im2col_case(66, 80, 7, 1, 3, 1, MINMO_CONV_ACT_NONE);                // conv_pre
  }
  col2im_case(13, 6, 16, 8, 0);
  col2im_case(31, 4, 7, 3, 1);
  col2im_case(1, 3, 4, 2, 1);
  if (!harness::small()) col2im_case(66 * 40, 64, 7, 3, 1);  // CosyVoice2 last upsampling
  stft_case(9, 16, 4);
  stft_case(101, 8, 2);
  stft_case(333, 32, 8);
  if (!harness::small()) stft_case(66 * 480, 16, 4);
  axpby_case(1001, 0.25f, -2.f);
  axpby_case(7, 3.f, 0.f);
}
