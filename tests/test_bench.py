"""Smoke tests of the benchmark (python -m cysoftmax.bench): it runs at a tiny shape, its
JSON and markdown have the expected structure, and missing peers are skipped with a note.
No timing is asserted: CI machines are too noisy for that."""

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import cysoftmax
from cysoftmax import bench
from cysoftmax.bench import children, floor, machine, peers, report, runner

TINY = ["--quick", "--shapes", "16x5", "--casestudy-iters", "3", "--no-cpu-probe"]


def test_module_runs_quick_json(tmp_path):
    # cwd away from the source tree, so the installed package is the one imported
    proc = subprocess.run(
        [sys.executable, "-m", "cysoftmax.bench", *TINY, "--threads", "1,all",
         "--peers", "numpy,sklearn", "--json"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    for key in ("command", "machine", "build_info", "versions", "settings", "notes",
                "harness_overhead_ns", "checks", "results", "overhead", "casestudy", "goals",
                "total_seconds"):
        assert key in report, key
    assert report["command"].startswith("python -m cysoftmax.bench")
    assert report["build_info"]["target"] in report["build_info"]["supported_targets"]
    assert report["machine"]["logical_cpus"] >= 1
    assert report["versions"]["numpy"] == np.__version__
    # 1 dtype pair x 2 thread settings x 2 kinds
    assert len(report["results"]) == 2 * 2 * 2
    for entry in report["results"]:
        assert entry["shape"] == [16, 5]
        assert entry["kind"] in ("loss+grad", "loss")
        assert entry["threads"] in ("1", "all")
        for impl in ("cysoftmax", "floor", "numpy"):
            t = entry["timings"][impl]
            assert t["median_ns"] > 0 and t["min_ns"] <= t["median_ns"]
            assert t["repeats"] >= 1 and t["number"] >= 1 and t["cpu_per_wall"] >= 0
        assert entry["ratios"]["floor"] > 0 and entry["ratios"]["numpy"] > 0
        by_threads = entry["timings"]["floor"]["median_ns_by_threads"]
        assert set(by_threads) == {"1", str(entry["num_threads"])}
        assert entry["timings"]["floor"]["threads"] in (1, entry["num_threads"])
        assert entry["best_peer"] in entry["timings"]
        if "sklearn" in report["skipped_peers"]:
            assert "sklearn" not in entry["timings"]
    for check in report["checks"].values():
        assert check["grad_max_abs_diff"] < 1e-5
    case = report["casestudy"]
    assert "skipped" in case or (case["iterations"] == 3 and case["cysoftmax_s"] > 0)
    assert {g["holds"] for g in report["goals"]} <= {True, False, None}


def test_markdown_and_text_output(capsys):
    assert bench.main([*TINY, "--casestudy-iters", "0", "--threads", "1", "--dtypes",
                       "float32", "--peers", "numpy", "--markdown"]) == 0
    md = capsys.readouterr().out
    assert "| shape | dtype | threads | cysoftmax | copy floor | numpy |" in md
    assert "| 16x5 | float32 | 1 |" in md
    assert "below 1 cysoftmax is faster" in md
    assert "Goals:" in md
    assert bench.main([*TINY, "--casestudy-iters", "0", "--threads", "1", "--dtypes",
                       "float64", "--peers", "numpy"]) == 0
    text = capsys.readouterr().out
    assert "read floor" in text and "float64" in text and "goals:" in text


def test_missing_peer_is_skipped_with_a_note(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now fails
    monkeypatch.setitem(sys.modules, "jax", None)
    report = bench.run(shapes=[(8, 3)], dtypes=["float64"], threads=["1"],
                       peers=["numpy", "torch", "jax"], quick=True, casestudy_iters=0,
                       probe=False, quiet=True)
    assert report["skipped_peers"] == {"torch": "torch is not installed",
                                       "jax": "jax is not installed"}
    assert any(n.startswith("torch: skipped") for n in report["notes"])
    for entry in report["results"]:
        assert set(entry["timings"]) == {"cysoftmax", "floor", "numpy"}


def test_extra_targets_are_timed_and_the_target_restored():
    before = cysoftmax.simd_target()
    targets = cysoftmax.build_info()["supported_targets"][:2]
    report = bench.run(shapes=[(8, 3)], dtypes=["float32"], threads=["1"], targets=targets,
                       peers=["numpy"], quick=True, casestudy_iters=0, probe=False,
                       quiet=True)
    assert cysoftmax.simd_target() == before
    for entry in report["results"]:
        assert "cysoftmax" in entry["timings"]
        for extra in targets[1:]:
            assert f"cysoftmax[{extra}]" in entry["timings"]


def test_numpy_reference_is_correct():
    scores, labels = bench.make_inputs((7, 4), "float64")
    loss, grad = bench.numpy_loss_grad(scores, labels)
    ours, our_grad = cysoftmax.softmax_cross_entropy(scores, labels)
    assert loss == pytest.approx(float(ours), rel=1e-12)
    assert bench.numpy_loss(scores, labels) == pytest.approx(float(ours), rel=1e-12)
    np.testing.assert_allclose(grad, our_grad, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("argv", [["--shapes", "300"], ["--shapes", "0x3"],
                                  ["--dtypes", "float16"], ["--threads", "0"],
                                  ["--peers", "tensorflow"], ["--targets", "sse9"],
                                  ["--casestudy-iters", "-1"], ["--jax-processes", "0"]])
def test_bad_arguments(argv):
    with pytest.raises(SystemExit) as info:
        bench.main(argv)
    assert info.value.code == 2


def test_shape_parsing():
    assert bench.parse_shapes("300x3,4096X1000") == [(300, 3), (4096, 1000)]


def test_jax_child_process_when_installed():
    pytest.importorskip("jax")
    pytest.importorskip("optax")
    result = bench.run_jax_child([(8, 3)], ["float32", "float64"], "1", budget=0.005, repeats=3)
    assert not result["errors"], result
    assert set(result["timings"]) == {f"8x3/{d}/{k}" for d in ("float32", "float64")
                                      for k in ("loss+grad", "loss")}


def test_buffers_lie_half_a_page_from_the_scores():
    scores, _ = bench.make_inputs((33, 7), "float32")
    out = bench.empty_apart(scores)
    assert out.shape == scores.shape and out.dtype == scores.dtype
    assert out.flags.c_contiguous and out.flags.writeable
    assert (out.ctypes.data - scores.ctypes.data) % 4096 == 2048
    cysoftmax.softmax_cross_entropy(scores, np.zeros(33, dtype=np.int64), out=out)


def test_load_runs_beside_a_busy_process(tmp_path):
    """python -m cysoftmax.bench.load: per-call percentiles alone and beside a busy process."""
    proc = subprocess.run(
        [sys.executable, "-m", "cysoftmax.bench.load", "--shapes", "64x3", "--load", "0,1",
         "--calls", "50", "--budget", "0.2", "--json"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    rows = report["rows"]
    assert [(r["load"], r["threads"]) for r in rows] == [(0, "1"), (0, "None"), (1, "1"),
                                                        (1, "None")]
    for r in rows:
        assert r["shape"] == "64x3" and 20 <= r["calls"] <= 50
        assert 0 < r["median_us"] <= r["p99_us"] <= r["max_us"]
    assert "openmp_wait_policy" in report["build"]


@pytest.mark.parametrize("args, words", [
    (["--shapes", "64"], "NxC"), (["--load", "-1"], "non-negative"),
    (["--calls", "0"], "positive integer"), (["--budget", "nan"], "positive number")])
def test_load_rejects_bad_arguments(args, words, capsys):
    from cysoftmax.bench import load
    with pytest.raises(SystemExit) as info:
        load.main(args)
    assert info.value.code == 2 and words in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["loss+grad", "loss"])
def test_split_floor_covers_the_array_on_several_threads(kind):
    scores, _ = bench.make_inputs((37, 11), "float64")
    calls = floor._chunk_calls(kind, scores, 3)
    assert len(calls) == 3
    if kind == "loss":
        assert sum(c() for c in calls) == pytest.approx(scores.sum(), rel=1e-12)
    else:
        parts = [c.args for c in calls]  # (destination chunk, source chunk)
        assert sum(d.size for d, _ in parts) == scores.size
        for c in calls:
            c()
        np.testing.assert_array_equal(np.concatenate([d for d, _ in parts]), scores.ravel())
    with ThreadPoolExecutor(max_workers=2) as pool:
        loops = floor.floor_loops(kind, scores, 3, pool)
        assert set(loops) == {floor.FLOOR, floor.SPLIT}
        assert all(loop(2) > 0 for loop in loops.values())
    assert set(floor.floor_loops(kind, scores, 1)) == {floor.FLOOR}


def test_the_faster_floor_is_kept_with_its_thread_count():
    timings = {"floor": {"median_ns": 50.0}, "floor split": {"median_ns": 20.0}}
    floor.keep_faster_floor(timings, 4)
    assert timings == {"floor": {"median_ns": 20.0, "threads": 4,
                                 "median_ns_by_threads": {"1": 50.0, "4": 20.0}}}
    timings = {"floor": {"median_ns": 10.0}}
    floor.keep_faster_floor(timings, 1)
    assert timings["floor"]["threads"] == 1


@pytest.fixture
def decoy_cwd(tmp_path, monkeypatch):
    """The working directory holds a cysoftmax (and a numpy) that cannot be imported, as a
    source checkout not built in place would."""
    for name in ("cysoftmax", "numpy"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise ImportError('decoy {name}')\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_children_import_this_cysoftmax_not_the_working_directory(decoy_cwd):
    proc = subprocess.run(
        children.python_command("import cysoftmax, numpy\nprint(cysoftmax.__file__)"),
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert os.path.samefile(proc.stdout.strip(), cysoftmax.__file__)
    probe = machine.cpu_probe(rounds=1)  # its children import numpy
    assert probe["cores_delivered"] > 0


def test_jax_child_imports_this_cysoftmax(decoy_cwd):
    result = bench.run_jax_child([(8, 3)], ["float32"], "1", budget=0.005, repeats=3)
    if peers.peer_missing("jax") is None:
        assert not result["errors"], result
        assert result["platform"] == "cpu"
    else:  # it gets as far as importing JAX
        assert "decoy" not in result["errors"]["8x3/float32"]
        assert "jax" in result["errors"]["8x3/float32"]


def test_jax_children_run_on_the_cpu(monkeypatch):
    seen = {}

    def fake_run(command, **kwargs):
        seen.update(command=command, env=kwargs["env"])
        answer = {"timings": {"8x3/float32/loss": {"median_ns": 5.0}}, "version": "0",
                  "platform": "cpu"}
        return subprocess.CompletedProcess(command, 0, json.dumps(answer) + "\n", "")

    monkeypatch.setenv("JAX_PLATFORMS", "cuda")
    monkeypatch.setattr(peers.subprocess, "run", fake_run)
    result = bench.run_jax_child([(8, 3)], ["float32"], "all", budget=0.005, repeats=3)
    assert seen["env"]["JAX_PLATFORMS"] == "cpu"
    assert "jax_worker" in seen["command"][-1]
    assert result["timings"]["8x3/float32/loss"]["process_medians_ns"] == [5.0]
    assert "JAX_PLATFORMS=cpu" in peers.PEER_NOTES["jax"]


def test_report_says_jax_runs_on_the_cpu(monkeypatch):
    def fake_jax_child(shapes, dtypes, setting, budget, repeats, processes=1):
        timing = {"median_ns": 1e4, "min_ns": 1e4, "repeats": 3, "number": 1,
                  "cpu_per_wall": 1.0}
        return {"timings": {f"8x3/float64/{kind}": timing for kind in bench.KINDS},
                "errors": {}, "platform": "cpu"}

    monkeypatch.setattr(runner, "peer_missing", lambda name: None)
    monkeypatch.setattr(runner, "run_jax_child", fake_jax_child)
    result = bench.run(shapes=[(8, 3)], dtypes=["float64"], threads=["1"],
                       peers=["numpy", "jax"], quick=True, casestudy_iters=0, probe=False,
                       quiet=True)
    assert all("jax" in entry["timings"] for entry in result["results"])
    for text in (report.format_text(result), report.format_markdown(result)):
        assert "on the CPU (JAX_PLATFORMS=cpu" in text


# python -m cysoftmax.bench.torch_training, at a tiny size: the logits are 64 MiB (blocks
# that glibc returns to the system when freed, so that the peak memory is measurable)
TORCH_TINY = ["--batch", "512", "--features", "8", "--hidden", "16", "--classes", "32768",
              "--steps", "1", "--warmup", "1", "--threads", "1", "--loss-shapes", "none",
              "--quiet"]


def test_torch_training_runs_at_a_tiny_size(tmp_path):
    torch = pytest.importorskip("torch")
    from cysoftmax.bench import torch_training
    # two variants in fresh processes (each costs seconds of imports); the third variant
    # and the loss section's worker run in this process below
    proc = subprocess.run(
        [sys.executable, "-m", "cysoftmax.bench.torch_training", *TORCH_TINY,
         "--variants", "cysoftmax,torch", "--json"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["command"].startswith("python -m cysoftmax.bench.torch_training")
    assert report["settings"]["logits_mib"] == 64
    train = report["train"]
    assert list(train) == ["cysoftmax", "torch"]
    log_c = np.log(32768)
    for name, entry in train.items():
        assert "error" not in entry and "skipped" not in entry, entry
        assert entry["threads"] == 1 and entry["steps"] == 1 and entry["processes"] == 1
        assert 0 < entry["min_step_s"] <= entry["median_step_s"]
        assert len(entry["losses"]) == 2  # warm-up and timed step
        # the same model and data in both; a fresh output layer gives about log C
        assert abs(entry["first_loss"] - log_c) < 0.5
        assert entry["first_loss_rel_diff_vs_torch"] < 1e-5
        if name == "torch":  # holds the logits and one more tensor of their size at once
            assert entry["peak_above_baseline_mib"] >= 64 * 1.5, entry
        else:  # fused: a chunk of logits at a time, never all 64 MiB of them
            assert entry["peak_above_baseline_mib"] < 64, entry
    assert train["torch"]["speedup_of_cysoftmax"] > 0
    assert train["torch"]["memory_factor_of_cysoftmax"] > 0
    assert report["loss"] == {}

    threads = torch.get_num_threads()
    try:
        tiny = {"batch": 32, "features": 4, "hidden": 8, "classes": 10, "threads": 1,
                "steps": 2, "warmup": 0}
        answers = [torch_training.train_worker(dict(tiny, variant=v))
                   for v in ("torch", "torch-chunked", "floor")]
        report["loss"] = torch_training.loss_worker(
            {"threads": 1, "shapes": [[8, 5]], "budget": 0.02, "repeats": 3})
    finally:
        torch.set_num_threads(threads)
    if hasattr(torch.nn.functional, "linear_cross_entropy"):
        assert len(answers[1]["step_s"]) == 2 and answers[1]["threads"] == 1
        assert answers[1]["losses"][0] == pytest.approx(answers[0]["losses"][0], rel=1e-5)
    else:
        assert "no F.linear_cross_entropy" in answers[1]["skipped"]
    assert answers[2]["losses"] == [0.0, 0.0] and len(answers[2]["step_s"]) == 2
    # the floor's backward gives the first call's gradient of the mean loss, every time
    F = torch.nn.functional
    g = torch.Generator().manual_seed(0)
    h, W, b = (torch.randn(*s, generator=g, requires_grad=True) for s in [(6, 4), (5, 4), (5,)])
    y = torch.randint(0, 5, (6,), generator=g)
    floor_loss = torch_training._loss_of("floor", 1, (6, 5))
    ref = torch.autograd.grad(F.cross_entropy(F.linear(h, W, b), y), (h, W, b))
    for _ in range(2):
        for mine, r in zip(torch.autograd.grad(floor_loss(h, W, b, y), (h, W, b)), ref):
            torch.testing.assert_close(mine, r, rtol=1e-5, atol=1e-7)
    row, = report["loss"]["rows"]
    assert row["shape"] == [8, 5] and row["speedup"] > 0
    assert row["check"]["grad_max_abs_diff"] < 1e-6
    assert row["check"]["cysoftmax_loss_rel_err"] < 1e-6
    assert set(row["timings"]) == {"cysoftmax", "torch", "kernel"}
    report["goals"] = torch_training.evaluate_goals(report)
    assert [g["holds"] in (True, False) for g in report["goals"]] == [True] * 3
    report["total_seconds"] = 1.0
    text = torch_training.format_text(report)
    assert "speed-up of cysoftmax" in text and "goals:" in text and "8x5" in text
    md = torch_training.format_markdown(report)
    assert "| variant | time per step |" in md and "| 8x5 |" in md and "Goals:" in md


def test_torch_training_reports_a_skipped_variant():
    from cysoftmax.bench import torch_training
    entry = torch_training._summarize_train(
        "torch-chunked", [{"variant": "torch-chunked", "skipped": "torch 2.4 has no F.x"}])
    report = {"settings": {"features": 8, "hidden": 4, "classes": 3, "batch": 2, "steps": 1,
                           "warmup": 0, "rounds": 1, "logits_mib": 0.0, "threads": 1,
                           "loss_repeats": 3},
              "machine": {}, "versions": {}, "train": {"torch-chunked": entry}, "loss": {},
              "total_seconds": 0.0}
    report["goals"] = torch_training.evaluate_goals(report)
    assert [g["holds"] for g in report["goals"]] == [None] * 3
    assert "skipped: torch 2.4 has no F.x" in torch_training.format_text(report)


@pytest.mark.parametrize("argv", [["--batch", "0"], ["--classes", "x"], ["--steps", "0"],
                                  ["--warmup", "-1"], ["--variants", "jax"],
                                  ["--loss-shapes", "8"], ["--loss-budget", "0"]])
def test_torch_training_bad_arguments(argv):
    from cysoftmax.bench import torch_training
    with pytest.raises(SystemExit) as info:
        torch_training.main(argv)
    assert info.value.code == 2


def test_linear_bench_runs_at_a_tiny_size(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "cysoftmax.bench.linear", "--shapes", "64x8x50", "--repeats",
         "1", "--variants", "fused,fused:16,products,chunked-products,chunked-products:16",
         "--json"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["variant"] for r in rows] == ["fused", "fused:16", "products",
                                            "chunked-products", "chunked-products:16"]
    for r in rows:
        assert r["time_s"] > 0 and r["logits_mb"] == 64 * 50 * 4 / 2**20
        assert "extra_peak_mb" in r and "tracemalloc_mb" in r


def test_linear_bench_refuses_unknown_variants(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "cysoftmax.bench.linear", "--variants",
                           "fused:0"], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    assert proc.returncode == 2 and "unknown variants" in proc.stderr
