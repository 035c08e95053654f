//! The trace attacked, one escape route per test, as an attacker would act: the real binary
//! runs `oci-attest run --trace ebpf` as root on the real kernel around the attacker helper
//! (`tests/attackers/attacker.c`), which runs as the unprivileged test user; the three routes
//! that need a privilege (chroot, a mount namespace, file handles) run it with `--run-as root`. Each test asserts the true outcome: the product at a path
//! that holds it now, with the digest of its real content and no decoy among the products; or
//! exit 3 with the reason in `summary.incomplete`. Never the attacker's story.
//!
//! They need root; they fail instead of skipping under `cargo xtask test` and in CI.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

use oci_attest_tests::attack::{sha256_at_depth, unescape_path, Scenario, Verdict, ATTACKER, WORK};
use oci_attest_tests::command::sha256sum;
use oci_attest_tests::require;

const BIN: &str = env!("CARGO_BIN_EXE_oci-attest");

/// Reasons that honestly say a written file could not be placed.
const UNPLACED: &[&str] = &["unverified-product", "unresolved-path"];

fn scenario<S: AsRef<OsStr>>(steps: &[S]) -> anyhow::Result<Scenario> {
    Scenario::new(Path::new(BIN), steps)
}

/// Runs the attack. Only a missing environment (root, gcc) is an `Err` (a skip outside CI);
/// an attack that fails or an oci-attest that cannot run fails the test.
fn attest(scenario: anyhow::Result<Scenario>) -> anyhow::Result<Verdict> {
    let scenario = scenario?;
    Ok(scenario
        .attest()
        .unwrap_or_else(|error| panic!("{error:#}")))
}

/// The control: no trick, a plain write. Every attack below is this plus one escape route.
#[test]
fn plain_write_is_a_product() {
    let verdict = require!(attest(
        scenario(&["write", "out", "plainly"]).map(|s| s.file("decoy", "untouched"))
    ));
    verdict.assert_product("out", b"plainly", &["decoy"], &[]);
}

#[test]
fn io_uring_open_and_write() {
    let verdict = require!(attest(scenario(&[
        "iouring-write",
        "out.bin",
        "written by io_uring"
    ])));
    verdict.assert_product(
        "out.bin",
        b"written by io_uring",
        &[],
        &["unmodelled-syscall"],
    );
    verdict.assert_detail_mentions("unmodelled-syscall", "io_uring");
}

#[test]
fn open_by_handle_at_write() {
    let verdict = require!(attest(
        scenario(&["handle-write", "target", "via a file handle"]).map(|s| {
            s.file("target", "old")
                .as_root("open_by_handle_at(2) needs CAP_DAC_READ_SEARCH")
        })
    ));
    verdict.assert_product("target", b"via a file handle", &[], &["unmodelled-syscall"]);
    verdict.assert_detail_mentions("unmodelled-syscall", "handle");
}

#[test]
fn o_tmpfile_then_linkat() {
    let verdict = require!(attest(scenario(&[
        "tmpfile-link",
        ".",
        "final",
        "made without a name"
    ])));
    verdict.assert_product("final", b"made without a name", &[], UNPLACED);
}

#[test]
fn hard_link_then_unlink() {
    let verdict = require!(attest(scenario(&[
        "write", "tmp.out", "linked", "+", "link", "tmp.out", "final", "+", "unlink", "tmp.out"
    ])));
    verdict.assert_product("final", b"linked", &["tmp.out"], UNPLACED);
}

#[test]
fn write_through_a_symlink_then_repoint_it() {
    let verdict = require!(attest(
        scenario(&[
            "symlink",
            "real",
            "link",
            "+",
            "write",
            "link",
            "through the link",
            "+",
            "unlink",
            "link",
            "+",
            "symlink",
            "decoy",
            "link"
        ])
        .map(|s| s.file("decoy", "decoy content"))
    ));
    verdict.assert_product("real", b"through the link", &["link", "decoy"], UNPLACED);
}

#[test]
fn proc_self_cwd_and_root_paths() {
    let root_path = format!("/proc/self/root{WORK}/root-out");
    let verdict = require!(attest(
        scenario(&[
            "chdir",
            "sub",
            "+",
            "write",
            "/proc/self/cwd/cwd-out",
            "via cwd",
            "+",
            "write",
            &root_path,
            "via root",
        ])
        .map(|s| s.dir("sub").file("cwd-out", "decoy"))
    ));
    verdict.assert_product("sub/cwd-out", b"via cwd", &["cwd-out"], UNPLACED);
    verdict.assert_product("root-out", b"via root", &[], UNPLACED);
}

#[test]
fn directory_renamed_after_writing() {
    let verdict = require!(attest(scenario(&[
        "mkdir",
        "d1",
        "+",
        "write",
        "d1/out",
        "in a moved dir",
        "+",
        "rename",
        "d1",
        "d2"
    ])));
    verdict.assert_product("d2/out", b"in a moved dir", &["d1/out"], UNPLACED);
}

#[test]
fn truncate_by_path() {
    let verdict = require!(attest(
        scenario(&["truncate", "t", "4"]).map(|s| s.file("t", "0123456789"))
    ));
    verdict.assert_product("t", b"0123", &[], UNPLACED);
}

/// The file is opened read-write by the test and inherited as the command's stdin (oci-attest
/// passes only 0, 1 and 2 down, as in `run -- cmd <>file`): the tree never opens it, it only
/// changes it with `step`.
fn inherited_fd(step: &str, argument: &str, before: &[u8], after: &[u8]) {
    inherited_fd_or_gap(step, argument, before, after, UNPLACED);
}

/// [`inherited_fd`] where the trace may also honestly give up for one of `reasons`.
fn inherited_fd_or_gap(step: &str, argument: &str, before: &[u8], after: &[u8], reasons: &[&str]) {
    let verdict = require!(attest(scenario(&[step, "0", argument]).map(|s| {
        s.file("target", before)
            .file("source", "written through an inherited fd")
            .inherit(0, "target")
    })));
    verdict.assert_product("target", after, &[], reasons);
}

const THROUGH_FD: &[u8] = b"written through an inherited fd";

#[test]
fn inherited_fd_mmap_shared_write() {
    inherited_fd("fd-mmap", "source", &[b'x'; THROUGH_FD.len()], THROUGH_FD);
}

#[test]
fn inherited_fd_mapped_read_only_then_mprotect_writable() {
    inherited_fd(
        "fd-mprotect",
        "source",
        &[b'x'; THROUGH_FD.len()],
        THROUGH_FD,
    );
}

#[test]
fn inherited_fd_native_aio_write() {
    inherited_fd_or_gap(
        "fd-aio",
        "source",
        b"",
        THROUGH_FD,
        &[
            "unmodelled-syscall",
            "unverified-product",
            "unresolved-path",
        ],
    );
}

#[test]
fn inherited_fd_write() {
    inherited_fd("fd-write", "source", b"", THROUGH_FD);
}

#[test]
fn inherited_fd_pwritev2() {
    inherited_fd("fd-pwritev2", "source", b"", THROUGH_FD);
}

#[test]
fn inherited_fd_sendfile() {
    inherited_fd("fd-sendfile", "source", b"", THROUGH_FD);
}

#[test]
fn inherited_fd_copy_file_range() {
    inherited_fd("fd-copy-file-range", "source", b"", THROUGH_FD);
}

#[test]
fn inherited_fd_splice() {
    inherited_fd("fd-splice", "source", b"", THROUGH_FD);
}

#[test]
fn inherited_fd_ftruncate() {
    inherited_fd("fd-ftruncate", "4", b"0123456789", b"0123");
}

#[test]
fn inherited_fd_fallocate() {
    let mut grown = b"abc".to_vec();
    grown.resize(16, 0);
    inherited_fd("fd-fallocate", "16", b"abc", &grown);
}

#[test]
fn dup2_dirfd_reuse_and_fchdir() {
    // fd 10 is directory a (a dup of fd 5); fd 5 is then reused for directory b.
    let verdict = require!(attest(
        scenario(&[
            "open-dir",
            "a",
            "5",
            "+",
            "dup2",
            "5",
            "10",
            "+",
            "close",
            "5",
            "+",
            "open-dir",
            "b",
            "5",
            "+",
            "write-at",
            "10",
            "out",
            "via dirfd",
            "+",
            "fchdir",
            "10",
            "+",
            "write",
            "out2",
            "after fchdir",
        ])
        .map(|s| { s.dir("a").file("b/out", "decoy").file("b/out2", "decoy") })
    ));
    verdict.assert_product("a/out", b"via dirfd", &["b/out", "b/out2"], UNPLACED);
    verdict.assert_product("a/out2", b"after fchdir", &["b/out", "b/out2"], UNPLACED);
}

#[test]
fn clone_fs_child_changes_the_parents_cwd() {
    let verdict = require!(attest(
        scenario(&[
            "clone-fs-chdir",
            "sub",
            "+",
            "write",
            "fs-out",
            "in the shared cwd"
        ])
        .map(|s| s.dir("sub").file("fs-out", "decoy"))
    ));
    verdict.assert_product("sub/fs-out", b"in the shared cwd", &["fs-out"], UNPLACED);
}

#[test]
fn clone_files_child_replaces_a_dirfd() {
    let verdict = require!(attest(
        scenario(&[
            "open-dir",
            "e",
            "7",
            "+",
            "clone-files-open-dir",
            "d",
            "7",
            "+",
            "write-at",
            "7",
            "files-out",
            "via the shared fd table",
        ])
        .map(|s| s.dir("d").file("e/files-out", "decoy"))
    ));
    verdict.assert_product(
        "d/files-out",
        b"via the shared fd table",
        &["e/files-out"],
        UNPLACED,
    );
}

#[test]
fn int_0x80_compat_syscalls() {
    let verdict = require!(attest(scenario(&[
        "compat-write",
        "compat.out",
        "written by int 0x80"
    ])));
    verdict.assert_product(
        "compat.out",
        b"written by int 0x80",
        &[],
        &["compat-syscall"],
    );
}

#[test]
fn path_longer_than_path_max_via_relative_cd() {
    const DEPTH: usize = 25;
    let component = "d".repeat(200);
    let verdict = require!(attest(scenario(&[
        "deep-write",
        &DEPTH.to_string(),
        "deep.out",
        "far down"
    ])));
    let mut components: Vec<&OsStr> = vec![OsStr::new(&component); DEPTH];
    components.push(OsStr::new("deep.out"));
    let digest = sha256_at_depth(&verdict.run().work, &components).expect("walk to deep.out");
    let path = components
        .iter()
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join("/");
    assert!(path.len() > 4096);
    verdict.assert_product_digest(&path, &digest, &[], &["path-truncated", "unresolved-path"]);
}

#[test]
fn dot_dot_through_a_symlinked_directory() {
    // link -> x/y, so link/../out is x/out to the kernel and out to a lexical resolver.
    let verdict = require!(attest(
        scenario(&[
            "symlink",
            "x/y",
            "link",
            "+",
            "write",
            "link/../out",
            "beside y"
        ])
        .map(|s| s.dir("x/y").file("out", "decoy"))
    ));
    verdict.assert_product("x/out", b"beside y", &["out"], UNPLACED);
}

#[test]
fn chroot_decoy() {
    // Inside the chroot the absolute path of the working directory's `out` names jail/<work>/out.
    let jailed = format!("jail{WORK}");
    let inside = format!("{WORK}/out");
    let verdict = require!(attest(
        scenario(&[
            "mkdirs",
            &jailed,
            "+",
            "chroot",
            "jail",
            "+",
            "write",
            &inside,
            "in the jail",
        ])
        .map(|s| {
            s.file("out", "decoy")
                .as_root("chroot(2) needs CAP_SYS_CHROOT")
        })
    ));
    let product = format!("jail{}/out", verdict.run().work.display());
    verdict.assert_product(&product, b"in the jail", &["out"], UNPLACED);
}

#[test]
fn openat2_resolve_in_root_decoy() {
    let nested = format!("root{WORK}");
    let inside = format!("{WORK}/out");
    let verdict = require!(attest(
        scenario(&[
            "mkdirs",
            &nested,
            "+",
            "openat2-in-root",
            "root",
            &inside,
            "resolved in root",
        ])
        .map(|s| s.file("out", "decoy"))
    ));
    let product = format!("root{}/out", verdict.run().work.display());
    verdict.assert_product(&product, b"resolved in root", &["out"], UNPLACED);
}

#[test]
fn path_and_flags_swapped_while_the_open_is_held() {
    let verdict = require!(attest(
        scenario(&["lease-swap-open", "true-out", "decoy-out", "the real write"])
            .map(|s| s.file("true-out", "old").file("decoy-out", "decoy"))
    ));
    verdict.assert_product("true-out", b"the real write", &["decoy-out"], UNPLACED);
}

#[test]
fn argv_swapped_while_the_exec_is_held() {
    let program = format!("{WORK}/prog");
    let verdict = require!(attest(
        scenario(&["exec-swapped-argv", &program, "seen", "innocent"]).map(|s| s.program("prog"))
    ));
    let seen = std::fs::read_to_string(verdict.run().work.join("seen")).unwrap();
    assert!(seen.contains("INNOCENT"), "the swap did not happen: {seen}");
    verdict.assert_argv("seen", &["argv-unreadable"]);
}

#[test]
fn argv_in_non_resident_pages() {
    let program = format!("{WORK}/prog");
    let verdict = require!(attest(
        scenario(&["exec-nonresident", &program, "argv-strings"]).map(|s| {
            s.program("prog").file(
                "argv-strings",
                b"prog\0record-argv\0seen\0paged\0out\0argv\0",
            )
        })
    ));
    verdict.assert_argv("seen", &["argv-unreadable"]);
}

#[test]
fn more_than_8192_arguments() {
    let mut steps = vec!["record-argv".to_owned(), "seen".to_owned()];
    steps.extend((0..9000).map(|i| format!("arg{i}")));
    let verdict = require!(attest(scenario(&steps)));
    verdict.assert_argv("seen", &["argv-truncated"]);
}

#[test]
fn exec_twice_in_one_pid_shows_both() {
    let verdict = require!(attest(scenario(&[
        "exec",
        "/usr/bin/env",
        "env",
        "MARK=1",
        ATTACKER,
        "record-argv",
        "seen",
        "third"
    ])));
    let Verdict::Complete(run) = &verdict else {
        panic!(
            "nothing here makes the trace incomplete\n{}",
            verdict.describe()
        );
    };
    let statement = run.statement();
    let root = statement
        .processes()
        .iter()
        .find(|process| process["parentpid"] == run.oci_attest_pid)
        .and_then(|process| process["processid"].as_u64())
        .unwrap_or_else(|| panic!("no process started by oci-attest\n{}", verdict.describe()));
    let attacker = oci_attest_tests::attack::attacker().unwrap();
    let attacker = attacker.display();
    let cmdlines = statement.cmdlines_of(root);
    for expected in [
        format!("{attacker} exec /usr/bin/env env MARK=1 {attacker} record-argv seen third"),
        format!("env MARK=1 {attacker} record-argv seen third"),
        format!("{attacker} record-argv seen third"),
    ] {
        assert!(
            cmdlines.contains(&expected),
            "pid {root}: exec {expected:?} missing from {cmdlines:#?}\n{}",
            verdict.describe()
        );
    }
}

#[test]
fn binary_replaced_after_exec() {
    let program = format!("{WORK}/prog");
    let verdict = require!(attest(
        scenario(&["exec", &program, "prog", "replace-program", &program])
            .map(|s| s.program("prog"))
    ));
    let attacker = oci_attest_tests::attack::attacker().unwrap();
    let what_ran = sha256sum(&attacker).unwrap();
    let program = verdict.run().work.join("prog");
    let replacement = sha256sum(&program).unwrap();
    assert_ne!(what_ran, replacement, "the program was not replaced");
    let digests = verdict
        .statement()
        .program_digests(&program.to_string_lossy());
    assert!(
        !digests.is_empty(),
        "no exec of prog\n{}",
        verdict.describe()
    );
    for digest in digests {
        match &verdict {
            Verdict::Complete(_) => assert_eq!(
                digest,
                what_ran.as_str(),
                "programdigest is not the binary that ran\n{}",
                verdict.describe()
            ),
            Verdict::Incomplete { .. } => assert_ne!(
                digest,
                replacement.as_str(),
                "programdigest is the replacement's\n{}",
                verdict.describe()
            ),
        }
    }
    verdict.assert_product_digest("prog", &replacement, &[], &["program-replaced"]);
}

#[test]
fn double_forked_daemon_writes_late() {
    let verdict = require!(attest(scenario(&[
        "daemon",
        "1500",
        "daemon.pid",
        "late.out",
        "after the command exited"
    ])));
    verdict.assert_product("late.out", b"after the command exited", &[], &[]);
}

#[test]
fn orphan_writes_late() {
    let verdict = require!(attest(scenario(&[
        "orphan",
        "1500",
        "orphan.out",
        "after its parent exited"
    ])));
    verdict.assert_product("orphan.out", b"after its parent exited", &[], &[]);
}

#[test]
fn daemon_outliving_wait_for_tree_is_named() {
    let verdict = require!(attest(
        scenario(&["daemon", "4000", "daemon.pid", "late.out", "too late"])
            .map(|s| s.option("--wait-for-tree").option("1"))
    ));
    let Verdict::Incomplete { first_stderr, .. } = &verdict else {
        panic!(
            "a daemon still running must make the trace incomplete\n{}",
            verdict.describe()
        );
    };
    assert!(
        first_stderr.contains("tree-still-running"),
        "{first_stderr}"
    );
    let pid = std::fs::read_to_string(verdict.run().work.join("daemon.pid")).unwrap();
    let pid = pid.trim();
    let details: Vec<String> = verdict
        .statement()
        .incomplete()
        .into_iter()
        .filter(|(reason, _)| reason == "tree-still-running")
        .map(|(_, detail)| detail)
        .collect();
    assert!(
        details
            .iter()
            .any(|detail| detail.contains(pid) && detail.contains("attacker")),
        "no tree-still-running entry names pid {pid} and its program: {details:?}"
    );
    if let Ok(pid) = pid.parse() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[test]
fn pending_map_exhaustion_with_blocked_opens() {
    let verdict = require!(attest(
        scenario(&[
            "pending-flood",
            "20000",
            "held.out",
            "opened before the flood"
        ])
        .map(|s| s.file("held.out", "old"))
    ));
    verdict.assert_product(
        "held.out",
        b"opened before the flood",
        &[],
        &["pending-map-full", "lost-events"],
    );
}

#[test]
fn unchanged_file_opened_read_write_is_not_a_product() {
    let verdict = require!(attest(
        scenario(&["open-rdwr", "keep"]).map(|s| s.file("keep", "unchanged"))
    ));
    verdict.assert_not_product("keep");
}

#[test]
fn flock_lock_file_is_not_a_product() {
    let verdict = require!(attest(
        scenario(&["flock-write", "build.lock", "real.out", "under the lock"])
            .map(|s| s.file("build.lock", ""))
    ));
    verdict.assert_not_product("build.lock");
    verdict.assert_product("real.out", b"under the lock", &[], &[]);
}

#[test]
fn o_path_fd_reopened_for_writing_via_proc_self_fd() {
    let verdict = require!(attest(
        scenario(&[
            "open-path",
            "sub/target",
            "9",
            "+",
            "write",
            "/proc/self/fd/9",
            "reopened from O_PATH",
        ])
        .map(|s| s.file("sub/target", "original"))
    ));
    verdict.assert_product("sub/target", b"reopened from O_PATH", &[], UNPLACED);
}

#[test]
fn mknod_of_a_regular_file() {
    let verdict = require!(attest(scenario(&["mknod", "made-by-mknod"])));
    verdict.assert_product("made-by-mknod", b"", &[], &["unmodelled-syscall"]);
    verdict.assert_detail_mentions("unmodelled-syscall", "mknod");
}

/// The tree makes a process outside it (a `sleep` of the same user, started by this test)
/// write a file, by injecting syscalls with ptrace: the trace cannot see that write, so it must
/// say so.
#[test]
fn ptrace_makes_a_process_outside_the_tree_write() {
    use std::os::unix::process::CommandExt as _;
    let user = require!(oci_attest_tests::oci_attest::test_user());
    let mut victim = std::process::Command::new("sleep")
        .arg("60")
        .uid(user.uid)
        .gid(user.gid)
        .spawn()
        .expect("start the victim");
    // Let it reach its nanosleep: the injection reuses that syscall instruction.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let pid = victim.id().to_string();
    let path = format!("{WORK}/injected");
    let verdict = attest(scenario(&[
        "ptrace-write",
        &pid,
        &path,
        "written by the victim",
    ]));
    let _ = victim.kill();
    let _ = victim.wait();
    let verdict = require!(verdict);
    verdict.assert_product(
        "injected",
        b"written by the victim",
        &[],
        &["unmodelled-syscall"],
    );
    verdict.assert_detail_mentions("unmodelled-syscall", "ptrace");
}

#[test]
fn write_via_proc_pid_fd_of_a_sibling() {
    let verdict = require!(attest(
        scenario(&["proc-fd-sibling", "sub/target", "reopened via /proc"])
            .map(|s| s.file("sub/target", "original"))
    ));
    verdict.assert_product("sub/target", b"reopened via /proc", &[], UNPLACED);
}

#[test]
fn rename_exchange_swaps_a_decoy_in() {
    let verdict = require!(attest(
        scenario(&[
            "write",
            "out",
            "the real output",
            "+",
            "exchange",
            "out",
            "decoy"
        ])
        .map(|s| s.file("decoy", "decoy content"))
    ));
    verdict.assert_product("decoy", b"the real output", &["out"], UNPLACED);
}

#[test]
fn bind_mount_decoy_in_a_private_mount_namespace() {
    let verdict = require!(attest(
        scenario(&[
            "bind-private",
            "src",
            "dst",
            "+",
            "write",
            "dst/out",
            "under the bind"
        ])
        .map(|s| {
            s.dir("src")
                .file("dst/out", "decoy")
                .as_root("a private mount namespace and a bind mount need CAP_SYS_ADMIN")
        })
    ));
    verdict.assert_product("src/out", b"under the bind", &["dst/out"], UNPLACED);
}

#[test]
fn non_utf8_and_newline_names_are_recorded_losslessly() {
    let names: [&[u8]; 5] = [
        b"name-\xff",
        b"name-\xfe",
        b"new\nline",
        b"esc-\\x41",
        b"esc-A",
    ];
    // Distinct contents: the product tree keeps one leaf per distinct digest.
    let contents: Vec<String> = (0..names.len())
        .map(|index| format!("named-{index}"))
        .collect();
    let mut steps: Vec<&OsStr> = Vec::new();
    for (index, name) in names.iter().enumerate() {
        if index > 0 {
            steps.push(OsStr::new("+"));
        }
        steps.extend([
            OsStr::new("write"),
            OsStr::from_bytes(name),
            OsStr::new(&contents[index]),
        ]);
    }
    let verdict = require!(attest(scenario(&steps)));
    let products = verdict.statement().products();
    for path in products.keys() {
        assert!(
            !path.contains('\u{FFFD}') && !path.contains('\n'),
            "{path:?} is not recorded losslessly\n{}",
            verdict.describe()
        );
    }
    for name in names {
        let digest = sha256sum(&verdict.run().work.join(OsStr::from_bytes(name))).unwrap();
        let matching: Vec<_> = products
            .iter()
            .filter(|(path, _)| unescape_path(path).as_deref() == Some(name))
            .collect();
        assert_eq!(
            matching.len(),
            1,
            "{:?} must be exactly one product\n{}",
            String::from_utf8_lossy(name),
            verdict.describe()
        );
        assert_eq!(matching[0].1, &digest);
    }
}

#[test]
fn twenty_thousand_fds_and_40_children_stay_under_128_mib() {
    const LIMIT_KIB: u64 = 128 * 1024;
    let verdict = require!(attest(scenario(&["many-fds", "50000", "40"])));
    let opened: u32 = std::fs::read_to_string(verdict.run().work.join("fd-count"))
        .unwrap()
        .parse()
        .unwrap();
    // Without CAP_SYS_RESOURCE the hard limit caps it (20000 on the CI machines).
    assert!(opened >= 19_000, "only {opened} fds could be opened");
    let peak = verdict.run().peak_rss_kib;
    assert!(
        peak < LIMIT_KIB,
        "peak RSS {peak} KiB (limit {LIMIT_KIB} KiB)\n{}",
        verdict.describe()
    );
    verdict.assert_product("child-39", b"child-39", &[], &[]);
}
