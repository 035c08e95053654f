//! The kernel programs on the real kernel: each test loads them, runs a real command under
//! them through `launch`, and checks what the trace saw. They need root (or CAP_BPF and
//! CAP_PERFMON); without it they fail when CI=true and otherwise say they were skipped.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use oci_attest::identity::CommandIdentity;
use oci_attest::launch::spawn_stopped;
use oci_attest::observed::{Fate, IncompleteReason, ObservedProcess, Termination};
use oci_attest::trace::{Privileges, TraceConfig, TraceOutcome, Tracer};

/// Whether the eBPF tests can run; fails instead of skipping in CI and `cargo xtask test`.
fn can_trace(test: &str) -> bool {
    if Privileges::current().can_trace() {
        return true;
    }
    oci_attest_tests::skip(
        test,
        "needs root or CAP_BPF+CAP_PERFMON to load eBPF programs",
    );
    false
}

/// Runs `argv` in `dir` under a freshly loaded tracer.
fn run_traced(argv: &[&str], dir: &Path) -> (Termination, TraceOutcome) {
    let mut tracer = Tracer::load(&TraceConfig::default()).expect("load the kernel programs");
    let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
    let child = spawn_stopped(&argv, dir, &CommandIdentity::current()).expect("fork the command");
    tracer.track(child.pid()).expect("track the child");
    let termination = child.release().expect("release").wait().expect("wait");
    let after = oci_attest::snapshot::Snapshot::take(dir).expect("snapshot the directory");
    let outcome = tracer.finish(dir, &after).expect("finish the trace");
    (termination, outcome)
}

fn sh(script: &str, dir: &Path) -> (Termination, TraceOutcome) {
    run_traced(&["sh", "-c", script], dir)
}

fn all_writes(outcome: &TraceOutcome) -> Vec<PathBuf> {
    outcome.processes.iter().flat_map(written_paths).collect()
}

/// The paths (built in the kernel) of the files a process changed.
fn written_paths(process: &ObservedProcess) -> Vec<PathBuf> {
    process
        .writes
        .iter()
        .map(|written| written.path.clone())
        .collect()
}

/// The settled fate of the file written as `path`.
fn fate_of(outcome: &TraceOutcome, path: &Path) -> Fate {
    outcome
        .written
        .iter()
        .find(|file| file.written_as == path)
        .unwrap_or_else(|| panic!("{} not written: {:#?}", path.display(), outcome.written))
        .fate
        .clone()
}

fn exec_of<'a>(outcome: &'a TraceOutcome, program_suffix: &str) -> Vec<&'a ObservedProcess> {
    outcome
        .processes
        .iter()
        .filter(|process| {
            process
                .execs
                .iter()
                .any(|exec| exec.program.ends_with(program_suffix))
        })
        .collect()
}

#[test]
fn tar_exec_argv_and_creat_are_observed_without_loss() {
    if !can_trace("tar_exec_argv_and_creat_are_observed_without_loss") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (termination, outcome) = sh("tar cf x.tar /etc/hostname", dir.path());
    assert_eq!(termination, Termination::Exited(0));
    assert_eq!(outcome.counts.lost, 0);
    let tars = exec_of(&outcome, "/tar");
    assert_eq!(tars.len(), 1, "{:#?}", outcome.processes);
    assert_eq!(tars[0].argv(), ["tar", "cf", "x.tar", "/etc/hostname"]);
    let archive = dir.path().canonicalize().unwrap().join("x.tar");
    assert!(written_paths(tars[0]).contains(&archive), "{:#?}", tars[0]);
    assert_eq!(
        fate_of(&outcome, &archive),
        Fate::Present(vec![archive.clone()])
    );
    assert!(outcome.incomplete.is_empty(), "{:#?}", outcome.incomplete);
    // dash may exec tar in place of itself: the shell's exec is the first of its process.
    let shell = &outcome.processes[0];
    assert_eq!(
        shell.execs[0].argv,
        ["sh", "-c", "tar cf x.tar /etc/hostname"]
    );
    assert_eq!(shell.exit, Some(Termination::Exited(0)));
}

/// The directory as the kernel names it (temp dirs may sit behind a symlink).
fn real(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().canonicalize().unwrap()
}

fn ancestors_include(outcome: &TraceOutcome, process: &ObservedProcess, ancestor: u32) -> bool {
    let mut current = process;
    while let Some(parent) = outcome
        .processes
        .iter()
        .find(|candidate| candidate.pid == current.parent_pid)
    {
        if parent.pid == ancestor {
            return true;
        }
        current = parent;
    }
    false
}

#[test]
fn nested_shell_pipeline_is_one_tree() {
    if !can_trace("nested_shell_pipeline_is_one_tree") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (termination, outcome) = sh(
        "sh -c 'echo hello | tr a-z A-Z > up.txt' | cat; cat up.txt | wc -c",
        dir.path(),
    );
    assert_eq!(termination, Termination::Exited(0));
    assert_eq!(outcome.counts.lost, 0);
    let root = outcome.processes[0].pid;
    for program in ["/tr", "/cat", "/wc"] {
        let found = exec_of(&outcome, program);
        assert!(
            !found.is_empty(),
            "no exec of {program}: {:#?}",
            outcome.processes
        );
        for process in found {
            assert!(ancestors_include(&outcome, process, root), "{process:#?}");
        }
    }
    let inner = outcome
        .processes
        .iter()
        .flat_map(|process| &process.execs)
        .any(|exec| exec.argv == ["sh", "-c", "echo hello | tr a-z A-Z > up.txt"]);
    assert!(inner, "{:#?}", outcome.processes);
    assert!(all_writes(&outcome).contains(&real(&dir).join("up.txt")));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("up.txt")).unwrap(),
        "HELLO\n"
    );
}

#[test]
fn write_to_temp_name_then_mv_records_the_rename() {
    if !can_trace("write_to_temp_name_then_mv_records_the_rename") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (termination, outcome) = sh("echo data > out.tmp && mv out.tmp out.final", dir.path());
    assert_eq!(termination, Termination::Exited(0));
    let base = real(&dir);
    assert!(all_writes(&outcome).contains(&base.join("out.tmp")));
    let mv = exec_of(&outcome, "/mv");
    assert_eq!(mv.len(), 1, "{:#?}", outcome.processes);
    assert_eq!(
        mv[0].renames,
        [(base.join("out.tmp"), base.join("out.final"))]
    );
}

#[test]
fn a_file_written_then_deleted_is_a_delete() {
    if !can_trace("a_file_written_then_deleted_is_a_delete") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_, outcome) = sh("echo x > gone.txt; rm gone.txt", dir.path());
    let gone = real(&dir).join("gone.txt");
    assert!(all_writes(&outcome).contains(&gone));
    let rm = exec_of(&outcome, "/rm");
    assert_eq!(rm.len(), 1, "{:#?}", outcome.processes);
    assert_eq!(rm[0].deletes, [gone]);
}

#[test]
fn relative_paths_follow_cd() {
    if !can_trace("relative_paths_follow_cd") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (termination, outcome) = sh(
        "mkdir -p a/b && cd a/b && echo x > rel.txt && cd ../.. && (cd a && touch sub.txt)",
        dir.path(),
    );
    assert_eq!(termination, Termination::Exited(0));
    let writes = all_writes(&outcome);
    let base = real(&dir);
    assert!(writes.contains(&base.join("a/b/rel.txt")), "{writes:#?}");
    assert!(writes.contains(&base.join("a/sub.txt")), "{writes:#?}");
    assert_eq!(outcome.counts.unresolved_paths, 0);
}

#[test]
fn openat_with_a_directory_fd_and_fchdir_resolve() {
    if !can_trace("openat_with_a_directory_fd_and_fchdir_resolve") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let script = "import os\n\
        d = os.open('sub', os.O_RDONLY | os.O_DIRECTORY)\n\
        os.close(os.open('viafd.txt', os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=d))\n\
        os.rename('viafd.txt', 'moved.txt', src_dir_fd=d, dst_dir_fd=d)\n\
        os.fchdir(d)\n\
        os.close(os.open('after_fchdir.txt', os.O_WRONLY | os.O_CREAT, 0o644))\n\
        os.unlink('after_fchdir.txt')\n";
    let (termination, outcome) = run_traced(&["python3", "-c", script], dir.path());
    assert_eq!(termination, Termination::Exited(0));
    let base = real(&dir).join("sub");
    let python = &outcome.processes[0];
    assert!(
        written_paths(python).contains(&base.join("viafd.txt")),
        "{python:#?}"
    );
    assert!(
        written_paths(python).contains(&base.join("after_fchdir.txt")),
        "{python:#?}"
    );
    assert_eq!(
        fate_of(&outcome, &base.join("viafd.txt")),
        Fate::Present(vec![base.join("moved.txt")])
    );
    assert_eq!(
        fate_of(&outcome, &base.join("after_fchdir.txt")),
        Fate::Deleted
    );
    assert_eq!(
        python.renames,
        [(base.join("viafd.txt"), base.join("moved.txt"))]
    );
    assert_eq!(python.deletes, [base.join("after_fchdir.txt")]);
}

#[test]
fn twenty_parallel_children_are_all_seen() {
    if !can_trace("twenty_parallel_children_are_all_seen") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (termination, outcome) = sh(
        "for i in $(seq 1 20); do touch f$i & done; wait",
        dir.path(),
    );
    assert_eq!(termination, Termination::Exited(0));
    assert_eq!(outcome.counts.lost, 0);
    let touches = exec_of(&outcome, "/touch");
    assert_eq!(touches.len(), 20, "{:#?}", outcome.processes);
    let base = real(&dir);
    let mut seen: Vec<u32> = Vec::new();
    for touch in touches {
        let [_, name] = touch.argv() else {
            panic!("argv {:?}", touch.argv());
        };
        assert_eq!(written_paths(touch), [base.join(name)]);
        assert_eq!(touch.exit, Some(Termination::Exited(0)));
        seen.push(name.trim_start_matches('f').parse().unwrap());
    }
    seen.sort();
    assert_eq!(seen, (1..=20).collect::<Vec<_>>());
}

/// Burns a CPU until dropped (load beside the traced command).
struct CpuBurner(std::process::Child);

impl CpuBurner {
    fn start() -> Self {
        CpuBurner(
            std::process::Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .spawn()
                .unwrap(),
        )
    }
}

impl Drop for CpuBurner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_hundred_thousand_opens_and_twenty_thousand_new_files_under_load_lose_nothing() {
    if !can_trace("a_hundred_thousand_opens_and_twenty_thousand_new_files_under_load_lose_nothing")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let _burners = [CpuBurner::start(), CpuBurner::start()];
    // Reads cost no event; each new file costs one, with its kernel-built path.
    let script = "import os\n\
        for i in range(100000):\n    os.close(os.open('/etc/hostname', os.O_RDONLY))\n\
        for i in range(20000):\n    os.close(os.open('f%d' % i, os.O_WRONLY | os.O_CREAT, 0o644))\n";
    let (termination, outcome) = run_traced(&["python3", "-c", script], dir.path());
    assert_eq!(termination, Termination::Exited(0));
    assert_eq!(outcome.counts.lost, 0);
    assert!(outcome.incomplete.is_empty(), "{:#?}", outcome.incomplete);
    let present = outcome
        .written
        .iter()
        .filter(|file| matches!(file.fate, Fate::Present(_)))
        .count();
    assert_eq!(present, 20_000);
}

#[test]
fn a_child_killed_by_a_signal() {
    if !can_trace("a_child_killed_by_a_signal") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (termination, outcome) = sh("sleep 30 & kill -TERM $!; wait; kill -KILL $$", dir.path());
    assert_eq!(termination, Termination::Signalled(9));
    assert_eq!(outcome.processes[0].exit, Some(Termination::Signalled(9)));
    let sleeps = exec_of(&outcome, "/sleep");
    if let [sleep] = sleeps.as_slice() {
        assert_eq!(sleep.exit, Some(Termination::Signalled(15)));
    } else {
        // The shell may kill its forked child before it execs sleep: find it by its exit.
        let killed = outcome
            .processes
            .iter()
            .filter(|process| process.exit == Some(Termination::Signalled(15)))
            .count();
        assert_eq!(killed, 1, "{:#?}", outcome.processes);
    }
}

#[test]
fn an_unrelated_concurrent_writer_is_not_recorded() {
    if !can_trace("an_unrelated_concurrent_writer_is_not_recorded") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let unrelated = dir.path().join("unrelated.txt");
    let mut writer = std::process::Command::new("sh")
        .args(["-c", "while :; do echo x > \"$0\"; done"])
        .arg(&unrelated)
        .spawn()
        .unwrap();
    // This process writes too while the command runs: the tracer must not see itself.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let own_writes = {
        let stop = stop.clone();
        let path = dir.path().join("tool.txt");
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::fs::write(&path, "tool").unwrap();
            }
        })
    };
    let (termination, outcome) = sh("sleep 0.3; echo mine > mine.txt", dir.path());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    own_writes.join().unwrap();
    let _ = writer.kill();
    let _ = writer.wait();
    assert_eq!(termination, Termination::Exited(0));
    let base = real(&dir);
    let writes = all_writes(&outcome);
    assert!(writes.contains(&base.join("mine.txt")), "{writes:#?}");
    assert!(!writes.contains(&base.join("unrelated.txt")), "{writes:#?}");
    assert!(!writes.contains(&base.join("tool.txt")), "{writes:#?}");
    assert!(outcome
        .processes
        .iter()
        .all(|process| process.pid != writer.id()));
    assert!(outcome
        .processes
        .iter()
        .all(|process| process.pid != std::process::id()));
}

#[test]
fn long_argv_is_read_whole_from_the_new_image() {
    if !can_trace("long_argv_is_read_whole_from_the_new_image") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // 100 KiB of arguments, 9000 arguments, and one argument of 100 KiB arrive whole.
    let many: Vec<String> = (0..1000).map(|i| format!("{i:0>99}")).collect();
    let numerous: Vec<String> = (0..9000).map(|i| i.to_string()).collect();
    let huge = vec!["x".repeat(100 * 1024), "after".to_string()];
    for args in [many, numerous, huge] {
        let mut argv = vec!["echo"];
        argv.extend(args.iter().map(String::as_str));
        let (_, outcome) = run_traced(&argv, dir.path());
        assert_eq!(outcome.processes[0].argv(), argv.as_slice());
        assert_eq!(outcome.counts.truncated_argvs, 0);
        assert_eq!(outcome.counts.lost, 0);
        assert!(outcome.incomplete.is_empty(), "{:#?}", outcome.incomplete);
    }
}

#[test]
fn an_unchanged_file_opened_read_write_or_locked_is_not_written() {
    if !can_trace("an_unchanged_file_opened_read_write_or_locked_is_not_written") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data"), "unchanged").unwrap();
    std::fs::write(dir.path().join("lock"), "pid").unwrap();
    let script = "import os, fcntl\n\
        os.close(os.open('data', os.O_RDWR))\n\
        f = open('lock', 'r+')\n\
        fcntl.flock(f, fcntl.LOCK_EX)\n\
        fcntl.flock(f, fcntl.LOCK_UN)\n";
    let (termination, outcome) = run_traced(&["python3", "-c", script], dir.path());
    assert_eq!(termination, Termination::Exited(0));
    assert!(outcome.written.is_empty(), "{:#?}", outcome.written);
    assert!(outcome.incomplete.is_empty(), "{:#?}", outcome.incomplete);
}

#[test]
fn truncate_ftruncate_and_a_shared_mapping_through_an_inherited_fd_are_writes() {
    if !can_trace("truncate_ftruncate_and_a_shared_mapping_through_an_inherited_fd_are_writes") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for name in ["cut", "fcut", "mapped"] {
        std::fs::write(dir.path().join(name), "0123456789").unwrap();
    }
    // The parent opens `mapped`; a forked child maps it through the inherited fd.
    let script = "import os, mmap\n\
        os.truncate('cut', 3)\n\
        fd = os.open('fcut', os.O_RDWR)\n\
        os.ftruncate(fd, 4)\n\
        m = os.open('mapped', os.O_RDWR)\n\
        pid = os.fork()\n\
        if pid == 0:\n    view = mmap.mmap(m, 10, mmap.MAP_SHARED)\n    view[0:1] = b'X'\n    os._exit(0)\n\
        os.waitpid(pid, 0)\n";
    let (termination, outcome) = run_traced(&["python3", "-c", script], dir.path());
    assert_eq!(termination, Termination::Exited(0));
    let base = real(&dir);
    let python = &outcome.processes[0];
    assert_eq!(python.truncates, [base.join("cut")]);
    assert!(
        written_paths(python).contains(&base.join("fcut")),
        "{python:#?}"
    );
    assert_eq!(
        fate_of(&outcome, &base.join("cut")),
        Fate::Present(vec![base.join("cut")])
    );
    let mapper = outcome
        .processes
        .iter()
        .find(|process| written_paths(process) == [base.join("mapped")])
        .unwrap_or_else(|| panic!("{:#?}", outcome.processes));
    assert_eq!(mapper.parent_pid, python.pid);
    assert_eq!(std::fs::read(base.join("mapped")).unwrap(), b"X123456789");
    assert!(outcome.incomplete.is_empty(), "{:#?}", outcome.incomplete);
}

#[test]
fn files_are_followed_by_inode_through_links_renames_and_symlinks() {
    if !can_trace("files_are_followed_by_inode_through_links_renames_and_symlinks") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Hard link then unlink; directory renamed after the write; written through a symlinked
    // directory; an O_TMPFILE made visible with linkat.
    let script = "import os, ctypes\n\
        open('a', 'w').write('a')\n\
        os.link('a', 'b')\n\
        os.unlink('a')\n\
        os.mkdir('d')\n\
        open('d/f', 'w').write('f')\n\
        os.rename('d', 'e')\n\
        os.mkdir('real')\n\
        os.symlink('real', 'link')\n\
        open('link/s', 'w').write('s')\n\
        fd = os.open('.', os.O_TMPFILE | os.O_WRONLY, 0o644)\n\
        os.write(fd, b'tmp')\n\
        libc = ctypes.CDLL(None, use_errno=True)\n\
        assert libc.linkat(fd, b'', -100, b'named', 0x1000) == 0, ctypes.get_errno()\n";
    let (termination, outcome) = run_traced(&["python3", "-c", script], dir.path());
    assert_eq!(termination, Termination::Exited(0));
    let base = real(&dir);
    assert_eq!(
        fate_of(&outcome, &base.join("a")),
        Fate::Present(vec![base.join("b")])
    );
    assert_eq!(
        fate_of(&outcome, &base.join("d/f")),
        Fate::Present(vec![base.join("e/f")])
    );
    // The kernel names the file where it is, not through the symlink.
    assert_eq!(
        fate_of(&outcome, &base.join("real/s")),
        Fate::Present(vec![base.join("real/s")])
    );
    let tmpfile = outcome
        .written
        .iter()
        .find(|file| file.fate == Fate::Present(vec![base.join("named")]));
    assert!(tmpfile.is_some(), "{:#?}", outcome.written);
    assert!(outcome.incomplete.is_empty(), "{:#?}", outcome.incomplete);
}

#[test]
fn names_that_are_not_utf8_are_kept_byte_for_byte() {
    if !can_trace("names_that_are_not_utf8_are_kept_byte_for_byte") {
        return;
    }
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let script = "open(b'bad\\xff\\nname', 'w').write('x')\n";
    let (termination, outcome) = run_traced(&["python3", "-c", script], dir.path());
    assert_eq!(termination, Termination::Exited(0));
    let expected = real(&dir).join(std::ffi::OsStr::from_bytes(b"bad\xff\nname"));
    assert_eq!(
        fate_of(&outcome, &expected),
        Fate::Present(vec![expected.clone()])
    );
}

#[test]
fn every_exec_of_a_pid_is_kept_and_a_replaced_program_is_reported() {
    if !can_trace("every_exec_of_a_pid_is_kept_and_a_replaced_program_is_reported") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (termination, outcome) = sh(
        "cp /bin/true ./tool && ./tool && echo replaced > ./tool.new && mv ./tool.new ./tool; exec /bin/true",
        dir.path(),
    );
    assert_eq!(termination, Termination::Exited(0));
    let shell = &outcome.processes[0];
    let programs: Vec<&str> = shell
        .execs
        .iter()
        .map(|exec| exec.program.as_str())
        .collect();
    assert_eq!(programs.len(), 2, "{programs:?}");
    assert!(programs[1].ends_with("/true"), "{programs:?}");
    assert!(shell.execs[1].program_digest.is_some());
    let replaced: Vec<_> = outcome
        .incomplete
        .iter()
        .filter(|gap| gap.reason == IncompleteReason::ProgramReplaced)
        .collect();
    assert_eq!(replaced.len(), 1, "{:#?}", outcome.incomplete);
    assert!(replaced[0].detail.contains("/tool"), "{replaced:?}");
}

#[test]
fn an_unmodelled_syscall_makes_the_trace_incomplete() {
    if !can_trace("an_unmodelled_syscall_makes_the_trace_incomplete") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // mknod of a regular file creates it without an open.
    let (termination, outcome) = run_traced(
        &["python3", "-c", "import os\nos.mknod('made')\n"],
        dir.path(),
    );
    assert_eq!(termination, Termination::Exited(0));
    let gap = outcome
        .incomplete
        .iter()
        .find(|gap| gap.reason == IncompleteReason::UnmodelledSyscall)
        .unwrap_or_else(|| panic!("{:#?}", outcome.incomplete));
    assert!(gap.detail.starts_with("mknod"), "{gap:?}");
}
