// Define-by-run reverse-mode autograd. An op runs its kernel, then calls record() with a closure
// mapping the output gradient(s) to one gradient per input. There is no op enum and no switch:
// the closure *is* the backward. The graph holds edges (producer node + output index, or the leaf),
// never the input tensors themselves, so an activation lives only as long as a closure needs it.
#pragma once
#include <functional>
#include <memory>
#include <vector>

#include "core/tensor.h"

namespace seqlab {

/// One gradient per input of an op, in input order; an undefined Tensor means "zero / not needed".
using grads = std::vector<Tensor>;

struct Edge {
  std::shared_ptr<Node> fn;          // producer of the input (non-leaf), else null
  int output_nr = 0;                 // which output of fn
  std::shared_ptr<TensorImpl> leaf;  // the input itself when it is a leaf that requires grad
  Shape shape;                       // input shape, to check the returned gradient
  DType dtype = DType::f32;
  bool requires_grad = false;
};

struct Node {
  const char* name = "";
  std::vector<Edge> edges;          // one per input
  std::vector<Shape> out_shapes;    // one per output
  std::vector<DType> out_dtypes;
  std::vector<Device> out_devices;
  std::function<grads(const std::vector<Tensor>& dys)> backward;
  ~Node();  // tears chains down iteratively: a 100,000-node chain must not overflow the stack
};

/// True unless a NoGradGuard is alive on this thread.
bool grad_enabled();

/// Disables graph recording on this thread while alive (evaluation, optimizer updates).
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

/// Records a single-output op. Returns y, now attached to the graph when any input requires grad.
/// The closure should capture detached tensors only (capturing y itself would make a cycle).
Tensor record(const char* name, Tensor y, const std::vector<Tensor>& inputs,
              std::function<grads(const Tensor& dy)> backward);

/// Records an op with several outputs; backward receives one gradient per output (zeros where an
/// output was not used).
std::vector<Tensor> record_multi(const char* name, std::vector<Tensor> ys, const std::vector<Tensor>& inputs,
                                 std::function<grads(const std::vector<Tensor>& dys)> backward);

/// Accumulates d(root)/d(leaf) into every leaf that requires grad. `grad` defaults to 1 for a
/// one-element root. Frees the graph afterwards unless retain_graph.
void backward(const Tensor& root, const Tensor& grad = Tensor(), bool retain_graph = false);

}  // namespace seqlab
