"""The plain RNN layer for the CPU, with hand-written backpropagation through time.

torch runs nn.LSTM on the CPU through oneDNN, but nn.RNN through a generic path: every time
step is a few small ops whose gradients autograd records one by one (28 weight-gradient
matrix products per batch where one would do, a stack of the outputs), and torch's tanh costs
about 8x a sigmoid on this CPU. This layer computes the same function from the same
parameters (the nn.RNN module's own tensors, so initialisation and checkpoints are unchanged)
with fewer, larger operations:

- the input projection of all time steps is one matrix product, before the loop;
- per step, forward is one matrix product plus in-place elementwise ops;
- backward walks the steps once, keeping only dh, and leaves the weight gradients to one
  matrix product over all steps at the end;
- tanh(a) is computed as 2*sigmoid(2a) - 1, with the factor 2 folded into the products.

The results equal torch's to float rounding (tests/test_kernels.py compares outputs and
gradients in float64); they are not bit-identical to nn.RNN, so model.kernel=torch keeps
torch's own path, e.g. to compare with runs made before this kernel existed.

A GRU written the same way was no faster than torch's (its gates make ~20 small elementwise
ops per step either way), so GRU stays on torch's path.

All tensors here are time-major: (T, B, features).
"""

from __future__ import annotations

import torch
from torch import Tensor

_tanh_backward = torch.ops.aten.tanh_backward


class _RNNLayer(torch.autograd.Function):
    """h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh), act = tanh or relu.

    For tanh the loop carries s_t = sigmoid(2 a_t), so that h_t = 2 s_t - 1 = tanh(a_t), and
    2 a_{t+1} = 2 (x W_ih^T + b) + 2 h_t W_hh^T = [2 (x W_ih^T + b) - 2 W_hh 1] + 4 s_t W_hh^T:
    the constant part is one product before the loop, so a step is one in-place matrix
    product and one in-place sigmoid, and h comes out of s in one operation at the end.
    """

    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, relu: bool, last_only: bool):
        T, B, _ = x.shape
        H = w_hh.shape[0]
        states = x.new_empty(T + 1, B, H)  # h (relu) or s (tanh), after h0 / s0
        w_hh_t = w_hh.t()
        if relu:
            torch.addmm(b_ih + b_hh, x.reshape(T * B, -1), w_ih.t(), out=states[1:].view(-1, H))
            states[0] = h0
            for t in range(T):
                states[t + 1].addmm_(states[t], w_hh_t).relu_()
            out = states[1:]
        else:
            bias = (b_ih + b_hh).mul(2).sub_(w_hh.sum(1), alpha=2)
            torch.addmm(bias, x.reshape(T * B, -1), w_ih.t(), alpha=2, out=states[1:].view(-1, H))
            torch.add(h0, 1, out=states[0]).mul_(0.5)
            for t in range(T):
                states[t + 1].addmm_(states[t], w_hh_t, alpha=4).sigmoid_()
            out = states[1:].mul(2).sub_(1)
        ctx.relu, ctx.last_only = relu, last_only
        ctx.save_for_backward(x, h0, w_ih, w_hh, out)
        return out[-1].clone() if last_only else out

    @staticmethod
    def backward(ctx, grad_out):
        x, h0, w_ih, w_hh, out = ctx.saved_tensors
        T, B, _ = x.shape
        H = w_hh.shape[0]
        d_pre = torch.empty_like(out)
        for t in range(T - 1, -1, -1):
            if t == T - 1:
                dh = grad_out if ctx.last_only else grad_out[t]
            elif ctx.last_only:  # no gradient reaches the outputs before the last
                dh = d_pre[t + 1].mm(w_hh)
            else:
                dh = torch.addmm(grad_out[t], d_pre[t + 1], w_hh)
            if ctx.relu:
                torch.mul(dh, out[t] > 0, out=d_pre[t])
            else:
                _tanh_backward.grad_input(dh, out[t], grad_input=d_pre[t])
        flat = d_pre.view(T * B, H)
        d_w_ih = flat.t().mm(x.reshape(T * B, -1))
        d_w_hh = d_pre[0].t().mm(h0)
        if T > 1:
            d_w_hh.addmm_(d_pre[1:].reshape(-1, H).t(), out[:-1].reshape(-1, H))
        d_b = flat.sum(0)
        dx = flat.mm(w_ih).view_as(x) if ctx.needs_input_grad[0] else None
        dh0 = d_pre[0].mm(w_hh) if ctx.needs_input_grad[1] else None
        # The two biases get the same gradient, as two tensors: clipping scales each in place.
        return dx, dh0, d_w_ih, d_w_hh, d_b, d_b.clone(), None, None


def rnn_layer(
    x: Tensor,
    h0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor,
    b_hh: Tensor,
    relu: bool,
    last_only: bool = False,
) -> Tensor:
    """One tanh (or relu) RNN layer over time-major x: every hidden state (T, B, H), or with
    `last_only` just the last one (B, H), which spares backward the zero gradients of the rest.
    """
    return _RNNLayer.apply(x.contiguous(), h0, w_ih, w_hh, b_ih, b_hh, relu, last_only)
