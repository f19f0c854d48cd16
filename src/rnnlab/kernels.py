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


def _tanh_from_sigmoid_(y: Tensor) -> Tensor:
    """In place: y holds 2a on entry and tanh(a) = 2*sigmoid(2a) - 1 on return."""
    return y.sigmoid_().mul_(2).sub_(1)


class _RNNLayer(torch.autograd.Function):
    """h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh), act = tanh or relu."""

    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, relu: bool):  # noqa: D401
        T, B, _ = x.shape
        H = w_hh.shape[0]
        # For tanh, every pre-activation is computed doubled (alpha/beta=2), so that
        # tanh(a) = 2*sigmoid(2a) - 1 needs no separate multiplication.
        scale = 1.0 if relu else 2.0
        bias = b_ih + b_hh if b_ih is not None else x.new_zeros(H)
        pre = torch.addmm(bias, x.reshape(T * B, -1), w_ih.t(), beta=scale, alpha=scale)
        out = pre.view(T, B, H)
        w_hh_t = w_hh.t()
        h = h0
        for t in range(T):
            h_t = out[t]
            h_t.addmm_(h, w_hh_t, alpha=scale)
            if relu:
                h_t.relu_()
            else:
                _tanh_from_sigmoid_(h_t)
            h = h_t
        ctx.relu = relu
        ctx.save_for_backward(x, h0, w_ih, w_hh, out)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, h0, w_ih, w_hh, out = ctx.saved_tensors
        T, B, _ = x.shape
        H = w_hh.shape[0]
        d_pre = torch.empty_like(out)
        dh = grad_out[T - 1]
        for t in range(T - 1, -1, -1):
            if t < T - 1:
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
        has_bias = ctx.needs_input_grad[4] or ctx.needs_input_grad[5]
        return dx, dh0, d_w_ih, d_w_hh, d_b if has_bias else None, d_b if has_bias else None, None


def rnn_layer(
    x: Tensor, h0: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor, relu: bool
) -> Tensor:
    """All hidden states (T, B, H) of one tanh (or relu) RNN layer over time-major x."""
    return _RNNLayer.apply(x.contiguous(), h0, w_ih, w_hh, b_ih, b_hh, relu)
