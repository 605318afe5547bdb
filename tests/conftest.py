import os
import pathlib

import pytest
import torch

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


@pytest.fixture(scope="session")
def shared_data_root() -> pathlib.Path:
    """The real data: ``$RANVIER_DATA`` or ``<repo>/../shared/data``.

    Every file the loaders know must be there; otherwise the test is skipped, or fails under
    ``CI=true`` (CI has the data, so a missing file there is a broken set-up, not a skip).
    """
    from ranvier.data import mnist as mnist_mod
    from ranvier.data.text import CORPORA

    env = os.environ.get("RANVIER_DATA")
    root = pathlib.Path(env) if env else REPO.parent / "shared" / "data"
    expected = [root / ds / name for ds, table in mnist_mod.CHECKSUMS.items() for name in table]
    expected += [root / spec.folder / f.name for spec in CORPORA.values() for f in spec.files.values()]
    missing = [str(path) for path in expected if not path.is_file()]
    if missing:
        msg = f"real data missing under {root}: {', '.join(missing)}"
        if in_ci():
            pytest.fail(msg)
        pytest.skip(msg)
    return root


@pytest.fixture
def data_dir(shared_data_root: pathlib.Path) -> str:
    return str(shared_data_root)
