// ExactBytes: the trimming of contract/dali_pipeline.py's exact_bytes() as ONE DALI CPU operator,
// an experiment for benchmarks/exact_bytes_probe.py (case "plugin"): does trimming in one step
// cost what one copy costs? Not used by the product (a plugin would have to be built against the
// DALI of every Triton release and loaded by dali_backend).
//
// A row that starts with b"LEN:" + a uint32 length (little endian) gives the length's bytes after
// the 8-byte prefix; a declared length of 0 or past the row's end fails the run, naming the row.
// Any other row is passed whole. The output is a copy: rows' buffers stay the input's own.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "dali/pipeline/operator/operator.h"

namespace exact_bytes {

using ::dali::CPUBackend;

class ExactBytes : public ::dali::Operator<CPUBackend> {
 public:
  explicit ExactBytes(const ::dali::OpSpec &spec) : ::dali::Operator<CPUBackend>(spec) {}

 protected:
  bool SetupImpl(std::vector<::dali::OutputDesc> &output_desc, const ::dali::Workspace &ws) override {
    const auto &in = ws.Input<CPUBackend>(0);
    DALI_ENFORCE(in.type() == DALI_UINT8, "ExactBytes: the rows must be uint8");
    DALI_ENFORCE(in.sample_dim() == 1, "ExactBytes: each row must be 1-D");
    int n = in.num_samples();
    offsets_.resize(n);
    ::dali::TensorListShape<1> shape(n);
    for (int i = 0; i < n; i++) {
      int64_t size = in.tensor_shape_span(i)[0];
      const auto *row = static_cast<const uint8_t *>(in.raw_tensor(i));
      int64_t offset = 0, length = size;
      if (size >= 8 && std::memcmp(row, "LEN:", 4) == 0) {
        uint32_t declared;
        std::memcpy(&declared, row + 4, 4);   // little endian on every platform DALI runs on
        DALI_ENFORCE(declared >= 1 && static_cast<int64_t>(declared) <= size - 8,
                     "ExactBytes: row " + std::to_string(i) + " declares " + std::to_string(declared) +
                     " bytes but has " + std::to_string(size - 8) + " after its prefix");
        offset = 8;
        length = declared;
      }
      offsets_[i] = offset;
      shape.set_tensor_shape(i, ::dali::TensorShape<1>(length));
    }
    output_desc.resize(1);
    output_desc[0] = {shape, in.type()};
    return true;
  }

  void RunImpl(::dali::Workspace &ws) override {
    const auto &in = ws.Input<CPUBackend>(0);
    auto &out = ws.Output<CPUBackend>(0);
    auto &pool = ws.GetThreadPool();
    for (int i = 0; i < in.num_samples(); i++) {
      int64_t length = out.tensor_shape_span(i)[0];
      pool.AddWork([&, i, length](int) {
        std::memcpy(out.raw_mutable_tensor(i), static_cast<const uint8_t *>(in.raw_tensor(i)) + offsets_[i],
                    length);
      }, length);
    }
    pool.RunAll();
  }

 private:
  std::vector<int64_t> offsets_;
};

}  // namespace exact_bytes

DALI_REGISTER_OPERATOR(ExactBytes, ::exact_bytes::ExactBytes, ::dali::CPU);

DALI_SCHEMA(ExactBytes)
    .DocStr("Each uint8 row trimmed to the image its length prefix declares (b'LEN:' + uint32), or whole.")
    .NumInput(1)
    .NumOutput(1);
