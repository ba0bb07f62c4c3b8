"""The SLURM backend against a real single-node SLURM (Debian's slurmctld, slurmd and munge on localhost), started by
this module and stopped after it. Skipped where those daemons are not installed; `.ci/run` installs them."""

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

import lorakit.sweeps.__main__ as cli
from tests.test_packed_sweep import NUMBERS, tiny_sweep
from tests.test_sweeps import COMPARED

DAEMONS = ("slurmctld", "slurmd", "munged", "sbatch")
pytestmark = pytest.mark.skipif(
    any(shutil.which(d) is None and not Path(f"/usr/sbin/{d}").exists() for d in DAEMONS) or os.geteuid() != 0,
    reason="needs Debian's slurm-wlm and munge, run as root",
)


def slurm_conf(folder: Path) -> str:
    node = socket.gethostname().split(".")[0]
    return f"""ClusterName=loratest
SlurmctldHost={node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
StateSaveLocation={folder}/ctld
SlurmdSpoolDir={folder}/d
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
SlurmctldPort=26817
SlurmdPort=26818
MpiDefault=none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName={node} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def start_munge() -> None:
    if subprocess.run(["munge", "-n"], capture_output=True).returncode == 0:
        return
    Path("/run/munge").mkdir(parents=True, exist_ok=True)
    shutil.chown("/run/munge", "munge", "munge")
    subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"], check=True)


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    folder = tmp_path_factory.mktemp("slurm")
    for sub in ("ctld", "d"):
        (folder / sub).mkdir()
    (folder / "slurm.conf").write_text(slurm_conf(folder))
    start_munge()
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(folder / "slurm.conf")
    daemons = [
        subprocess.Popen([f"/usr/sbin/{d}", "-D", "-f", str(folder / "slurm.conf")]) for d in ("slurmd", "slurmctld")
    ]
    deadline = time.time() + 60
    while time.time() < deadline:
        shown = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True).stdout.strip()
        if shown in ("idle", "mixed"):
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"slurm did not come up: sinfo says {shown!r}; see {folder}/slurmctld.log")
    yield folder
    for daemon in daemons:
        daemon.terminate()
        daemon.wait(timeout=30)
    if previous is None:
        os.environ.pop("SLURM_CONF")
    else:
        os.environ["SLURM_CONF"] = previous


def test_slurm_backend_gives_the_local_results_table(slurm_cluster, tmp_path, no_dropout_bert, tiny_glue_dir):
    """One job array of two tasks: a pack of 2 (Init[A] and Init[B]) and a PEFT-scheme point, which runs alone."""
    slurm = {"partition": "debug", "time_min": 10, "cpus_per_run": 1, "array_parallelism": 2}
    grid = {"learning_rate": [1e-2], "lora_init": ["A", "B", "gaussian"]}
    on_slurm = tiny_sweep(tmp_path / "slurm", no_dropout_bert, tiny_glue_dir, grid=grid, slurm=slurm, pack=2)
    on_local = tiny_sweep(tmp_path / "local", no_dropout_bert, tiny_glue_dir, grid=grid)
    assert cli.main(["run", str(on_slurm), "--backend", "slurm"]) == 0
    assert cli.main(["run", str(on_local)]) == 0
    from_slurm = pd.read_csv(tmp_path / "slurm" / "out" / "results.csv").sort_values("run_id", ignore_index=True)
    from_local = pd.read_csv(tmp_path / "local" / "out" / "results.csv").sort_values("run_id", ignore_index=True)
    assert len(from_slurm) == 3 and set(from_slurm["status"]) == {"done"}
    pd.testing.assert_frame_equal(from_slurm[COMPARED[:4]], from_local[COMPARED[:4]])
    pd.testing.assert_frame_equal(from_slurm[NUMBERS], from_local[NUMBERS], rtol=1e-5)  # packed: within 1e-5
    packs = {
        row.lora_init: json.loads((Path(row.run_dir) / "attempts.json").read_text())[-1].get("pack")
        for row in from_slurm.itertuples()
    }
    assert len(packs["A"]) == len(packs["B"]) == 2 and not packs["gaussian"]
    assert len(list((tmp_path / "slurm" / "out" / "slurm").glob("*/*_result.pkl"))) == 2  # two tasks, via sbatch
    assert cli.main(["run", str(on_slurm), "--backend", "slurm"]) == 0  # idempotent: nothing left to submit
    assert (pd.read_csv(tmp_path / "slurm" / "out" / "results.csv")["attempts"] == 1).all()
