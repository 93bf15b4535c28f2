import math

import pytest
import torch

from l2lcli.config import build
from l2lcli.errors import L2LError
from l2lcli.optimizers.learned import LSTMOptimizer
from l2lcli.optimizers.preprocess import Moments, ProblemInputs, preprocess


def _lstm(**kw):
    torch.manual_seed(0)
    args = dict(name="lstm", hidden=20, layers=2, gac=0, preprocess="log_sign", p=10.0, output_scale=0.1)
    return LSTMOptimizer(**{**args, **kw})


def _run(opt, grads_seq, params):
    state = opt.init_state(params)
    for g in grads_seq:
        params, state = opt.step(params, g, state)
    return params


def test_preprocess_is_appendix_a():
    p = 10.0
    g = torch.tensor([3.0, -1e-2, 1e-6, -1e-7, 0.0])
    x = preprocess(g, "log_sign", p)
    assert x.shape == (5, 2)
    torch.testing.assert_close(x[0], torch.tensor([math.log(3.0) / p, 1.0]))
    torch.testing.assert_close(x[1], torch.tensor([math.log(1e-2) / p, -1.0]))
    # |g| < e^-p: (-1, e^p g)
    torch.testing.assert_close(x[2], torch.tensor([-1.0, math.exp(p) * 1e-6]))
    torch.testing.assert_close(x[4], torch.tensor([-1.0, 0.0]))
    assert preprocess(g, "none", p).shape == (5, 1)


def test_moments_are_adams_bias_corrected_averages_over_the_rms():
    """preprocess=moments: g / RMS and each momentum / RMS, bias-corrected, computed by hand for three steps."""
    mom = Moments((0.5, 0.9), 0.99)
    gs = torch.tensor([[2.0, -1.0, 0.0], [1.0, 3.0, 0.0], [-4.0, 1.0, 0.0]])
    state = mom.init_state(3, "cpu", torch.float32)
    m = torch.zeros(2, 3)
    v = torch.zeros(3)
    for t, g in enumerate(gs, 1):
        x, state = mom(g, state)
        m = torch.stack([0.5 * m[0] + 0.5 * g, 0.9 * m[1] + 0.1 * g])
        v = 0.99 * v + 0.01 * g * g
        rms = (v / (1 - 0.99**t) + torch.finfo(torch.float32).tiny).sqrt()
        want = torch.stack([g / rms, m[0] / (1 - 0.5**t) / rms, m[1] / (1 - 0.9**t) / rms])
        torch.testing.assert_close(x, want)
    torch.testing.assert_close(x[:, 2], torch.zeros(3))  # a coordinate whose gradient was always zero: no NaN
    torch.testing.assert_close(mom(gs[0], mom.init_state(3, "cpu", torch.float32))[0][0], gs[0].sign())


def test_moments_inputs_make_the_rule_blind_to_the_losss_scale():
    """Gradients multiplied by 1000 give the same updates: the rule sees only ratios (Lv et al. 2017)."""
    opt = _lstm(preprocess="moments", momenta=(0.5, 0.9, 0.99), rms_decay=0.99)
    grads = [{"w": torch.randn(3, 7)} for _ in range(5)]
    small = _run(opt, grads, {"w": torch.zeros(3, 7)})
    big = _run(opt, [{"w": 1000 * g["w"]} for g in grads], {"w": torch.zeros(3, 7)})
    torch.testing.assert_close(big["w"], small["w"])
    plain = _run(_lstm(preprocess="none"), grads, {"w": torch.zeros(3, 7)})
    assert not torch.allclose(_run(_lstm(preprocess="none"), [{"w": 1000 * g["w"]} for g in grads],
                                   {"w": torch.zeros(3, 7)})["w"], plain["w"], rtol=1e-3)
    assert opt.nets["all"].cells[0].input_size == 4


def test_problem_inputs_secant_step_is_the_line_minimum_on_a_quadratic():
    """s = -(u . g) / (u . dg): from theta + u, s more of u reaches the minimum of the quadratic along u."""
    torch.manual_seed(0)
    A = torch.randn(2, 6, 6, dtype=torch.float64)
    A = A @ A.transpose(1, 2) + torch.eye(6, dtype=torch.float64)
    b = torch.randn(2, 6, dtype=torch.float64)

    def grad(theta):
        return torch.einsum("bij,bj->bi", A, theta) - b

    theta0, u = torch.randn(2, 6, dtype=torch.float64), torch.randn(2, 6, dtype=torch.float64)
    pin = ProblemInputs()
    state = pin.init_state(2, 6, "cpu", torch.float64)
    first = pin(grad(theta0), state)
    torch.testing.assert_close(first, torch.zeros(5, 12, dtype=torch.float64))  # no previous step yet
    state = pin.next_state(grad(theta0), u)
    theta1 = theta0 + u
    x = pin(grad(theta1), state).view(5, 2, 6)
    assert (x[:3] == x[:3, :, :1]).all()  # one value per problem, repeated over its coordinates
    s = x[2, :, 0]
    torch.testing.assert_close(x[3], u)
    torch.testing.assert_close(x[4], s.unsqueeze(1) * u)
    g_line = grad(theta1 + s.unsqueeze(1) * u)
    inside = s.abs() < 5  # the clamp
    assert inside.all()  # (these problems' steps are inside it, so the line minimum below is checked for both)
    torch.testing.assert_close((g_line * u).sum(1)[inside], torch.zeros(int(inside.sum()), dtype=torch.float64))
    g0, g1 = grad(theta0), grad(theta1)
    torch.testing.assert_close(x[0, :, 0], (g1.norm(dim=1) / g0.norm(dim=1)).log().clamp(-5, 5))
    torch.testing.assert_close(x[1, :, 0], torch.nn.functional.cosine_similarity(g0, g1, dim=1))
    torch.testing.assert_close(pin(1e3 * g1, pin.next_state(1e3 * g0, u)), pin(g1, state))  # blind to the loss's scale


def test_problem_inputs_give_the_rule_a_view_across_coordinates():
    """With problem_inputs, one coordinate's update depends on the other coordinates' gradients."""
    opt = _lstm(preprocess="none", problem_inputs=True)
    grads = [{"w": torch.randn(1, 5)} for _ in range(3)]
    other = [{"w": torch.cat([g["w"][:, :1], 2 * g["w"][:, 1:]], 1)} for g in grads]
    a = _run(opt, grads, {"w": torch.zeros(1, 5)})["w"][0, 0]
    b = _run(opt, other, {"w": torch.zeros(1, 5)})["w"][0, 0]
    assert not torch.isclose(a, b)
    plain = _lstm(preprocess="none")
    torch.testing.assert_close(_run(plain, grads, {"w": torch.zeros(1, 5)})["w"][0, 0],
                               _run(plain, other, {"w": torch.zeros(1, 5)})["w"][0, 0])


def test_feature_major_cell_is_torch_lstm_cell():
    """The optimizer's cell (coordinates as columns, for speed) computes exactly nn.LSTMCell on each coordinate."""
    from l2lcli.optimizers.cells import lstm_cell

    torch.manual_seed(0)
    cell = torch.nn.LSTMCell(2, 5)
    x, h, c = torch.randn(7, 2), torch.randn(7, 5), torch.randn(7, 5)
    h_ref, c_ref = cell(x, (h, c))
    h_new, c_new = lstm_cell(cell, x.T.contiguous(), h.T.contiguous(), c.T.contiguous())
    torch.testing.assert_close(h_new.T, h_ref)
    torch.testing.assert_close(c_new.T, c_ref)


def test_updates_are_coordinatewise_and_order_invariant():
    opt = _lstm()
    params = {"w": torch.zeros(3, 7)}
    grads = [{"w": torch.randn(3, 7)} for _ in range(4)]
    out = _run(opt, grads, dict(params))
    perm = torch.randperm(7)
    out_p = _run(opt, [{"w": g["w"][:, perm]} for g in grads], dict(params))
    torch.testing.assert_close(out_p["w"], out["w"][:, perm])


def test_problems_in_a_batch_do_not_interact():
    opt = _lstm()
    grads = [{"w": torch.randn(4, 6)} for _ in range(3)]
    both = _run(opt, grads, {"w": torch.zeros(4, 6)})
    alone = _run(opt, [{"w": g["w"][1:2]} for g in grads], {"w": torch.zeros(1, 6)})
    torch.testing.assert_close(both["w"][1:2], alone["w"])


def test_output_scale_scales_the_update():
    g = [{"w": torch.randn(2, 5)}]
    a = _run(_lstm(output_scale=0.1), g, {"w": torch.zeros(2, 5)})["w"]
    b = _run(_lstm(output_scale=1.0), g, {"w": torch.zeros(2, 5)})["w"]
    torch.testing.assert_close(b, 10 * a)


def test_exp_magnitude_output_is_direction_times_exp_of_log_magnitude():
    net = _lstm(output="exp_magnitude").nets["all"]
    with torch.no_grad():  # a magnitude far from 0, so that the exp matters
        net.out.bias.copy_(torch.tensor([0.3, -2.0]))
    g = torch.randn(2, 5)
    state = net.init_state(2, 5, g.device, g.dtype)
    update, _ = net(g, state)
    x, _ = net.stack(preprocess(g.reshape(-1), "log_sign", 10.0, dim=0), state, 2)
    d, m = net.out.weight @ x + net.out.bias.unsqueeze(1)
    torch.testing.assert_close(update, (0.1 * d * m.exp()).view(2, 5))
    assert not torch.allclose(update, (0.1 * d).view(2, 5))


def test_named_groups_get_separate_networks():
    opt = _lstm(groups={"conv": ["conv"], "fc": ["fc"]})
    assert set(opt.nets) == {"conv", "fc"}
    params = {"conv1.w": torch.zeros(2, 3, 3), "fc.w": torch.zeros(2, 4), "fc.b": torch.zeros(2, 2)}
    assert opt.assign(params) == {"conv": ["conv1.w"], "fc": ["fc.b", "fc.w"]}
    out = _run(opt, [{k: torch.randn_like(v) for k, v in params.items()}], params)
    assert {k: v.shape for k, v in out.items()} == {k: v.shape for k, v in params.items()}
    with pytest.raises(L2LError, match="parameter 'bn.w' .* matches no group"):
        opt.assign({"bn.w": torch.zeros(2, 1)})


def test_groups_select_parameters_by_kind_or_name_prefix():
    opt = _lstm(groups={"conv": ["kind:conv"], "rest": ["fc", "kind:vector"]})
    kinds = {"a.w": "conv", "b.w": "conv", "fc.w": "fc", "theta": "vector"}
    assert opt.assign(kinds, kinds) == {"conv": ["a.w", "b.w"], "rest": ["fc.w", "theta"]}
    with pytest.raises(L2LError, match="kind image"):
        opt.assign({"pixels": 0}, {"pixels": "image"})
    # the assignment is fixed when the state is made: step follows it
    params = {"a.w": torch.zeros(2, 3), "fc.w": torch.zeros(2, 4)}
    state = opt.init_state(params, {"a.w": "conv", "fc.w": "fc"})
    assert state["groups"] == {"conv": ["a.w"], "rest": ["fc.w"]}
    new, _ = opt.step(params, {k: torch.randn_like(v) for k, v in params.items()}, state)
    assert {k: v.shape for k, v in new.items()} == {k: v.shape for k, v in params.items()}


def test_lstm_config_builds_the_paper_architecture(make_cfg):
    opt = build(make_cfg("recipe=paper").optimizer)
    net = opt.nets["all"]
    assert len(net.cells) == 2 and all(c.hidden_size == 20 for c in net.cells)
    assert net.cells[0].input_size == 1 and not net.stateful  # the raw gradient alone
    assert build(make_cfg().optimizer).nets["all"].cells[0].input_size == 6  # the default adds 5 problem inputs
    assert opt.learned


def test_a_trained_optimizer_drives_an_ordinary_torch_model(make_cfg):
    """TorchOptimizer reproduces the batched rollout on one problem, through the usual backward()/step() loop."""
    from l2lcli.commands import train
    from l2lcli.optimizers.torch_optim import TorchOptimizer
    from l2lcli.rollout import rollout
    from l2lcli.runs import load_rule

    cfg = make_cfg()
    ckpt = train.run(cfg)["checkpoint"]
    problems = build(cfg.task).sample("test", 1, seed=0)
    ref = rollout(problems, load_rule(ckpt), 10)[0][:, 0]

    theta = torch.nn.Parameter(problems.init_params()["theta"][0].clone())
    opt = TorchOptimizer.from_checkpoint(ckpt, [("theta", theta)])
    losses = []
    for _ in range(11):
        opt.zero_grad()
        loss = ((problems.W[0] @ theta - problems.y[0]) ** 2).sum()
        loss.backward()
        losses.append(loss.item())
        opt.step()
    torch.testing.assert_close(torch.tensor(losses), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fused", [False, True])
def test_cell_backward_is_autograds(fused):
    """The hand-written backward of the LSTM cell (eager, and compiled by torch.compile) against autograd through
    nn.LSTMCell, for every input: features, state and weights; and the gradient-free step against the cell."""
    from l2lcli.optimizers.cells import fuse, lstm_cell

    if fused and not fuse(True):
        pytest.skip("no C++ compiler for torch.compile")
    try:
        fuse(fused)
        torch.manual_seed(0)
        cell = torch.nn.LSTMCell(3, 4)
        x, h, c = (torch.randn(9, k, requires_grad=True) for k in (3, 4, 4))
        wh, wc = torch.randn(9, 4), torch.randn(9, 4)
        h_ref, c_ref = cell(x, (h, c))
        ref = torch.autograd.grad((h_ref * wh).sum() + (c_ref * wc).sum(), [x, h, c, *cell.parameters()])
        cols = [t.detach().T.contiguous().requires_grad_() for t in (x, h, c)]
        h_new, c_new = lstm_cell(cell, *cols)
        got = torch.autograd.grad((h_new * wh.T).sum() + (c_new * wc.T).sum(), [*cols, *cell.parameters()])
        torch.testing.assert_close(h_new.T, h_ref)
        for a, b in zip(got[:3], ref[:3], strict=True):
            torch.testing.assert_close(a.T, b)
        for a, b in zip(got[3:], ref[3:], strict=True):
            torch.testing.assert_close(a, b)
        with torch.no_grad():
            h_step, c_step = lstm_cell(cell, *cols)
        torch.testing.assert_close(h_step.T, h_ref.detach())
        torch.testing.assert_close(c_step.T, c_ref.detach())
    finally:
        fuse(False)


@pytest.mark.parametrize("overrides", [["task.problem_inputs=true"],
                                       ["task.problem_inputs=false", "task.preprocess=moments"],
                                       ["task.problem_inputs=true", "task.preprocess=moments", "optimizer=lstm_gac"],
                                       ["optimizer=ntm_bfgs", "optimizer.problem_inputs=true"],
                                       ["task.nominal=adam", "task.nominal_lr=0.1", "optimizer=lstm_gac"]])
def test_stateful_inputs_meta_train_and_evaluate_from_the_cli_config(make_cfg, overrides):
    """Meta-training and evaluation run with the new inputs, and the checkpoint rebuilds the same rule."""
    from l2lcli.commands import evaluate, train
    r = train.run(make_cfg(*overrides))
    e = evaluate.run(make_cfg(*overrides, f"eval.checkpoint={r['checkpoint']}"))
    assert math.isfinite(e["rows"][0]["final_loss"])


def test_a_checkpoint_saved_before_problem_inputs_keeps_them_off(make_cfg, tmp_path):
    """A recipe that turns problem inputs on must not change a rule trained without them (its weights would not
    fit the wider first layer)."""
    from l2lcli.commands import evaluate, train
    from l2lcli.commands.common import compose_for
    from l2lcli.runs import load_checkpoint, rule_from, save_checkpoint
    r = train.run(make_cfg("task.problem_inputs=false"))  # as every rule was trained before the key existed
    ckpt = load_checkpoint(r["checkpoint"])
    del ckpt["config"].optimizer["problem_inputs"]
    del ckpt["config"].task["problem_inputs"]
    old = tmp_path / "old.pt"
    save_checkpoint(old, ckpt["config"], rule_from(ckpt))
    # the quadratic best recipe turns problem inputs on; the old checkpoint must come back without them
    cfg = compose_for([f"out_dir={tmp_path / 'outputs'}", "device.compile=false", "eval.problems=8"],
                      checkpoint=str(old))
    assert cfg.optimizer.problem_inputs is False and cfg.task.problem_inputs is False  # the run's config says so
    assert evaluate.run(cfg)["rows"][0]["final_loss"] > 0


def test_ntms_take_problem_inputs_only_when_asked_and_refuse_moments(make_cfg):
    """A recipe's problem inputs do not reach the NTMs (their rules were measured without); optimizer.problem_inputs
    gives the controller the LSTM's five more inputs; moments, which their reads would go through, are refused."""
    from l2lcli.config import check
    from l2lcli.optimizers.ntm import NTMController
    for task in ("quadratic", "mnist"):  # whose best recipes turn problem inputs on for the LSTMs
        for name in ("ntm_bfgs", "ntm_lbfgs"):
            cfg = make_cfg(f"task={task}", f"optimizer={name}")
            check(cfg, "meta-train")
            assert cfg.optimizer.problem_inputs is False
    with pytest.raises(L2LError, match="moments is for the LSTM optimizers"):
        check(make_cfg("optimizer=ntm_lbfgs", "task.preprocess=moments"), "meta-train")
    with pytest.raises(ValueError, match="stateless gradient features"):
        NTMController(preprocess="moments")
    plain, asked = NTMController(preprocess="log_sign"), NTMController(preprocess="log_sign", problem_inputs=True)
    assert (plain.cells[0].input_size, asked.cells[0].input_size) == (4, 9)  # (g, 1 read) x 2 features, + 5
    g = torch.randn(2, 6)
    state = asked.init_state(2, 6, g.device, g.dtype)
    update, after = asked(g, state)
    assert set(after) == {"lstm", "read", "memory", "problem"}
    torch.testing.assert_close(after["problem"]["g"], g)  # what the next step's shared inputs compare against
    torch.testing.assert_close(after["problem"]["u"], update / asked.scale)  # the update, in read-out units


def test_problem_inputs_see_the_update_made_in_read_out_units():
    """The state's last update u is the applied update over output_scale, whatever the scale."""
    opt = _lstm(preprocess="none", problem_inputs=True, output_scale=0.01)
    params = {"w": torch.zeros(2, 4)}
    state = opt.init_state(params)
    new, state = opt.step(params, {"w": torch.randn(2, 4)}, state)
    torch.testing.assert_close(state["nets"]["all"]["problem"]["u"] * 0.01, (new["w"] - params["w"]).reshape(2, -1))


@pytest.mark.parametrize("name", ["sgd", "rmsprop", "adam", "nag"])
def test_a_nominal_rule_is_its_baseline_plus_the_read_out(name):
    """update = the baseline's step at the learned lr + the read-out: with the read-out zeroed, step for step the
    baseline `optimizer=NAME` composes, at nominal_lr; the baseline's direction is more inputs (log_sign: two)."""
    from l2lcli.config import baseline_config
    opt = _lstm(nominal=name, nominal_lr=0.05)
    assert opt.nets["all"].cells[0].input_size == 4
    grads = [{"w": torch.randn(3, 4, 2)} for _ in range(4)]
    params = {"w": torch.randn(3, 4, 2)}
    with_read_out = _run(opt, grads, params)
    with torch.no_grad():
        opt.nets["all"].out.weight.zero_()
        opt.nets["all"].out.bias.zero_()
    ref = build(baseline_config(name, 0.05))
    torch.testing.assert_close(_run(opt, grads, params), _run(ref, grads, params))
    assert not torch.allclose(with_read_out["w"], _run(ref, grads, params)["w"])


def test_the_nominal_learning_rate_is_a_meta_trained_weight():
    opt = _lstm(nominal="adam", nominal_lr=0.05)
    log_lr = opt.nets["all"].nominal_log_lr
    assert log_lr.item() == pytest.approx(math.log(0.05))
    params = {"w": torch.randn(3, 4)}
    new, _ = opt.step(params, {"w": torch.randn(3, 4)}, opt.init_state(params))
    new["w"].square().sum().backward()
    assert log_lr.grad is not None and log_lr.grad.abs() > 0


def test_a_nominal_must_be_a_baseline_and_is_refused_by_the_ntms(make_cfg):
    from l2lcli.config import check
    from l2lcli.optimizers.ntm import NTMController
    with pytest.raises(L2LError, match="task.nominal=lstm is not a baseline: choose from adam, nag"):
        check(make_cfg("task.nominal=lstm"), "meta-train")
    cfg = make_cfg("optimizer=ntm_bfgs", "task.nominal=nag")  # a recipe's nominal does not reach the NTMs
    check(cfg, "meta-train")
    assert cfg.optimizer.nominal is None
    with pytest.raises(L2LError, match="optimizer.nominal is for the LSTM optimizers"):
        check(make_cfg("optimizer=ntm_lbfgs", "optimizer.nominal=nag"), "meta-train")
    with pytest.raises(ValueError, match="without a nominal term"):
        NTMController(preprocess="log_sign", nominal="adam")


def test_a_rule_saved_before_the_nominal_term_keeps_it_off():
    """MNIST's best recipe has a nominal NAG; a rule saved before the key (the shipped family rule) comes back
    without one, so its weights fit, and runs without one."""
    from l2lcli import pretrained
    from l2lcli.commands.common import compose_for
    from l2lcli.runs import load_checkpoint, rule_from
    old = pretrained.path("mnist_family")
    assert "nominal" not in load_checkpoint(old)["config"].optimizer
    cfg = compose_for(["device.compile=false"], checkpoint=str(old))
    assert cfg.optimizer.nominal is None and cfg.task.nominal is None
    assert compose_for(["task=mnist"]).optimizer.nominal == "nag"
    assert rule_from(load_checkpoint(old), cfg.optimizer).nets["hidden"].nominal is None


def test_the_nominal_gate_scales_the_baselines_step_and_starts_open():
    """A learned gate exp(w . h) on the nominal step, 1 at initialisation; a rule saved before the gate loads with
    it open, the same rule."""
    from l2lcli.config import baseline_config
    opt = _lstm(nominal="nag", nominal_lr=0.05)
    net = opt.nets["all"]
    grads = [{"w": torch.randn(3, 5)} for _ in range(3)]
    params = {"w": torch.randn(3, 5)}
    with torch.no_grad():
        net.out.weight.zero_()
        net.out.bias.zero_()
        net.gate.bias.fill_(math.log(0.5))
    torch.testing.assert_close(_run(opt, grads, params), _run(build(baseline_config("nag", 0.025)), grads, params))
    saved = {k: v for k, v in opt.state_dict().items() if ".gate." not in k}
    fresh = _lstm(nominal="nag", nominal_lr=0.05)
    fresh.nets["all"].gate.bias.data.fill_(3.0)
    fresh.load_state_dict(saved)
    assert fresh.nets["all"].gate.bias.item() == 0.0
    torch.testing.assert_close(_run(fresh, grads, params), _run(build(baseline_config("nag", 0.05)), grads, params))
