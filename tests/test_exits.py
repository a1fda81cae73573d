"""Adaptive depth: exits after every recursion, their losses, the calibrated guarantee, the
batch-shrinking executor (equal to one-at-a-time inference), and `minialbert predict`."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from minialbert import MiniAlbertForSequenceClassification, MiniAlbertForTokenClassification, exits
from minialbert.task_types import TASK_TYPES
from minialbert.utils import ConfigError
from tiny_models import tiny_config

from test_finetune import bert_dir, minialbert_dir, one_thread, run_cli, task_dirs  # noqa: F401  (fixtures)


def padded_batch(B=7, T=11, vocab=50, seed=0, pair=False):
    """Random ids, rows of different lengths (right-padded); with `pair`, a second segment."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (B, T), generator=g)
    lengths = [T, 3, 8, 5, T - 1, 2, 6][:B]
    mask = torch.zeros_like(ids)
    types = torch.zeros_like(ids)
    for r, n in enumerate(lengths):
        mask[r, :n] = 1
        if pair:
            types[r, n // 2:n] = 1
    ids = ids * mask
    return dict(input_ids=ids, attention_mask=mask, token_type_ids=types), lengths


def exit_model(kind_name: str, heads="per_recursion", seed=0, **overrides):
    torch.manual_seed(seed)
    cfg = tiny_config(num_hidden_layers=4, exit_heads=heads, exit_min_recursion=2, use_adapter=True,
                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout_prob=0.0,
                      **overrides)
    if kind_name == "token":
        cfg.num_labels = 5
        model = MiniAlbertForTokenClassification(cfg)
    elif kind_name == "regression":
        cfg.num_labels, cfg.problem_type = 1, "regression"
        model = MiniAlbertForSequenceClassification(cfg)
    else:
        cfg.num_labels = 3
        model = MiniAlbertForSequenceClassification(cfg)
    # larger head weights: confidences spread over (0, 1), so rows exit at different recursions
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and module.out_features in (1, 3, 5):
                module.weight.mul_(40)
    return model.eval()


def token_features(lengths):
    """Token-task features: every other real position (after [CLS]) is a scored word."""
    return [{"word_positions": list(range(1, n - 1, 2))} for n in lengths]


CASES = {  # task type -> (pair segments, exit rule)
    "single": (False, exits.ExitRule("confidence", threshold=0.8)),
    "pair": (True, exits.ExitRule("confidence", threshold=0.8)),
    "regression": (True, exits.ExitRule("confidence", threshold=-1.5, tolerance=0.1)),
    "token": (False, exits.ExitRule("confidence", threshold=0.6)),
}
SCALE = {"regression": (2.5, 1.2)}


def setup_case(name):
    pair, rule = CASES[name]
    kind = TASK_TYPES[name]
    model = exit_model(name)
    batch, lengths = padded_batch(pair=pair)
    mask = exits.token_mask(token_features(lengths), batch["input_ids"].shape[1]) if name == "token" else None
    return kind, model, batch, lengths, mask, rule


@pytest.mark.parametrize("name", list(CASES))
def test_a_rule_that_never_fires_gives_the_full_depth_prediction(name):
    kind, model, batch, lengths, mask, _ = setup_case(name)
    with torch.no_grad():
        full = model(**batch).logits
    for rule in (exits.ExitRule("full"), exits.ExitRule("confidence", threshold=math.inf)):
        for shrink in (True, False):
            logits, depth = exits.run_exits(model, kind, batch, mask, rule, SCALE.get(name), shrink=shrink)
            assert depth == [4] * len(lengths)
            for r, n in enumerate(lengths):
                expected = full[r, :n] if full.dim() == 3 else full[r]
                torch.testing.assert_close(logits[r], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", list(CASES))
def test_shrinking_executor_equals_one_example_at_a_time(name):
    kind, model, batch, lengths, mask, rule = setup_case(name)
    batched, depth = exits.run_exits(model, kind, batch, mask, rule, SCALE.get(name), shrink=True)
    naive, naive_depth = exits.run_exits(model, kind, batch, mask, rule, SCALE.get(name), shrink=False)
    assert depth == naive_depth
    assert len(set(depth)) >= 2, f"the rule should stop rows at different recursions, got {depth}"
    for r, n in enumerate(lengths):
        alone = {k: v[r:r + 1, :n] for k, v in batch.items()}
        m = None if mask is None else mask[r:r + 1, :n]
        one, one_depth = exits.run_exits(model, kind, alone, m, rule, SCALE.get(name))
        assert one_depth == [depth[r]], (r, one_depth, depth[r])
        torch.testing.assert_close(batched[r], one[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(naive[r], one[0], atol=1e-5, rtol=0)


def test_patience_rule_stops_after_p_unchanged_answers():
    kind, model, batch, lengths, mask, _ = setup_case("single")
    rule = exits.ExitRule("patience", patience=1)
    _, depth = exits.run_exits(model, kind, batch, mask, rule)
    logits = exits.exit_logits(model, batch)
    answers = torch.stack([z.argmax(-1) for z in logits], 1)  # (B, exits at recursions 2, 3, 4)
    for r in range(len(lengths)):
        same = [bool(answers[r, j] == answers[r, j - 1]) for j in (1, 2)]
        expected = 3 if same[0] else 4
        assert depth[r] == expected


def test_exit_losses():
    kind = TASK_TYPES["single"]
    model = exit_model("single").train()
    batch, _ = padded_batch()
    batch["labels"] = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    torch.manual_seed(1)
    logits = exits.exit_logits(model, batch)  # exits at recursions 2, 3, 4
    per_exit = [torch.nn.functional.cross_entropy(z, batch["labels"]) for z in logits]
    weighted = exits.training_loss(model, kind, batch, "weighted")
    torch.testing.assert_close(weighted, (2 * per_exit[0] + 3 * per_exit[1] + 4 * per_exit[2]) / 9)
    distill = exits.training_loss(model, kind, batch, "distill")
    target = logits[-1].softmax(-1)
    kl = sum(torch.nn.functional.kl_div(z.log_softmax(-1), target, reduction="batchmean") for z in logits[:2])
    torch.testing.assert_close(distill, per_exit[2] + kl)
    # the final output is the distillation target, not pulled towards the earlier exits
    model.zero_grad()
    again = exits.exit_logits(model, batch)
    sum(kind.exit_distill_loss(z, again[-1], batch["labels"]) for z in again[:-1]).backward()
    assert model.classifier.weight.grad is None or model.classifier.weight.grad.abs().max() == 0
    assert model.exit_classifiers["1"].weight.grad.abs().max() > 0


def test_binomial_cdf_matches_the_sum():
    n, p = 30, 0.07
    for k in (0, 1, 4, 29, 30):
        exact = sum(math.comb(n, j) * p ** j * (1 - p) ** (n - j) for j in range(min(k, n) + 1))
        assert exits.binomial_cdf(k, n, p) == pytest.approx(exact, rel=1e-9)


def synthetic_population(size: int, seed: int):
    """Per-example stop scores at 4 exits and disagreement with the last exit. Each example has a
    difficulty d ~ U(0, 1); its score at exit r rises with r and falls with d, and it disagrees at
    exit r < 3 with probability d * (1 - r / 3): the disagreement of a threshold is a smooth
    curve, known exactly from a large population."""
    g = torch.Generator().manual_seed(seed)
    d = torch.rand(size, 1, generator=g)
    r = torch.arange(4).float()[None]
    scores = ((1 - d) * (0.4 + 0.2 * r) + 0.05 * torch.rand(size, 4, generator=g)).clamp(max=1.0)
    disagree = torch.rand(size, 4, generator=g) < d * (1 - r / 3)
    disagree[:, -1] = False
    return scores, disagree


@pytest.mark.parametrize("epsilon", [0.01, 0.05, 0.1])
def test_calibrated_threshold_holds_its_guarantee(epsilon):
    delta, draws, n = 0.1, 200, 400
    population_scores, population_disagree = synthetic_population(200_000, seed=1)
    true_risk = {}  # threshold -> disagreement rate on the population
    rng = random.Random(0)
    violations, useful = 0, 0
    for _ in range(draws):
        idx = torch.tensor(rng.sample(range(len(population_scores)), n))
        chosen = exits.calibrate(population_scores[idx], population_disagree[idx], epsilon, delta)["threshold"]
        if chosen not in true_risk:
            exit_at = exits.first_exit(population_scores, chosen)
            true_risk[chosen] = float(population_disagree.gather(1, exit_at[:, None]).float().mean())
        violations += true_risk[chosen] > epsilon
        useful += math.isfinite(chosen)
    slack = 3 * math.sqrt(delta * (1 - delta) / draws)
    assert violations / draws <= delta + slack
    assert useful >= draws // 2, "the test must exercise certified thresholds, not only full depth"


def test_calibration_stops_at_the_first_failure():
    # 100 examples disagree when they stop at exit 1 (score 0.95) but agree at exit 0 (score 0.9):
    # threshold 0.95 fails, and 0.9, which would pass, is never tested (fixed-sequence testing)
    scores = torch.tensor([[0.9, 0.95, 1.0]] * 100 + [[0.5, 0.5, 1.0]] * 300)
    disagree = torch.zeros(400, 3, dtype=torch.bool)
    disagree[:100, 1] = True
    chosen = exits.calibrate(scores, disagree, epsilon=0.05, delta=0.1)
    assert chosen["threshold"] == math.inf and chosen["thresholds_tested"] == 1
    assert chosen["calibration_agreement"] == 1.0
    # without the failing step, 0.9 is certified and 0.5 (all exit at 0, none disagree) too
    disagree[:100, 1] = False
    assert exits.calibrate(scores, disagree, epsilon=0.05, delta=0.1)["threshold"] == pytest.approx(0.5)


def test_per_recursion_heads_and_thresholds_survive_save_and_load(tmp_path):
    model = exit_model("single")
    model.config.exit_thresholds = {"0.05": 0.9}
    model.save_pretrained(tmp_path)
    loaded = MiniAlbertForSequenceClassification.from_pretrained(tmp_path).eval()
    assert loaded.config.exit_thresholds == {"0.05": 0.9}
    assert sorted(loaded.exit_classifiers) == ["1", "2"]
    batch, _ = padded_batch()
    for a, b in zip(exits.exit_logits(model, batch), exits.exit_logits(loaded, batch)):
        torch.testing.assert_close(a, b)


def test_exit_settings_are_checked():
    with pytest.raises(ValueError, match="exit_min_recursion"):
        tiny_config(exit_heads="shared", exit_min_recursion=9)
    with pytest.raises(ValueError, match="exit_heads"):
        tiny_config(exit_heads="every")


# --------------------------------------------------------------------------------------------
# fine-tuning with exits and `minialbert predict`
# --------------------------------------------------------------------------------------------
def test_finetune_with_exits_writes_exits_json_and_predict_is_batch_size_invariant(minialbert_dir, task_dirs,
                                                                                     tmp_path, capsys):
    from minialbert.cli import main as cli_main

    out = tmp_path / "run"
    metrics = run_cli(minialbert_dir, task_dirs["ner"], out, "full", "--exits", "--exit-min-recursion", "2",
                      "--exit-epsilons", "0.1", "0.3", "--exit-calibration-split", "dev")
    report = json.loads((out / "exits.json").read_text())
    assert report["calibration_split"] == "dev" and report["report_split"] == "test"
    assert set(report["epsilons"]) == {"0.1", "0.3"}
    assert report["full_depth"]["mean_recursions"] == 3
    for entry in report["epsilons"].values():
        assert sum(entry["exit_histogram"]) == report["report_examples"]
        assert entry["exit_histogram"][0] == 0  # no exit before min_recursion
        assert 2 <= entry["mean_recursions"] <= 3
    assert metrics["config"]["exits"]["min_recursion"] == 2
    files = {}
    for b in (1, 32):
        path = tmp_path / f"pred{b}.jsonl"
        assert cli_main(["predict", "--model", str(out / "model"), "--task", str(task_dirs["ner"]), "--split",
                         "test", "--exit-threshold", "0.5", "--batch-size", str(b), "--output", str(path)]) == 0
        files[b] = path.read_text()
    assert files[1] == files[32]
    lines = [json.loads(line) for line in files[1].splitlines()]
    assert {"id", "prediction", "exit_recursion"} <= set(lines[0]) and len(lines) == 6
    assert cli_main(["predict", "--model", str(out / "model"), "--task", str(task_dirs["ner"]), "--split", "test",
                     "--exit-epsilon", "0.2", "--output", str(tmp_path / "x.jsonl")]) == 2
    assert "thresholds for epsilon" in capsys.readouterr().err


def test_runs_without_exits_keep_their_config(minialbert_dir, task_dirs, tmp_path):
    metrics = run_cli(minialbert_dir, task_dirs["sst2"], tmp_path / "run")
    assert "exits" not in metrics["config"]
    assert not (tmp_path / "run" / "exits.json").exists()


def test_exit_flags_and_models_are_checked(bert_dir, task_dirs, tmp_path, capsys):
    from minialbert.cli import main as cli_main

    base = ["finetune", "--task", str(task_dirs["sst2"]), "--lr", "1e-3", "--output", str(tmp_path / "o")]
    assert cli_main([*base, "--model", str(bert_dir), "--exit-loss", "distill"]) == 2
    assert "--exit-loss needs --exits" in capsys.readouterr().err
    assert cli_main([*base, "--model", str(bert_dir), "--exits"]) == 2
    assert "needs a MiniALBERT student" in capsys.readouterr().err
    assert cli_main([*base, "--model", str(bert_dir), "--exits", "--exit-epsilons", "0"]) == 2
    assert "epsilons" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------------------------
# the workflow's plan
# --------------------------------------------------------------------------------------------
def demo_plan(edit=None):
    import copy
    from pathlib import Path

    import yaml

    from minialbert.workflow.plan import load_plan

    repo = Path(__file__).resolve().parent.parent
    config = copy.deepcopy(yaml.safe_load((repo / "config.yaml").read_text()))
    if edit:
        edit(config)
    return load_plan(config, repo / "schemas" / "config.schema.yaml")


def test_plan_gives_exits_to_student_runs_only_and_leaves_other_runs_unchanged():
    before = demo_plan()

    def edit(c):
        c["finetune"]["exits"] = {"adapter": {"loss": "distill", "epsilons": [0.05]}}
        c["students"]["no-distillation"]["finetune_exits"] = {"heads": "per_recursion"}

    plan = demo_plan(edit)
    with_exits = plan.exit_runs()
    assert with_exits and all(key[0] in ("minialbert-adapter", "no-distillation") and key[2] == "adapter"
                              for key in with_exits)
    seeds = len(plan.config["finetune"]["seeds"])
    assert len(with_exits) == 2 * 4 * seeds  # students x tasks x seeds, adapter mode only
    for key, run in plan.runs.items():
        if key in with_exits:
            assert run["exits"]["loss"] == "distill" and run["exits"]["epsilons"] == [0.05]
            assert run["exits"]["heads"] == ("per_recursion" if key[0] == "no-distillation" else "shared")
        else:
            assert plan.finetune_job(*key) == before.finetune_job(*key)  # same job config: no rerun
    # the student's identity (its distillation) does not change with its fine-tuning settings
    assert plan.models["no-distillation"].identity == before.models["no-distillation"].identity
    timing = plan.exit_timing_job(*with_exits[0])
    assert timing["teacher_dir"] == plan.models["teacher"].dir and timing["examples"] == 200


def test_plan_refuses_bad_exit_settings_before_anything_runs():
    with pytest.raises(ConfigError, match=r"finetune.exits \(full mode\).lose: unknown key"):
        demo_plan(lambda c: c["finetune"].update(exits={"lose": "distill"}))
    with pytest.raises(ConfigError, match=r"epsilons"):
        demo_plan(lambda c: c["finetune"].update(exits={"epsilons": [1.5]}))


def test_exit_output_term_distils_every_earlier_recursion_through_the_mlm_head():
    from minialbert.loss_terms import output_kl
    from minialbert.objective import distillation_losses, masked_positions_from_labels
    from test_distill_loss import tiny_batch, tiny_student, tiny_teacher

    teacher, batch, student = tiny_teacher(), tiny_batch(), tiny_student(recursions=3)
    weights = {"mlm": 0.0, "attention": 0.0, "hidden": 0.0, "output": 0.0, "exit_output": 1.0}
    losses = distillation_losses(student, teacher, batch, weights=weights, temperature=2.0)
    positions = masked_positions_from_labels(batch["labels"])
    valid = positions >= 0
    rows = positions.clamp(min=0)
    with torch.no_grad():
        t_logits = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        t_logits = t_logits.reshape(-1, t_logits.shape[-1])[rows]
        hidden = student.minialbert(batch["input_ids"], batch["attention_mask"], output_hidden_states=True).hidden_states
    expected = sum(output_kl(student.head(h.reshape(-1, h.shape[-1])[rows]), t_logits, valid, 2.0)
                   for h in hidden[1:-1]) / 2
    torch.testing.assert_close(losses["exit_output"], expected)
    torch.testing.assert_close(losses["total"], losses["exit_output"])  # the only weighted term
    losses["total"].backward()
    assert student.minialbert.layer.attention.query.weight.grad.abs().max() > 0


def test_the_adaptive_depth_study_reuses_the_demo_upstream():
    """configs/adaptive-depth.yaml copies the demo's world, teacher and tasks (same identities, so
    nothing upstream reruns) and the teacher's runs seed 0; the students' runs all have exits."""
    from pathlib import Path

    import yaml

    from minialbert.workflow.plan import load_plan

    repo = Path(__file__).resolve().parent.parent
    schema = repo / "schemas" / "config.schema.yaml"
    demo = demo_plan()
    study = load_plan(yaml.safe_load((repo / "configs" / "adaptive-depth.yaml").read_text()), schema)
    assert study.models["teacher"].identity == demo.models["teacher"].identity
    for task in demo.config["tasks"]:
        assert study.task_identity(task) == demo.task_identity(task)
    teacher_runs = [key for key in study.runs if key[0] == "teacher"]
    assert teacher_runs and all(study.finetune_job(*key) == demo.finetune_job(*key) for key in teacher_runs)
    students = [key for key in study.runs if key[0] != "teacher"]
    assert set(study.exit_runs()) == set(students) and len(students) == 4 * 4 * 2
    assert {study.runs[key]["exits"]["loss"] for key in students} == {"weighted", "distill"}
    assert all(study.models[key[0]].kind == "student" for key in students)
    assert study.summary_dir == "results/summary/adaptive-depth"


def test_timing_and_summary_of_a_run_with_exits(minialbert_dir, bert_dir, task_dirs, tmp_path):
    from minialbert.exit_timing import measure, summarise
    from minialbert.utils import write_json_atomic

    out = tmp_path / "run"
    run_cli(minialbert_dir, task_dirs["sst2"], out, "full", "--exits", "--exit-epsilons", "0.05", "0.5")
    teacher_run = tmp_path / "teacher"
    run_cli(bert_dir, task_dirs["sst2"], teacher_run)
    timing = measure(out, str(task_dirs["sst2"]), str(bert_dir), examples=4, batch_size=2, repeats=2)
    configs = timing["configs"]
    assert {"teacher", "full_depth", "adaptive@0.05", "adaptive_naive@0.05", "adaptive@0.5"} <= set(configs)
    for name, entry in configs.items():
        assert entry["throughput"] > 0
        if not name.startswith("adaptive_naive"):
            lat = entry["latency_ms"]
            assert 0 < lat["p50"] <= lat["p95"] and lat["mean"] > 0
    write_json_atomic(out / "timing.json", timing)
    frame = summarise([{"model": "m", "label": "M", "task": "sst2", "mode": "full", "run_dir": str(out),
                        "teacher_runs": [str(teacher_run / "metrics.json")]}],
                      tmp_path / "summary" / "exits.csv", tmp_path / "summary", ["sst2"])
    assert list(frame["epsilon"]) == [0.05, 0.5]
    report = json.loads((out / "exits.json").read_text())
    row = frame.iloc[0]
    assert row["agreement"] == pytest.approx(report["epsilons"]["0.05"]["test_agreement"])
    assert row["latency_vs_full"] == pytest.approx(
        configs["adaptive@0.05"]["latency_ms"]["mean"] / configs["full_depth"]["latency_ms"]["mean"])
    teacher = json.loads((teacher_run / "metrics.json").read_text())
    assert row["teacher_score"] == pytest.approx(100 * teacher["dev"]["accuracy"])
    assert (tmp_path / "summary" / "score_vs_latency_sst2.png").stat().st_size > 0
    assert (tmp_path / "summary" / "exits.csv").read_text().startswith("model,task,mode,epsilon")
