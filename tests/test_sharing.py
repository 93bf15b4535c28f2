"""Optimizers that share information between coordinates (Appendix D): LSTM+GAC, NTM-BFGS, NTM-L-BFGS."""

import pytest
import torch

from l2lcli.config import build
from l2lcli.errors import L2LError
from l2lcli.optimizers.learned import LSTMOptimizer


def _opt(make_cfg, name, *overrides):
    torch.manual_seed(0)
    return build(make_cfg(f"optimizer={name}", *overrides).optimizer)


def _run(opt, grads, N, n):
    params = {"w": torch.zeros(N, n)}
    state = opt.init_state(params)
    for g in grads:
        params, state = opt.step(params, {"w": g}, state)
    return params["w"], state


PROBLEM = "optimizer.problem_inputs=true"  # an NTM's controller with the LSTM's problem inputs (asked for by name)


@pytest.mark.parametrize("name, extra", [("lstm_gac", []), ("ntm_bfgs", []), ("ntm_lbfgs", []),
                                         ("ntm_bfgs", [PROBLEM]), ("ntm_lbfgs", [PROBLEM])])
def test_permuting_coordinates_permutes_updates(make_cfg, name, extra):
    opt = _opt(make_cfg, name, *extra)
    grads = [torch.randn(2, 9) for _ in range(4)]
    perm = torch.randperm(9)
    out, _ = _run(opt, grads, 2, 9)
    out_p, _ = _run(opt, [g[:, perm] for g in grads], 2, 9)
    torch.testing.assert_close(out_p, out[:, perm], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name, extra", [("lstm_gac", []), ("ntm_bfgs", []), ("ntm_bfgs", [PROBLEM])])
def test_problems_in_a_batch_stay_separate(make_cfg, name, extra):
    opt = _opt(make_cfg, name, *extra)
    grads = [torch.randn(3, 6) for _ in range(3)]
    both, _ = _run(opt, grads, 3, 6)
    alone, _ = _run(opt, [g[2:] for g in grads], 1, 6)
    torch.testing.assert_close(both[2:], alone, rtol=1e-5, atol=1e-7)


def test_averaged_cells_are_equal_across_coordinates(make_cfg):
    opt = _opt(make_cfg, "lstm_gac", "optimizer.gac=3")
    _, state = _run(opt, [torch.randn(2, 7) for _ in range(2)], 2, 7)
    for h, _ in state["nets"]["all"]["lstm"]:  # (the quadratic default's problem inputs make the state a dict)
        h = h.view(-1, 2, 7).permute(1, 2, 0)  # [hidden, problems * coords] -> [problems, coords, hidden]
        assert torch.allclose(h[:, :, :3], h[:, :1, :3].expand(-1, 7, -1))  # shared within a problem
        assert not torch.allclose(h[0, :, :3], h[1, :, :3])                  # not across problems
        assert not torch.allclose(h[:, :, 3:], h[:, :1, 3:].expand(-1, 7, -1))


def test_zero_gacs_is_the_plain_lstm(make_cfg):
    gac0 = _opt(make_cfg, "lstm_gac", "optimizer.gac=0")
    plain = _opt(make_cfg, "lstm")
    assert isinstance(gac0, LSTMOptimizer)
    grads = [torch.randn(2, 5) for _ in range(3)]
    torch.testing.assert_close(_run(gac0, grads, 2, 5)[0], _run(plain, grads, 2, 5)[0])


@pytest.mark.parametrize("update, extra", [("read", []), ("controller", []), ("read", [PROBLEM])])
def test_lbfgs_history_covering_every_write_equals_the_dense_memory(make_cfg, update, extra):
    dense = _opt(make_cfg, "ntm_bfgs", f"optimizer.update_from={update}", *extra)
    history = _opt(make_cfg, "ntm_lbfgs", "optimizer.history=15",  # 5 steps x 3 write heads
                   f"optimizer.update_from={update}", *extra)
    history.load_state_dict(dense.state_dict())
    grads = [torch.randn(2, 8) for _ in range(5)]
    a, sa = _run(dense, grads, 2, 8)
    b, sb = _run(history, grads, 2, 8)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(sa["nets"]["all"]["read"], sb["nets"]["all"]["read"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["ntm_bfgs", "ntm_lbfgs"])
def test_the_update_is_the_memory_read_in_the_papers_form(make_cfg, name):
    """update=read (the default): the same gradient and controller state with another memory give another update,
    and the update is output_scale times the first read result; update=controller: the memory only feeds back."""
    for update in ("read", "controller"):
        rule = _opt(make_cfg, name, f"optimizer.update_from={update}")
        opt = rule.nets["all"]
        _, state = _run(rule, [torch.randn(2, 6) for _ in range(3)], 2, 6)
        state = state["nets"]["all"]
        g = torch.randn(2, 6)
        u, new = opt(g, state)
        other = dict(state, memory=(torch.randn_like(state["memory"]) if name == "ntm_bfgs"
                                    else tuple(torch.randn_like(m) for m in state["memory"])))
        u_other, _ = opt(g, other)
        assert (opt.out is None) == (update == "read")
        if update == "read":
            torch.testing.assert_close(u, opt.scale * new["read"][..., 0])
            assert (u - u_other).abs().max() > 1e-3 * u.abs().max()
        else:
            torch.testing.assert_close(u, u_other)


@pytest.mark.parametrize("name", ["ntm_bfgs", "ntm_lbfgs"])
def test_an_identity_memory_makes_the_first_update_the_read_vector(make_cfg, name):
    """M_0 = I: with the write heads silenced, the first update is output_scale * r, i.e. what a controller-form net
    whose read-out layer is the read head proposes."""
    read = _opt(make_cfg, name).nets["all"]
    with torch.no_grad():
        read.heads.weight[read.reads:].zero_()
        read.heads.bias[read.reads:].zero_()
    ctrl = _opt(make_cfg, name, "optimizer.update_from=controller").nets["all"]
    ctrl.load_state_dict({**read.state_dict(), "out.weight": read.heads.weight[:1], "out.bias": read.heads.bias[:1]})
    g = torch.randn(2, 5)
    u_read, _ = read(g, read.init_state(2, 5, g.device, g.dtype))
    u_ctrl, _ = ctrl(g, ctrl.init_state(2, 5, g.device, g.dtype))
    torch.testing.assert_close(u_read, u_ctrl)
    assert u_read.abs().min() > 0


def test_lbfgs_memory_stays_bounded(make_cfg):
    opt = _opt(make_cfg, "ntm_lbfgs", "optimizer.history=6")
    _, state = _run(opt, [torch.randn(1, 50) for _ in range(20)], 1, 50)
    A, B = state["nets"]["all"]["memory"]
    assert A.shape == B.shape == (1, 50, 6)


def test_dense_memory_above_the_limit_points_to_lbfgs(make_cfg):
    opt = _opt(make_cfg, "ntm_bfgs", "optimizer.max_memory_floats=1000")
    with pytest.raises(L2LError, match="use optimizer=ntm_lbfgs"):
        opt.init_state({"w": torch.zeros(1, 100)})


@pytest.mark.parametrize("name", ["lstm_gac", "ntm_bfgs", "ntm_lbfgs"])
def test_every_command_accepts_them(make_cfg, name):
    from l2lcli.commands import evaluate, train
    r = train.run(make_cfg(f"optimizer={name}"))
    e = evaluate.run(make_cfg(f"optimizer={name}", f"eval.checkpoint={r['checkpoint']}"))
    assert e["rows"][0]["optimizer"] == name and e["rows"][0]["final_loss"] > 0


def test_a_checkpoint_saved_before_the_update_key_keeps_its_controller_form(make_cfg, tmp_path):
    """NTM checkpoints from before `optimizer.update` trained the controller form: evaluate restores it, not the new
    default (whose weights would not fit)."""
    from l2lcli.commands import evaluate, train
    from l2lcli.commands.common import compose_for
    from l2lcli.runs import load_checkpoint, rule_from, save_checkpoint
    r = train.run(make_cfg("optimizer=ntm_bfgs", "optimizer.update_from=controller"))
    ckpt = load_checkpoint(r["checkpoint"])
    del ckpt["config"].optimizer["update_from"]
    old = tmp_path / "old.pt"
    save_checkpoint(old, ckpt["config"], rule_from(ckpt))
    cfg = compose_for([f"out_dir={tmp_path / 'outputs'}"], checkpoint=str(old))
    assert cfg.optimizer.update_from == "controller"
    assert evaluate.run(cfg)["rows"][0]["final_loss"] > 0


def test_a_read_out_shape_with_the_read_update_is_refused(make_cfg):
    from l2lcli.config import check
    check(make_cfg("optimizer=ntm_bfgs", "optimizer.update_from=controller", "optimizer.output=exp_magnitude"),
          "meta-train")
    with pytest.raises(L2LError, match="use optimizer.update_from=controller"):
        check(make_cfg("optimizer=ntm_bfgs", "optimizer.output=exp_magnitude"), "meta-train")
