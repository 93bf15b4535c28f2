"""TorchOptimizer keeps torch.optim's contract: state dicts that resume bit for bit, closures, zero_grad, parameters
without gradients, parameter groups, LR schedulers, any model's layers given to the rule's networks, clear errors."""

import io

import pytest
import torch
from torch import nn

from l2lcli.config import build
from l2lcli.errors import L2LError
from l2lcli.optimizers.torch_optim import TorchOptimizer, roles


def cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 8),
                         nn.Tanh(), nn.Linear(8, 3))


def data(n=6):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 3, (16,), generator=g)) for _ in range(n)]


@pytest.fixture
def make_rule(make_cfg):
    """Untrained two-network rules (MNIST's default: one LSTM for hidden layers, one for the output layer), each
    seed its own weights."""
    def make(seed=0):
        torch.manual_seed(seed)
        return build(make_cfg("task=mnist").optimizer)
    return make


@pytest.fixture
def rule(make_rule):
    return make_rule(0)


def train(model, opt, batches):
    losses = []
    for x, y in batches:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_a_loop_resumed_from_state_dicts_equals_the_uninterrupted_one_bit_for_bit(rule, make_rule):
    batches = data(8)
    model = cnn()
    full = train(model, TorchOptimizer(model, rule), batches)

    model = cnn()
    opt = TorchOptimizer(model, rule)
    first = train(model, opt, batches[:4])
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)  # plain tensors and containers: no pickled code

    resumed_model = cnn()
    resumed_model.load_state_dict(saved["model"])
    opt = TorchOptimizer(resumed_model, make_rule(seed=1))  # other weights: the rule's too come from the dict
    opt.load_state_dict(saved["opt"])
    rest = train(resumed_model, opt, batches[4:])
    assert first + rest == full
    for a, b in zip(model.parameters(), cnn().parameters(), strict=True):
        assert not torch.equal(a, b)  # it did train
    final = cnn()
    train(final, TorchOptimizer(final, rule), batches)
    assert all(torch.equal(a, b) for a, b in zip(final.parameters(), resumed_model.parameters(), strict=True))


def test_layers_go_to_the_rules_networks_by_module_type_and_position(make_cfg, rule):
    model = cnn()
    by_module = TorchOptimizer(model, rule)._assign()
    assert by_module == {"hidden": ["0.bias", "0.weight", "1.bias", "1.weight", "4.bias", "4.weight"],
                         "out": ["6.bias", "6.weight"]}  # in sorted order, as in meta-training
    # from names and shapes alone (model.named_parameters()): the same
    assert TorchOptimizer(model.named_parameters(), rule)._assign() == by_module
    conv_fc = build(make_cfg("task=cifar").optimizer)  # the conv-net task's: one LSTM for convolutions, one for rest
    assert TorchOptimizer(model, conv_fc)._assign() == {"conv": ["0.bias", "0.weight", "1.bias", "1.weight"],
                                                        "fc": ["4.bias", "4.weight", "6.bias", "6.weight"]}
    assert roles(model)["1.weight"] == ("layer0.1.weight", "conv")  # batch norm follows its convolution
    # a one-network rule takes any model
    one = build(make_cfg().optimizer)
    assert TorchOptimizer(model, one)._assign() == {"all": sorted(n for n, _ in model.named_parameters())}


def test_parameter_groups_scale_or_route_updates_and_lr_schedulers_drive_them(rule):
    model = cnn()
    before = [p.detach().clone() for p in model.parameters()]
    params = list(model.named_parameters())
    opt = TorchOptimizer([{"params": params[:4], "lr": 0.0}, {"params": params[4:6], "lr": 2.0, "net": "out"},
                          {"params": params[6:]}], rule)
    assert opt._assign() == {"hidden": ["0.bias", "0.weight", "1.bias", "1.weight"],
                             "out": ["4.bias", "4.weight", "6.bias", "6.weight"]}
    twin = cnn()
    single = TorchOptimizer(twin, rule)
    train(model, opt, data(1))
    train(twin, single, data(1))
    after = list(model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before[:4], after[:4], strict=True))  # lr 0: untouched
    assert all(not torch.equal(a, b) for a, b in zip(before[4:], after[4:], strict=True))

    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    train(model, opt, data(1))
    scheduler.step()
    assert [g["lr"] for g in opt.param_groups] == [0.0, 1.0, 0.5]

    with pytest.raises(L2LError, match="net 'conv' is not one of the rule's networks"):
        TorchOptimizer([{"params": params, "net": "conv"}], rule)


def test_the_lr_factor_scales_the_first_update_exactly(rule):
    x, y = data(1)[0]
    steps = {}
    for lr in (1.0, 2.0):
        model = cnn()
        p0 = [p.detach().clone() for p in model.parameters()]
        opt = TorchOptimizer([{"params": model.parameters(), "lr": lr}], rule)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        steps[lr] = [p.detach() - q for p, q in zip(model.parameters(), p0, strict=True)]
    for one, two in zip(steps[1.0], steps[2.0], strict=True):
        torch.testing.assert_close(two, 2 * one)


def test_closures_zero_grad_and_parameters_without_gradients(rule):
    model = cnn()
    frozen = model[6].bias
    frozen.requires_grad_(False)  # still in the optimizer, never a gradient: never moved
    kept = frozen.detach().clone()
    opt = TorchOptimizer(model, rule)
    x, y = data(1)[0]

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    losses = [opt.step(closure).item() for _ in range(5)]
    assert losses[-1] != losses[0] and torch.equal(frozen, kept)
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_a_double_precision_model_keeps_its_precision(rule):
    model = cnn().double()
    opt = TorchOptimizer(model, rule)
    x, y = data(1)[0]
    nn.functional.cross_entropy(model(x.double()), y).backward()
    opt.step()
    assert all(p.dtype == torch.float64 for p in model.parameters())


def test_what_it_cannot_do_is_one_clear_error(rule, make_cfg):
    with pytest.raises(L2LError, match="learned optimizers"):
        TorchOptimizer(cnn(), build(make_cfg("optimizer=adam").optimizer))
    with pytest.raises(L2LError, match="no parameters"):
        TorchOptimizer([], rule)
    with pytest.raises(L2LError, match="one bare tensor"):
        TorchOptimizer(nn.Parameter(torch.zeros(3)), rule)
    emb = nn.Embedding(10, 3, sparse=True)
    opt = TorchOptimizer(emb, build(make_cfg().optimizer))
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(L2LError, match="sparse gradients"):
        opt.step()
    model = cnn()
    opt = TorchOptimizer(model, rule)
    train(model, opt, data(1))
    with pytest.raises(L2LError, match="add_param_group after the first step"):
        opt.add_param_group({"params": [nn.Parameter(torch.zeros(2))]})
    renamed = [(f"x{i}", p) for i, p in enumerate(cnn().parameters())]
    with pytest.raises(L2LError, match="saved for other parameters"):
        TorchOptimizer(renamed, rule).load_state_dict(opt.state_dict())
    with pytest.raises(L2LError, match="does not fit"):
        TorchOptimizer(nn.Linear(3, 2), rule).load_state_dict(opt.state_dict())
    with pytest.raises(L2LError, match="no rule_state"):
        TorchOptimizer(cnn(), rule).load_state_dict(torch.optim.SGD(cnn().parameters(), lr=1).state_dict())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_parameters_on_a_gpu_step_there_and_resume_there(rule, make_rule):
    model = cnn().cuda()
    opt = TorchOptimizer(model, rule)
    batches = [(x.cuda(), y.cuda()) for x, y in data(4)]
    train(model, opt, batches[:2])
    state = opt.state_dict()
    tensors = [t for net in state["rule_state"]["nets"].values() for t in torch.utils._pytree.tree_leaves(net)]
    assert tensors and all(t.device.type == "cuda" for t in tensors)  # LSTM states and stateful inputs alike
    opt2 = TorchOptimizer(model, make_rule(seed=1))
    opt2.load_state_dict(state)
    train(model, opt2, batches[2:])
    assert all(p.device.type == "cuda" and torch.isfinite(p).all() for p in model.parameters())

