"""Every pair format read through a real (small) Ray cluster, plus the bad-input corpus end to end."""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bad_pairs import MARKER, POLICY, BadCorpus, build_bad_corpus
from object_store import moto_s3_server
from PIL import Image
from published_layouts import write_bytemorph_bench

from editcaption.images import decode_image
from editcaption.io import (
    PAIR_ROW_SCHEMA,
    detect_format,
    read_pairs,
    split_quarantine,
    to_quarantined_records,
    validate_pairs,
    write_parquet,
)
from editcaption.io.webdataset import expand_braces
from editcaption.schema import pair_id_for

pytestmark = pytest.mark.slow
SAMPLE_COUNT = 30


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    import ray
    import ray.data

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def samples(sample_pairs_dir: Path) -> dict[str, dict[str, Any]]:
    """pair_id -> source/target bytes and meta of the bundled sample pairs."""
    out = {}
    for folder in sorted(p for p in sample_pairs_dir.iterdir() if p.is_dir()):
        out[folder.name] = {
            "source": (folder / "source.png").read_bytes(),
            "target": (folder / "target.png").read_bytes(),
            **json.loads((folder / "meta.json").read_text()),
        }
    return out


@pytest.fixture(scope="module")
def formats(tmp_path_factory: pytest.TempPathFactory, samples: dict[str, dict[str, Any]]) -> dict[str, Path]:
    """The sample pairs written in every other layout."""
    root = tmp_path_factory.mktemp("formats")
    twin = root / "twin"
    for role in ("source", "target"):
        (twin / role).mkdir(parents=True)
        for pid, s in samples.items():
            (twin / role / f"{pid}.png").write_bytes(s[role])
    (twin / "source" / "orphan.png").write_bytes(samples["000-move"]["source"])

    lines = [
        json.dumps(
            {
                "pair_id": pid,
                "source": f"twin/source/{pid}.png",
                "target": f"twin/target/{pid}.png",
                "instruction": s["instruction"],
                "category": s["category"],
            }
        )
        for pid, s in samples.items()
    ]
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    table = pa.table(
        {
            "pair_id": list(samples),
            "source": [s["source"] for s in samples.values()],
            "target": [s["target"] for s in samples.values()],
            "instruction": [s["instruction"] for s in samples.values()],
        }
    )
    pq.write_table(table, root / "manifest.parquet")

    # HQ-Edit as published (raw binary) and as `datasets` writes it (image structs).
    items = list(samples.values())
    for name, wrap in (("hqedit", lambda b, p: b), ("hqedit-struct", lambda b, p: {"bytes": b, "path": p})):
        (root / name).mkdir()
        for part, chunk in enumerate((items[:15], items[15:])):
            table = {
                "input_image": [wrap(s["source"], "in.png") for s in chunk],
                "output_image": [wrap(s["target"], "out.png") for s in chunk],
                "edit": [s["instruction"] for s in chunk],
                "inverse_edit": [s["inverse_instruction"] for s in chunk],
            }
            pq.write_table(pa.table(table), root / name / f"part-{part}.parquet")

    bm = root / "bytemorph"
    for index, (pid, s) in enumerate(samples.items()):
        folder = bm / s["category"]
        folder.mkdir(parents=True, exist_ok=True)
        src, tgt = Image.open(io.BytesIO(s["source"])), Image.open(io.BytesIO(s["target"]))
        both = Image.new("RGB", (src.width + tgt.width, src.height))
        both.paste(src, (0, 0))
        both.paste(tgt, (src.width, 0))
        both.save(folder / f"{pid}.png")
        meta = {"edit": s["instruction"]} | ({"category": "from-json"} if index % 2 else {})
        (folder / f"{pid}.json").write_text(json.dumps(meta))

    wds = root / "wds"
    wds.mkdir()
    for shard in range(3):
        with tarfile.open(wds / f"pairs-{shard:03d}.tar", "w") as tar:
            for pid in list(samples)[shard * 10 : shard * 10 + 10]:
                s = samples[pid]
                names = ("src", "tgt") if shard == 1 else ("source", "target")
                files = {f"{names[0]}.png": s["source"], f"{names[1]}.png": s["target"]}
                if shard == 1:
                    files["txt"] = s["instruction"].encode()
                else:
                    files["json"] = json.dumps(
                        {"instruction": s["instruction"], "category": s["category"]}
                    ).encode()
                for ext, data in files.items():
                    info = tarfile.TarInfo(f"{pid}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return {
        "root": root,
        "twin": twin,
        "bytemorph": bm,
        "wds": wds,
        "hqedit": root / "hqedit",
        "hqedit-struct": root / "hqedit-struct",
    }


def by_id(ds: Any) -> dict[str, dict[str, Any]]:
    rows = ds.take_all()
    ids = [r["pair_id"] for r in rows]
    assert len(ids) == len(set(ids)), Counter(ids).most_common(3)
    return {r["pair_id"]: r for r in rows}


def assert_samples(rows: dict[str, dict[str, Any]], samples: dict[str, dict[str, Any]], dataset: str) -> None:
    assert set(rows) == set(samples)
    for pid, row in rows.items():
        assert row["quarantine_reason"] is None, row["quarantine_detail"]
        assert row["dataset"] == dataset
        assert (row["source"], row["target"]) == (samples[pid]["source"], samples[pid]["target"])
        assert row["reference_instruction"] == samples[pid]["instruction"]


def test_folder_layout(sample_pairs_dir: Path, samples: dict[str, dict[str, Any]]) -> None:
    rows = by_id(read_pairs(str(sample_pairs_dir), "folder"))
    assert_samples(rows, samples, "folder")
    row = rows["004-move"]
    assert (
        row["category"] == "move" and row["inverse_instruction"] == samples["004-move"]["inverse_instruction"]
    )
    assert row["source_uri"] == str(sample_pairs_dir / "004-move" / "source.png")


def test_twin_folders(formats: dict[str, Path], samples: dict[str, dict[str, Any]]) -> None:
    rows = by_id(read_pairs(str(formats["twin"])))
    orphan = rows.pop("orphan")
    assert orphan["quarantine_reason"] == "missing_file" and "target" in orphan["quarantine_detail"]
    for pid, row in rows.items():
        assert (row["source"], row["target"]) == (samples[pid]["source"], samples[pid]["target"])


def test_manifests(formats: dict[str, Path], samples: dict[str, dict[str, Any]]) -> None:
    assert_samples(by_id(read_pairs(str(formats["root"] / "manifest.jsonl"))), samples, "manifest")
    rows = by_id(read_pairs(str(formats["root"] / "manifest.parquet")))
    assert_samples(rows, samples, "manifest")
    assert rows["000-move"]["source_uri"] is None


@pytest.mark.parametrize("layout", ["hqedit", "hqedit-struct"])
def test_hqedit(formats: dict[str, Path], samples: dict[str, dict[str, Any]], layout: str) -> None:
    rows = by_id(read_pairs(str(formats[layout])))
    expected = {pair_id_for(s["source"], s["target"]): s for s in samples.values()}
    assert set(rows) == set(expected)
    for pid, row in rows.items():
        assert row["dataset"] == "hqedit" and row["quarantine_reason"] is None
        assert row["source"] == expected[pid]["source"]
        assert (row["reference_instruction"], row["inverse_instruction"]) == (
            expected[pid]["instruction"],
            expected[pid]["inverse_instruction"],
        )


def test_bytemorph_halves(formats: dict[str, Path], samples: dict[str, dict[str, Any]]) -> None:
    rows = by_id(read_pairs(str(formats["bytemorph"])))
    assert len(rows) == SAMPLE_COUNT
    for index, (pid, s) in enumerate(samples.items()):
        row = rows[f"{s['category']}/{pid}"]
        assert row["quarantine_reason"] is None and row["dataset"] == "bytemorph"
        for role in ("source", "target"):
            assert Image.open(io.BytesIO(row[role])).tobytes() == Image.open(io.BytesIO(s[role])).tobytes()
        assert row["reference_instruction"] == s["instruction"]
        assert row["category"] == ("from-json" if index % 2 else s["category"])
        assert row["source_uri"].endswith(f"{pid}.png#left")


@pytest.fixture(scope="module")
def published(
    tmp_path_factory: pytest.TempPathFactory, samples: dict[str, dict[str, Any]]
) -> dict[str, Path]:
    """The sample pairs as a dataset-hub snapshot of ByteMorph-Bench (`published_layouts`); record by
    record, the published layouts are tested without Ray in `tests/test_published_layouts.py`."""
    root = tmp_path_factory.mktemp("published")
    items = [{**s, "id": pid} for pid, s in samples.items()]
    return {"bm-bench": write_bytemorph_bench(root / "bm-bench", items)}


def test_bytemorph_bench_parquet_as_published(
    published: dict[str, Path], samples: dict[str, dict[str, Any]]
) -> None:
    """Auto-detected from the hub snapshot folder, a split file, or named explicitly: image_id is the
    pair id, edit_prompt the reference instruction, edit_type the category."""
    snapshot = published["bm-bench"]
    one_file = snapshot / "data" / "test-00001-of-00002.parquet"  # the second half: 15 of 30
    assert detect_format(str(snapshot)) == detect_format(str(one_file)) == "bytemorph"
    for uri, fmt in ((snapshot, "auto"), (snapshot, "bytemorph"), (snapshot / "data", "bytemorph")):
        rows = by_id(read_pairs(str(uri), fmt))
        assert_samples(rows, samples, "bytemorph")
        for index, (pid, s) in enumerate(samples.items()):
            assert rows[pid]["category"] == f"{index % 5}_{s['category']}"
    assert len(by_id(read_pairs(str(one_file)))) == SAMPLE_COUNT - 15


def test_webdataset_shards(formats: dict[str, Path], samples: dict[str, dict[str, Any]]) -> None:
    wds = formats["wds"]
    for uri in (wds, wds / "pairs-{000..002}.tar", wds / "pairs-*.tar"):
        assert_samples(by_id(read_pairs(str(uri))), samples, "webdataset")
    single = by_id(read_pairs(str(wds / "pairs-001.tar")))
    assert len(single) == 10 and all(r["category"] is None for r in single.values())
    assert expand_braces("a{08..10}{x,y}") == ["a08x", "a08y", "a09x", "a09y", "a10x", "a10y"]


def write_tar(path: Path, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_webdataset_bad_samples(tmp_path: Path, samples: dict[str, dict[str, Any]]) -> None:
    s = samples["000-move"]
    write_tar(
        tmp_path / "bad.tar",
        {
            "ok.source.png": s["source"],
            "ok.target.png": s["target"],
            "lonely.source.png": s["source"],
            "badjson.src.png": s["source"],
            "badjson.tgt.png": s["target"],
            "badjson.json": b"{nope",
        },
    )
    write_tar(tmp_path / "cut.tar", {"partial.source.png": s["source"], "partial.target.png": s["target"]})
    whole = (tmp_path / "cut.tar").read_bytes()
    target_data = 512 + -(-len(s["source"]) // 512) * 512 + 512  # two headers and the padded source
    (tmp_path / "cut.tar").write_bytes(whole[: target_data + len(s["target"]) // 2])
    rows = by_id(read_pairs(str(tmp_path), "webdataset"))
    reasons = {pid: r["quarantine_reason"] for pid, r in rows.items()}
    assert reasons.pop("ok") is None and reasons.pop("lonely") == "missing_file"
    assert reasons.pop("badjson") == "bad_record" and reasons.pop("partial") == "missing_file"
    assert list(reasons.values()) == ["read_error"], reasons  # the cut shard itself
    (shard_row,) = (rows[pid] for pid in reasons)
    assert shard_row["source_uri"].endswith("cut.tar") and "unreadable" in shard_row["quarantine_detail"]


def test_pair_ids_are_stable(formats: dict[str, Path], sample_pairs_dir: Path) -> None:
    for uri in (sample_pairs_dir, formats["hqedit"], formats["wds"]):
        first = sorted(r["pair_id"] for r in read_pairs(str(uri)).take_all())
        assert first == sorted(r["pair_id"] for r in read_pairs(str(uri)).take_all())


def test_auto_detection(formats: dict[str, Path], sample_pairs_dir: Path, tmp_path: Path) -> None:
    root = formats["root"]
    expected = {
        sample_pairs_dir: "folder",
        formats["twin"]: "folder",
        root / "manifest.jsonl": "manifest",
        root / "manifest.parquet": "manifest",
        formats["hqedit"]: "hqedit",
        formats["hqedit-struct"] / "part-0.parquet": "hqedit",
        formats["bytemorph"]: "bytemorph",
        formats["wds"]: "webdataset",
        formats["wds"] / "pairs-000.tar": "webdataset",
        formats["wds"] / "pairs-{000..001}.tar": "webdataset",
    }
    for path, fmt in expected.items():
        assert detect_format(str(path)) == fmt, path
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="folder, manifest, hqedit, bytemorph, webdataset"):
        read_pairs(str(tmp_path))
    with pytest.raises(ValueError, match="does not exist.*folder, manifest"):
        read_pairs(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="unknown pair format"):
        read_pairs(str(tmp_path), "csv")


def test_file_uri_and_limit(sample_pairs_dir: Path, formats: dict[str, Path]) -> None:
    rows = by_id(read_pairs(f"file://{sample_pairs_dir}", limit=5))
    assert sorted(rows) == sorted(p.name for p in sample_pairs_dir.iterdir())[:5]
    assert all(r["source_uri"].startswith("file:///") and r["source"] for r in rows.values())
    manifest = by_id(read_pairs(f"file://{formats['root'] / 'manifest.jsonl'}", limit=3))
    assert len(manifest) == 3 and all(r["quarantine_reason"] is None for r in manifest.values())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> BadCorpus:
    return build_bad_corpus(tmp_path_factory.mktemp("bad"))


def check_corpus(ds: Any, expected: dict[str, str | None], unkeyed: list[str], tmp_path: Path) -> None:
    validated = validate_pairs(ds, POLICY).materialize()
    rows = by_id(validated)
    got = {pid: rows[pid]["quarantine_reason"] for pid in expected}
    assert got == expected
    assert sorted(r["quarantine_reason"] for pid, r in rows.items() if pid not in expected) == sorted(unkeyed)
    for pid, row in rows.items():
        if row["quarantine_reason"] is None:
            assert row["source"] and row["target"]
            decode_image(row["source"], POLICY)
        else:
            assert row["quarantine_detail"], pid
    ok, quarantined = split_quarantine(validated)
    bad = sum(reason is not None for reason in expected.values()) + len(unkeyed)
    assert ok.count() + quarantined.count() == len(rows) == len(expected) + len(unkeyed)
    assert quarantined.count() == bad
    records = to_quarantined_records(rows.values())
    assert len(records) == bad and all(r.detail for r in records)
    write_parquet(quarantined, str(tmp_path / "quarantine"))
    written = pq.read_table(tmp_path / "quarantine")
    assert written.num_rows == bad and set(written.schema.names) == set(PAIR_ROW_SCHEMA.names)
    from ray.data.expressions import col

    write_parquet(ok.filter(expr=col("pair_id") == "no such pair"), str(tmp_path / "nothing"))
    assert pq.read_table(tmp_path / "nothing").schema.equals(PAIR_ROW_SCHEMA)


def test_bad_corpus_folder(corpus: BadCorpus, tmp_path: Path) -> None:
    check_corpus(read_pairs(str(corpus.folder)), corpus.expected, [], tmp_path)
    details = {
        r["pair_id"]: r["quarantine_detail"]
        for r in validate_pairs(read_pairs(str(corpus.folder)), POLICY).take_all()
    }
    assert "source" in details["missing-source"] and "target" in details["truncated-jpeg"]
    assert "640x480" in details["too-many-pixels"]


def test_bad_corpus_manifest(corpus: BadCorpus, tmp_path: Path) -> None:
    check_corpus(
        read_pairs(str(corpus.manifest)), corpus.manifest_expected, corpus.manifest_unkeyed, tmp_path
    )


def test_exif_rotated_pair_reads_upright(corpus: BadCorpus) -> None:
    row = by_id(validate_pairs(read_pairs(str(corpus.folder)), POLICY))["good-exif-rotated"]
    upright = decode_image(row["source"], POLICY)
    assert upright.size == (256, 192)
    assert np.abs(np.subtract(upright.getpixel((4, 4)), MARKER)).max() < 20


@pytest.fixture
def s3(sample_pairs_dir: Path, tmp_path: Path):
    """A moto S3 server on localhost holding the sample pairs; yields fsspec storage_options. moto[server]
    and s3fs are dev dependencies: without them this fails, it never skips. The server runs as a child
    process (`object_store.moto_s3_server`), so Flask never enters this test process."""
    import s3fs  # noqa: F401 - the reader's s3:// filesystem

    with moto_s3_server(tmp_path / "moto.log") as server:
        options = {
            "key": "test",
            "secret": "test",
            "client_kwargs": {"endpoint_url": server.endpoint, "region_name": "us-east-1"},
        }
        client = server.client()
        client.create_bucket(Bucket="pairs")
        for path in sorted(sample_pairs_dir.rglob("*.*"))[:15]:
            client.put_object(
                Bucket="pairs", Key=f"samples/{path.relative_to(sample_pairs_dir)}", Body=path.read_bytes()
            )
        manifest = "\n".join(
            json.dumps({"source": f"samples/{d}/source.png", "target": f"samples/{d}/target.png"})
            for d in ("000-move", "001-move", "404")
        )
        client.put_object(Bucket="pairs", Key="manifest.jsonl", Body=manifest.encode())
        yield options


def test_object_store(s3: dict[str, Any], samples: dict[str, dict[str, Any]]) -> None:
    rows = by_id(read_pairs("s3://pairs/samples", storage_options=s3))
    assert sorted(rows) == sorted(samples)[:5]
    assert all(r["source_uri"].startswith("s3://pairs/samples/") for r in rows.values())
    assert rows["000-move"]["source"] == samples["000-move"]["source"]
    manifest = by_id(read_pairs("s3://pairs/manifest.jsonl", storage_options=s3))
    assert sorted(r["quarantine_reason"] or "ok" for r in manifest.values()) == ["missing_file", "ok", "ok"]
    assert pair_id_for(samples["001-move"]["source"], samples["001-move"]["target"]) in manifest


def test_a_sampled_benchmark_read_with_a_limit_keeps_exactly_the_sample(
    published: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The eval's trial run (`limit`) of a sampled benchmark in two Parquet files: the sample is drawn
    from the first limited read, and when a second limited read would see the other file first (Ray
    Data's limit keeps whichever blocks come first), those pairs still come back, all of them."""
    import editcaption.evaluation.benchmarks as benchmarks
    from editcaption.images import ImagePolicy

    files = sorted((published["bm-bench"] / "data").glob("*.parquet"))
    reads: list[int | None] = []

    def read_in_turn(uri: str, format: str, limit: int | None = None) -> Any:
        reads.append(limit)
        if limit is None:
            return read_pairs(uri, format)
        return read_pairs(str(files[0] if len(reads) == 1 else files[1]), format, limit=limit)

    monkeypatch.setattr(benchmarks, "read_pairs", read_in_turn)
    bench = benchmarks.BenchmarkConfig(
        name="bm", format="bytemorph", uri=str(published["bm-bench"]), sample_size=1000
    )
    rows = benchmarks.read_benchmark(bench, ImagePolicy(reject_identical=False), limit=4).take_all()
    in_first_file = {r["pair_id"] for r in read_pairs(str(files[0]), "bytemorph").take_all()}
    assert reads[0] == 4 and len(rows) == 4 and {r["pair_id"] for r in rows} <= in_first_file
    assert {r["benchmark"] for r in rows} == {"bm"}
