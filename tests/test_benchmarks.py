"""benchmarks/throughput.py on the cpu-smoke preset: records, Markdown rows, FLOPs against a closed form."""
from __future__ import annotations

import importlib.util
import json
import pathlib
import sys

import pytest

_PATH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py"


def _load_harness():
    spec = importlib.util.spec_from_file_location("benchmarks_throughput", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


throughput = _load_harness()


def resnet18_cifar_macs(width: int, size: int) -> int:
    """Multiply-accumulates of one CIFAR ResNet-18 forward (3x3 stem, no max-pool, 1x1 projections)."""
    macs = size * size * 3 * width * 9
    channels = width
    for stage, out_channels in enumerate((width, 2 * width, 4 * width, 8 * width)):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            size //= stride
            macs += size * size * 9 * (channels * out_channels + out_channels * out_channels)
            if stride != 1 or channels != out_channels:
                macs += size * size * channels * out_channels
            channels = out_channels
    return macs


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    records = throughput.main([
        "--preset", "cpu-smoke", "--in_process", "--steps", "2", "--warmup", "1", "--repeats", "1",
        "--out", str(out),
    ])
    return records, out


@pytest.mark.slow
def test_records_have_positive_measurements(smoke):
    records, _ = smoke
    assert [(r["strategy"], r["task"]) for r in records] == [("finetune", "first"), ("cromo", "later")]
    for r in records:
        for key in ("lower_s", "compile_s", "first_call_s", "step_ms", "step_ms_min", "step_ms_max", "images_per_s",
                    "flops_per_step", "tflops", "xla_mib", "xla_flops_per_call"):
            assert r[key] > 0, key
        for key in ("device_kind", "platform", "jax", "date_utc"):
            assert r[key], key
        assert r["mesh_devices"] == 1 and r["flops_source"] == "lowered one-step HLO"
        assert r["platform"] == "cpu" and r["peak_mib"] is None and r["pct_of_peak"] is None
        assert r["first_call_s"] >= r["lower_s"] + r["compile_s"]
        assert r["step_ms_min"] <= r["step_ms"] <= r["step_ms_max"]
        assert r["images_per_s"] == pytest.approx(r["batch"] * 1e3 / r["step_ms"], rel=1e-9)
        assert r["tflops"] == pytest.approx(r["flops_per_step"] / (r["step_ms"] * 1e-3) / 1e12, rel=1e-9)
    finetune, cromo = records
    assert (finetune["replay"], cromo["replay"]) == (0, 8)  # replay is sampled only in later tasks
    assert finetune["dataset_size"] == 640 and finetune["task_size"] == 320


@pytest.mark.slow
def test_flops_match_the_resnet_closed_form(smoke):
    """One fine-tune step is forward + backward (about 3 forwards) of 2 views: XLA's count within 25%
    below to 50% above (BatchNorm, heads, augmentation add; the stem needs no input gradient)."""
    finetune, cromo = smoke[0]
    closed_form = 3 * 2 * resnet18_cifar_macs(finetune["width"], finetune["image_size"]) * 2 * finetune["batch"]
    assert 0.75 < finetune["flops_per_step"] / closed_form < 1.5
    # CroMo adds the mixed samples to both current forwards and runs the old model on current + memory.
    assert cromo["flops_per_step"] > 1.3 * finetune["flops_per_step"]


@pytest.mark.slow
def test_results_files(smoke):
    records, out = smoke
    lines = (out / "throughput.jsonl").read_text().splitlines()
    assert [json.loads(line)["strategy"] for line in lines] == ["finetune", "cromo"]
    table = (out / "throughput.md").read_text().splitlines()
    header_cells = table[0].count("|")
    assert table[0] == throughput.MARKDOWN_HEADER.splitlines()[0] and len(table) == 4
    for row, record in zip(table[2:], records):
        assert row.count("|") == header_cells
        assert f"| {record['strategy']} | {record['method']} | {record['task']} | {record['batch']} |" in row
        assert f"{record['images_per_s']:,.0f}" in row


def test_peak_table_and_cost_formats():
    assert throughput.peak_tflops("NVIDIA H100 80GB HBM3", "bfloat16") == 989.5
    assert throughput.peak_tflops("NVIDIA H100 PCIe", "bfloat16") == 756.0
    assert throughput.peak_tflops("NVIDIA H200", "float32") == 494.5
    assert throughput.peak_tflops("cpu", "bfloat16") is None
    assert throughput._cost([{"flops": 3.0}]) == {"flops": 3.0} == throughput._cost({"flops": 3.0})
    assert throughput._cost(None) == {} == throughput._cost([])


class _Lowered:
    """A lowered program whose backend cannot analyse lowered HLO (PJRT C-API clients, e.g. CUDA)."""

    def __init__(self, compiled_flops: float):
        self.compiled_flops, self.compiles = compiled_flops, 0

    def cost_analysis(self):
        return None

    def compile(self):
        self.compiles += 1
        return type("Compiled", (), {"cost_analysis": lambda _: {"flops": self.compiled_flops}})()


def test_flops_fall_back_to_the_compiled_one_step_program():
    one_step = _Lowered(compiled_flops=7.0)
    assert throughput._step_flops(one_step, {"flops": 3.0}, 1) == (3.0, "compiled one-step program")
    assert one_step.compiles == 0  # the timed program is the one-step program
    # A scan of 4 steps is not one step's count: the one-step program is compiled for it.
    assert throughput._step_flops(one_step, {"flops": 3.0}, 4) == (7.0, "compiled one-step program")
    assert one_step.compiles == 1
    assert throughput._step_flops(_Lowered(compiled_flops=0.0), {}, 4) == (None, "n/a")


def test_flags_override_every_preset_configuration():
    args = throughput._parser().parse_args(["--preset", "targets", "--steps_per_call", "4", "--compiler_option",
                                            "xla_gpu_autotune_level=0"])
    benches = throughput.configurations(args)
    assert [b.strategy for b in benches] == ["finetune", "cromo"]
    assert all(b.steps_per_call == 4 and b.compiler_options == (("xla_gpu_autotune_level", "0"),) for b in benches)
    assert [b.batch for b in benches] == [512, 256] and benches[1].replay == 64
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        throughput.configurations(throughput._parser().parse_args(["--compiler_option", "oops"]))


def test_one_line_errors():
    with pytest.raises(ValueError, match="single joint task"):
        throughput.measure(throughput.Bench(strategy="offline", task="later", batch=8, width=8, head_scale=1 / 64,
                                            samples_per_class=8, dtype="float32"))
    with pytest.raises(ValueError, match="--setting 'cifar7'"):
        throughput.make_config(throughput.Bench(setting="cifar7"))
