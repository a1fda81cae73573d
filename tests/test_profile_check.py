"""An unedited SLURM profile fails before anything is queued, naming the file, line and key."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from minialbert.utils import ConfigError
from minialbert.workflow.profile_check import check_profile, check_profiles_in_use, profiles_in_use

REPO = Path(__file__).resolve().parent.parent


def test_the_shipped_slurm_profile_is_refused_until_edited():
    with pytest.raises(ConfigError) as e:
        check_profile(REPO / "profiles" / "slurm")
    message = str(e.value)
    assert message.startswith(f"workflow profile {REPO / 'profiles' / 'slurm' / 'config.yaml'} still has placeholders")
    for key, value in (("x-cluster.account", "<your-account>"), ("x-cluster.cpu_partition", "<cpu-partition>"),
                       ("x-cluster.gpu_partition", "<gpu-partition>"), ("x-cluster.gpu_model", "<gpu-type>")):
        assert f": {key}: {value}" in message
    assert "default-resources" not in message  # the aliases of the EDIT block are not repeated


def test_edited_profiles_pass():
    check_profile(REPO / "profiles" / "slurm-local")
    check_profile(REPO / "profiles" / "default")


def test_the_line_is_the_placeholders(tmp_path):
    (tmp_path / "config.yaml").write_text("executor: slurm\ndefault-resources:\n  slurm_account: <acct>  # edit\n"
                                          "  runtime: 60\n")
    with pytest.raises(ConfigError, match=r"config.yaml:3: default-resources.slurm_account: <acct>$"):
        check_profile(tmp_path)


def test_the_profiles_of_a_command_line(tmp_path):
    basedir = REPO
    assert profiles_in_use(["snakemake", "-n"], {}, basedir) == [basedir / "profiles" / "default"]
    assert profiles_in_use(["snakemake", "--workflow-profile", "profiles/slurm"], {}, basedir) == \
        [Path("profiles/slurm") if Path("profiles/slurm").is_dir() else basedir / "profiles/slurm"]
    assert profiles_in_use(["snakemake", "--workflow-profile=none"], {"SNAKEMAKE_PROFILE": "slurm"}, basedir) == \
        [basedir / "profiles" / "slurm"]
    with pytest.raises(ConfigError, match="<your-account>"):
        check_profiles_in_use(["snakemake", "--workflow-profile", str(REPO / "profiles" / "slurm")], {}, basedir)
    check_profiles_in_use(["snakemake", "--workflow-profile", str(REPO / "profiles" / "slurm-local")], {}, basedir)


def test_snakemake_refuses_the_unedited_profile_before_building_the_dag(tmp_path):
    import subprocess
    import sys

    snakemake = Path(sys.executable).with_name("snakemake")
    out = subprocess.run([str(snakemake), "-n", "--workflow-profile", str(REPO / "profiles" / "slurm"),
                          "--directory", str(tmp_path), "-s", str(REPO / "Snakefile")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert "x-cluster.account: <your-account>" in out.stdout + out.stderr
    assert "Job stats" not in out.stdout + out.stderr  # nothing planned, nothing queued
