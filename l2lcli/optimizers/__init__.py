"""Update rules on batches of problems: hand-designed baselines and learned optimizers, one interface.

`init_state(params, kinds=None) -> state` and `step(params, grads, state) -> (params, state)`, on dicts of named
tensors [N, *shape] (N problems); `kinds` names what each parameter is (`ParamSpec.kind`), which learned
optimizers' groups may select.
"""
