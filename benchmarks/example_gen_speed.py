"""CsvExampleGen's executor against FastCsvExecutor (through Beam, and without) on the same CSV.

    TF_USE_LEGACY_KERAS=1 .venv/bin/python benchmarks/example_gen_speed.py [--rows 150000]
        [--data-dir DIR] [--pattern span-*/data.csv] [--check]

The input is `tfx-template generate-data DIR --rows N` (made once, in outputs/data-N like
`make data-large`, unless --data-dir names a dataset); every span's data.csv is read by one
ExampleGen execution (pattern span-*/data.csv, as when ExampleGen reads the whole window), and
split train/eval 2:1 by hash as the pipeline does. Each executor runs in its own process
(its `Do` with real artifacts, no Beam arguments: the in-process DirectRunner), and prints its
wall time, rows/s and peak memory (maximum resident set of that process): TFX's executor,
FastCsvExecutor held on its Beam path ("fast-beam"), and FastCsvExecutor as it runs there,
writing without Beam ("fast"). All outputs must have the same number of records per split;
--check also compares the records themselves (canonical form; slow at 1.5M rows: about a
minute per million).
"""

import argparse
import glob
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXECUTORS = ("reference", "fast-beam", "fast")
PATTERN = "span-*/data.csv"
SPLITS = ("train", "eval")


def _data(rows: int, data_dir: Path | None) -> Path:
    if data_dir is not None:
        return data_dir
    target = REPO / "outputs" / f"data-{rows}"
    if not (target / "spans.json").exists():
        subprocess.run(
            [sys.executable, "-m", "cli.main", "generate-data", str(target), "--rows", str(rows)],
            cwd=REPO,
            check=True,
        )
    return target


def _run_one(name: str, data_dir: Path, pattern: str, out: Path) -> None:
    """In the child process: one executor's Do, then one JSON line of its figures."""
    import pipeline.runtime  # noqa: F401 (Keras 2 before TensorFlow loads)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from absl import logging
    from tfx.components.example_gen.csv_example_gen import executor as tfx_csv_executor
    from tfx.proto import example_gen_pb2
    from tfx.types import standard_artifacts, standard_component_specs
    from tfx.utils import proto_utils

    from pipeline.components.fast_csv_example_gen import FastCsvExecutor

    class BeamFastCsvExecutor(FastCsvExecutor):
        def _needs_beam(self, *args: object) -> str:
            return "the benchmark asks for Beam"

    logging.set_verbosity(logging.WARNING)
    executor = {
        "reference": tfx_csv_executor.Executor,
        "fast-beam": BeamFastCsvExecutor,
        "fast": FastCsvExecutor,
    }[name]
    examples = standard_artifacts.Examples()
    examples.uri = str(out)
    output_config = example_gen_pb2.Output(
        split_config=example_gen_pb2.SplitConfig(
            splits=[
                example_gen_pb2.SplitConfig.Split(name="train", hash_buckets=2),
                example_gen_pb2.SplitConfig.Split(name="eval", hash_buckets=1),
            ]
        )
    )
    exec_properties = {
        standard_component_specs.INPUT_BASE_KEY: str(data_dir),
        standard_component_specs.INPUT_CONFIG_KEY: proto_utils.proto_to_json(
            example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(name="s", pattern=pattern)])
        ),
        standard_component_specs.OUTPUT_CONFIG_KEY: proto_utils.proto_to_json(output_config),
        standard_component_specs.OUTPUT_DATA_FORMAT_KEY: example_gen_pb2.FORMAT_TF_EXAMPLE,
    }
    start = time.perf_counter()
    executor().Do({}, {standard_component_specs.EXAMPLES_KEY: [examples]}, exec_properties)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mb": peak_mb}))


def _records(out: Path, split: str) -> list[bytes]:
    import tensorflow as tf

    files = sorted(glob.glob(str(out / f"Split-{split}" / "*.gz")))
    return [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def _count(out: Path, split: str) -> int:
    import tensorflow as tf

    files = sorted(glob.glob(str(out / f"Split-{split}" / "*.gz")))
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
    return int(dataset.reduce(0, lambda n, _: n + 1))


def _compare(outs: dict[str, Path], check: bool) -> list[str]:
    import tensorflow as tf

    def canonical(records: list[bytes]) -> list[bytes]:
        return sorted(
            tf.train.Example.FromString(r).SerializeToString(deterministic=True) for r in records
        )

    lines = []
    for split in SPLITS:
        if not check:
            counts = [_count(outs[name], split) for name in EXECUTORS]
            same = len(set(counts)) == 1
            lines.append(
                f"  {split}: {' / '.join(map(str, counts))} rows, record counts "
                + ("identical" if same else "DIFFER")
            )
            continue
        reference = canonical(_records(outs["reference"], split))
        others = [sorted(_records(outs[name], split)) for name in EXECUTORS[1:]]
        same = all(other == reference for other in others)
        counts = [len(reference)] + [len(other) for other in others]
        lines.append(
            f"  {split}: {' / '.join(map(str, counts))} rows, records "
            + ("identical" if same else "DIFFER")
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=150_000)
    parser.add_argument("--data-dir", type=Path, default=None, help="an existing dataset")
    parser.add_argument("--pattern", default=PATTERN, help="the input split's file pattern")
    parser.add_argument("--check", action="store_true", help="compare the records themselves")
    parser.add_argument("--run-one", choices=EXECUTORS, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_one:
        _run_one(args.run_one, args.data_dir, args.pattern, args.out)
        return 0

    data_dir = _data(args.rows, args.data_dir)
    files = sorted(glob.glob(str(data_dir / args.pattern)))
    rows = 0
    for name in files:
        with open(name, "rb") as file:
            rows += sum(1 for _ in file) - 1  # the header
    work = Path(tempfile.mkdtemp(prefix="example-gen-speed-"))
    figures, outs = {}, {}
    try:
        for name in EXECUTORS:
            outs[name] = work / name
            child = subprocess.run(
                [sys.executable, __file__, "--run-one", name]
                + ["--data-dir", str(data_dir), "--pattern", args.pattern]
                + ["--out", str(outs[name])],
                cwd=REPO,
                check=True,
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONPATH": str(REPO), "TF_USE_LEGACY_KERAS": "1"},
            )
            figures[name] = json.loads(child.stdout.strip().splitlines()[-1])
        print(f"{rows} rows in {len(files)} files ({data_dir}/{args.pattern})")
        for name in EXECUTORS:
            f = figures[name]
            print(
                f"  {name:9} {f['seconds']:8.1f} s {rows / f['seconds']:10,.0f} rows/s"
                f"   peak {f['peak_mb']:,.0f} MB"
            )
        for name in EXECUTORS[1:]:
            speedup = figures["reference"]["seconds"] / figures[name]["seconds"]
            print(f"  speed-up of {name}: {speedup:.1f}x")
        for line in _compare(outs, args.check):
            print(line)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
