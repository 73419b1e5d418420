"""``cluster.json`` read as a typed record (``provision._record``): files written before the record was typed
still load (fixtures in the shape the dict-building code wrote), a malformed file is refused naming the file and
the field, and what is written reads back equal."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from errors import InvalidRequest, NotFound
from provision import ClusterRecord, NodeRecord, load_cluster
from provision._record import CLUSTER_FILE, read_cluster, write_cluster

FIXTURES = Path(__file__).parent / "fixtures"


def test_a_loopback_cluster_written_by_the_untyped_code_loads() -> None:
    record = read_cluster(FIXTURES / "cluster-loopback.json")
    assert (record.name, record.disk, record.network, record.provisioner, record.memory) == \
        ("demo", "block", "loopback", "process", None)
    assert (record.client_config, record.context) == ("/home/op/.graven/config", "demo")
    assert record.etcd_ca_cert is None and record.subnet is None and record.bridge is None
    assert [(n.name, n.endpoint, n.pid) for n in record.nodes] == \
        [("demo-1", "127.0.0.1:50000", 4101), ("demo-2", "127.0.0.1:41873", 4102)]
    assert record.nodes[0].disk == "/home/op/.graven/clusters/demo/nodes/demo-1/disk.img"
    assert all(n.type is None and n.netns is None for n in record.nodes)


def test_a_namespaced_cluster_written_by_the_untyped_code_loads() -> None:
    record = read_cluster(FIXTURES / "cluster-netns.json")
    assert (record.network, record.subnet, record.bridge, record.provisioner, record.memory) == \
        ("netns", "198.18.7.0/24", "gvb-e2e-4242", "container", "512M")
    assert record.etcd_ca_key == "/tmp/clusters/e2e-4242/etcd-ca.key"
    cp, worker = record.nodes
    assert (cp.type, cp.address, cp.pid, cp.tap) == ("controlplane", "198.18.7.2", 5150, None)
    assert (worker.type, worker.netns, worker.pid) == ("worker", "graven.e2e-4242.e2e-4242-worker-1", None)


def test_the_record_prints_and_saves_in_the_files_own_shape(tmp_path: Path) -> None:
    """Every key the untyped code wrote is still written, with the same value."""
    for fixture in ("cluster-loopback.json", "cluster-netns.json"):
        old = json.loads((FIXTURES / fixture).read_text())
        record = read_cluster(FIXTURES / fixture)
        doc = record.to_json()
        assert {k: doc[k] for k in old if k != "nodes"} == {k: v for k, v in old.items() if k != "nodes"}
        new_nodes = doc["nodes"]
        assert isinstance(new_nodes, list)
        for new_node, old_node in zip(new_nodes, old["nodes"], strict=True):
            assert {k: new_node[k] for k in old_node} == old_node
        write_cluster(tmp_path, record)
        text = (tmp_path / CLUSTER_FILE).read_text()
        assert text == json.dumps(doc, indent=2, sort_keys=True) + "\n"
        assert read_cluster(tmp_path / CLUSTER_FILE) == record


def test_an_older_file_without_the_provisioner_and_unknown_keys_loads(tmp_path: Path) -> None:
    doc = json.loads((FIXTURES / "cluster-loopback.json").read_text())
    del doc["provisioner"], doc["memory"], doc["network"]
    doc["from_the_future"] = {"x": 1}
    doc["nodes"][0]["also_new"] = [1, 2]
    (tmp_path / CLUSTER_FILE).write_text(json.dumps(doc))
    record = read_cluster(tmp_path / CLUSTER_FILE)
    assert (record.provisioner, record.memory, record.network) == ("process", None, "loopback")
    assert record.nodes[0].name == "demo-1"


@pytest.mark.parametrize(("change", "field"), [
    (lambda d: d["nodes"][1].update(pid="4102"), r"\$\.nodes\[1\]\.pid"),
    (lambda d: d["nodes"][0].pop("root"), r"missing required field `root` - at `\$\.nodes\[0\]`"),
    (lambda d: d["nodes"][0].update(type="boss"), r"\$\.nodes\[0\]\.type"),
    (lambda d: d.update(network="wifi"), r"\$\.network"),
    (lambda d: d.update(nodes={"demo-1": {}}), r"\$\.nodes"),
    (lambda d: d.pop("ca_cert"), r"missing required field `ca_cert`"),
])
def test_a_malformed_record_is_refused_naming_the_file_and_the_field(tmp_path: Path, change, field: str) -> None:
    doc = json.loads((FIXTURES / "cluster-loopback.json").read_text())
    change(doc)
    path = tmp_path / CLUSTER_FILE
    path.write_text(json.dumps(doc))
    with pytest.raises(InvalidRequest, match=rf"{path}: malformed cluster record: .*{field}") as info:
        read_cluster(path)
    assert info.value.details["path"] == str(path)


def test_a_file_that_is_not_json_or_missing_is_named(tmp_path: Path) -> None:
    (tmp_path / "c1").mkdir()
    (tmp_path / "c1" / CLUSTER_FILE).write_text('{"name": "c1", ')
    with pytest.raises(InvalidRequest, match=rf"{tmp_path}/c1/{CLUSTER_FILE}: unreadable, not JSON: .*truncated"):
        load_cluster(tmp_path, "c1")
    with pytest.raises(NotFound, match=r"no cluster 'c2' under .*gravenctl cluster create --name c2"):
        load_cluster(tmp_path, "c2")


def test_load_cluster_reads_the_named_clusters_record(tmp_path: Path) -> None:
    (tmp_path / "demo").mkdir()
    shutil.copy(FIXTURES / "cluster-loopback.json", tmp_path / "demo" / CLUSTER_FILE)
    assert load_cluster(tmp_path, "demo") == read_cluster(FIXTURES / "cluster-loopback.json")


_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
_opt = st.none() | _text
_nodes = st.builds(NodeRecord, name=_text, root=_text, endpoint=_text, config=_text, log=_text, disk=_opt,
                   pid=st.none() | st.integers(1, 2**22), type=st.sampled_from([None, "controlplane", "worker"]),
                   address=_opt, netns=_opt, host_veth=_opt, tap=_opt)
_records = st.builds(ClusterRecord, name=_text, created=_text, disk=st.sampled_from(["sandbox", "block"]),
                     state_dir=_text, gravenconfig=_text, ca_cert=_text, ca_key=_text, image_key=_text,
                     image_pubkey=_text, etcd_ca_cert=_opt, etcd_ca_key=_opt, image=_opt, image_version=_opt,
                     client_config=_opt, context=_opt, network=st.sampled_from(["netns", "loopback"]), subnet=_opt,
                     bridge=_opt, provisioner=st.sampled_from(["process", "container", "qemu"]), memory=_opt,
                     nodes=st.lists(_nodes, max_size=3))


@given(_records)
def test_what_is_written_reads_back_equal(record: ClusterRecord) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        write_cluster(Path(d), record)
        assert read_cluster(Path(d) / CLUSTER_FILE) == record
