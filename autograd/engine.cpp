// The backward pass: an iterative topological walk (Kahn's algorithm over dependency counts), so
// graph depth never touches the call stack. Gradients are checked against the input shape and
// accumulated out of place (a returned gradient may alias another, e.g. add's backward returns dy
// twice).
#include <cstring>
#include <unordered_map>

#include "autograd/node.h"
#include "core/device.h"
#include "core/kernels/elementwise.h"
#include "core/parallel.h"

namespace seqlab {
namespace {

thread_local bool g_grad_enabled = true;

// a + b (same shape and dtype), a fresh tensor; elementwise, so split over threads freely (large
// activations' gradients are summed here, e.g. a residual stream's (B, T, D)).
Tensor add_fresh(const Tensor& a, const Tensor& b) {
  if constexpr (kCuda) if (on_cuda("backward (summing gradients)", a, b)) return kernels::add(a, b);
  Tensor out = Tensor::empty(a.shape(), a.dtype());
  dispatch_float(a.dtype(), "backward", [&]<typename T>() {
    const T* pa = a.data<T>();
    const T* pb = b.data<T>();
    T* po = out.data<T>();
    parallel_for(0, a.numel(), 1 << 15, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) po[i] = pa[i] + pb[i];
    });
  });
  return out;
}

void accumulate(Tensor& slot, const Tensor& g) { slot = slot.defined() ? add_fresh(slot, g) : g; }

}  // namespace

bool grad_enabled() { return g_grad_enabled; }
NoGradGuard::NoGradGuard() : prev_(g_grad_enabled) { g_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { g_grad_enabled = prev_; }

Node::~Node() {
  // Steal the producers of our inputs; whichever we hold the last reference to, we empty before it
  // dies, so destruction never recurses.
  std::vector<std::shared_ptr<Node>> stack;
  for (Edge& e : edges)
    if (e.fn) stack.push_back(std::move(e.fn));
  while (!stack.empty()) {
    std::shared_ptr<Node> n = std::move(stack.back());
    stack.pop_back();
    if (n.use_count() == 1) {
      for (Edge& e : n->edges)
        if (e.fn) stack.push_back(std::move(e.fn));
      n->backward = nullptr;  // closures may hold tensors whose own nodes we already moved out
    }
  }
}

std::vector<Tensor> record_multi(const char* name, std::vector<Tensor> ys, const std::vector<Tensor>& inputs,
                                 std::function<grads(const std::vector<Tensor>& dys)> backward) {
  if (!g_grad_enabled) return ys;
  bool any = false;
  for (const Tensor& x : inputs) any = any || x.requires_grad();
  if (!any) return ys;
  auto node = std::make_shared<Node>();
  node->name = name;
  node->edges.reserve(inputs.size());
  for (const Tensor& x : inputs) {
    Edge e;
    if (x.defined()) {
      e.requires_grad = x.requires_grad();
      e.shape = x.shape();
      e.dtype = x.dtype();
      if (x.requires_grad()) {
        if (x.grad_fn()) {
          e.fn = x.grad_fn();
          e.output_nr = x.output_nr();
        } else {
          e.leaf = x.impl_ptr();
        }
      }
    }
    node->edges.push_back(std::move(e));
  }
  node->backward = std::move(backward);
  for (size_t i = 0; i < ys.size(); ++i) {
    // Outputs are fresh tensors from the kernel; attach them to the node.
    TensorImpl* impl = ys[i].impl();
    SEQLAB_CHECK(!impl->grad_fn && !impl->requires_grad, name, ": output ", i, " is already in a graph");
    impl->requires_grad = true;
    impl->grad_fn = node;
    impl->output_nr = static_cast<int>(i);
    node->out_shapes.push_back(ys[i].shape());
    node->out_dtypes.push_back(ys[i].dtype());
    node->out_devices.push_back(ys[i].device());
  }
  return ys;
}

Tensor record(const char* name, Tensor y, const std::vector<Tensor>& inputs,
              std::function<grads(const Tensor& dy)> backward) {
  std::vector<Tensor> ys{std::move(y)};
  ys = record_multi(name, std::move(ys), inputs,
                    [fn = std::move(backward)](const std::vector<Tensor>& dys) { return fn(dys[0]); });
  return ys[0];
}

void backward(const Tensor& root, const Tensor& grad, bool retain_graph) {
  SEQLAB_CHECK(root.defined() && root.requires_grad(),
               "backward: the tensor does not require grad (no input of its graph was marked)");
  Tensor g = grad;
  if (!g.defined()) {
    SEQLAB_CHECK(root.numel() == 1, "backward: implicit gradient needs a one-element tensor, got shape ",
                 to_string(root.shape()));
    g = Tensor::ones(root.shape(), root.dtype(), root.device());
  }
  SEQLAB_CHECK(g.shape() == root.shape(), "backward: gradient of shape ", to_string(g.shape()),
               " for a tensor of shape ", to_string(root.shape()));
  NoGradGuard no_grad;

  auto accumulate_leaf = [](TensorImpl* leaf, const Tensor& dx) {
    // Leaves own their gradient: clip_grad_norm and optimizers may scale it in place.
    if (leaf->grad.defined()) leaf->grad = add_fresh(leaf->grad, dx);
    else leaf->grad = dx.clone();
  };
  if (!root.grad_fn()) {
    accumulate_leaf(root.impl(), g);
    return;
  }

  // 1. Dependency counts over every node reachable from the root (iterative DFS).
  std::unordered_map<Node*, int> deps;
  std::vector<Node*> stack{root.grad_fn().get()};
  deps[root.grad_fn().get()] = 0;
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (const Edge& e : n->edges) {
      if (!e.fn) continue;
      auto [it, fresh] = deps.try_emplace(e.fn.get(), 0);
      ++it->second;
      if (fresh) stack.push_back(e.fn.get());
    }
  }

  // 2. Kahn's walk. Pending output gradients are held per node until it is ready.
  std::unordered_map<Node*, std::vector<Tensor>> pending;
  std::vector<std::shared_ptr<Node>> ready{root.grad_fn()};
  pending[root.grad_fn().get()].resize(root.grad_fn()->out_shapes.size());
  pending[root.grad_fn().get()][root.output_nr()] = g;
  while (!ready.empty()) {
    std::shared_ptr<Node> node = std::move(ready.back());
    ready.pop_back();
    std::vector<Tensor> dys = std::move(pending[node.get()]);
    pending.erase(node.get());
    dys.resize(node->out_shapes.size());
    for (size_t i = 0; i < dys.size(); ++i)
      if (!dys[i].defined()) dys[i] = Tensor::zeros(node->out_shapes[i], node->out_dtypes[i], node->out_devices[i]);
    SEQLAB_CHECK(node->backward, "backward through ", node->name,
                 " a second time: the graph was freed (pass retain_graph = true to the first backward)");
    grads dxs = node->backward(dys);
    SEQLAB_CHECK(dxs.size() == node->edges.size(), node->name, ": backward returned ", dxs.size(),
                 " gradients for ", node->edges.size(), " inputs");
    for (size_t i = 0; i < dxs.size(); ++i) {
      Edge& e = node->edges[i];
      if (e.fn) {
        // A dependency is released even when no gradient flows, so the producer still runs.
        auto& slot = pending[e.fn.get()];
        if (slot.empty()) slot.resize(e.fn->out_shapes.size());
        if (e.requires_grad && dxs[i].defined()) {
          SEQLAB_CHECK(dxs[i].shape() == e.shape, node->name, ": gradient for input ", i, " has shape ",
                       to_string(dxs[i].shape()), ", expected the input's shape ", to_string(e.shape));
          accumulate(slot[e.output_nr], dxs[i]);
        }
        if (--deps[e.fn.get()] == 0) ready.push_back(e.fn);
      } else if (e.leaf && dxs[i].defined()) {
        SEQLAB_CHECK(dxs[i].shape() == e.shape, node->name, ": gradient for input ", i, " has shape ",
                     to_string(dxs[i].shape()), ", expected the input's shape ", to_string(e.shape));
        accumulate_leaf(e.leaf.get(), dxs[i]);
      }
    }
    if (!retain_graph) node->backward = nullptr;  // frees what the closure saved
  }
}

}  // namespace seqlab
