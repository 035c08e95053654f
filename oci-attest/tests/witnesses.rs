//! Two witnesses must agree, tried as an attacker would: work done *for* the traced tree by
//! processes or kernel threads outside it, inode numbers the filesystem hands out again, an fd
//! swapped under a write, a product changed while it is hashed, an exec storm. The real binary
//! runs `oci-attest run --trace ebpf` as root on the real kernel around the attacker helper
//! (`tests/attackers/attacker.c`); outsiders are the same helper started by the test, outside
//! the tree. Each test asserts the true product set with no stranger and no decoy, or exit 3
//! with the named reason.
//!
//! They need root; they fail instead of skipping under `cargo xtask test` and in CI.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use oci_attest_tests::attack::{Scenario, Verdict, ATTACKER, WORK};
use oci_attest_tests::command::sha256sum;
use oci_attest_tests::require;

const BIN: &str = env!("CARGO_BIN_EXE_oci-attest");

fn scenario<S: AsRef<OsStr>>(steps: &[S]) -> anyhow::Result<Scenario> {
    Scenario::new(Path::new(BIN), steps)
}

/// Runs the attack; only a missing environment (root, gcc) is an `Err`.
fn attest(scenario: anyhow::Result<Scenario>) -> anyhow::Result<Verdict> {
    let scenario = scenario?;
    Ok(scenario
        .attest()
        .unwrap_or_else(|error| panic!("{error:#}")))
}

/// The daemon's socket and ready file sit beside the working directory, not in it.
const SOCKET: &str = "{work}/../daemon.sock";
const READY: &str = "{work}/../daemon.ready";

/// A daemon started before the run, outside the tree, serving one request (see `serve`).
fn with_daemon(scenario: Scenario) -> Scenario {
    scenario.outsider(
        &["serve", SOCKET, "1", "written by the daemon", READY],
        Some(READY),
    )
}

/// The tree writes and deletes its own archives in a shared directory on disk (as skopeo does in
/// /var/tmp) while a process outside it keeps creating archives there: inode numbers the tree
/// frees come back as the stranger's files, which must never be products (the directory is in
/// the product scope through an include glob, so a stranger would show).
#[test]
fn a_strangers_file_reusing_a_freed_inode_number_is_never_a_product() {
    let shared = tempfile::Builder::new()
        .prefix("oci-attest-shared-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let dir = shared.path().canonicalize().unwrap();
    open_to_everyone(&dir);
    let dir_text = dir.display().to_string();
    for round in 0..3 {
        let verdict = require!(attest(
            scenario(&[
                "churn-own",
                &dir_text,
                "300",
                "+",
                "write",
                "out",
                "the product",
            ])
            .map(|s| s
                .outsider(&["churn-stranger", &dir_text, "3000"], None)
                .option("--attestor-product-include-glob")
                .option(format!("{dir_text}/*")))
        ));
        verdict.assert_product("out", b"the product", &[], &[]);
        let strangers: Vec<String> = verdict
            .statement()
            .products()
            .into_keys()
            .filter(|path| path.starts_with(&dir_text))
            .collect();
        assert!(
            strangers.is_empty(),
            "round {round}: a stranger's file signed as a product: {strangers:?}\n{}",
            verdict.describe()
        );
    }
}

/// A program rewritten in place after it ran (same inode, same generation): no digest of the
/// new content, `program-replaced`.
#[test]
fn a_program_rewritten_in_place_after_it_ran_gets_no_digest() {
    let program = format!("{WORK}/prog");
    let verdict = require!(attest(
        scenario(&[
            "run-child",
            &program,
            "+",
            "rewrite-in-place",
            &program,
            "REWRITTEN"
        ])
        .map(|s| s.program("prog"))
    ));
    verdict.assert_refused(&["program-replaced"]);
    let rewritten = sha256sum(&verdict.run().work.join("prog")).unwrap();
    let program = verdict.run().work.join("prog");
    for digest in verdict
        .statement()
        .program_digests(&program.to_string_lossy())
    {
        assert_ne!(digest, rewritten.as_str(), "{}", verdict.describe());
    }
}

/// Mode 1777, as `/var/tmp` and `/tmp` are: the command (the test user) and outsiders (root)
/// share the directory.
fn open_to_everyone(dir: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
}

/// A small ext2 filesystem on a loop device, its root shared like `/tmp`: ext2 hands a freed
/// inode number to the next file created in the directory. Unmounted (lazily) when dropped.
struct Ext2 {
    mount: PathBuf,
    _dir: tempfile::TempDir,
}

impl Ext2 {
    fn mount() -> Ext2 {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("fs.img");
        let mount = dir.path().canonicalize().unwrap().join("mnt");
        std::fs::create_dir(&mount).unwrap();
        std::fs::File::create(&image)
            .unwrap()
            .set_len(16 << 20)
            .unwrap();
        for command in [
            Command::new("mke2fs")
                .args(["-q", "-t", "ext2", "-F"])
                .arg(&image),
            Command::new("mount")
                .arg("-o")
                .arg("loop")
                .arg(&image)
                .arg(&mount),
        ] {
            let output = command.output().expect("run mke2fs/mount");
            assert!(output.status.success(), "{output:?}");
        }
        // The command may pass through the temp dir to the mount, nothing more.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        open_to_everyone(&mount);
        Ext2 { mount, _dir: dir }
    }

    fn path(&self, name: &str) -> String {
        self.mount.join(name).display().to_string()
    }
}

impl Drop for Ext2 {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

/// A program deleted and replaced by a file that gets its inode number: the generation tells
/// them apart, so the replacement's digest is never the program's.
#[test]
fn a_program_replaced_by_a_file_reusing_its_inode_number_gets_no_digest() {
    let fs = Ext2::mount();
    let program = fs.path("prog");
    let verdict = require!(attest(scenario(&[
        "copy",
        ATTACKER,
        &program,
        "+",
        "run-child",
        &program,
        "+",
        "recreate-same-inode",
        &program,
        "#!/bin/sh\necho not what ran\n",
    ])));
    verdict.assert_refused(&["program-replaced"]);
    assert!(
        verdict
            .details("program-replaced")
            .iter()
            .any(|detail| detail.contains("generation")),
        "{}",
        verdict.describe()
    );
    let replacement = sha256sum(Path::new(&program)).unwrap();
    for digest in verdict.statement().program_digests(&program) {
        assert_ne!(digest, replacement.as_str(), "{}", verdict.describe());
    }
}

/// The tree writes a file and deletes it; an outsider waits for that and creates files beside
/// it until one gets the freed inode number. The stranger's file is never a product.
#[test]
fn a_strangers_file_that_takes_a_written_files_inode_number_is_not_a_product() {
    let fs = Ext2::mount();
    let own = fs.path("own");
    let verdict = require!(attest(
        scenario(&[
            "write",
            &own,
            "ours",
            "+",
            "sleep",
            "100",
            "+",
            "unlink",
            &own,
            "+",
            "sleep",
            "500",
            "+",
            "write",
            "out",
            "the product",
        ])
        .map(|s| s
            .outsider(&["steal-inode", &own], None)
            .option("--attestor-product-include-glob")
            .option(format!("{}/*", fs.mount.display())))
    ));
    verdict.assert_product("out", b"the product", &[], &[]);
    let stolen = std::fs::read_dir(&fs.mount)
        .unwrap()
        .filter_map(|entry| entry.ok())
        .any(|entry| entry.file_name().to_string_lossy().starts_with("stranger-"));
    assert!(stolen, "the outsider never got the inode number");
    for path in verdict.statement().products().keys() {
        assert!(
            !path.contains("stranger-"),
            "{path}: a stranger's file signed as a product\n{}",
            verdict.describe()
        );
    }
}

/// Programs executed from files without a name: a memfd, an O_TMPFILE never linked, a file
/// deleted before the exec. Each is `fileless-exec`, not "cannot open it now".
#[test]
fn fileless_executions_have_their_own_reason() {
    for kind in ["memfd", "tmpfile", "deleted"] {
        let verdict = require!(attest(scenario(&["fileless-exec", kind, ATTACKER])));
        verdict.assert_refused(&["fileless-exec"]);
        assert!(
            verdict.details("program-replaced").is_empty(),
            "{kind}: a nameless program is not a replaced one\n{}",
            verdict.describe()
        );
    }
}

/// The tree creates a file and passes its fd over a Unix socket to a daemon started before
/// the run, which writes through it: a process outside the tree wrote a product.
#[test]
fn a_daemon_writing_through_a_passed_fd_is_caught() {
    let verdict = require!(attest(
        scenario(&["send-fd", SOCKET, "create", "made-by-tree"]).map(with_daemon)
    ));
    verdict.assert_refused(&["untraced-change"]);
    assert!(
        verdict
            .details("untraced-change")
            .iter()
            .any(|detail| detail.contains("made-by-tree") && detail.contains("outside")),
        "{}",
        verdict.describe()
    );
}

/// The same with a file that was there before and that the tree only opened: the daemon's write
/// is a change of the working directory the trace does not explain.
#[test]
fn a_daemon_writing_an_existing_file_through_a_passed_fd_is_caught() {
    let verdict = require!(attest(
        scenario(&["send-fd", SOCKET, "existing", "material"])
            .map(|s| with_daemon(s).file("material", "before the run"))
    ));
    verdict.assert_refused(&["untraced-change"]);
    assert!(
        verdict
            .details("untraced-change")
            .iter()
            .any(|detail| detail.contains("changed material")),
        "{}",
        verdict.describe()
    );
    assert!(!verdict.statement().products().contains_key("material"));
}

/// The tree writes a file of its own and passes the fd; the daemon overwrites it in place with
/// O_DIRECT: no page of the file is dirtied, so no outside writer is seen, and the tree wrote the
/// file, so the working directory's change looks explained. Passing the fd open for writing is
/// what hands the file out.
#[test]
fn a_daemon_writing_through_a_passed_fd_without_the_page_cache_is_caught() {
    let verdict = require!(attest(
        scenario(&["send-fd", SOCKET, "written", "made-by-tree"]).map(|s| s.outsider(
            &["serve-direct", SOCKET, "1", "written by the daemon", READY],
            Some(READY),
        ))
    ));
    verdict.assert_refused(&["handed-out"]);
    assert!(
        verdict
            .details("handed-out")
            .iter()
            .any(|detail| detail.contains("made-by-tree") && detail.contains("SCM_RIGHTS")),
        "{}",
        verdict.describe()
    );
    let written = std::fs::read(verdict.run().work.join("made-by-tree")).unwrap();
    assert!(written.starts_with(b"written by the daemon"));
}

/// One sendmsg passing many files open for writing: the tracer reports each of up to 16 per
/// call as handed out; a call passing more is flagged rather than letting the rest pass unseen.
#[test]
fn every_file_passed_in_one_message_is_handed_out_or_the_call_is_flagged() {
    let verdict = require!(attest(scenario(&["pass-own-fds", "16"])));
    assert_passed_files_handed_out(&verdict, 16);
    let verdict = require!(attest(scenario(&["pass-own-fds", "17"])));
    assert_call_flagged(&verdict, "sendmsg");
}

/// Refused as `handed-out`, naming each of the files `passed-0` … `passed-{count - 1}`.
fn assert_passed_files_handed_out(verdict: &Verdict, count: usize) {
    verdict.assert_refused(&["handed-out"]);
    let handed_out = verdict.details("handed-out");
    for index in 0..count {
        let name = format!("passed-{index}");
        assert!(
            handed_out
                .iter()
                .any(|detail| detail.contains(&format!("/{name}: passed"))),
            "{name} is not named as handed out\n{}",
            verdict.describe()
        );
    }
}

/// Refused as `unmodelled-syscall`, for `syscall`.
fn assert_call_flagged(verdict: &Verdict, syscall: &str) {
    verdict.assert_refused(&["unmodelled-syscall"]);
    assert!(
        verdict
            .details("unmodelled-syscall")
            .iter()
            .any(|detail| detail.starts_with(syscall)),
        "{}",
        verdict.describe()
    );
}

/// The same over sendmmsg: every file of every message and control message is handed out; a
/// message with more control messages than the tracer reads (4) flags the call.
#[test]
fn every_file_passed_in_several_messages_is_handed_out_or_the_call_is_flagged() {
    let verdict = require!(attest(scenario(&["pass-own-fds-mmsg", "3", "4"])));
    assert_passed_files_handed_out(&verdict, 12);
    let verdict = require!(attest(scenario(&["pass-own-fds-mmsg", "2", "5"])));
    assert_call_flagged(&verdict, "sendmmsg");
}

/// The other way round: a process outside the tree opens a file of the working directory and
/// passes the fd in; the tree, which never opened it, writes through it. The write is the
/// tree's: the file is a product with what the tree wrote, and the trace is complete.
#[test]
fn a_file_passed_into_the_tree_and_written_there_is_its_product() {
    let verdict = require!(attest(
        scenario(&["receive-fd", SOCKET, "written by the tree"]).map(|s| s
            .file("passed-in", "")
            .outsider(
                &["serve-fd", SOCKET, "{work}/passed-in", READY],
                Some(READY)
            ))
    ));
    verdict.assert_product("passed-in", b"written by the tree", &[], &[]);
    verdict.assert_complete();
}

/// The tree sends the daemon a path; the daemon creates the file there.
#[test]
fn a_daemon_writing_a_path_it_was_sent_is_caught() {
    let verdict = require!(attest(
        scenario(&["send-path", SOCKET, "via-path"]).map(with_daemon)
    ));
    verdict.assert_refused(&["untraced-change"]);
    assert!(
        verdict
            .details("untraced-change")
            .iter()
            .any(|detail| detail.contains("created via-path")),
        "{}",
        verdict.describe()
    );
    assert!(!verdict.statement().products().contains_key("via-path"));
}

/// A disk image of the working directory attached to a loop device: the loop driver's kernel
/// thread writes it. Handing the file out is named, and the change is not the tree's.
#[test]
fn a_loop_device_writing_a_working_directory_image_is_caught() {
    let verdict = require!(attest(
        scenario(&["loop-write", "disk.img", "written through the loop device"]).map(|s| s
            .file("disk.img", vec![0u8; 1 << 20])
            .as_root("attaching a loop device needs CAP_SYS_ADMIN"))
    ));
    verdict.assert_refused(&["handed-out", "untraced-change"]);
    let image = std::fs::read(verdict.run().work.join("disk.img")).unwrap();
    assert!(image.starts_with(b"written through the loop device"));
    assert!(!verdict.statement().products().contains_key("disk.img"));
}

/// One thread writes REAL through fd 40 while another keeps `dup2`ing DECOY over it: some
/// writes reach one file while the fd names the other at the syscall's exit. Whatever was
/// written, each file that changed is a product with its real digest (or the run is refused),
/// and a file that did not change is never one.
#[test]
fn an_fd_swapped_under_a_write_never_makes_the_untouched_file_a_product() {
    let verdict = require!(attest(
        scenario(&["swap-write", "real", "decoy", "SWAPPED-WRITE", "20000"]).map(|s| s
            .file("real", "xxxxxxxxxxxxxxxx")
            .file("decoy", "yyyyyyyyyyyyyyyyyyyyyyyy"))
    ));
    let products = verdict.statement().products();
    for (name, before) in [
        ("real", "xxxxxxxxxxxxxxxx"),
        ("decoy", "yyyyyyyyyyyyyyyyyyyyyyyy"),
    ] {
        let path = verdict.run().work.join(name);
        let now = std::fs::read(&path).unwrap();
        if now == before.as_bytes() {
            assert!(
                !products.contains_key(name),
                "{name} was not written but is a product\n{}",
                verdict.describe()
            );
        } else {
            verdict.assert_product_digest(
                name,
                &sha256sum(&path).unwrap(),
                &[],
                &["untraced-change"],
            );
        }
    }
}

/// One `O_DIRECT` write stalls inside the kernel (its buffer's page is missing under a
/// userfaultfd) while another thread `dup2`s DECOY over the fd: the write lands in REAL and
/// dirties no page, and at the syscall's exit the fd names DECOY. The `dup2` took REAL, open
/// for writing, out of a table the writing thread shares, so REAL is named then
/// (docs/tracing.md, "The file the kernel really wrote"): it is the product, with what the
/// write left in it, the trace is complete, and DECOY, which nothing wrote, is never a product.
/// The other thread swaps by `close` then `F_DUPFD` at the same number: the same outcome.
#[test]
fn a_write_stalled_while_its_fd_is_swapped_is_attributed_to_the_file_it_wrote() {
    for step in ["stalled-swap-write", "stalled-close-write"] {
        let verdict = require!(attest(
            scenario(&[step, "real", "decoy", "STALLED-WRITE"]).map(|s| s
                .file("real", vec![b'x'; 4096])
                .file("decoy", "never written")
                .as_root("a userfaultfd that stalls the kernel's own copy needs CAP_SYS_PTRACE"))
        ));
        let mut written = vec![b'.'; 4096];
        written[..13].copy_from_slice(b"STALLED-WRITE");
        verdict.assert_product("real", &written, &["decoy"], &[]);
        verdict.assert_complete();
    }
}

/// A range of fds closed (`close_range`) while another thread shares the fd table: the tracer
/// does not walk the range, so the call is flagged rather than a write in flight missed.
#[test]
fn a_range_of_fds_closed_in_a_shared_table_is_flagged() {
    let verdict = require!(attest(scenario(&[
        "close-range-shared",
        "closed.out",
        "written"
    ])));
    verdict.assert_refused(&["unmodelled-syscall"]);
    verdict.assert_detail_mentions("unmodelled-syscall", "close_range");
}

/// The same stalled, swapped write outside the working directory (the files are products through
/// an include glob), where no snapshot reaches: REAL, named when it left the shared fd table and
/// changed during the run, is the product with its digest; DECOY, which the fd names at the exit,
/// kept its old ctime and is never signed.
#[test]
fn a_write_stalled_while_its_fd_is_swapped_outside_the_working_directory_signs_the_file_it_wrote() {
    let shared = tempfile::Builder::new()
        .prefix("oci-attest-outside-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let dir = shared.path().canonicalize().unwrap();
    std::fs::write(dir.join("real"), vec![b'x'; 4096]).unwrap();
    std::fs::write(dir.join("decoy"), "never written").unwrap();
    // Old enough that a write during the run is told apart whatever the timestamp clock's lag.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (real, decoy) = (dir.join("real"), dir.join("decoy"));
    let verdict = require!(attest(
        scenario(&[
            OsStr::new("stalled-swap-write"),
            real.as_os_str(),
            decoy.as_os_str(),
            OsStr::new("STALLED-WRITE"),
        ])
        .map(|s| s
            .option("--attestor-product-include-glob")
            .option(format!("{}/*", dir.display()))
            .as_root("a userfaultfd that stalls the kernel's own copy needs CAP_SYS_PTRACE"))
    ));
    let products = verdict.statement().products();
    assert!(
        !products.contains_key(&decoy.display().to_string()),
        "the decoy, which nothing wrote, is a product\n{}",
        verdict.describe()
    );
    assert!(
        std::fs::read(&real).unwrap().starts_with(b"STALLED-WRITE"),
        "the attack did not write {}",
        real.display()
    );
    assert_eq!(
        products.get(&real.display().to_string()),
        Some(&sha256sum(&real).unwrap()),
        "{}",
        verdict.describe()
    );
    verdict.assert_complete();
}

/// The tree writes a 64 MiB product; an outsider keeps changing its last byte while
/// oci-attest reads it. The product is never signed with a digest, the run is refused.
#[test]
fn a_product_touched_while_it_is_hashed_is_refused() {
    let size = (64u64 << 20).to_string();
    let verdict = require!(attest(scenario(&["write-big", "big.out", "64"]).map(|s| {
        s.outsider(
            &["toucher", &format!("{WORK}/big.out"), &size, "4000"],
            None,
        )
    })));
    verdict.assert_refused(&["product-unstable", "untraced-change"]);
    let named = ["product-unstable", "untraced-change"]
        .iter()
        .flat_map(|reason| verdict.details(reason))
        .any(|detail| detail.contains("big.out"));
    assert!(named, "{}", verdict.describe());
}

/// 20 000 processes each exec'd with 200 arguments of 100 bytes: every exec is recorded, the
/// argv past the run's budget is not (`argv-limit`), and oci-attest stays under 256 MiB.
#[test]
fn an_exec_storm_stays_within_memory_and_names_the_argv_limit() {
    const EXECS: usize = 20_000;
    const LIMIT_KIB: u64 = 256 * 1024;
    let scenario = require!(
        scenario(&["exec-storm", &EXECS.to_string(), "2", "200", "100"])
            .map(|s| s.option("--allow-incomplete-trace"))
    );
    // One run: signed with the reasons, so the statement shows what was recorded.
    let run = scenario
        .run(false)
        .unwrap_or_else(|error| panic!("{error:#}"));
    assert_eq!(run.exit_code(), Some(0), "{}", run.stderr);
    let statement = run.statement();
    let storm: usize = statement
        .processes()
        .iter()
        .filter(|process| {
            process["execs"]
                .as_array()
                .is_some_and(|execs| !execs.is_empty())
        })
        .count();
    assert!(
        storm > EXECS,
        "only {storm} processes with an exec recorded"
    );
    let reasons: Vec<String> = statement
        .incomplete()
        .into_iter()
        .map(|(reason, _)| reason)
        .collect();
    assert!(reasons.contains(&"argv-limit".to_owned()), "{reasons:?}");
    assert!(
        run.peak_rss_kib <= LIMIT_KIB,
        "peak RSS {} KiB (limit {LIMIT_KIB} KiB)",
        run.peak_rss_kib
    );
}
