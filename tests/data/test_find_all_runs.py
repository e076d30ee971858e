"""fewshot_acdc.data.find_all_runs: the one finder of Lake's all_runs benchmark (the loader's and
the evaluation's)."""
import pytest

from fewshot_acdc.data import find_all_runs
from fewshot_acdc.data.errors import DatasetNotFoundError


def test_in_a_given_path_it_finds_the_zip_or_the_run_folders(tmp_path):
    (tmp_path / "all_runs.zip").write_bytes(b"")
    assert find_all_runs(tmp_path) == tmp_path / "all_runs.zip"
    assert find_all_runs(tmp_path / "all_runs.zip") == tmp_path / "all_runs.zip"
    (tmp_path / "runs" / "run01").mkdir(parents=True)
    assert find_all_runs(str(tmp_path / "runs")) == tmp_path / "runs"


def test_under_a_data_root_it_searches_the_omniglot_folder(tmp_path):
    (tmp_path / "omniglot").mkdir()
    (tmp_path / "omniglot" / "all_runs.zip").write_bytes(b"")
    assert find_all_runs(data_root=str(tmp_path)) == tmp_path / "omniglot" / "all_runs.zip"
    # what it returns, the loader finds again: one answer whichever asks
    assert find_all_runs(find_all_runs(data_root=str(tmp_path))) == tmp_path / "omniglot" / "all_runs.zip"


def test_not_found_names_where_it_looked_and_what_to_pass(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"was not found in .*omniglot; pass --all-runs PATH"):
        find_all_runs(data_root=str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match=r"Omniglot all_runs not found at"):
        find_all_runs(tmp_path)
