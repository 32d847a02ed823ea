"""The fused gated graph network, in a general form (training) and a compact form (hardware).

One model, two tasks: for a sample of a *site* (a static hard branch or delinquent load) it predicts
a branch logit (taken) and C delta-class logits (next-address delta class of the load).

Data (one site = one fixed graph of N nodes, padded; node 0 is the target instruction)
    static [N, Fs]     node type / opcode / register one-hots; an all-zero row is a padding node
    adj    [E, N, N]   0/1, E typed relations; adj[e, i, j] = 1: a message flows from node j to i
                       (the general form takes a batch's graphs as edge lists, ``GraphBatch``)
    dyn    [N, Fd]     per sample: value encodings on operand nodes, zeros elsewhere
    g      [G]         per sample: graph-level vector (history bits, TAGE-SC-L guess, deltas)

Model (T steps, per-step weights; mask_i = 1 for real nodes, 0 for padding nodes)
    embed      h0_i = mask_i * relu(W_s static_i + W_d dyn_i + b)         (= relu(W_in [static; dyn] + b))
    message    m_e,j = W_e h_j                                  W_e: rows of one Linear(H, E*H), no bias
    aggregate  a_i = sum_e sum_j adj[e, i, j] m_e,j                        sum, no mean
               general form: per edge, gather h_j, one grouped matmul by relation, index_add_ into i
               (as PyG does: the cost follows a site's ~100 edges, not its E*N*N adjacency entries)
    update     c = relu(W_ch h + W_ca a + b_c)                           (= relu(W_c [h; a] + b_c))
               z = clip01(W_zh h + W_za a + b_z)                          (= clamp(W_z [h; a] + b_z, 0, 1))
               h' = mask * (c + z * (h - c))                               (= z*h + (1-z)*c)
               gate=False:  h' = mask * c
    readout    r = relu(W_rh flatten(h_T) + W_rg g + b_r)                 flatten: node-major [N*H]
               [branch_logit, delta_logits] = W_o r + b_o                 one Linear(R, 1+C)

No sigmoid or tanh anywhere (hls4ml computes them with lookup tables, which are not bit-exact):
the gate is a saturating clamp, hardsigmoid-like with its slope learned in W_z.

Designed for the quantization stage (Brevitas -> QONNX -> hls4ml, see shared/TOOLCHAIN.md):
  * every Linear is built by the ``linear`` factory (``nn.Linear(in, out, bias=...)`` signature), so
    QuantLinear drops in; inputs that would be concatenated ([static; dyn], [h; a], [flat h; g])
    use separate Linears summed, so each weight tensor keeps its own per-tensor scale and no
    concatenation of differently scaled tensors is needed;
  * every activation / requantization point is its own module (nn.Identity / nn.ReLU /
    nn.Hardtanh(0, 1) by default), to be replaced by a Brevitas quantizer;
  * ``CompactGNN`` is the rank-2 flat export form for one site: static features and adjacency are
    folded into constants, per-node layers are kron(I_N, W), aggregation is ``m @ K.T`` with the
    constant as the second operand, the readout is a flatten Linear. It *shares* the activation
    hook modules of the general model (their learned scales) and copies its weights, so
    weight-shared training (``FusedGNN`` / ``SiteGNN``) and flat export give the same numbers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class GNNConfig:
    n_nodes: int = 32          # N, nodes per site graph (padded)
    f_static: int = 48         # Fs, static node features
    f_dyn: int = 24            # Fd, dynamic node features
    g_dim: int = 48            # G, graph-level features
    hidden: int = 16           # H, node state width
    steps: int = 2             # T, message-passing steps (weights are per step)
    edge_types: int = 14       # E, typed relations (7 relations x 2 directions)
    delta_classes: int = 16    # C, delta-class logits
    gate: bool = True          # gated update (False: h' = relu(W_c [h; a] + b_c))
    mask_pads: bool = True     # padding nodes (all-zero static row) keep a zero state
    readout_hidden: int = 16   # R, width of the readout layer
    seed: int = 0              # parameter initialisation


# Requantization / activation points of one step, in the order they are applied. The compact form
# shares these modules with the general form (one learned scale per point and step).
STEP_HOOKS = ("q_msg", "q_agg", "act", "clip01", "q_diff", "q_prod", "q_state")


def node_mask(static: torch.Tensor) -> torch.Tensor:
    """[..., N, Fs] -> [..., N] float: 1 for a real node, 0 for padding (all-zero static row)."""
    return (static != 0).any(-1).to(static.dtype)


class GraphBatch(NamedTuple):
    """The graphs of a batch of B samples, sample b on the graph of site ``site[b]`` (like PyG's Batch,
    for graphs that many samples share): what the general form runs message passing over.
    static [S, N, Fs]  the sites' static node features (static embedding and padding mask are per site)
    site   [B]         long, each sample's site
    src    [M]         row b*N + j of the node states h.reshape(B*N, H): the sender of an edge of sample b
    dst    [M]         row b*N + i of the aggregates a.reshape(B*N, H): its receiver
    offs   [E]         int32: the edges are sorted by relation, relation e's are offs[e-1]:offs[e]"""
    static: torch.Tensor
    site: torch.Tensor
    src: torch.Tensor
    dst: torch.Tensor
    offs: torch.Tensor

    def to(self, device) -> GraphBatch:
        return GraphBatch(*(t.to(device) for t in self))


class SiteGraphs:
    """S site graphs, static features [S, N, Fs] and dense 0/1 adjacency [S, E, N, N] (adj[s, e, i, j]
    = 1: node j sends relation e to node i), kept as edge lists; ``graphs(site)`` -> the GraphBatch
    of samples of sites ``site`` [B] (long)."""

    def __init__(self, static: torch.Tensor, adj: torch.Tensor):
        S, E, N = adj.shape[0], adj.shape[1], adj.shape[-1]
        s, e, i, j = adj.nonzero().unbind(1)                          # site-major, then relation
        self.static, self.n_types, self.n_nodes, self.src, self.dst = static, E, N, j, i
        count = torch.bincount(s * E + e, minlength=S * E)                 # edges of (site, relation)
        self.count, self.first = count.view(S, E), (count.cumsum(0) - count).view(S, E)   # and the first one

    def __call__(self, site: torch.Tensor) -> GraphBatch:
        count, first = self.count[site].T.flatten(), self.first[site].T.flatten()      # [E*B], relation-major
        sample = torch.arange(len(site)).repeat(self.n_types)
        k = torch.arange(int(count.sum())) + torch.repeat_interleave(first - (count.cumsum(0) - count), count)
        row = torch.repeat_interleave(sample, count) * self.n_nodes
        offs = count.view(self.n_types, -1).sum(1).cumsum(0).to(torch.int32)
        return GraphBatch(self.static, site, self.src[k] + row, self.dst[k] + row, offs)


def one_site(static: torch.Tensor, adj: torch.Tensor, batch: int) -> GraphBatch:
    """The GraphBatch of ``batch`` samples of one site (static [N, Fs], adj [E, N, N])."""
    return SiteGraphs(static[None], adj[None])(torch.zeros(batch, dtype=torch.long))


def flat_input(dyn: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The compact form's input: x = [dyn.reshape(B, N*Fd), g], shape [B, N*Fd + G]."""
    return torch.cat([dyn.flatten(1), g], 1)


class Step(nn.Module):
    """One message-passing step: message weights and update (aggregation belongs to the graph form).

    W_msg = [W_0; ...; W_{E-1}] one Linear(d_h, d_m) without bias; q_msg requantizes messages
    update(h, a) = q_state(c + q_prod(z * q_diff(h - c))),   c = act(W_ch h + W_ca a + b_c),
                   z = clip01(W_zh h + W_za a + b_z);   gate=False: update(h, a) = c
    General form: d_h = H, d_m = E*H; messages per edge (``FusedGNN.aggregate``). Compact form: the
    same class with kron weights, d_h = N*H, d_m = P*H, message(h) = q_msg(W_msg h) for every sending
    (node, relation) pair, and the general step's hook modules.
    """

    def __init__(self, d_h: int, d_m: int, gate: bool, linear=nn.Linear):
        super().__init__()
        self.msg = linear(d_h, d_m, bias=False)
        self.cand_h, self.cand_a = linear(d_h, d_h, bias=True), linear(d_h, d_h, bias=False)
        self.gate = gate
        if gate:
            self.gate_h, self.gate_a = linear(d_h, d_h, bias=True), linear(d_h, d_h, bias=False)
            nn.init.constant_(self.gate_h.bias, 0.5)    # z starts mid-range, away from the clamps
        self.q_msg, self.q_agg = nn.Identity(), nn.Identity()
        self.act, self.clip01 = nn.ReLU(), nn.Hardtanh(0.0, 1.0)
        self.q_diff, self.q_prod, self.q_state = nn.Identity(), nn.Identity(), nn.Identity()

    def message(self, h):
        return self.q_msg(self.msg(h))

    def update(self, h, a):
        c = self.act(self.cand_h(h) + self.cand_a(a))
        if not self.gate:
            return c
        z = self.clip01(self.gate_h(h) + self.gate_a(a))
        return self.q_state(c + self.q_prod(z * self.q_diff(h - c)))


class FusedGNN(nn.Module):
    """General form: a batch of samples from different sites (formulas in the module docstring).

    forward(graph (``GraphBatch``), dyn [B,N,Fd], g [B,G]) -> (branch_logit [B], delta_logits [B,C])
    Hooks (identity / ReLU by default, replaced by quantizers later): q_in (dyn and g), q_static,
    act_in, act_read, and per step ``STEP_HOOKS``.
    """

    def __init__(self, cfg: GNNConfig, linear=nn.Linear):
        super().__init__()
        self.cfg = cfg
        H, R = cfg.hidden, cfg.readout_hidden
        with torch.random.fork_rng(devices=[]):        # seeded init, global RNG left untouched
            torch.manual_seed(cfg.seed)
            self.q_in, self.q_static = nn.Identity(), nn.Identity()
            self.embed_static = linear(cfg.f_static, H, bias=True)
            self.embed_dyn = linear(cfg.f_dyn, H, bias=False)
            self.act_in = nn.ReLU()
            self.steps = nn.ModuleList(Step(H, cfg.edge_types * H, cfg.gate, linear)
                                       for _ in range(cfg.steps))
            self.read_h = linear(cfg.n_nodes * H, R, bias=True)
            self.read_g = linear(cfg.g_dim, R, bias=False)
            self.act_read = nn.ReLU()
            self.head = linear(R, 1 + cfg.delta_classes, bias=True)

    def mask(self, static):
        return node_mask(static) if self.cfg.mask_pads else torch.ones_like(static[..., 0])

    def sample_mask(self, graph: GraphBatch):
        """The padding mask of each sample's nodes, [B,N,1] (computed per site)."""
        return self.mask(graph.static)[graph.site].unsqueeze(-1)

    def embed(self, graph: GraphBatch, dyn):
        """h0 = relu(W_s static + b + W_d dyn) per node, [B,N,H] (unmasked); W_s static + b per site."""
        return self.act_in(self.embed_static(self.q_static(graph.static))[graph.site] + self.embed_dyn(self.q_in(dyn)))

    def message_weights(self, step: Step) -> torch.Tensor:
        """The message weights W_e as [E, H, H] (W_e = rows e*H:(e+1)*H of the message Linear)."""
        return step.msg.weight.view(self.cfg.edge_types, self.cfg.hidden, self.cfg.hidden)

    def aggregate(self, step: Step, h, graph: GraphBatch):
        """a_i = sum over the edges (j, e) -> i of q_msg(W_e h_j), [B,N,H] -> [B,N,H]: the senders'
        states are gathered, multiplied by their relation's W_e (one grouped matmul over the
        relation-sorted edges) and summed into the receivers (index_add_)."""
        B, N, H = h.shape
        sent = h.reshape(B * N, H).index_select(0, graph.src)
        w = self.message_weights(step).transpose(1, 2)
        if pad := -H % 4:   # grouped_mm wants rows of a multiple of 16 bytes: zero columns, sliced off again
            sent, w = F.pad(sent, (0, pad)), F.pad(w, (0, pad, 0, pad))
        m = step.q_msg(F.grouped_mm(sent, w, offs=graph.offs)[:, :H])
        return h.new_zeros(B * N, H).index_add_(0, graph.dst, m).view(B, N, H)

    def nodes(self, graph: GraphBatch, dyn):
        """Node states after T steps, [B,N,H]; padding nodes stay exactly 0 when mask_pads."""
        mask = self.sample_mask(graph)
        h = mask * self.embed(graph, dyn)
        for step in self.steps:
            a = step.q_agg(self.aggregate(step, h, graph))
            h = mask * step.update(h, a)
        return h

    def readout(self, h, g):
        """r = relu(W_rh flatten(h) + W_rg g + b_r); [branch, delta] = W_o r + b_o."""
        out = self.head(self.act_read(self.read_h(h.flatten(1)) + self.read_g(self.q_in(g))))
        return out[:, 0], out[:, 1:]

    def forward(self, graph: GraphBatch, dyn, g):
        return self.readout(self.nodes(graph, dyn), g)


class DenseGNN(FusedGNN):
    """Reference only: the general form with dense aggregation, as training ran before edge lists.
    Messages of every node in every relation, a_i = sum_e sum_j adj[e,i,j] m_e,j as one einsum over
    the batch's adjacency [B,E,N,N] (rebuilt from the GraphBatch). Same parameters as FusedGNN; tests
    and ``ncf bench train`` compare the two."""

    def aggregate(self, step: Step, h, graph: GraphBatch):
        B, N, H = h.shape
        E = self.cfg.edge_types
        offs = graph.offs.long()
        rel = torch.repeat_interleave(torch.arange(E, device=h.device), torch.diff(offs, prepend=offs.new_zeros(1)))
        adj = h.new_zeros(B * E * N * N)
        adj[((graph.dst // N * E + rel) * N + graph.dst % N) * N + graph.src % N] = 1
        m = step.q_msg(F.linear(h, self.message_weights(step).reshape(E * H, H)))
        return torch.einsum("beij,bjeh->bih", adj.view(B, E, N, N), m.view(B, N, E, H))


class SiteGNN(nn.Module):
    """Rank-3, weight-shared form for ONE site, with the compact form's interface:
    forward(x [B, N*Fd + G]) -> [B, 1+C] (= [branch_logit, delta_logits]).

    It holds the general model itself (gradients reach its weights), so it serves per-site
    fine-tuning / QAT and is the reference the flat ``CompactGNN`` must equal.
    """

    def __init__(self, model: FusedGNN, static: torch.Tensor, adj: torch.Tensor):
        super().__init__()
        self.model = model
        self.register_buffer("static", static.detach().clone())
        self.register_buffer("adj", adj.detach().clone())

    def forward(self, x):
        cfg, B = self.model.cfg, x.shape[0]
        n = cfg.n_nodes * cfg.f_dyn
        dyn, g = x[:, :n].reshape(B, cfg.n_nodes, cfg.f_dyn), x[:, n:]
        branch, delta = self.model(one_site(self.static, self.adj, B), dyn, g)
        return torch.cat([branch[:, None], delta], 1)


class CompactGNN(nn.Module):
    """Flat hardware form for ONE site: x [B, N*Fd + G] (= flat_input(dyn, g)) -> [B, 1+C].

    Built by ``from_general`` from a trained FusedGNN and the site's static [N,Fs] and adj [E,N,N].
    With I = I_N, rm = mask repeated H times (rows of padding nodes zeroed), and the message pairs
    P = [(e, j): node j sends a relation-e edge, or j = 0] (e-major; node 0's pairs carry every W_e,
    which keeps the per-tensor max |w| of the message weight):
        h0 = act_in(x @ (rm * [kron(I, W_d) | 0]).T + rm * flatten(W_s static + b))  (static folded)
        per step:  m = q_msg(h @ M.T),  M = rows (p, :) = [0 .. W_e (at node j's columns) .. 0]   [P*H]
                   a = q_agg(m @ K.T),  K.T[p*H + h, i*H + h] = adj[e, i, j]  (constant, 0/1)
                   h = Step.update(h, a) with kron(I, W) weights, tile(b) biases, rows * rm
        out = head(act_read(read_h(h) + x @ [0 | W_rg].T))
    Ops: Linear, MatMul with a constant second operand, Add, Sub, Mul, ReLU, clamp(0, 1) and the
    hook modules; no reshape, slice, concat or reduction. Messages exist only where an edge sends
    them (a sparse graph: far fewer than E*N pairs), so the hardware and the C simulation skip the
    rest; padding nodes become zero blocks of the constants (same per-tensor max |w|).
    """

    def __init__(self, cfg: GNNConfig, linear=nn.Linear, n_pairs: int | None = None):
        super().__init__()
        self.cfg = cfg
        N, H, R = cfg.n_nodes, cfg.hidden, cfg.readout_hidden
        P = cfg.edge_types * N if n_pairs is None else n_pairs
        self.q_in, self.act_in, self.act_read = nn.Identity(), nn.ReLU(), nn.ReLU()
        with torch.random.fork_rng(devices=[]):        # the init is overwritten by from_general
            self.inp = linear(self.input_dim, N * H, bias=True)
            self.steps = nn.ModuleList(Step(N * H, P * H, cfg.gate, linear) for _ in range(cfg.steps))
            self.read_h = linear(N * H, R, bias=True)
            self.read_x = linear(self.input_dim, R, bias=False)
            self.head = linear(R, self.output_dim, bias=True)
        # K.T per step, [P*H, N*H]; a frozen Parameter like the reference recipe's GNNFlat.kt
        self.kt = nn.ParameterList(nn.Parameter(torch.zeros(P * H, N * H), requires_grad=False)
                                   for _ in range(cfg.steps))

    @property
    def input_dim(self) -> int:
        return self.cfg.n_nodes * self.cfg.f_dyn + self.cfg.g_dim

    @property
    def output_dim(self) -> int:
        return 1 + self.cfg.delta_classes

    @classmethod
    @torch.no_grad()
    def from_general(cls, model: FusedGNN, static: torch.Tensor, adj: torch.Tensor, linear=nn.Linear):
        """Fold one site (static [N,Fs], adj [E,N,N]) into the constants of a flat model.
        Weights are copied (kron / tile / zero-padded); activation hooks are shared modules.
        Rows of padding nodes are zeroed (node 0 is real, so every weight keeps its max |w|)."""
        cfg = model.cfg
        N, H, E = cfg.n_nodes, cfg.hidden, cfg.edge_types
        sends = adj.amax(1) > 0                                         # [E, N]: node j sends relation e
        sends[:, 0] = True
        senders = sends.nonzero().tolist()                              # e-major (e, j)
        self = cls(cfg, linear, n_pairs=len(senders))
        dt = model.head.weight.dtype
        self.to(dt)
        I_N, I_H = torch.eye(N, dtype=dt), torch.eye(H, dtype=dt)
        static, adj = static.to(dt), adj.to(dt)
        rm = model.mask(static).repeat_interleave(H)[:, None]                             # [N*H, 1]

        def kron_nodes(w):                                   # per-node Linear -> flat Linear weight
            return torch.kron(I_N, w)

        self.q_in, self.act_in, self.act_read = model.q_in, model.act_in, model.act_read
        bias0 = model.embed_static(model.q_static(static))                                # [N, H]
        w_dyn = kron_nodes(model.embed_dyn.weight)
        self.inp.weight.copy_(torch.cat([w_dyn, w_dyn.new_zeros(N * H, cfg.g_dim)], 1) * rm)
        self.inp.bias.copy_(bias0.reshape(-1) * rm[:, 0])

        for k, (src, dst) in enumerate(zip(model.steps, self.steps)):
            for name in STEP_HOOKS:
                setattr(dst, name, getattr(src, name))
            w_e = src.msg.weight.view(E, H, H)                          # W_e = rows e*H:(e+1)*H
            w_msg, kt = dst.msg.weight.new_zeros(dst.msg.weight.shape), self.kt[k].new_zeros(self.kt[k].shape)
            for p, (e, j) in enumerate(senders):
                w_msg[p * H:(p + 1) * H, j * H:(j + 1) * H] = w_e[e]
                kt[p * H:(p + 1) * H] = torch.kron(adj[e, :, j], I_H)   # [H, N*H]: to every i with adj[e,i,j]
            dst.msg.weight.copy_(w_msg)
            self.kt[k].copy_(kt)
            pairs = [("cand_h", "cand_a")] + ([("gate_h", "gate_a")] if cfg.gate else [])
            for nh, na in pairs:
                getattr(dst, nh).weight.copy_(kron_nodes(getattr(src, nh).weight) * rm)
                getattr(dst, nh).bias.copy_(getattr(src, nh).bias.repeat(N) * rm[:, 0])
                getattr(dst, na).weight.copy_(kron_nodes(getattr(src, na).weight) * rm)

        self.read_h.weight.copy_(model.read_h.weight)
        self.read_h.bias.copy_(model.read_h.bias)
        w_g = model.read_g.weight
        self.read_x.weight.copy_(torch.cat([w_g.new_zeros(w_g.shape[0], N * cfg.f_dyn), w_g], 1))
        self.head.weight.copy_(model.head.weight)
        self.head.bias.copy_(model.head.bias)
        return self

    def forward(self, x):
        x = self.q_in(x)
        h = self.act_in(self.inp(x))
        for step, kt in zip(self.steps, self.kt):
            a = step.q_agg(step.message(h) @ kt)            # constant as the SECOND matmul operand
            h = step.update(h, a)
        return self.head(self.act_read(self.read_h(h) + self.read_x(x)))


def count_parameters(model: nn.Module, nonzero: bool = False) -> int:
    """Trainable parameter entries (frozen constants such as CompactGNN.kt excluded). nonzero=True
    counts only entries != 0: for a CompactGNN, the constant multiplications the hardware keeps."""
    ps = [p for p in model.parameters() if p.requires_grad]
    return int(sum((p != 0).sum().item() if nonzero else p.numel() for p in ps))


def storage_bits(model: nn.Module, bits: int, nonzero: bool = False) -> int:
    """Weight storage at ``bits`` per parameter entry (see count_parameters)."""
    return bits * count_parameters(model, nonzero)
