// ExactBytes: the trimming of contract/dali_pipeline.py's exact_bytes() as ONE DALI CPU operator,
// an experiment for benchmarks/exact_bytes_probe.py (cases plugin*): does trimming in one step
// cost what one copy costs? Not used by the product (a plugin would have to be built against the
// DALI of every Triton release and loaded by dali_backend).
//
// A row that starts with b"LEN:" + a uint32 length (little endian) gives the length's bytes after
// the 8-byte prefix; a declared length of 0 or past the row's end fails the run, naming the row.
// Any other row is passed whole. ExactBytes copies each row's bytes into its own output;
// ExactBytesView outputs views into the input rows instead (no copy, the input's buffers shared,
// as DALI's own reshape shares them), to tell the copy's cost from the operator's.
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "dali/pipeline/operator/operator.h"

namespace exact_bytes {

using ::dali::CPUBackend;

// Where row `i` of `in` starts and how long it is, by the prefix rule above (fails on a bad prefix).
inline std::pair<int64_t, int64_t> Span(const ::dali::TensorList<CPUBackend> &in, int i) {
  int64_t size = in.tensor_shape_span(i)[0];
  const auto *row = static_cast<const uint8_t *>(in.raw_tensor(i));
  if (size < 8 || std::memcmp(row, "LEN:", 4) != 0)
    return {0, size};
  uint32_t declared;
  std::memcpy(&declared, row + 4, 4);   // little endian on every platform DALI runs on
  DALI_ENFORCE(declared >= 1 && static_cast<int64_t>(declared) <= size - 8,
               "ExactBytes: row " + std::to_string(i) + " declares " + std::to_string(declared) +
               " bytes but has " + std::to_string(size - 8) + " after its prefix");
  return {8, declared};
}

inline void CheckRows(const ::dali::TensorList<CPUBackend> &in) {
  DALI_ENFORCE(in.type() == DALI_UINT8, "ExactBytes: the rows must be uint8");
  DALI_ENFORCE(in.sample_dim() == 1, "ExactBytes: each row must be 1-D");
}

class ExactBytes : public ::dali::Operator<CPUBackend> {
 public:
  explicit ExactBytes(const ::dali::OpSpec &spec) : ::dali::Operator<CPUBackend>(spec) {}

 protected:
  bool SetupImpl(std::vector<::dali::OutputDesc> &output_desc, const ::dali::Workspace &ws) override {
    const auto &in = ws.Input<CPUBackend>(0);
    CheckRows(in);
    int n = in.num_samples();
    offsets_.resize(n);
    ::dali::TensorListShape<1> shape(n);
    for (int i = 0; i < n; i++) {
      auto [offset, length] = Span(in, i);
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

class ExactBytesView : public ::dali::Operator<CPUBackend> {
 public:
  explicit ExactBytesView(const ::dali::OpSpec &spec) : ::dali::Operator<CPUBackend>(spec) {}

 protected:
  // false: the executor allocates nothing; RunImpl points the output samples into the input's.
  bool SetupImpl(std::vector<::dali::OutputDesc> &, const ::dali::Workspace &) override { return false; }
  // one view per row: the output batch is not one buffer
  bool HasContiguousOutputs() const override { return false; }

  void RunImpl(::dali::Workspace &ws) override {
    // non-const only for unsafe_sample_owner, which hands out the row's owning pointer to share
    auto &in = const_cast<::dali::TensorList<CPUBackend> &>(ws.Input<CPUBackend>(0));
    CheckRows(in);
    auto &out = ws.Output<CPUBackend>(0);
    int n = in.num_samples();
    out.Reset();
    out.set_pinned(in.is_pinned());
    out.set_type(in.type());
    out.set_sample_dim(1);
    out.SetSize(n);
    for (int i = 0; i < n; i++) {
      auto [offset, length] = Span(in, i);
      // an aliasing pointer: shares the row's owner, points `offset` bytes into it
      auto *row = const_cast<uint8_t *>(static_cast<const uint8_t *>(in.raw_tensor(i)));
      std::shared_ptr<void> view(unsafe_sample_owner(in, i), row + offset);
      out.SetSample(i, view, length, in.is_pinned(), ::dali::TensorShape<>(length), in.type(),
                    in.device_id(), in.order());
    }
  }
};

}  // namespace exact_bytes

DALI_REGISTER_OPERATOR(ExactBytes, ::exact_bytes::ExactBytes, ::dali::CPU);
DALI_REGISTER_OPERATOR(ExactBytesView, ::exact_bytes::ExactBytesView, ::dali::CPU);

DALI_SCHEMA(ExactBytesView)
    .DocStr("ExactBytes without the copy: each output row is a view into its input row.")
    .NumInput(1)
    .NumOutput(1)
    .SamplewisePassThrough();

DALI_SCHEMA(ExactBytes)
    .DocStr("Each uint8 row trimmed to the image its length prefix declares (b'LEN:' + uint32), or whole.")
    .NumInput(1)
    .NumOutput(1);
