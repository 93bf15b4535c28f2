"""The coordinatewise LSTM (paper section 2.1): one small network applied to every coordinate, weights shared."""

from __future__ import annotations

import math

import torch
from torch import nn

from .cells import lstm_cell
from .preprocess import Moments, ProblemInputs, features, preprocess


class CoordinatewiseLSTM(nn.Module):
    """A stack of LSTM cells applied to every coordinate; `gac` cells per layer are global averaging cells.

    With a `nominal` baseline (sgd, rmsprop, adam, nag) the update is the read-out plus that baseline's step at a
    learned learning rate starting at `nominal_lr` (a nominal term, Harrison, Metz and Sohl-Dickstein 2022), scaled
    per coordinate by a learned gate exp(w . h) that starts at 1: the rule starts as a tuned hand-designed optimizer
    and learns a correction to it, and sees the baseline's direction (preprocessed as the gradient is) as more
    inputs. An additive read-out cannot follow a step whose size spans orders of magnitude (log_sign inputs carry no
    scale); the gate can shrink or grow it where the baseline's learning rate does not suit a problem. Without a
    nominal, the paper's rule.
    """

    def __init__(self, hidden=20, layers=2, gac=0, preprocess="none", p=10.0, output_scale=1.0, output="linear",
                 momenta=(0.5, 0.9, 0.99), rms_decay=0.99, problem_inputs=False, nominal=None, nominal_lr=1.0):
        super().__init__()
        self.hidden, self.gac, self.kind, self.p, self.scale = hidden, gac, preprocess, p, output_scale
        self.output = output
        self.moments = Moments(momenta, rms_decay) if preprocess == "moments" else None
        self.problem = ProblemInputs() if problem_inputs else None
        self.nominal = None
        if nominal:  # the baseline as `optimizer=NAME` composes it; its lr is the learned one, in log space (> 0)
            from ..config import baseline_config, build
            self.nominal = build(baseline_config(nominal, 1.0))
            self.nominal_log_lr = nn.Parameter(torch.tensor(math.log(nominal_lr)))
            self.gate = nn.Linear(hidden, 1)
            nn.init.zeros_(self.gate.weight)
            nn.init.zeros_(self.gate.bias)
            self.register_load_state_dict_pre_hook(_open_gate)
        self.stateful = any(x is not None for x in (self.moments, self.problem, self.nominal))  # state: a dict
        inputs = (features(preprocess, momenta) + (ProblemInputs.count if problem_inputs else 0)
                  + (features(self._direction_kind) if nominal else 0))
        self.cells = nn.ModuleList(nn.LSTMCell(inputs if i == 0 else hidden, hidden)
                                   for i in range(layers))
        self.out = nn.Linear(hidden, 1 if output == "linear" else 2)
        with torch.no_grad():
            for cell in self.cells:  # forget-gate bias 1: remember by default
                cell.bias_ih[hidden : 2 * hidden].fill_(1.0)
            self.out.weight.mul_(0.1)
            self.out.bias.zero_()

    def init_state(self, N: int, n: int, device, dtype):
        """The layers' (h, c) [H, N * n] each; with stateful inputs, {"lstm": those, and the inputs' states}."""
        lstm = [tuple(torch.zeros(self.hidden, N * n, device=device, dtype=dtype) for _ in "hc") for _ in self.cells]
        if not self.stateful:
            return lstm
        state = {"lstm": lstm}
        if self.moments is not None:
            state["moments"] = self.moments.init_state(N * n, device, dtype)
        if self.problem is not None:
            state["problem"] = self.problem.init_state(N, n, device, dtype)
        if self.nominal is not None:
            nominal = self.nominal.init_state({"g": torch.zeros(N, n, device=device, dtype=dtype)})
            if "t" in nominal:  # a tensor: the compiled unroll then carries it without recompiling
                nominal["t"] = torch.zeros((), device=device, dtype=dtype)
            state["nominal"] = nominal
        return state

    @property
    def _direction_kind(self) -> str:
        """How the nominal's direction is preprocessed: as the gradient, raw where the gradient's features are
        moments (which keep their own state)."""
        return "none" if self.kind == "moments" else self.kind

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
        new_state = {}
        if self.moments is None:
            inputs = preprocess(g.reshape(-1), self.kind, self.p, dim=0)
        else:
            inputs, new_state["moments"] = self.moments(g.reshape(-1), state["moments"])
        if self.problem is not None:
            inputs = torch.cat([inputs, self.problem(g, state["problem"])], 0)
        if self.nominal is not None:  # the problem inputs' last update u is the whole update, nominal step included
            direction, new_state["nominal"] = self.nominal.direction({"g": g}, state["nominal"])
            direction = direction["g"]
            inputs = torch.cat([inputs, preprocess(direction.reshape(-1), self._direction_kind, self.p, dim=0)], 0)
        x, lstm = self.stack(inputs, state["lstm"] if self.stateful else state, N)
        update = self.readout(x).view(N, -1)
        if self.nominal is not None:
            gate = self.linear(self.gate, x).clamp(-8.0, 2.0).exp().view(N, -1)
            update = update - self.nominal_log_lr.exp() * gate * direction
        if not self.stateful:
            return update, lstm
        if self.problem is not None:
            new_state["problem"] = self.problem.next_state(g, update / self.scale)  # in the read-out's units
        return update, {"lstm": lstm, **new_state}

    def readout(self, x):
        """The update of every column of the top layer's output x [H, rows]: [1, rows]."""
        out = self.linear(self.out, x)
        if self.output == "exp_magnitude":
            # direction * exp(log-magnitude): a magnitude linear in log|g| gives steps proportional to a power of
            # |g| (gradient descent's), which a linear read-out of tanh-bounded states cannot form from log|g|
            out = out[:1] * out[1:].clamp(-30.0, 10.0).exp()
        return out * self.scale


def _open_gate(module, state_dict, prefix, *_):
    """A nominal rule saved before its gate: the gate at its initial (open) state, exp(0) = 1, is the same rule."""
    for key in ("weight", "bias"):
        state_dict.setdefault(f"{prefix}gate.{key}", torch.zeros_like(getattr(module.gate, key)))
