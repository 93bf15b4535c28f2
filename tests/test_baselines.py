import pytest
import torch

from l2lcli.optimizers.baselines import NAG, SGD, Adam, RMSprop


def _reference(opt_cls, kwargs, lr, steps=15):
    """torch.optim on one problem: the same rule, one learning rate at a time."""
    torch.manual_seed(0)
    A = torch.randn(5, 5)
    x = torch.randn(5, requires_grad=True)
    opt = opt_cls([x], lr=lr, **kwargs)
    for _ in range(steps):
        opt.zero_grad()
        (A @ x).pow(2).sum().backward()
        opt.step()
    return A, x.detach()


@pytest.mark.parametrize("ours, theirs, kwargs", [
    (lambda lr: SGD("sgd", lr), torch.optim.SGD, {}),
    (lambda lr: NAG("nag", lr, momentum=0.9), torch.optim.SGD, {"momentum": 0.9, "nesterov": True}),
    (lambda lr: RMSprop("rmsprop", lr, alpha=0.99, eps=1e-8), torch.optim.RMSprop, {"alpha": 0.99, "eps": 1e-8}),
    (lambda lr: Adam("adam", lr, 0.9, 0.999, 1e-8), torch.optim.Adam, {"betas": (0.9, 0.999), "eps": 1e-8}),
])
def test_vectorized_rules_match_torch_optim_at_every_learning_rate(ours, theirs, kwargs):
    lrs = [0.001, 0.01, 0.03]
    refs = [_reference(theirs, kwargs, lr) for lr in lrs]
    A = refs[0][0]
    torch.manual_seed(0)
    torch.randn(5, 5)
    x0 = torch.randn(5)
    opt = ours(torch.tensor(lrs))
    params = {"x": x0.repeat(3, 1)}
    state = opt.init_state(params)
    for _ in range(15):
        p = params["x"].clone().requires_grad_()
        (p @ A.T).pow(2).sum().backward()
        params, state = opt.step(params, {"x": p.grad}, state)
    for i, (_, ref) in enumerate(refs):
        torch.testing.assert_close(params["x"][i], ref, rtol=1e-4, atol=1e-6)
