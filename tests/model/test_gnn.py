"""The fused GNN: general (batched, edge lists) == compact (one site, flat kron constants),
edge list == dense reference, padding nodes are inert, node permutation, linear factory, seeds, gradients."""
from __future__ import annotations

import dataclasses
import operator

import pytest
import torch
from ncf.model.gnn import (
    STEP_HOOKS,
    CompactGNN,
    DenseGNN,
    FusedGNN,
    GNNConfig,
    SiteGNN,
    SiteGraphs,
    count_parameters,
    flat_input,
    one_site,
    storage_bits,
)
from torch import nn

SMALL = GNNConfig(n_nodes=8, f_static=6, f_dyn=5, g_dim=7, hidden=4, steps=2, edge_types=3,
                  delta_classes=5, readout_hidden=6)


def make_site(cfg, n_real, gen, p_edge=0.25):
    """A random site: n_real real nodes (non-zero static one-hots, node 0 real), sparse typed edges
    among the real nodes, padding nodes with zero static rows and no edges."""
    N = cfg.n_nodes
    static = torch.zeros(N, cfg.f_static)
    static[torch.arange(n_real), torch.randint(cfg.f_static, (n_real,), generator=gen)] = 1
    static[:n_real] += (torch.rand(n_real, cfg.f_static, generator=gen) < 0.2).float()
    adj = torch.zeros(cfg.edge_types, N, N)
    adj[:, :n_real, :n_real] = (torch.rand(cfg.edge_types, n_real, n_real, generator=gen) < p_edge).float()
    return static, adj


def make_samples(cfg, n_real, B, gen):
    dyn = torch.randn(B, cfg.n_nodes, cfg.f_dyn, generator=gen)
    dyn[:, n_real:] = 0                                         # the dataset never sets padding nodes
    return dyn, torch.randn(B, cfg.g_dim, generator=gen)


def general(model, static, adj, dyn, g):
    """The general model on B samples of one site, as [B, 1+C]."""
    branch, delta = model(one_site(static, adj, dyn.shape[0]), dyn, g)
    return torch.cat([branch[:, None], delta], 1)


def test_config_round_trips_through_asdict():
    cfg = GNNConfig(hidden=8, gate=False, seed=3)
    assert GNNConfig(**dataclasses.asdict(cfg)) == cfg


@pytest.mark.parametrize("gate", [True, False])
@pytest.mark.parametrize("steps", [1, 2, 3])
def test_compact_equals_general_on_the_same_site(gate, steps):
    cfg = dataclasses.replace(SMALL, gate=gate, steps=steps, seed=steps)
    model = FusedGNN(cfg).eval()
    gen = torch.Generator().manual_seed(10 * steps + gate)
    for n_real in (1, 5, 8):                                    # several sites, incl. no padding
        static, adj = make_site(cfg, n_real, gen)
        dyn, g = make_samples(cfg, n_real, 16, gen)
        site = SiteGNN(model, static, adj)
        with torch.no_grad():
            y, x = general(model, static, adj, dyn, g), flat_input(dyn, g)
            torch.testing.assert_close(site(x), y, atol=0, rtol=0)
            compact = CompactGNN.from_general(model, static, adj).eval()
            assert (x.shape[1], y.shape[1]) == (compact.input_dim, compact.output_dim)
            torch.testing.assert_close(compact(x), y, atol=1e-5, rtol=1e-5)
            pairs = int((adj.amax(1) > 0).sum() + (adj.amax(1)[:, 0] == 0).sum())   # sending pairs + node 0's
            assert compact.steps[0].msg.out_features == pairs * cfg.hidden


def test_compact_equals_general_without_pad_mask_and_at_default_size():
    gen = torch.Generator().manual_seed(0)
    for cfg, n_real in [(dataclasses.replace(SMALL, mask_pads=False), 5), (GNNConfig(), 12)]:
        model = FusedGNN(cfg).eval()
        static, adj = make_site(cfg, n_real, gen, p_edge=0.05)
        dyn, g = make_samples(cfg, n_real, 8, gen)
        with torch.no_grad():
            y = general(model, static, adj, dyn, g)
            torch.testing.assert_close(CompactGNN.from_general(model, static, adj)(flat_input(dyn, g)), y,
                                       atol=1e-5, rtol=1e-5)


def mixed_batch(cfg, gen, n_reals=(3, 7, 8), B=3, p_edge=0.3):
    """B samples of each of len(n_reals) random sites: (SiteGraphs, site [B*S], dyn, g)."""
    sites = [make_site(cfg, n, gen, p_edge) for n in n_reals]
    samples = [make_samples(cfg, n, B, gen) for n in n_reals]
    graphs = SiteGraphs(torch.stack([s for s, _ in sites]), torch.stack([a for _, a in sites]))
    site = torch.arange(len(n_reals)).repeat_interleave(B)
    return graphs, site, torch.cat([d for d, _ in samples]), torch.cat([g for _, g in samples])


def test_one_site_and_per_sample_graphs_agree():
    """The same site as one graph for the batch and as a copy per sample: the same node states."""
    model = FusedGNN(SMALL).eval()
    gen = torch.Generator().manual_seed(1)
    static, adj = make_site(SMALL, 6, gen)
    dyn, _ = make_samples(SMALL, 6, 4, gen)
    with torch.no_grad():
        hb = model.nodes(SiteGraphs(static.expand(4, -1, -1), adj.expand(4, -1, -1, -1))(torch.arange(4)), dyn)
        hs = model.nodes(one_site(static, adj, 4), dyn)
    torch.testing.assert_close(hb, hs, atol=0, rtol=0)


@pytest.mark.parametrize("gate,hidden", [(True, 8), (False, 8), (True, 1), (False, 2)])
def test_edge_list_and_dense_reference_give_the_same_outputs_and_gradients(gate, hidden):
    cfg = dataclasses.replace(SMALL, gate=gate, steps=3, hidden=hidden)   # H = 1, 2: rows narrower than 16 bytes
    model, dense = FusedGNN(cfg), DenseGNN(cfg)
    graphs, site, dyn, g = mixed_batch(cfg, torch.Generator().manual_seed(2))
    graph = graphs(site)
    with torch.no_grad():
        torch.testing.assert_close(model.nodes(graph, dyn), dense.nodes(graph, dyn), atol=1e-6, rtol=1e-5)
    for m in (model, dense):
        branch, delta = m(graph, dyn, g)
        (branch.square().mean() + delta.square().mean()).backward()
    for (name, p), q in zip(model.named_parameters(), dense.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-6, rtol=1e-5, msg=name)


def test_padding_nodes_are_inert():
    """With mask_pads, padding nodes keep a zero state: values written into their dyn rows and
    edges to or from them change nothing. Without the mask they would leak into the readout."""
    cfg, n_real = dataclasses.replace(SMALL, steps=3), 5
    gen = torch.Generator().manual_seed(3)
    static, adj = make_site(cfg, n_real, gen)
    dyn, g = make_samples(cfg, n_real, 8, gen)
    dyn_junk = dyn.clone()
    dyn_junk[:, n_real:] = torch.randn(8, cfg.n_nodes - n_real, cfg.f_dyn, generator=gen)
    adj_junk = adj.clone()
    adj_junk[:, n_real:, :] = 1                                 # edges into and out of every pad
    adj_junk[:, :, n_real:] = 1
    model = FusedGNN(cfg).eval()
    with torch.no_grad():
        y = general(model, static, adj, dyn, g)
        h = model.nodes(one_site(static, adj, 8), dyn)
        assert torch.all(h[:, n_real:] == 0)
        torch.testing.assert_close(general(model, static, adj, dyn_junk, g), y, atol=0, rtol=0)
        torch.testing.assert_close(general(model, static, adj_junk, dyn, g), y, atol=0, rtol=0)
        unmasked = FusedGNN(dataclasses.replace(cfg, mask_pads=False)).eval()
        leaked = general(unmasked, static, adj, dyn_junk, g)
        assert not torch.allclose(leaked, general(unmasked, static, adj, dyn, g))


def test_permuting_nodes_with_adjacency_and_readout_weights_keeps_the_output():
    cfg = SMALL
    model = FusedGNN(cfg).eval()
    gen = torch.Generator().manual_seed(4)
    static, adj = make_site(cfg, 6, gen, p_edge=0.4)
    dyn, g = make_samples(cfg, 6, 8, gen)
    perm = torch.randperm(cfg.n_nodes, generator=gen)
    permuted = FusedGNN(cfg).eval()
    permuted.load_state_dict(model.state_dict())
    w = model.read_h.weight.detach().view(cfg.readout_hidden, cfg.n_nodes, cfg.hidden)
    with torch.no_grad():
        permuted.read_h.weight.copy_(w[:, perm].reshape(cfg.readout_hidden, -1))
        y = general(model, static, adj, dyn, g)
        yp = general(permuted, static[perm], adj[:, perm][:, :, perm], dyn[:, perm], g)
        h = model.nodes(one_site(static, adj, 8), dyn)
        hp = permuted.nodes(one_site(static[perm], adj[:, perm][:, :, perm], 8), dyn[:, perm])
    torch.testing.assert_close(hp, h[:, perm], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(yp, y, atol=1e-5, rtol=1e-5)


def test_every_linear_is_built_through_the_factory():
    built = []

    def counting_linear(i, o, bias=True):
        built.append(nn.Linear(i, o, bias=bias))
        return built[-1]

    for cfg in (SMALL, dataclasses.replace(SMALL, gate=False, steps=3)):
        built.clear()
        model = FusedGNN(cfg, linear=counting_linear)
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        assert len(linears) == len(built) == 5 + cfg.steps * (5 if cfg.gate else 3)
        assert {id(m) for m in linears} == {id(m) for m in built}
        built.clear()
        static, adj = make_site(cfg, 4, torch.Generator().manual_seed(5))
        compact = CompactGNN.from_general(model, static, adj, linear=counting_linear)
        linears = [m for m in compact.modules() if isinstance(m, nn.Linear)]
        assert {id(m) for m in linears} == {id(m) for m in built} and len(linears) == len(built)


def test_compact_form_shares_the_hooks_and_uses_only_export_friendly_ops():
    model = FusedGNN(SMALL)
    static, adj = make_site(SMALL, 5, torch.Generator().manual_seed(6))
    compact = CompactGNN.from_general(model, static, adj)
    for name in ("q_in", "act_in", "act_read"):
        assert getattr(compact, name) is getattr(model, name)
    for s, c in zip(model.steps, compact.steps):
        assert all(getattr(c, n) is getattr(s, n) for n in STEP_HOOKS)
    graph = torch.fx.symbolic_trace(compact).graph
    allowed_modules = (nn.Linear, nn.ReLU, nn.Hardtanh, nn.Identity)
    for node in graph.nodes:
        if node.op == "call_module":
            assert isinstance(compact.get_submodule(node.target), allowed_modules), node.target
        elif node.op == "call_function":
            assert node.target in (operator.add, operator.sub, operator.mul, operator.matmul), node.target
            if node.target is operator.matmul:                 # constant as the SECOND operand
                assert node.args[0].op != "get_attr" and node.args[1].op == "get_attr"
        else:
            assert node.op in ("placeholder", "get_attr", "output"), node


def test_compact_weights_keep_the_general_max_abs_weight():
    """Per-tensor weight quantizers take their scale from max |w|: kron copies, zero padding and
    zeroed padding rows must keep it, so the flat layers quantize exactly like the general ones."""
    model = FusedGNN(SMALL)
    static, adj = make_site(SMALL, 3, torch.Generator().manual_seed(8))
    compact = CompactGNN.from_general(model, static, adj)
    pairs = [(compact.inp, model.embed_dyn), (compact.read_h, model.read_h), (compact.read_x, model.read_g),
             (compact.head, model.head)]
    for c, s in zip(compact.steps, model.steps):
        pairs += [(getattr(c, n), getattr(s, n)) for n in ("msg", "cand_h", "cand_a", "gate_h", "gate_a")]
    for flat, per_node in pairs:
        assert flat.weight.abs().max() == per_node.weight.abs().max()


def test_seed_fixes_the_initialisation_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, b, c = FusedGNN(SMALL), FusedGNN(SMALL), FusedGNN(dataclasses.replace(SMALL, seed=1))
    assert torch.rand(1) == before
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k])
    assert not torch.equal(a.read_h.weight, c.read_h.weight)


def test_gradient_reaches_every_parameter():
    model = FusedGNN(SMALL)
    graphs, site, dyn, g = mixed_batch(SMALL, torch.Generator().manual_seed(7), (4, 8), B=8, p_edge=0.4)
    branch, delta = model(graphs(site), dyn, g)                 # two sites, 8 samples each
    (branch.square().mean() + delta.square().mean()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_parameter_count_and_storage_at_default_sizes():
    cfg = GNNConfig()
    N, Fs, Fd, G, H, E, C, R, T = 32, 48, 24, 48, 16, 14, 16, 16, 2
    per_step = H * E * H + 2 * (H * H + H + H * H)              # msg, (cand_h, cand_a), (gate_h, gate_a)
    expected = (Fs * H + H + Fd * H) + T * per_step + (N * H * R + R + G * R) + (R * (1 + C) + 1 + C)
    model = FusedGNN(cfg)
    assert count_parameters(model) == expected == 19713
    assert storage_bits(model, 8) == 8 * expected
