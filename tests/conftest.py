import numpy as np
import pytest
from _util import make_shards


@pytest.fixture(autouse=True, scope="session")
def _private_run_dir(tmp_path_factory):
    """Loaders publish metrics by default: keep the suite's runs out of the user's run list."""
    mp = pytest.MonkeyPatch()
    mp.setenv("STREAMTOK_RUN_DIR", str(tmp_path_factory.mktemp("runs")))
    yield
    mp.undo()


@pytest.fixture
def shard_dir(tmp_path):
    """Four llm.c uint32 shards (the last one held out as val) with tokens equal to positions."""
    tokens = make_shards(tmp_path / "data", [5000, 3001, 4097, 2000])
    return tmp_path / "data", tokens


@pytest.fixture
def gpt2_dir(tmp_path):
    """Three llm.c uint16 shards of random GPT-2-range ids."""
    rng = np.random.default_rng(7)
    from streamtok._formats import write_shard

    parts = []
    for k, n in enumerate([6000, 4500, 3000]):
        t = rng.integers(0, 50257, n, dtype=np.uint16)
        write_shard(tmp_path / "gpt2" / f"fw_train_{k:06d}.bin", t)
        parts.append(t)
    return tmp_path / "gpt2", np.concatenate(parts)
