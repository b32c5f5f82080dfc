"""A checkpoint counts once complete: the marker written last, rotation over complete checkpoints only, and
`--resume_from_checkpoint True` after a kill -9 in the middle of a save, in each stage's save format."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_train_e2e import losses, run_train, stage1_args, stage2_args, workspace  # noqa: F401 - a fixture
from transformers.trainer_utils import get_last_checkpoint

from llava.train import checkpoints
from llava.train.checkpoints import COMPLETE, INCOMPLETE, LEGACY, MARKER, Checkpoint

REPO = Path(__file__).resolve().parents[1]
DRIVER = Path(__file__).with_name("kill_during_save.py")


# ---------------------------------------------------------------------- unit: completeness
def _folder(root: Path, step: int, *files: str) -> Path:
    path = root / f"checkpoint-{step}"
    for name in files:
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text("x")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _saved(root: Path, step: int) -> Path:
    """A folder as LLaVATrainer._save_checkpoint leaves it: flagged, files written, marker last."""
    path = root / f"checkpoint-{step}"
    checkpoints.begin_save(path, step)
    _folder(root, step, "mm_projector.bin", "Vit-lora/adapter_model.safetensors", "trainer_state.json")
    checkpoints.write_marker(path, step)
    return path


def test_marker_is_written_last_and_lists_the_files(tmp_path):
    path = tmp_path / "checkpoint-4"
    checkpoints.begin_save(path, 4)
    _folder(tmp_path, 4, "optimizer.pt", "Vit-lora/adapter_model.safetensors", "trainer_state.json")
    assert checkpoints.inspect(path).status == INCOMPLETE  # everything is there but the save is flagged
    checkpoints.write_marker(path, 4)
    marker = json.loads((path / MARKER).read_text())
    assert marker == {"global_step": 4, "files": ["Vit-lora/adapter_model.safetensors", "optimizer.pt",
                                                  "trainer_state.json"]}
    assert sorted(p.name for p in path.iterdir()) == sorted([MARKER, "Vit-lora", "optimizer.pt", "trainer_state.json"])
    assert checkpoints.inspect(path) == Checkpoint(path, 4, COMPLETE)

    (path / "optimizer.pt").unlink()
    assert checkpoints.inspect(path).missing == ("optimizer.pt",)
    (path / MARKER).write_text("{not json")
    assert checkpoints.inspect(path).missing == (f"{MARKER} (unreadable)",)
    checkpoints.begin_save(path, 4)  # a re-save into the same folder drops the old marker first
    assert not (path / MARKER).exists() and checkpoints.inspect(path).status == INCOMPLETE


def test_legacy_and_interrupted_folders(tmp_path):
    legacy = _folder(tmp_path, 2, "mm_projector.bin", "optimizer.pt", "trainer_state.json")
    cut = _folder(tmp_path, 3, "mm_projector.bin")
    assert checkpoints.inspect(legacy) == Checkpoint(legacy, 2, LEGACY)
    assert checkpoints.inspect(cut) == Checkpoint(cut, 3, INCOMPLETE, (MARKER, "trainer_state.json"))
    (tmp_path / "checkpoint-x").mkdir()
    (tmp_path / "notes.txt").write_text("")
    assert [c.step for c in checkpoints.scan(tmp_path)] == [2, 3]
    assert checkpoints.scan(tmp_path / "absent") == []


# ---------------------------------------------------------------------- unit: rotation
def _ck(step: int, status: str = COMPLETE) -> Checkpoint:
    return Checkpoint(Path(f"/run/checkpoint-{step}"), step, status)


def test_rotation_keeps_the_newest_complete_ones():
    cps = [_ck(1), _ck(2, LEGACY), _ck(3, INCOMPLETE), _ck(4), _ck(5, INCOMPLETE)]
    names = lambda paths: sorted(p.name for p in paths)  # noqa: E731
    assert names(checkpoints.rotation_deletions(cps, 1)) == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]
    assert names(checkpoints.rotation_deletions(cps, 2)) == ["checkpoint-1", "checkpoint-3"]
    assert names(checkpoints.rotation_deletions(cps, None)) == ["checkpoint-3"]  # only the interrupted one
    # The save in flight (checkpoint-5) is incomplete: the last complete one stays, whatever the limit.
    assert checkpoints.rotation_deletions([_ck(4), _ck(5, INCOMPLETE)], 1) == []
    assert checkpoints.rotation_deletions([_ck(3, INCOMPLETE), _ck(5, INCOMPLETE)], 1) == []
    # Resumed from checkpoint-2 explicitly, with a complete checkpoint-10 of an older run: the one just written
    # (checkpoint-4) and the newest complete one both stay.
    cps = [_ck(2), _ck(4), _ck(10)]
    assert names(checkpoints.rotation_deletions(cps, 1, protected=[cps[1].path, None])) == ["checkpoint-2"]


def test_rotation_never_deletes_the_newest_complete_or_a_protected_checkpoint():
    rng = random.Random(0)
    for _ in range(2000):
        cps = [_ck(step, rng.choice([COMPLETE, LEGACY, INCOMPLETE])) for step in sorted(rng.sample(range(30), 6))]
        protected = {rng.choice(cps).path} if rng.random() < 0.5 else set()
        limit = rng.choice([None, 0, 1, 2, 3])
        doomed = set(checkpoints.rotation_deletions(cps, limit, protected))
        assert not doomed & protected
        usable = [c for c in cps if c.usable]
        if not usable:
            assert not doomed
            continue
        newest = usable[-1]
        assert newest.path not in doomed
        assert all(c.usable or c.step < newest.step for c in cps if c.path in doomed)  # no newer cut-off save
        assert all(c.path in doomed for c in cps if not c.usable and c.step < newest.step and c.path not in protected)
        kept = [c for c in usable if c.path not in doomed]
        if not limit:
            assert len(kept) == len(usable)
            continue
        always = {c.path for c in usable if c.path in protected or c is newest}
        assert len(kept) == min(len(usable), max(limit, len(always)))
        gone = [c.step for c in usable if c.path in doomed]
        assert all(c.step > max(gone) for c in kept if c.path not in always) if gone else True  # oldest go first


# ---------------------------------------------------------------------- unit: choosing what to resume
def _fake_args(output_dir: Path, value: str) -> SimpleNamespace:
    return SimpleNamespace(output_dir=str(output_dir), resume_from_checkpoint=value, should_save=True,
                           should_log=True, main_process_first=lambda **_: contextlib.nullcontext())


def test_resume_true_takes_the_newest_complete_and_clears_newer_incomplete(tmp_path, capsys):
    from llava.train.train import resume_checkpoint

    old_cut = _folder(tmp_path, 2, "mm_projector.bin")
    _saved(tmp_path, 4)
    newer_cut = tmp_path / "checkpoint-6"
    checkpoints.begin_save(newer_cut, 6)
    _folder(tmp_path, 6, "mm_projector.bin", "trainer_state.json")
    assert resume_checkpoint(_fake_args(tmp_path, "True")) == str(tmp_path / "checkpoint-4")
    line = capsys.readouterr().out.strip()
    assert line == (f"--resume_from_checkpoint True: resuming from {tmp_path / 'checkpoint-4'}; ignored incomplete "
                    f"checkpoints: checkpoint-2 (no {MARKER} / trainer_state.json), checkpoint-6 (no {MARKER}); "
                    "deleted the newer ones: checkpoint-6")
    assert old_cut.is_dir() and not newer_cut.exists()  # older leftovers go with the next save's rotation


def test_resume_true_accepts_legacy_and_starts_fresh_without_any(tmp_path, capsys):
    from llava.train.train import resume_checkpoint

    assert resume_checkpoint(_fake_args(tmp_path / "new_run", "true")) is None
    assert capsys.readouterr().out.strip() == (f"--resume_from_checkpoint True: no complete checkpoint in "
                                               f"{tmp_path / 'new_run'}, starting from scratch")
    _folder(tmp_path, 8, "mm_projector.bin")
    assert resume_checkpoint(_fake_args(tmp_path, "True")) is None
    assert "starting from scratch" in capsys.readouterr().out and not (tmp_path / "checkpoint-8").exists()
    _folder(tmp_path, 5, "non_lora_trainables.bin", "trainer_state.json")  # written before markers existed
    assert resume_checkpoint(_fake_args(tmp_path, "True")) == str(tmp_path / "checkpoint-5")
    assert "(written before completion markers; trainer_state.json present)" in capsys.readouterr().out
    assert resume_checkpoint(_fake_args(tmp_path, str(tmp_path / "checkpoint-5"))) == str(tmp_path / "checkpoint-5")
    assert resume_checkpoint(_fake_args(tmp_path, "False")) is None


def test_an_explicit_incomplete_checkpoint_is_an_error(tmp_path):
    from llava.train.arguments import FlagError
    from llava.train.train import resume_checkpoint

    _saved(tmp_path, 12)
    cut = _folder(tmp_path, 16, "adapter_model.safetensors")
    with pytest.raises(FlagError) as info:
        resume_checkpoint(_fake_args(tmp_path, str(cut)))
    assert str(info.value) == (
        f"--resume_from_checkpoint {cut} is an incomplete checkpoint (its save was interrupted): missing {MARKER}, "
        f"trainer_state.json; the newest complete checkpoint beside it is {tmp_path / 'checkpoint-12'}")


# ---------------------------------------------------------------------- end to end: kill -9 during a save
def run_killed(args: list[str], kill_at: str, log: Path) -> subprocess.CompletedProcess:
    """Train through the test driver, which SIGKILLs itself during the save named by `kill_at`."""
    env = {**os.environ, "KILL_AT": kill_at, "KILL_LOG": str(log)}
    proc = subprocess.run([sys.executable, str(DRIVER), *args], capture_output=True, text=True, timeout=900,
                          cwd=REPO, env=env)
    assert proc.returncode == -signal.SIGKILL, f"expected a SIGKILL, got {proc.returncode}:\n{proc.stderr[-4000:]}"
    return proc


def check_killed(out: Path, previous: int, killed: int, log: Path) -> list[float]:
    """The killed folder is incomplete (though transformers would resume from it) and the previous one complete;
    returns the losses the run logged up to the kill (steps 1..killed, uninterrupted)."""
    found = {c.step: c.status for c in checkpoints.scan(out)}
    assert found == {previous: COMPLETE, killed: INCOMPLETE}, found  # save_total_limit 1 deleted nothing early
    assert get_last_checkpoint(str(out)) == str(out / f"checkpoint-{killed}")
    uninterrupted = json.loads(log.read_text())
    assert len(uninterrupted) == killed
    return uninterrupted


def check_resumed(out: Path, previous: int, killed: int, stdout: str, uninterrupted: list[float],
                  limit_one: bool) -> None:
    lines = [line for line in stdout.splitlines() if line.startswith("--resume_from_checkpoint True:")]
    assert len(lines) == 1, stdout[-3000:]
    assert lines[0].startswith(f"--resume_from_checkpoint True: resuming from {out / f'checkpoint-{previous}'};")
    assert lines[0].endswith(f"deleted the newer ones: checkpoint-{killed}")
    resumed = losses(out)
    assert len(resumed) == len(uninterrupted)
    diff = max(abs(a - b) for a, b in zip(uninterrupted[previous:], resumed[previous:]))
    print(f"{out.name}: uninterrupted {uninterrupted}, resumed {resumed}, max abs diff {diff:.2e}\n{lines[0]}")
    assert diff <= 1e-5
    found = {c.step: c.status for c in checkpoints.scan(out)}
    assert found == ({killed: COMPLETE} if limit_one else {previous: COMPLETE, killed: COMPLETE}), found


@pytest.fixture(scope="module")
def stage1_resumed(workspace) -> Path:  # noqa: F811
    """Stage 1 (projector + ViT LoRA), save_total_limit 1: killed after checkpoint-8's optimizer state is written
    (no RNG state, no trainer_state.json yet), then resumed with True from checkpoint-4."""
    out = workspace["root"] / "kill_stage1"
    args = stage1_args(workspace, out) + ["--save_total_limit", "1"]
    log = workspace["root"] / "kill_stage1.json"
    run_killed(args, "optimizer:8", log)
    uninterrupted = check_killed(out, 4, 8, log)
    proc = run_train(args + ["--resume_from_checkpoint", "True"])
    check_resumed(out, 4, 8, proc.stdout, uninterrupted, limit_one=True)
    return out


@pytest.mark.slow
def test_stage1_resumes_from_the_last_complete_checkpoint(stage1_resumed):
    assert (stage1_resumed / "mm_projector.bin").is_file() and (stage1_resumed / "Vit-lora").is_dir()


@pytest.mark.slow
def test_stage2_lora_resumes_from_the_last_complete_checkpoint(workspace, stage1_resumed):  # noqa: F811
    """Stage 2 (LLM LoRA + ViT LoRA + projector), killed before checkpoint-4's non_lora_trainables is written
    (the reported FileNotFoundError); an explicit path to it fails naming the marker; True resumes from
    checkpoint-2."""
    out = workspace["root"] / "kill_stage2"
    args = stage2_args(workspace, stage1_resumed, out)
    log = workspace["root"] / "kill_stage2.json"
    run_killed(args, "non_lora:4", log)
    uninterrupted = check_killed(out, 2, 4, log)
    assert (out / "checkpoint-4" / "adapter_model.safetensors").is_file()
    assert not (out / "checkpoint-4" / "non_lora_trainables.bin").exists()

    failed = run_train(args + ["--resume_from_checkpoint", str(out / "checkpoint-4")], expect_ok=False)
    assert failed.returncode != 0
    assert failed.stderr.strip().splitlines()[-1] == (
        f"error: --resume_from_checkpoint {out / 'checkpoint-4'} is an incomplete checkpoint (its save was "
        f"interrupted): missing {MARKER}; the newest complete checkpoint beside it is {out / 'checkpoint-2'}")

    proc = run_train(args + ["--resume_from_checkpoint", "True"])
    check_resumed(out, 2, 4, proc.stdout, uninterrupted, limit_one=False)


@pytest.mark.slow
@pytest.mark.distributed
def test_zero3_resumes_from_the_last_complete_checkpoint(workspace):  # noqa: F811
    """ZeRO-3 on 2 processes, save_total_limit 1: rank 0 killed after every file of checkpoint-3 (trainer_state.json
    included) but before its marker. transformers would have rotated checkpoint-2 away by then; here it stays, and
    True resumes from it."""
    from test_train_distributed import launch, lora_args

    out = workspace["root"] / "kill_zero3"
    args = lora_args(workspace, out, "zero3.json") + ["--save_total_limit", "1"]
    log = workspace["root"] / "kill_zero3.json"
    killed = launch(args, entry=(str(DRIVER),), env={"KILL_AT": "marker:3", "KILL_LOG": str(log)})
    assert killed.returncode != 0 and "SIGKILL" in killed.stderr, killed.stderr[-4000:]
    uninterrupted = check_killed(out, 2, 3, log)
    assert (out / "checkpoint-3" / "trainer_state.json").is_file()
    assert any(p.name.startswith("global_step") for p in (out / "checkpoint-3").iterdir())

    proc = launch(args + ["--resume_from_checkpoint", "True"])
    assert proc.returncode == 0, proc.stderr[-6000:]
    check_resumed(out, 2, 3, proc.stdout, uninterrupted, limit_one=True)
