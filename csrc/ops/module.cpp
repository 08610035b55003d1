// The Python extension module lowbit._C. Importing it runs the TORCH_LIBRARY
// registrations of every glue file linked into it; tensor work is then reached
// through torch.ops.lowbit.*. The module itself only exposes a few non-tensor
// helpers: build facts and the CPU kernel selection.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>

#include "cpu/isa.h"
#include "cpu/kernel_trace.h"
#include "cpu/streaming.h"

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "lowbit compiled ops (registered in torch.ops.lowbit)";
  m.def("cpu_has_avx2", &lowbit::cpu::cpu_has_avx2, "Whether this CPU and build can run the AVX2/FMA/F16C kernels.");
  m.def("cpu_has_avx512", &lowbit::cpu::cpu_has_avx512,
        "Whether this CPU and build can run the AVX-512 (F/BW/VL/VNNI) kernels.");
  m.def("cpu_has_avx512_bf16", &lowbit::cpu::cpu_has_avx512_bf16,
        "Whether this CPU and build can run the bfloat16 (vdpbf16ps) large-M kernels of the avx512 tier.");
  m.def("cpu_isa", [] { return std::string(lowbit::cpu::isa_name(lowbit::cpu::active_isa())); },
        "The CPU kernel family in use: 'avx512', 'avx2' or 'portable'.");
  m.def("set_cpu_isa", [](const std::string& name) {
    try { lowbit::cpu::set_isa(name); } catch (const std::invalid_argument& e) { throw py::value_error(e.what()); }
  }, py::arg("name"), "Force the CPU kernel family ('avx512', 'avx2' or 'portable'), e.g. to test the portable path.");
  m.def("last_kernels", &lowbit::cpu::last_kernels,
        "op name -> the kernel its latest call ran (e.g. 'avx2_int4_gemv', 'portable').");
  m.def("streaming_min_bytes", &lowbit::cpu::streaming_min_bytes,
        "Ops touching at least this many bytes write their output with non-temporal stores.");
  m.def("set_streaming_min_bytes", &lowbit::cpu::set_streaming_min_bytes, py::arg("bytes"),
        "Override that threshold (0: always stream, as tests do); a negative value restores the default "
        "(the last-level cache size).");
  m.def("build_info", [] {
    py::dict d;
#ifdef LOWBIT_HAVE_AVX2
    d["avx2_kernels"] = true;
#else
    d["avx2_kernels"] = false;
#endif
#ifdef LOWBIT_HAVE_AVX512
    d["avx512_kernels"] = true;
#else
    d["avx512_kernels"] = false;
#endif
#ifdef LOWBIT_HAVE_AVX512_BF16
    d["avx512_bf16_kernels"] = true;
#else
    d["avx512_bf16_kernels"] = false;
#endif
#ifdef LOWBIT_WITH_CUDA
    d["cuda"] = true;
#else
    d["cuda"] = false;
#endif
    d["compiler"] = __VERSION__;
    return d;
  }, "Facts about how this extension was built.");
}
