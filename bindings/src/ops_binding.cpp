// minmo_rt._core.ops: the CPU operators (backends/cpu/ops.h) on numpy arrays, for tests and
// experiments. Inputs must be C-contiguous float32 (int64 for ids/positions/ranges); violations
// raise InvalidInputError (a ValueError). Outputs are new arrays unless `out` is given (then it
// must have the exact shape and is returned). Ops documented as in place modify their argument.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <type_traits>
#include <string>
#include <vector>

#include "backends/cpu/ops.h"
#include "backends/cpu/ops_llm.h"
#include "minmo/status.h"
#include "registry.h"

namespace py = pybind11;
using minmo::ErrorCode;

namespace {

std::string shape_of(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

template <typename T>
py::array checked(const py::handle& obj, const char* name, int ndim, bool writeable = false) {
  MINMO_CHECK(py::isinstance<py::array>(obj), ErrorCode::InvalidArgument, name << " must be a numpy array");
  py::array a = py::reinterpret_borrow<py::array>(obj);
  const char* tname = std::is_same<T, float>::value ? "float32" : "int64";
  MINMO_CHECK(a.dtype().equal(py::dtype::of<T>()), ErrorCode::InvalidArgument,
              name << " must be " << tname << ", got " << std::string(py::str(a.dtype())));
  MINMO_CHECK(a.flags() & py::array::c_style, ErrorCode::InvalidArgument, name << " must be C-contiguous");
  MINMO_CHECK(ndim < 0 || a.ndim() == ndim, ErrorCode::InvalidArgument,
              name << " must have " << ndim << " dimensions, got shape " << shape_of(a));
  MINMO_CHECK(!writeable || a.writeable(), ErrorCode::InvalidArgument, name << " must be writeable");
  return a;
}

const float* fptr(const py::array& a) { return static_cast<const float*>(a.data()); }
float* fmut(py::array& a) { return static_cast<float*>(a.mutable_data()); }
const int64_t* iptr(const py::array& a) { return static_cast<const int64_t*>(a.data()); }

void expect_shape(const py::array& a, const char* name, const std::vector<int64_t>& shape) {
  bool ok = a.ndim() == static_cast<py::ssize_t>(shape.size());
  for (size_t i = 0; ok && i < shape.size(); ++i) ok = a.shape(static_cast<py::ssize_t>(i)) == shape[i];
  std::string want = "(";
  for (size_t i = 0; i < shape.size(); ++i) want += (i ? ", " : "") + std::to_string(shape[i]);
  MINMO_CHECK(ok, ErrorCode::InvalidArgument, name << " has shape " << shape_of(a) << ", expected " << want << ")");
}

// The output array: `out` checked against `shape`, or a new array.
py::array output(const py::object& out, const std::vector<int64_t>& shape) {
  if (out.is_none()) return py::array_t<float>(shape);
  py::array a = checked<float>(out, "out", static_cast<int>(shape.size()), true);
  expect_shape(a, "out", shape);
  return a;
}

const float* optional_vec(const py::object& obj, const char* name, int64_t n) {
  if (obj.is_none()) return nullptr;
  py::array a = checked<float>(obj, name, 1);
  expect_shape(a, name, {n});
  return fptr(a);  // the caller keeps obj alive
}

int64_t total(const py::array& a) { return static_cast<int64_t>(a.size()); }

}  // namespace

MINMO_PY_BINDING(bind_ops) {
  namespace cpu = minmo::cpu;
  py::module_ ops = m.def_submodule("ops", "fp32 CPU operators on numpy arrays (see backends/cpu/ops.h)");

  // x[M,K] @ W[N,K]^T + bias[N] through `product` (cpu::linear's signature).
  using LinearFn = void (*)(const float*, const float*, const float*, float*, int64_t, int64_t, int64_t);
  auto linear_binding = [](LinearFn product) {
    return [product](py::object x_, py::object w_, py::object bias, py::object out) {
      py::array x = checked<float>(x_, "x", 2), w = checked<float>(w_, "W", 2);
      const int64_t M = x.shape(0), K = x.shape(1), N = w.shape(0);
      expect_shape(w, "W", {N, K});
      const float* b = optional_vec(bias, "bias", N);
      py::array y = output(out, {M, N});
      float* yp = fmut(y);
      py::gil_scoped_release r;
      product(fptr(x), fptr(w), b, yp, M, K, N);
      return y;
    };
  };
  ops.def("linear", linear_binding(&cpu::linear), py::arg("x"), py::arg("W"), py::arg("bias") = py::none(),
          py::arg("out") = py::none(), "x[M,K] @ W[N,K]^T + bias[N] -> [M,N]");
  ops.def(
      "linear_panels",
      linear_binding([](const float* x, const float* w, const float* b, float* y, int64_t M, int64_t K, int64_t N) {
        std::vector<float> packed(static_cast<size_t>(N * K));
        cpu::pack_panels(w, packed.data(), N, K);
        cpu::linear_panels(x, packed.data(), b, y, M, K, N);
      }),
      py::arg("x"), py::arg("W"), py::arg("bias") = py::none(), py::arg("out") = py::none(),
      "x[M,K] @ W[N,K]^T + bias[N] -> [M,N] through the panel-layout kernel (W packed per call)");

  ops.def(
      "matmul",
      [](py::object a_, py::object b_, py::object out) {
        py::array a = checked<float>(a_, "a", 2), b = checked<float>(b_, "b", 2);
        const int64_t M = a.shape(0), K = a.shape(1), N = b.shape(1);
        expect_shape(b, "b", {K, N});
        py::array c = output(out, {M, N});
        float* cp = fmut(c);
        py::gil_scoped_release r;
        cpu::matmul(fptr(a), fptr(b), cp, M, K, N);
        return c;
      },
      py::arg("a"), py::arg("b"), py::arg("out") = py::none(), "a[M,K] @ b[K,N] -> [M,N]");

  ops.def(
      "layer_norm",
      [](py::object x_, py::object gamma, py::object beta, float eps, py::object out) {
        py::array x = checked<float>(x_, "x", 2);
        const int64_t M = x.shape(0), D = x.shape(1);
        const float* g = optional_vec(gamma, "gamma", D);
        const float* b = optional_vec(beta, "beta", D);
        py::array y = output(out, {M, D});
        float* yp = fmut(y);
        py::gil_scoped_release r;
        cpu::layer_norm(fptr(x), g, b, yp, M, D, eps);
        return y;
      },
      py::arg("x"), py::arg("gamma") = py::none(), py::arg("beta") = py::none(), py::arg("eps") = 1e-5f,
      py::arg("out") = py::none(), "LayerNorm over the last dim of x[M,D]");

  ops.def(
      "rms_norm",
      [](py::object x_, py::object gamma, float eps, py::object out) {
        py::array x = checked<float>(x_, "x", 2);
        const int64_t M = x.shape(0), D = x.shape(1);
        const float* g = optional_vec(gamma, "gamma", D);
        py::array y = output(out, {M, D});
        float* yp = fmut(y);
        py::gil_scoped_release r;
        cpu::rms_norm(fptr(x), g, yp, M, D, eps);
        return y;
      },
      py::arg("x"), py::arg("gamma") = py::none(), py::arg("eps") = 1e-6f, py::arg("out") = py::none(),
      "RMSNorm over the last dim of x[M,D]");

  ops.def(
      "rms_norm_residual",
      [](py::object x_, py::object res_, py::object gamma_, float eps, py::object out) {
        py::array res = checked<float>(res_, "residual", 2, true);
        const int64_t M = res.shape(0), D = res.shape(1);
        const float* xp = nullptr;
        py::array x;
        if (!x_.is_none()) {
          x = checked<float>(x_, "x", 2);
          expect_shape(x, "x", {M, D});
          xp = fptr(x);
        }
        py::array gamma = checked<float>(gamma_, "gamma", 1);
        expect_shape(gamma, "gamma", {D});
        py::array y = output(out, {M, D});
        float* yp = fmut(y);
        float* rp = fmut(res);
        py::gil_scoped_release r;
        cpu::rms_norm_residual(xp, rp, fptr(gamma), yp, M, D, eps);
        return y;
      },
      py::arg("x"), py::arg("residual"), py::arg("gamma"), py::arg("eps") = 1e-6f, py::arg("out") = py::none(),
      "residual += x (in place; x may be None); returns rms_norm(residual) * gamma");

  auto unary = [&](const char* name, void (*fn)(float*, int64_t), const char* doc) {
    ops.def(
        name,
        [fn](py::object x_) {
          py::array x = checked<float>(x_, "x", -1, true);
          float* p = fmut(x);
          const int64_t n = total(x);
          {
            py::gil_scoped_release r;
            fn(p, n);
          }
          return x;
        },
        py::arg("x"), doc);
  };
  unary("relu_", &cpu::relu, "ReLU in place; returns x");
  unary("gelu_", &cpu::gelu, "exact (erf) GELU in place; returns x");
  unary("silu_", &cpu::silu, "SiLU in place; returns x");

  ops.def(
      "silu_mul",
      [](py::object g_, py::object u_, py::object out) {
        py::array g = checked<float>(g_, "gate", -1), u = checked<float>(u_, "up", -1);
        std::vector<int64_t> shape(g.shape(), g.shape() + g.ndim());
        expect_shape(u, "up", shape);
        py::array y = output(out, shape);
        float* yp = fmut(y);
        const int64_t n = total(g);
        py::gil_scoped_release r;
        cpu::silu_mul(fptr(g), fptr(u), yp, n);
        return y;
      },
      py::arg("gate"), py::arg("up"), py::arg("out") = py::none(), "silu(gate) * up");

  ops.def(
      "add_",
      [](py::object y_, py::object x_) {
        py::array y = checked<float>(y_, "y", -1, true), x = checked<float>(x_, "x", -1);
        expect_shape(x, "x", std::vector<int64_t>(y.shape(), y.shape() + y.ndim()));
        float* yp = fmut(y);
        const int64_t n = total(y);
        {
          py::gil_scoped_release r;
          cpu::add_inplace(yp, fptr(x), n);
        }
        return y;
      },
      py::arg("y"), py::arg("x"), "y += x in place; returns y");

  auto rowwise = [&](const char* name, void (*fn)(float*, int64_t, int64_t), const char* doc) {
    ops.def(
        name,
        [fn](py::object x_) {
          py::array x = checked<float>(x_, "x", -1, true);
          MINMO_CHECK(x.ndim() >= 1 && x.shape(x.ndim() - 1) > 0, ErrorCode::InvalidArgument,
                      "x must have a non-empty last dimension");
          const int64_t N = x.shape(x.ndim() - 1), M = total(x) / N;
          float* p = fmut(x);
          {
            py::gil_scoped_release r;
            fn(p, M, N);
          }
          return x;
        },
        py::arg("x"), doc);
  };
  rowwise("softmax_", &cpu::softmax, "softmax over the last dim, in place; returns x");
  rowwise("log_softmax_", &cpu::log_softmax, "log-softmax over the last dim, in place; returns x");

  ops.def(
      "rope_neox_",
      [](py::object x_, py::object pos_, double theta) {
        py::array x = checked<float>(x_, "x", 3, true);
        py::array pos = checked<int64_t>(pos_, "positions", 1);
        const int64_t T = x.shape(0), H = x.shape(1), Dh = x.shape(2);
        expect_shape(pos, "positions", {T});
        float* p = fmut(x);
        {
          py::gil_scoped_release r;
          cpu::rope_neox(p, iptr(pos), T, H, Dh, theta);
        }
        return x;
      },
      py::arg("x"), py::arg("positions"), py::arg("theta"), "rotary embedding (rotate_half) of x[T,H,Dh] in place");

  ops.def(
      "embedding",
      [](py::object table_, py::object ids_, py::object out) {
        py::array table = checked<float>(table_, "table", 2);
        py::array ids = checked<int64_t>(ids_, "ids", 1);
        const int64_t V = table.shape(0), D = table.shape(1), T = ids.shape(0);
        py::array y = output(out, {T, D});
        float* yp = fmut(y);
        py::gil_scoped_release r;
        cpu::embedding(fptr(table), iptr(ids), yp, T, V, D);
        return y;
      },
      py::arg("table"), py::arg("ids"), py::arg("out") = py::none(), "table[ids] -> [T,D]");

  ops.def(
      "attention",
      [](py::object q_, py::object k_, py::object v_, float scale, std::optional<int64_t> causal_offset,
         py::object lo_, py::object hi_, py::object out) {
        py::array q = checked<float>(q_, "q", 3), k = checked<float>(k_, "k", 3), v = checked<float>(v_, "v", 3);
        const int64_t Tq = q.shape(0), Hq = q.shape(1), Dh = q.shape(2), Tk = k.shape(0), Hkv = k.shape(1);
        expect_shape(k, "k", {Tk, Hkv, Dh});
        expect_shape(v, "v", {Tk, Hkv, Dh});
        minmo::cpu::AttnMask mask;
        py::array lo, hi;
        MINMO_CHECK(lo_.is_none() == hi_.is_none(), ErrorCode::InvalidArgument, "give both lo and hi, or neither");
        MINMO_CHECK(!(causal_offset && !lo_.is_none()), ErrorCode::InvalidArgument,
                    "causal_offset and lo/hi are exclusive");
        if (causal_offset) mask = minmo::cpu::AttnMask::causal(*causal_offset);
        if (!lo_.is_none()) {
          lo = checked<int64_t>(lo_, "lo", 1);
          hi = checked<int64_t>(hi_, "hi", 1);
          expect_shape(lo, "lo", {Tq});
          expect_shape(hi, "hi", {Tq});
          mask = minmo::cpu::AttnMask::ranges(iptr(lo), iptr(hi));
        }
        py::array y = output(out, {Tq, Hq, Dh});
        float* yp = fmut(y);
        py::gil_scoped_release r;
        cpu::attention(fptr(q), fptr(k), fptr(v), yp, Tq, Tk, Hq, Hkv, Dh, scale, mask);
        return y;
      },
      py::arg("q"), py::arg("k"), py::arg("v"), py::arg("scale"), py::arg("causal_offset") = py::none(),
      py::arg("lo") = py::none(), py::arg("hi") = py::none(), py::arg("out") = py::none(),
      "attention(q[Tq,Hq,Dh], k/v[Tk,Hkv,Dh]); mask: none, causal_offset=o, or per-query key ranges [lo, hi)");

  ops.def(
      "conv1d",
      [](py::object x_, py::object w_, py::object bias, int64_t stride, int64_t pad_left, int64_t pad_right,
         int64_t groups, int64_t dilation, py::object out) {
        py::array x = checked<float>(x_, "x", 2), w = checked<float>(w_, "weight", 3);
        const int64_t T = x.shape(0), Cin = x.shape(1), Cout = w.shape(0), K = w.shape(2);
        MINMO_CHECK(groups > 0 && Cin % groups == 0, ErrorCode::InvalidArgument,
                    "groups=" << groups << " must divide Cin=" << Cin);
        expect_shape(w, "weight", {Cout, Cin / groups, K});
        const float* b = optional_vec(bias, "bias", Cout);
        MINMO_CHECK(stride > 0 && dilation > 0, ErrorCode::InvalidArgument, "stride and dilation must be positive");
        const int64_t Tout = cpu::conv1d_out_len(T, K, stride, pad_left, pad_right, dilation);
        py::array y = output(out, {Tout, Cout});
        float* yp = fmut(y);
        py::gil_scoped_release r;
        cpu::conv1d(fptr(x), fptr(w), b, yp, T, Cin, Cout, K, stride, pad_left, pad_right, groups, dilation);
        return y;
      },
      py::arg("x"), py::arg("weight"), py::arg("bias") = py::none(), py::arg("stride") = 1, py::arg("pad_left") = 0,
      py::arg("pad_right") = 0, py::arg("groups") = 1, py::arg("dilation") = 1, py::arg("out") = py::none(),
      "time-major conv1d: x[T,Cin], weight[Cout,Cin/groups,K] -> [Tout,Cout]");
}
