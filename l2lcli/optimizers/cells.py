"""The LSTM cell of the learned optimizers, coordinates as columns, with a hand-written backward; eager or compiled.

`lstm_cell(cell, x, h, c)` computes nn.LSTMCell on x [F, rows], h and c [H, rows]: every gate is a contiguous block
of rows (nn.LSTMCell's gates are strided column slices, slow on CPU), and torch.compile (`fuse`) turns each
elementwise stretch into one fused loop, where an eager LSTM on CPU spends its time.

`fuse` is the process's one compile switch (`device.compile`); `compiled(fn)` compiles a whole function around the
cells under it (a learned step in evaluation, an unroll in meta-training up to `compile_unroll` coordinates).
"""

from __future__ import annotations

import importlib.util
import shutil

import torch
from torch import nn


def _tanh(x):
    # Inductor's vectorized tanh on CPU is 2.7x slower than its sigmoid (1.74 vs 4.73 ms on [80, 15910], one core),
    # while eager ATen's tanh is fast: compiled kernels use tanh(x) = 2 sigmoid(2x) - 1 (error under 2e-7).
    return 2 * torch.sigmoid(2 * x) - 1 if torch.compiler.is_compiling() else x.tanh()


def _cell_forward(x, h, c, w):
    """One LSTM cell (nn.LSTMCell's equations, gates i, f, g, o) on columns: x [F, rows], h and c [H, rows], w the
    input weights, hidden weights and bias side by side [4H, F + H + 1]. Returns h', c' and what the backward needs."""
    # A row of ones carries the bias through the matmul: a separate bias would become an addmm that first copies
    # the broadcast bias into the whole [4H, rows] output.
    xh = torch.cat([x, h, torch.ones_like(h[:1])], 0)
    gates = w @ xh
    H = c.shape[0]
    act = torch.cat([gates[: 2 * H].sigmoid(), _tanh(gates[2 * H : 3 * H]), gates[3 * H :].sigmoid()], 0)
    i, f, g, o = act.split(H, 0)
    c_new = f * c + i * g
    tc = _tanh(c_new)
    return o * tc, c_new, xh, act, tc


def _cell_step(x, h, c, w):
    """_cell_forward without gradients (evaluation): compiled, nothing but h' and c' reaches memory."""
    return _cell_forward(x, h, c, w)[:2]


def _cell_backward(dh, dc, c, w, xh, act, tc):
    """Gradients of _cell_forward's inputs (x, h, c, w) from those of its outputs (h', c')."""
    i, f, g, o = act.split(c.shape[0], 0)
    dc = dc + dh * o * (1 - tc * tc)
    dgates = torch.cat([dc * g * i * (1 - i), dc * c * f * (1 - f), dc * i * (1 - g * g),
                        dh * tc * o * (1 - o)], 0)
    dxh = w[:, :-1].t() @ dgates
    F = xh.shape[0] - c.shape[0] - 1
    # xh @ dgates^T, then transposed: 2-3x faster with MKL than dgates @ xh^T for these skinny, long-K products
    return dxh[:F], dxh[F:], dc * f, (xh @ dgates.t()).t()


class _Kernels:
    """The cell's forward, backward and gradient-free step, eager or compiled by torch.compile (`fuse`): one fused
    loop per elementwise stretch instead of one pass over memory per op, where an eager LSTM on CPU spends its time.
    They take plain tensors (no autograd inside), so torch.compile sees one graph per layer shape, whatever
    requires grad."""

    fused = False
    unroll_max = 0  # the most coordinates of a trajectory whose unrolls are compiled whole
    _compiled = None
    whole: dict = {}  # functions compiled whole (`compiled`)

    @classmethod
    def get(cls):
        if not cls.fused:
            return _cell_forward, _cell_backward, _cell_step
        if cls._compiled is None:
            cls._compiled = tuple(torch.compile(f) for f in (_cell_forward, _cell_backward, _cell_step))
        return cls._compiled


def fuse(enabled: bool, device: str = "cpu", unroll_max: int = 0) -> bool:
    """Compile the LSTM cells (True) or run them eagerly; returns whether compiled cells are in use. With them,
    meta-training compiles whole unrolls of trajectories of at most `unroll_max` coordinates (`compile_unroll`).

    Compiling needs a C++ compiler on CPU and Triton on GPU; without them the cells stay eager (same results).
    """
    if device == "cuda":
        available = importlib.util.find_spec("triton") is not None
    else:
        available = any(shutil.which(c) for c in ("c++", "g++", "clang++", "cl"))
    _Kernels.fused = bool(enabled) and available
    _Kernels.unroll_max = int(unroll_max or 0)
    return _Kernels.fused


def compile_unroll(coordinates: int) -> bool:
    """Whether a trajectory of this many coordinates gets its unrolls compiled whole (see `fuse`)."""
    return _Kernels.fused and coordinates <= _Kernels.unroll_max


def compiled(fn, dynamic: bool | None = False):
    """`fn` compiled whole by torch.compile while compiled kernels are on (`fuse`), else None.

    Inside it the cells are plain tensor code (`lstm_cell`), so torch.compile fuses them with everything around them
    and derives one backward for the whole function. `dynamic=None`: a second shape compiles one graph for all sizes
    (torch.compile's automatic dynamic shapes), where many problem sizes meet (evaluation, generalization).
    """
    if not _Kernels.fused:
        return None
    if (fn, dynamic) not in _Kernels.whole:
        _Kernels.whole[fn, dynamic] = torch.compile(fn, dynamic=dynamic)
    return _Kernels.whole[fn, dynamic]


class _Cell(torch.autograd.Function):
    """Autograd for the LSTM cell with the hand-written backward above (checked against autograd in the tests)."""

    @staticmethod
    def forward(ctx, x, h, c, w):
        # plain tensors: the compiled kernel's guards then see one variant per shape, whatever requires grad
        h_new, c_new, xh, act, tc = _Kernels.get()[0](x.detach(), h.detach(), c.detach(), w.detach())
        ctx.save_for_backward(c, w, xh, act, tc)
        return h_new, c_new

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dh, dc):
        return _Kernels.get()[1](dh, dc, *ctx.saved_tensors)


def lstm_cell(cell: nn.LSTMCell, x, h, c):
    """nn.LSTMCell on columns: x [F, rows], h and c [H, rows] (coordinates are columns, so every gate is a
    contiguous block of rows; nn.LSTMCell's gates are strided column slices, slow on CPU)."""
    w = torch.cat([cell.weight_ih, cell.weight_hh, (cell.bias_ih + cell.bias_hh).unsqueeze(1)], 1)
    if torch.compiler.is_compiling():  # inside a function compiled whole: torch.compile differentiates it
        return _cell_forward(x, h, c, w)[:2]
    if torch.is_grad_enabled() and any(t.requires_grad for t in (x, h, c, w)):
        return _Cell.apply(x, h, c, w)
    return _Kernels.get()[2](x, h, c, w)
