"""Learned optimizers: RNNs that map each coordinate's gradient to its update (paper section 2.1, Appendix A, D).

Same interface as `baselines`: `init_state(params)` and `step(params, grads, state)`, on dicts of named tensors
[N, *shape] (N problems). Parameters are grouped by name prefix, one network per group (`groups`), so CIFAR's conv
and fully connected parameters can get separate LSTMs; within a group every coordinate of every parameter of a
problem is one row of the network's batch, which is also the set a global averaging cell averages over.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def preprocess(g: torch.Tensor, kind: str, p: float, dim: int = -1) -> torch.Tensor:
    """Gradient features, stacked at `dim`: the raw gradient, or Appendix A's (log|g|/p, sgn g) / (-1, e^p g)."""
    if kind == "none":
        return g.unsqueeze(dim)
    if kind == "log_sign":
        big = g.abs() >= math.exp(-p)
        first = torch.where(big, g.abs().clamp_min(math.exp(-p)).log() / p, torch.full_like(g, -1.0))
        second = torch.where(big, g.sign(), math.exp(p) * g)
        return torch.stack([first, second], dim)
    raise ValueError(f"unknown preprocess {kind!r}: choose none or log_sign")


def tree_detach(x):
    """Detach every tensor in a nested dict / list / tuple (truncated BPTT cuts the graph here)."""
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, dict):
        return {k: tree_detach(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(tree_detach(v) for v in x)
    return x


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
    _compiled = None

    @classmethod
    def get(cls):
        if not cls.fused:
            return _cell_forward, _cell_backward, _cell_step
        if cls._compiled is None:
            cls._compiled = tuple(torch.compile(f) for f in (_cell_forward, _cell_backward, _cell_step))
        return cls._compiled


def fuse(enabled: bool, device: str = "cpu") -> bool:
    """Compile the LSTM cells (True) or run them eagerly; returns whether compiled cells are in use.

    Compiling needs a C++ compiler on CPU and Triton on GPU; without them the cells stay eager (same results).
    """
    import importlib.util
    import shutil

    if device == "cuda":
        available = importlib.util.find_spec("triton") is not None
    else:
        available = any(shutil.which(c) for c in ("c++", "g++", "clang++", "cl"))
    _Kernels.fused = bool(enabled) and available
    return _Kernels.fused


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
    if torch.is_grad_enabled() and any(t.requires_grad for t in (x, h, c, w)):
        return _Cell.apply(x, h, c, w)
    return _Kernels.get()[2](x, h, c, w)


class CoordinatewiseLSTM(nn.Module):
    """A stack of LSTM cells applied to every coordinate; `gac` cells per layer are global averaging cells."""

    def __init__(self, hidden=20, layers=2, gac=0, preprocess="none", p=10.0, output_scale=1.0, output="linear"):
        super().__init__()
        if not 0 <= gac <= hidden:
            raise ValueError(f"optimizer.gac={gac} must be between 0 and optimizer.hidden={hidden}")
        if output not in ("linear", "exp_magnitude"):
            raise ValueError(f"optimizer.output={output} is unknown: choose linear or exp_magnitude")
        self.hidden, self.gac, self.kind, self.p, self.scale = hidden, gac, preprocess, p, output_scale
        self.output = output
        features = 2 if preprocess == "log_sign" else 1
        self.cells = nn.ModuleList(nn.LSTMCell(features if i == 0 else hidden, hidden) for i in range(layers))
        self.out = nn.Linear(hidden, 1 if output == "linear" else 2)
        with torch.no_grad():
            for cell in self.cells:  # forget-gate bias 1: remember by default
                cell.bias_ih[hidden : 2 * hidden].fill_(1.0)
            self.out.weight.mul_(0.1)
            self.out.bias.zero_()

    def init_state(self, N: int, n: int, device, dtype):
        return [tuple(torch.zeros(self.hidden, N * n, device=device, dtype=dtype) for _ in "hc") for _ in self.cells]

    def _average(self, h, N: int):
        hv = h.view(self.hidden, N, -1)
        avg = hv[: self.gac].mean(2, keepdim=True).expand(-1, -1, hv.shape[2])
        return torch.cat([avg, hv[self.gac :]], 0).reshape(h.shape)

    def stack(self, x, state, N: int):
        """The LSTM layers on features x [F, N * n]: the top layer's output [H, N * n] and the new state."""
        new_state = []
        for cell, (h, c) in zip(self.cells, state, strict=True):
            h, c = lstm_cell(cell, x, h, c)
            if self.gac:
                h = self._average(h, N)
            new_state.append((h, c))
            x = h
        return x, new_state

    @staticmethod
    def linear(layer: nn.Linear, x):
        """`layer` applied to every column of x [H, N * n]: [out, N * n]."""
        return torch.addmm(layer.bias.unsqueeze(1), layer.weight, x)

    def forward(self, g: torch.Tensor, state):
        """Updates [N, n] for gradients [N, n] of N problems with n coordinates each."""
        N = g.shape[0]
        x, new_state = self.stack(preprocess(g.reshape(-1), self.kind, self.p, dim=0), state, N)
        return self.readout(x).view(N, -1), new_state

    def readout(self, x):
        """The update of every column of the top layer's output x [H, rows]: [1, rows]."""
        out = self.linear(self.out, x)
        if self.output == "exp_magnitude":
            # direction * exp(log-magnitude): a magnitude linear in log|g| gives steps proportional to a power of
            # |g| (gradient descent's), which a linear read-out of tanh-bounded states cannot form from log|g|
            out = out[:1] * out[1:].clamp(-30.0, 10.0).exp()
        return out * self.scale


class LearnedOptimizer(nn.Module):
    """Networks that propose the optimizee's updates, one per named parameter group."""

    learned = True

    def __init__(self, name: str, groups: dict | None = None, **net_kwargs):
        super().__init__()
        self.name = name
        self.groups = dict(groups) if groups else {"all": [""]}
        self.nets = nn.ModuleDict({g: self.make_net(**net_kwargs) for g in self.groups})

    def make_net(self, **kw) -> nn.Module:
        raise NotImplementedError

    def assign(self, names) -> dict[str, list[str]]:
        """Which network updates which parameters (first matching prefix); every parameter must find one."""
        out = {g: [] for g in self.groups}
        for name in sorted(names):
            group = next((g for g, prefixes in self.groups.items() if any(name.startswith(p) for p in prefixes)),
                         None)
            if group is None:
                raise ValueError(f"parameter {name!r} matches no group of optimizer.groups={self.groups}")
            out[group].append(name)
        return {g: ns for g, ns in out.items() if ns}

    def init_state(self, params):
        ref = next(iter(params.values()))
        N = ref.shape[0]
        return {g: self.nets[g].init_state(N, sum(params[k][0].numel() for k in ks), ref.device, ref.dtype)
                for g, ks in self.assign(params).items()}

    def step(self, params, grads, state):
        new_params, new_state = {}, {}
        for g, names in self.assign(params).items():
            N = params[names[0]].shape[0]
            flat = torch.cat([grads[k].reshape(N, -1) for k in names], 1)
            update, new_state[g] = self.nets[g](flat, state[g])
            for k, u in zip(names, update.split([params[k][0].numel() for k in names], 1), strict=True):
                new_params[k] = params[k] + u.view_as(params[k])
        return new_params, new_state


class LSTMOptimizer(LearnedOptimizer):
    """The coordinatewise LSTM optimizer (with `gac` > 0: LSTM+GAC, Appendix D)."""

    def make_net(self, **kw):
        return CoordinatewiseLSTM(**kw)


class NTMController(CoordinatewiseLSTM):
    """NTM-BFGS / NTM-L-BFGS (Appendix D): an LSTM+GAC controller with read and write heads over a memory M.

    Per problem with n coordinates (all quantities coordinatewise, the controller's weights shared):

        x_t   = [pre(g_t), pre(m_{t-1}^1), ..., pre(m_{t-1}^R)]       features of gradient and last read results
        h_t   = LSTM+GAC(x_t, h_{t-1})                                  (`gac` averaged cells per layer)
        u_t   = output_scale * w_u . h_t                                the update of each coordinate (`readout`)
        a_t^j = w_a^j . h_t,  b_t^j = w_b^j . h_t,  j = 1..W            write vectors (one entry per coordinate)
        r_t^k = w_r^k . h_t,  k = 1..R                                  read vectors
        M_t   = M_{t-1} + sum_j a_t^j (b_t^j)^T                         low-rank writes, M_0 = 0 (n x n)
        m_t^k = M_t r_t^k                                               read results, fed back at t + 1

    Choices the paper leaves open: writes come before the read of the same step; the read results go through the
    same preprocessing as the gradient (`pre`, scale-free with log_sign); heads are linear. With `history=k`
    (NTM-L-BFGS) M is never formed: the last k write pairs are kept and M r = sum_i a_i (b_i . r), O(n k); with k at
    least the number of writes it equals the dense memory exactly.
    """

    def __init__(self, read_heads=1, write_heads=3, history=None, max_memory_floats=1e8, **kw):
        self.reads, self.writes, self.history, self.max_memory = read_heads, write_heads, history, max_memory_floats
        super().__init__(**kw)
        features = self.cells[0].input_size * (1 + read_heads)
        self.cells[0] = nn.LSTMCell(features, self.hidden)
        with torch.no_grad():
            self.cells[0].bias_ih[self.hidden : 2 * self.hidden].fill_(1.0)
        self.heads = nn.Linear(self.hidden, read_heads + 2 * write_heads)
        with torch.no_grad():
            self.heads.weight.mul_(0.1)
            self.heads.bias.zero_()

    def init_state(self, N, n, device, dtype):
        from .config import L2LError

        if self.history is None and N * n * n > self.max_memory:
            raise L2LError(f"a dense NTM-BFGS memory for {N} problem(s) x {n} coordinates needs {N * n * n:.3g} "
                           f"floats, over optimizer.max_memory_floats={self.max_memory:.3g}: use optimizer=ntm_lbfgs")
        z = torch.zeros(N, n, device=device, dtype=dtype)
        if self.history is None:
            memory = torch.zeros(N, n, n, device=device, dtype=dtype)
        else:
            memory = (z.new_zeros(N, n, 0), z.new_zeros(N, n, 0))
        return {"lstm": super().init_state(N, n, device, dtype), "read": z.new_zeros(N, n, self.reads),
                "memory": memory}

    def forward(self, g, state):
        N, n = g.shape
        inputs = torch.cat([g.unsqueeze(0), state["read"].permute(2, 0, 1)], 0).reshape(1 + self.reads, -1)
        x, lstm = self.stack(preprocess(inputs, self.kind, self.p, dim=1).reshape(-1, N * n), state["lstm"], N)
        update = self.readout(x).view(N, n)
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
        return update, {"lstm": lstm, "read": read, "memory": memory}


class NTMOptimizer(LearnedOptimizer):
    """NTM-BFGS (`history: null`, dense memory) and NTM-L-BFGS (`history: k`)."""

    def make_net(self, **kw):
        return NTMController(**kw)


class TorchOptimizer(torch.optim.Optimizer):
    """A trained learned optimizer as an ordinary `torch.optim.Optimizer` for any model.

        opt = TorchOptimizer.from_checkpoint("outputs/meta-train/.../best.pt", model.named_parameters())
        loss.backward(); opt.step()

    Parameter names pick the network of each parameter (the rule's `groups`); every parameter is one problem's
    coordinates, exactly as in meta-training.
    """

    def __init__(self, named_parameters, rule: LearnedOptimizer):
        named = list(named_parameters)
        super().__init__([p for _, p in named], {})
        self.names, self.rule, self.rule_state = [n for n, _ in named], rule.eval(), None

    @classmethod
    def from_checkpoint(cls, path, named_parameters) -> TorchOptimizer:
        return cls(named_parameters, load_rule(path))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = [p for group in self.param_groups for p in group["params"]]
        batch = {n: p.unsqueeze(0) for n, p in zip(self.names, params, strict=True)}
        grads = {n: (p.grad if p.grad is not None else torch.zeros_like(p)).unsqueeze(0)
                 for n, p in zip(self.names, params, strict=True)}
        if self.rule_state is None:
            self.rule_state = self.rule.init_state(batch)
        new, self.rule_state = self.rule.step(batch, grads, self.rule_state)
        for n, p in zip(self.names, params, strict=True):
            p.copy_(new[n][0])
        return loss


def load_rule(path, node=None) -> LearnedOptimizer:
    """The trained optimizer saved in a meta-train checkpoint (or run folder), built from `node` if given, else
    from the config saved with it."""
    from .config import L2LError, build
    from .runs import load_checkpoint

    ckpt = load_checkpoint(path)
    rule = build(node if node is not None else ckpt["config"].optimizer)
    try:
        rule.load_state_dict(ckpt["weights"])
    except RuntimeError as e:
        raise L2LError(f"checkpoint '{ckpt['path']}' does not fit optimizer={rule.name} with this config "
                       f"({str(e).splitlines()[0][:100]})") from None
    return rule.eval()
