"""The NTM-BFGS controller (Appendix D): an LSTM+GAC with read and write heads over a memory shared by coordinates."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import L2LError
from .lstm import CoordinatewiseLSTM
from .preprocess import ProblemInputs, preprocess


class NTMController(CoordinatewiseLSTM):
    """NTM-BFGS / NTM-L-BFGS (Appendix D): an LSTM+GAC controller with read and write heads over a memory M.

    Per problem with n coordinates (all quantities coordinatewise, the controller's weights shared):

        x_t   = [pre(g_t), pre(m_{t-1}^1), ..., pre(m_{t-1}^R)]       features of gradient and last read results
                (+ the problem's inputs, `problem_inputs`: as the LSTM's, from g and the last update)
        h_t   = LSTM+GAC(x_t, h_{t-1})                                  (`gac` averaged cells per layer)
        a_t^j = w_a^j . h_t,  b_t^j = w_b^j . h_t,  j = 1..W            write vectors (one entry per coordinate)
        r_t^k = w_r^k . h_t,  k = 1..R                                  read vectors
        M_t   = M_{t-1} + sum_j a_t^j (b_t^j)^T                         low-rank writes (n x n)
        m_t^k = M_t r_t^k                                               read results, fed back at t + 1

    and the update, by `update_from`:
        read (the paper's form)   u_t = output_scale * m_t^1, with M_0 = I
        controller                u_t = output_scale * w_u . h_t, with M_0 = 0 (the memory only feeds back)

    The paper's controller does not produce the update directly: as BFGS's step is its inverse-Hessian estimate
    times a vector, the update is the first read head's result. M_0 = I is BFGS's H_0; it makes the first updates
    the read vector itself (the same size as a plain LSTM's read-out at initialisation), where M_0 = 0 would make
    them a product of three near-zero head outputs that meta-training could hardly move. Choices the paper leaves
    open: writes come before the read of the same step; the read results go through the same preprocessing as the
    gradient (`pre`, scale-free with log_sign); heads are linear. With `history=k` (NTM-L-BFGS) M is never formed:
    the last k write pairs are kept and M r = M_0 r + sum_i a_i (b_i . r), O(n k); with k at least the number of
    writes it equals the dense memory exactly.
    """

    def __init__(self, read_heads=1, write_heads=3, history=None, max_memory_floats=1e8, update_from="controller",
                 **kw):
        self.reads, self.writes, self.history, self.max_memory = read_heads, write_heads, history, max_memory_floats
        self.from_read = update_from == "read"  # the default "controller" is what checkpoints without the key trained
        super().__init__(**kw)
        if self.moments is not None:
            raise ValueError("NTM controllers take stateless gradient features (their reads go through the same "
                             "preprocessing): preprocess none or log_sign")
        if self.nominal is not None:
            raise ValueError("NTM controllers update from their memory or read-out, without a nominal term: "
                             "optimizer.nominal=null (an LSTM option)")
        if self.from_read:
            self.out = None  # the update is the read result: no read-out layer
        problem = ProblemInputs.count if self.problem is not None else 0
        features = (self.cells[0].input_size - problem) * (1 + read_heads) + problem
        self.cells[0] = nn.LSTMCell(features, self.hidden)
        with torch.no_grad():
            self.cells[0].bias_ih[self.hidden : 2 * self.hidden].fill_(1.0)
        self.heads = nn.Linear(self.hidden, read_heads + 2 * write_heads)
        with torch.no_grad():
            self.heads.weight.mul_(0.1)
            self.heads.bias.zero_()

    def check_size(self, N: int, n: int) -> None:
        """Refuse a dense memory larger than max_memory_floats for N problems of n coordinates."""
        if self.history is None and N * n * n > self.max_memory:
            raise L2LError(f"a dense NTM-BFGS memory for {N} problem(s) x {n} coordinates needs {N * n * n:.3g} "
                           f"floats, over optimizer.max_memory_floats={self.max_memory:.3g}: use optimizer=ntm_lbfgs")

    def init_state(self, N, n, device, dtype):
        self.check_size(N, n)
        z = torch.zeros(N, n, device=device, dtype=dtype)
        if self.history is None:
            memory = torch.zeros(N, n, n, device=device, dtype=dtype)
            if self.from_read:
                memory += torch.eye(n, device=device, dtype=dtype)
        else:
            memory = (z.new_zeros(N, n, 0), z.new_zeros(N, n, 0))
        lstm = super().init_state(N, n, device, dtype)  # with problem inputs already {"lstm", "problem"}
        return {**(lstm if self.stateful else {"lstm": lstm}), "read": z.new_zeros(N, n, self.reads), "memory": memory}

    def forward(self, g, state):
        N, n = g.shape
        inputs = torch.cat([g.unsqueeze(0), state["read"].permute(2, 0, 1)], 0).reshape(1 + self.reads, -1)
        x = preprocess(inputs, self.kind, self.p, dim=1).reshape(-1, N * n)
        if self.problem is not None:
            x = torch.cat([x, self.problem(g, state["problem"])], 0)
        x, lstm = self.stack(x, state["lstm"], N)
        heads = self.linear(self.heads, x).view(-1, N, n).permute(1, 2, 0)
        r, a, b = heads.split([self.reads, self.writes, self.writes], -1)
        if self.history is None:
            memory = state["memory"] + a @ b.transpose(1, 2)        # [N, n, n]
            read = memory @ r                                       # [N, n, R]
        else:
            A = torch.cat([state["memory"][0], a], -1)[..., -self.history :]
            Bv = torch.cat([state["memory"][1], b], -1)[..., -self.history :]
            memory = (A, Bv)
            read = A @ (Bv.transpose(1, 2) @ r)                     # sum_i a_i (b_i . r), never n x n
            if self.from_read:
                read = read + r                                     # M_0 = I
        update = read[..., 0] * self.scale if self.from_read else self.readout(x).view(N, n)
        new = {"lstm": lstm, "read": read, "memory": memory}
        if self.problem is not None:
            new["problem"] = self.problem.next_state(g, update / self.scale)  # in the read-out's units
        return update, new
