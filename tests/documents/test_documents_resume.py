"""Exact resume for every documents mode: midpoints, workers, world size 2 <-> 1, a new process."""

import hashlib
import json
import subprocess
import sys

import pytest
from _util import TESTS, check_resume, make_doc_shards, roundtrip, take

import streamtok

T, B = 16, 4
MODES = ["mask", "bos", "pack"]


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
    path = tmp_path_factory.mktemp("docs")
    make_doc_shards(path, n_shards=2, docs=80, median=10)
    return path


def make(path, documents, **kw):
    kw = {"seq_len": T, "batch_size": B, "split": "all", "epochs": 2, "seed": 4, "metrics": False, **kw}
    if documents == "pack":
        kw.setdefault("block_docs", 30)
    return streamtok.loader(path, documents=documents, **kw)


def digest(batch):
    x, y, doc = batch
    h = hashlib.sha1(x.numpy().tobytes())
    for t in (y, doc.position_ids, doc.cu_seqlens):
        h.update(t.numpy().tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("documents", MODES)
def test_resume_at_midpoints_with_any_workers(docs, documents):
    full = [digest(b) for b in make(docs, documents)]
    assert len(full) == len(make(docs, documents)) > 6
    assert [digest(b) for b in make(docs, documents, num_workers=2)] == full
    for k, workers in [(1, 0), (len(full) // 2 + 1, 2), (len(full) - 1, 1)]:
        first = make(docs, documents, num_workers=workers)
        head = [digest(b) for b in take(first, k)]
        resumed = make(docs, documents, num_workers=2 - workers % 2)
        resumed.load_state_dict(roundtrip(first.state_dict()))
        assert head + [digest(b) for b in resumed] == full, f"resume at step {k} diverged"


@pytest.mark.parametrize("documents", MODES)
def test_world_size_two_to_one_and_back(docs, documents):
    """Two ranks of B rows read the rows one rank of 2B reads; the position carries over."""
    one = [b[0] for b in make(docs, documents, batch_size=2 * B, rank=0, world_size=1)]
    ranks = [make(docs, documents, rank=r, world_size=2) for r in (0, 1)]
    k = len(one) // 3
    heads = [[b[0] for b in take(r, k)] for r in ranks]
    for step in range(k):
        assert (heads[0][step].tolist() + heads[1][step].tolist()) == one[step].tolist()
    single = make(docs, documents, batch_size=2 * B, rank=0, world_size=1)
    single.load_state_dict(roundtrip(ranks[0].state_dict()))
    rest = [b[0] for b in take(single, 2)]
    assert [t.tolist() for t in rest] == [t.tolist() for t in one[k : k + 2]]
    back = make(docs, documents, rank=1, world_size=2)
    back.load_state_dict(roundtrip(single.state_dict()))
    assert next(iter(back))[0].tolist() == one[k + 2][B:].tolist()


def test_states_of_other_modes_are_refused(docs):
    pack = make(docs, "pack")
    bos = make(docs, "bos")
    with pytest.raises(streamtok.StateMismatchError, match="documents"):
        pack.load_state_dict(make(docs, "bos").state_dict())
    with pytest.raises(streamtok.StateMismatchError, match="documents"):
        bos.load_state_dict(make(docs, "mask").state_dict())
    with pytest.raises(streamtok.StateMismatchError, match="block_docs"):
        pack.load_state_dict(make(docs, "pack", block_docs=31).state_dict())


SCRIPT = """
import json, sys
sys.path[:0] = [{tests!r}, {tests!r} + "/documents"]
from test_documents_resume import digest, make
loader = make({path!r}, {documents!r}, num_workers={workers})
loader.load_state_dict(json.load(open({state!r})))
print(json.dumps([digest(b) for b in loader]))
"""


@pytest.mark.parametrize("documents", ["bos", "pack"])  # "mask" orders as "stream", tested so
def test_resume_in_a_new_process(docs, documents, tmp_path):
    full = [digest(b) for b in make(docs, documents)]
    first = make(docs, documents)
    head = [digest(b) for b in take(first, 5)]
    state = tmp_path / "state.json"
    state.write_text(json.dumps(first.state_dict()))
    code = SCRIPT.format(tests=str(TESTS), path=str(docs), documents=documents, workers=1, state=str(state))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert head + json.loads(out.stdout.strip().splitlines()[-1]) == full


@pytest.mark.slow
def test_spawned_workers_reopen_the_index(docs):
    """Workers started by spawn get the index by pickle: it is reopened from the sidecars."""
    ref = [digest(b) for b in make(docs, "pack", epochs=1)]
    spawned = make(docs, "pack", epochs=1, num_workers=1, multiprocessing_context="spawn")
    assert [digest(b) for b in spawned] == ref


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("documents", MODES)
def test_resume_within_and_at_the_end_of_every_pass(docs, documents, workers):
    """Three passes; pack resumed a state saved after a pass's last batch into a whole extra epoch."""
    midpoints = [1, 5] if workers == 0 else [5]  # workers cost a start per pass: fewer resumes
    n = check_resume(lambda: make(docs, documents, epochs=1, num_workers=workers), midpoints, passes=3)
    assert n > 5


def test_a_pack_state_saved_after_the_last_batch_resumes_into_nothing(docs):
    first = make(docs, "pack", epochs=1)
    n = len(first)
    take(first, n)  # the last batch, inside the loop: the pass has not ended
    resumed = make(docs, "pack", epochs=1)
    resumed.load_state_dict(roundtrip(first.state_dict()))
    assert list(resumed) == []
    assert len(list(resumed)) == n  # then the next epoch, as iterating again would give
