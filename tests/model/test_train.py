"""Training and evaluation on a real dataset: configs round-trip, resume equals a straight run,
and the evaluation scores through the harness (oracles and copies of TAGE-SC-L give known answers)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ncf.model.evaluate import evaluate_branches, evaluate_prefetch
from ncf.model.train import TrainConfig, load_model, predict, train
from ncf.trace_eval.format import TraceReader
from ncf.trace_eval.streams import memory_stream

from ..helpers import train_until_epoch_two


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_config_round_trips(tmp_path, suffix):
    cfg = TrainConfig(train="a", test="b", model="static", hidden=8, epochs=3, gate=False, lr=1e-4, drop=["tage"])
    assert TrainConfig.load(cfg.save(tmp_path / f"c{suffix}")) == cfg


def test_bad_configs_are_clear_errors(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model: fused\nepochz: 3\n")
    with pytest.raises(ValueError, match="unknown config keys \\['epochz'\\]"):
        TrainConfig.load(p)
    p.write_text("model: transformer\n")
    with pytest.raises(ValueError, match="model must be one of"):
        TrainConfig.load(p)
    p.write_text(": : :\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        TrainConfig.load(p)
    for drop in (["tags"], "tage"):
        with pytest.raises(ValueError, match="drop .*among frontend, snapshot, tage"):
            TrainConfig(drop=drop)
    with pytest.raises(ValueError, match="apply to the GNN models"):
        TrainConfig(model="branchnet", drop=["tage"])


def test_a_site_model_learns_from_its_own_site_only(train_ds, tmp_path):
    """``sites``: the training and validation rows are that site's, and another site's labels do not
    change the model (a copy of the dataset with every other site's labels changed trains the same)."""
    import shutil

    from ncf.model.dataset import Dataset
    from ncf.model.train import split_rows

    site = np.asarray(train_ds.arrays["site"])
    k = int(np.asarray(train_ds.site_task == 0).nonzero()[0][0])         # a branch site
    tr, va = split_rows(train_ds, [k])
    assert len(tr) and (site[tr] == k).all() and (site[va] == k).all()
    assert np.array_equal(np.sort(np.concatenate([split_rows(train_ds, [j])[0] for j in range(len(train_ds.site_pc))])),
                          split_rows(train_ds)[0])
    flipped = tmp_path / "flipped"
    shutil.copytree(train_ds.path, flipped)
    classes = train_ds.meta["config"]["delta_classes"]
    changed = 0
    for label, change in (("taken", lambda v: 1 - v), ("delta", lambda v: (v + 1) % classes)):
        v = np.load(flipped / f"{label}.npy")
        other = (site != k) & (v >= 0)
        v[other] = change(v[other])
        np.save(flipped / f"{label}.npy", v)
        changed += other.sum()
    assert changed
    models = []
    for name, ds, sites in (("a", train_ds.path, [k]), ("b", flipped, [k]), ("all", flipped, [])):
        train(TrainConfig(train=str(ds), out=str(tmp_path / name), hidden=2, steps=1, gate=False, epochs=1, batch=64,
                          sites=sites), progress=False)
        models.append(load_model(tmp_path / name)[0].state_dict())
    assert all(torch.equal(models[0][n], models[1][n]) for n in models[0])
    assert not all(torch.equal(models[1][n], models[2][n]) for n in models[1])
    with pytest.raises(ValueError, match="sites \\[-1\\]: give a list of site indices"):
        TrainConfig(sites=[-1])
    with pytest.raises(ValueError, match=f"the dataset has {len(train_ds.site_pc)} sites"):
        split_rows(Dataset(flipped), [len(train_ds.site_pc)])


def test_drop_blanks_the_named_inputs_and_rejects_unknown_names(train_ds):
    from ncf.model.graph import DYN_COUNT, DYN_MEMORY, DYN_VALUE, F_DYN
    from ncf.model.train import G_RELATIONS, GraphBatches

    with pytest.raises(ValueError, match="drop \\['tage_typo'\\]: give a list of input names among frontend, snapshot"):
        TrainConfig(model="fused", drop=["tage_typo"])
    rows = np.arange(0, len(train_ds), 7)
    _, full, g = GraphBatches(train_ds, "fused", torch.device("cpu"))(rows)
    assert full.shape[-1] == F_DYN and all(full[..., p].any() for p in (DYN_VALUE, DYN_COUNT, DYN_MEMORY))
    for drop, gone in (("frontend", DYN_COUNT), ("snapshot", DYN_VALUE), ("memory", DYN_MEMORY)):
        _, dyn, g2 = GraphBatches(train_ds, "fused", torch.device("cpu"), drop=[drop])(rows)
        kept = torch.ones(F_DYN, dtype=torch.bool)
        kept[gone] = False
        g_kept = g.clone()
        if drop == "memory":                 # the comparisons of the predicted memory values go with them
            g_kept[:, G_RELATIONS] = 0
        assert torch.equal(dyn[..., kept], full[..., kept]) and not dyn[..., gone].any() and torch.equal(g2, g_kept)


def test_resuming_gives_the_same_model_as_a_straight_run(train_ds, tmp_path, monkeypatch):
    base = dict(train=str(train_ds.path), test=str(train_ds.path), hidden=8, batch=128, threads=1, epochs=2)
    train(TrainConfig(out=str(tmp_path / "a"), **base), progress=False)
    train_until_epoch_two(TrainConfig(out=str(tmp_path / "b"), **base), monkeypatch)
    assert not list((tmp_path / "b").glob("*.tmp"))
    train(TrainConfig(out=str(tmp_path / "b"), **base), resume=True, progress=False)
    a, _ = load_model(tmp_path / "a")
    b, _ = load_model(tmp_path / "b")
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), k


def test_the_fused_gnn_learns_the_hard_branches_better_than_chance(train_ds, tmp_path):
    cfg = TrainConfig(train=str(train_ds.path), test=str(train_ds.path), out=str(tmp_path / "f"), epochs=3,
                      threads=1)
    s = train(cfg, progress=False)
    assert s["epochs"][-1]["val_branch_acc"] > 0.6
    p = predict(tmp_path / "f", train_ds.path)
    assert p["p_taken"].shape == (len(train_ds),) and np.isfinite(p["p_taken"]).all()
    rows = np.array([len(train_ds) - 1, 0, 7])   # the hybrid's policy reads the validation rows only
    part = predict(tmp_path / "f", train_ds.path, rows)
    assert np.allclose(part["p_taken"], p["p_taken"][rows], rtol=0, atol=1e-6)   # batch shapes round differently
    assert np.array_equal(part["delta_class"], p["delta_class"][rows])


@pytest.mark.parametrize("model", ["branchnet", "delta-lstm"])
def test_a_history_model_predicts_some_rows_as_it_predicts_them_all(train_ds, tmp_path, model):
    train(TrainConfig(train=str(train_ds.path), out=str(tmp_path / model), model=model, branchnet="mini", epochs=1,
                      threads=1), progress=False)
    full = predict(tmp_path / model, train_ds.path)
    column = "p_taken" if model == "branchnet" else "delta_class"
    made = np.nonzero(np.isfinite(full["p_taken"]) if model == "branchnet" else full["delta_class"] >= 0)[0]
    rows = np.concatenate([made[-5:], [0, len(train_ds) - 1], made[:3]])
    part = predict(tmp_path / model, train_ds.path, rows)
    assert len(made) and np.array_equal(part[column], full[column][rows], equal_nan=True)


def test_a_merged_dataset_validates_on_the_tail_of_every_part_and_every_model_trains_on_the_rest(train_ds, tmp_path):
    """Two traces merged: each part's last 10% in time validates (not the second part's tail alone), and
    BranchNet and the delta-LSTM train and stop on exactly those rows, as the GNNs do. A merged dataset
    that does not record its parts' rows is refused."""
    import json

    from ncf.io import DataError
    from ncf.model.dataset import Dataset, concat_datasets
    from ncf.model.train import split_rows

    concat_datasets([train_ds.path, train_ds.path], tmp_path / "merged")
    merged, n = Dataset(tmp_path / "merged"), len(train_ds)
    tr1, va1 = split_rows(train_ds)
    tr, va = split_rows(merged)
    assert merged.part_rows == [n, n] and len(va1) == n - int(n * 0.9)
    assert np.array_equal(tr, np.concatenate([tr1, tr1 + n])) and np.array_equal(va, np.concatenate([va1, va1 + n]))
    taken, delta, site = (np.asarray(merged.arrays[k]) for k in ("taken", "delta", "site"))
    pcs = [int(pc) for pc in merged.site_pc]
    for model in ("branchnet", "delta-lstm"):
        summary = train(TrainConfig(train=str(merged.path), out=str(tmp_path / model), model=model, branchnet="mini",
                                    epochs=1, threads=1), progress=False)
        for key, h in summary["sites"].items():      # BranchNet: per hard branch (pc); the delta-LSTM: "all" loads
            rows = (taken >= 0) & (site == pcs.index(int(key))) if model == "branchnet" else delta >= 0
            assert (h["n_train"], h["n_val"]) == (rows[tr].sum(), rows[va].sum()) and h["n_val"] > 0
    meta = json.loads((merged.path / "dataset.json").read_text())
    for part in meta["parts"]:
        del part["rows"]
    (merged.path / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="merge it again"):
        split_rows(Dataset(merged.path))


def test_evaluation_of_an_oracle_and_of_tage_itself(train_ds):
    a = train_ds.arrays
    taken = np.asarray(a["taken"]).astype(float)
    tage = np.asarray(a["tage_pred"]).astype(float)
    rows = {r["model"]: r for r in evaluate_branches(train_ds, {"oracle": taken, "copy": tage})}
    assert rows["oracle"]["hard_mispredictions"] == 0
    assert rows["oracle"]["mpki"] < rows["tage-sc-l"]["mpki"]
    assert rows["copy"]["mpki"] == rows["tage-sc-l"]["mpki"]
    assert rows["copy"]["hard_mispredictions"] == rows["tage-sc-l"]["hard_mispredictions"] > 0
    # per site: the counts add up, the oracle is never wrong, the copy is wrong exactly where TAGE-SC-L is
    t = rows["tage-sc-l"]
    assert sum(t["site_mispredictions"]) == t["hard_mispredictions"]
    assert sum(t["site_instances"]) == t["hard_branch_instances"] == np.count_nonzero(taken >= 0)
    assert rows["oracle"]["site_both_wrong"] == [0] * len(train_ds.site_pc)
    assert rows["copy"]["site_both_wrong"] == rows["copy"]["site_mispredictions"] == t["site_mispredictions"]


def test_prefetch_evaluation_of_an_oracle_and_of_silence(train_ds):
    delta = np.asarray(train_ds.arrays["delta"]).astype(np.int64)
    other = train_ds.meta["config"]["delta_classes"] - 1
    rows = {r["model"]: r for r in evaluate_prefetch(train_ds, {"oracle": delta,
                                                                "silent": np.full(len(delta), other)})}
    assert rows["silent"]["issued"] == 0 and rows["silent"]["coverage"] == 0
    assert rows["oracle"]["delta_accuracy"] == 1.0
    assert rows["oracle"]["delinquent_coverage"] > 0 and rows["oracle"]["accuracy"] > 0.5
    k = "/".join(str(k) for pc, k in sorted((int(p, 16), k) for p, k in train_ds.meta["prefetch_distance"].items()))
    assert rows["oracle"]["distance"] == rows["ip-stride"]["distance"] == k and rows["bop"]["distance"] is None
    assert 0 <= rows["oracle"]["late_fraction"] <= 1 and "berti" in rows
    # beside a baseline: the silent model's rows add nothing, the oracle's cover what the baseline missed
    for b in ("bop", "berti"):
        for key in ("coverage", "accuracy", "issued", "delinquent_coverage"):
            assert rows[f"silent+{b}"][key] == rows[b][key]
        assert rows[f"oracle+{b}"]["delinquent_coverage"] > rows[b]["delinquent_coverage"]
        assert "delta_accuracy" not in rows[f"oracle+{b}"]
    # per load: misses with and without prefetching, each delinquent load then the other loads, adding up to
    # the L1D misses; the silent model misses as often as no prefetching, the oracle less on its loads
    n_insn = memory_stream(TraceReader(train_ds.meta["trace"])).n_insn
    for r in rows.values():
        assert len(r["load_misses"]) == len(r["load_misses_without"]) == len(r["load_pc"]) + 1 == len(
            r["load_distance"]) + 1
        assert sum(r["load_misses"]) == round(r["l1_mpki_with"] * n_insn / 1000)
        assert sum(r["load_misses_without"]) == round(r["l1_mpki_without"] * n_insn / 1000)
        assert r["delinquent_coverage"] == 1 - sum(r["load_misses"][:-1]) / sum(r["load_misses_without"][:-1])
    assert rows["silent"]["load_misses"] == rows["silent"]["load_misses_without"]
    assert sum(rows["oracle"]["load_misses"][:-1]) < sum(rows["oracle"]["load_misses_without"][:-1])


def test_prediction_in_chunks_equals_one_mixed_batch(train_ds):
    from ncf.model.train import GraphBatches, build_gnn, predict_gnn

    cfg = TrainConfig(train=str(train_ds.path), test=str(train_ds.path))
    model = build_gnn(cfg, train_ds).eval()
    batches = GraphBatches(train_ds, "fused", torch.device("cpu"))
    rows = np.arange(0, len(train_ds), 7)
    p, cls = predict_gnn(model, train_ds, batches, rows, torch.device("cpu"), batch=100)
    with torch.no_grad():
        bl, dl = model(*batches(rows))
    assert np.allclose(p, torch.sigmoid(bl).numpy(), atol=1e-6)
    assert np.array_equal(cls, dl.argmax(-1).numpy())


def test_dropping_tage_blanks_its_part_of_g_in_training_and_prediction(train_ds, tmp_path):
    from ncf.model.dataset import G_TAGE, G_TAGE_DETAIL
    from ncf.model.train import GraphBatches, predict_gnn

    cpu, rows = torch.device("cpu"), np.arange(0, len(train_ds), 3)
    _, dyn, g = GraphBatches(train_ds, "fused", cpu)(rows)
    _, dyn_d, g_d = GraphBatches(train_ds, "fused", cpu, drop=["tage"])(rows)
    tage = torch.zeros(g.shape[1], dtype=torch.bool)
    tage[G_TAGE], tage[G_TAGE_DETAIL] = True, True
    assert g[:, G_TAGE].any() and g[:, G_TAGE_DETAIL].any() and not g_d[:, tage].any()
    assert torch.equal(g[:, ~tage], g_d[:, ~tage]) and torch.equal(dyn, dyn_d)
    _, _, g_i = GraphBatches(train_ds, "fused", cpu, drop=["tage-internals"])(rows)
    assert torch.equal(g_i[:, G_TAGE], g[:, G_TAGE]) and not g_i[:, G_TAGE_DETAIL].any()
    out = tmp_path / "r"
    train(TrainConfig(train=str(train_ds.path), test=str(train_ds.path), out=str(out), epochs=1, threads=1,
                      drop=["tage"]), progress=False)
    model, cfg = load_model(out)
    assert cfg.drop == ["tage"]
    everything = np.arange(len(train_ds))
    blind, _ = predict_gnn(model, train_ds, GraphBatches(train_ds, "fused", cpu, drop=["tage"]), everything, cpu)
    seeing, _ = predict_gnn(model, train_ds, GraphBatches(train_ds, "fused", cpu), everything, cpu)
    assert np.array_equal(predict(out, train_ds.path)["p_taken"], blind) and not np.array_equal(blind, seeing)


@pytest.fixture(scope="module")
def trained(train_ds, tmp_path_factory):
    """A fused GNN trained one epoch on the real dataset."""
    out = tmp_path_factory.mktemp("run") / "r"
    train(TrainConfig(train=str(train_ds.path), test=str(train_ds.path), out=str(out), epochs=1, threads=1),
          progress=False)
    return load_model(out)[0]


def test_edge_list_training_form_equals_the_dense_reference_on_real_samples(train_ds, trained):
    """Every sample of a real dataset in the training batches (mixed sites): the edge-list form and the
    dense-adjacency reference give the same outputs, and the same gradients on a batch."""
    from ncf.model.gnn import DenseGNN
    from ncf.model.loop import epoch_batches
    from ncf.model.train import GraphBatches, labels, multitask_loss

    dense = DenseGNN(trained.cfg)
    dense.load_state_dict(trained.state_dict())
    batches, dev = GraphBatches(train_ds, "fused", torch.device("cpu")), torch.device("cpu")
    todo = epoch_batches(np.arange(len(train_ds)), 256, 0, 0, drop_last=False)
    with torch.no_grad():
        for rows in todo:
            for a, b in zip(trained(*batches(rows)), dense(*batches(rows))):
                torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    rows = todo[0]
    for m in (trained, dense):
        m.zero_grad()
        multitask_loss(*m(*batches(rows)), *labels(train_ds, rows, dev)).backward()
    for (name, p), q in zip(trained.named_parameters(), dense.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)
    trained.zero_grad()


def test_compact_hardware_form_equals_the_trained_model_on_real_samples(train_ds, trained):
    """For each site of a real dataset, the flat one-site form (constants folded in) gives the
    same outputs as the general model on that site's samples."""
    from ncf.model.gnn import CompactGNN, flat_input
    from ncf.model.train import GraphBatches

    batches = GraphBatches(train_ds, "fused", torch.device("cpu"))
    site = np.asarray(train_ds.arrays["site"])
    for s in np.unique(site):
        rows = np.flatnonzero(site == s)[:200]
        graph, dyn, g = batches(rows)
        compact = CompactGNN.from_general(trained, torch.tensor(train_ds.static[s], dtype=torch.float32),
                                          torch.tensor(train_ds.adj[s], dtype=torch.float32)).eval()
        with torch.no_grad():
            bl, dl = trained(graph, dyn, g)
            out = compact(flat_input(dyn, g))
        assert torch.allclose(out, torch.cat([bl[:, None], dl], 1), atol=1e-4), int(s)


def test_g_carries_the_loads_class_history_and_each_task_sets_only_its_columns(train_ds):
    from ncf.model.train import G_RELATIONS, GraphBatches, g_columns, g_width

    a, cpu = train_ds.arrays, torch.device("cpu")
    C, T = train_ds.meta["config"]["delta_classes"], train_ds.meta["config"]["delta_history"]
    rows = np.arange(len(train_ds))
    _, _, g = GraphBatches(train_ds, "fused", cpu)(rows)
    assert G_RELATIONS.start == train_ds.meta["g_dim"] and g.shape[1] == g_width(train_ds) == G_RELATIONS.stop + T * C
    assert torch.equal(g[:, :train_ds.meta["g_dim"]], torch.from_numpy(np.asarray(a["g"])).float())
    hist, dhist = g[:, G_RELATIONS.stop:].view(len(rows), T, C), np.asarray(a["dhist"])
    some = dhist < C                                   # a known access's class: its one-hot; none: zeros
    assert torch.equal(hist.sum(-1), torch.from_numpy(some).float())
    assert np.array_equal(hist.argmax(-1).numpy()[some], dhist[some])
    loads = np.asarray(a["delta"]) >= 0
    assert some[loads].any() and not some[np.asarray(a["taken"]) >= 0].any()
    for task, rows_of in (("branch", np.asarray(a["taken"]) >= 0), ("load", loads)):
        can = torch.from_numpy(g_columns(train_ds, task))
        assert not g[rows_of][:, ~can].any() and g[rows_of][:, can].any(0).sum() > 0
    shared = g_columns(train_ds, "branch") & g_columns(train_ds, "load")      # the branch history, the relations
    assert shared.sum() == 32 + G_RELATIONS.stop - G_RELATIONS.start
    for k, site in enumerate(train_ds.meta["sites"]):     # a site's relations: of the pairs of slots it has
        n = len(site["mem_pcs"])
        can = g_columns(train_ds, train_ds.task(k), n)
        assert can[G_RELATIONS].sum() == 3 * n * (n - 1) // 2
        assert not g[np.asarray(a["site"]) == k][:, ~torch.from_numpy(can)].any()


def test_value_relations_compare_the_predicted_memory_values_and_the_memory_drop_blanks_them(train_ds):
    """Equal, unsigned less and signed less of every pair of slots with both values (0 where one is missing),
    from ``mem_pred`` alone; dropping "memory" blanks them with the values, the "snapshot" drop does not."""
    from ncf.model.train import G_RELATIONS, SLOT_PAIRS, GraphBatches, value_relations

    big, minus_one = np.uint64(1 << 63), np.uint64(2 ** 64 - 1)
    mem = np.zeros((3, 8), np.uint64)
    mem[0, :3] = [5, 5, 7]
    mem[1, :3] = [minus_one, 1, big]
    ok = np.zeros((3, 8), np.uint8)
    ok[:2, :3] = 1
    ok[2, :3] = [1, 0, 1]                       # the middle value is missing: its pairs say nothing
    mem[2, :3] = [3, 9, 4]
    rel = value_relations(mem, ok).reshape(3, 3, len(SLOT_PAIRS))   # [row, relation, pair]
    at = {p: k for k, p in enumerate(SLOT_PAIRS)}
    assert rel[0, :, at[0, 1]].tolist() == [1, 0, 0] and rel[0, :, at[0, 2]].tolist() == [0, 1, 1]
    assert rel[1, :, at[0, 1]].tolist() == [0, 0, 1]     # 2^64 - 1 is above 1 unsigned, -1 below it signed
    assert rel[1, :, at[1, 2]].tolist() == [0, 1, 0]     # 1 < 2^63 unsigned; 2^63 is the most negative signed
    assert rel[2, :, at[0, 2]].tolist() == [0, 1, 1] and not rel[2, :, [at[0, 1], at[1, 2]]].any()
    assert rel[:, :, [at[s, t] for s, t in SLOT_PAIRS if t >= 3]].sum() == 0

    cpu, rows = torch.device("cpu"), np.arange(0, len(train_ds), 3)
    a = train_ds.arrays
    _, dyn, g = GraphBatches(train_ds, "fused", cpu)(rows)
    expect = value_relations(np.asarray(a["mem_pred"])[rows], np.asarray(a["mem_pred_ok"])[rows])
    assert np.array_equal(g[:, G_RELATIONS].numpy(), expect) and expect.any()
    _, _, g_m = GraphBatches(train_ds, "fused", cpu, drop=["memory"])(rows)
    _, _, g_s = GraphBatches(train_ds, "fused", cpu, drop=["snapshot"])(rows)
    assert not g_m[:, G_RELATIONS].any() and torch.equal(g_s, g)
    for model in ("static", "history"):                  # they see no values, so no comparisons of them
        assert not GraphBatches(train_ds, model, cpu)(rows)[2][:, G_RELATIONS].any()


def test_a_checkpoint_of_an_older_format_is_refused_plainly(tmp_path):
    from ncf.io import DataError
    from ncf.model.loop import CHECKPOINT_VERSION

    torch.save({"format_version": CHECKPOINT_VERSION - 1, "model": {}}, tmp_path / "checkpoint.pt")
    with pytest.raises(DataError, match=f"checkpoint format {CHECKPOINT_VERSION - 1} is not {CHECKPOINT_VERSION}; "
                                        "train the run again"):
        load_model(tmp_path)
