//! `cargo xtask test`: the README's test command. Sets up the machine, builds oci-attest, starts
//! private daemons and registries, builds the fixtures, runs every test of the workspace and always stops the
//! daemons (by pid) and removes its temp dirs, also on failure or Ctrl-C.
//!
//! Everything a test needs is prepared here, so no test may skip: `OCI_ATTEST_REQUIRE_ALL=1`
//! turns every skip into a failure. Should one still say `SKIPPED` (a test that bypasses the
//! shared check), it is counted as skipped, not passed.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, ExitCode, ExitStatus, Stdio};

use anyhow::{ensure, Context as _};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use oci_attest_tests::daemons::Daemons;
use oci_attest_tests::registry::Registries;
use oci_attest_tests::release::RELEASE_DIR_ENV;
use oci_attest_tests::storage::{remove_tree, ContainersStorage};
use oci_attest_tests::{fixtures, paths, REQUIRE_ALL_ENV};

/// With `dist`, or with no test filter (the whole suite, as CI runs it), `cargo xtask dist`
/// builds the release whose directory is handed to the tests; `OCI_ATTEST_RELEASE_DIR` given by
/// the caller is used as it is. For the whole suite the release is built while the tests that do
/// not need it run (the release build is mostly compiling, the tests mostly waiting on daemons
/// and registries), and the release tests ([`RELEASE_TESTS`]) run once it is there.
pub fn run(cargo_test_args: &[String], dist: bool) -> anyhow::Result<ExitCode> {
    crate::setup::run()?;
    let binary = build_host_binary()?;
    let release = match std::env::var_os(RELEASE_DIR_ENV) {
        Some(dir) => Release::Ready(std::path::PathBuf::from(dir)),
        None if cargo_test_args.is_empty() => Release::Building(build_release(binary.clone())),
        None if dist => Release::Ready(
            build_release(binary.clone())
                .join()
                .map_err(|_| anyhow::anyhow!("cargo xtask dist panicked"))??,
        ),
        None => Release::None,
    };

    let temp = tempfile::Builder::new()
        .prefix("oci-attest-test-")
        .tempdir()
        .context("cannot create a temp dir")?;
    // Searchable, not listable: the docker group's path to dockerd's socket (`Daemons::start`).
    std::fs::set_permissions(
        temp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .context("cannot chmod the temp dir")?;
    survive_interrupts()?;
    let outcome = run_with_daemons(temp.path(), &binary, release, cargo_test_args);
    let cleanup = remove_tree(temp.path());
    let code = outcome?;
    cleanup?;
    Ok(code)
}

/// The test targets of `tests/` that read the release `cargo xtask dist` wrote.
const RELEASE_TESTS: &[&str] = &["release", "ci_install"];

enum Release {
    None,
    Ready(std::path::PathBuf),
    Building(std::thread::JoinHandle<anyhow::Result<std::path::PathBuf>>),
}

/// `cargo xtask dist` on a thread.
fn build_release(
    binary: std::path::PathBuf,
) -> std::thread::JoinHandle<anyhow::Result<std::path::PathBuf>> {
    std::thread::spawn(move || {
        let started = std::time::Instant::now();
        let release = crate::dist::build(&crate::dist::Args::default(), &binary);
        println!("test: cargo xtask dist took {:.0?}", started.elapsed());
        release
    })
}

/// `cargo test --lib` of the fuzz crate, whose seed-corpus tests would otherwise never run. It
/// is a workspace of its own (cargo-fuzz builds it with nightly and sanitizer flags), but these
/// tests need neither: built with the same toolchain into the main workspace's target
/// directory, they reuse the dependencies the other tests compiled (about 60 crates left to
/// build, where a nightly build of its own compiled every one: 6 minutes of CI). For that its
/// Cargo.lock is the main one's plus libfuzzer-sys, and the debug profile is shared
/// (`.cargo/config.toml`). It builds oci-attest with the tracer (bpf-linker from PATH).
fn fuzz_seed_tests() -> Command {
    let mut fuzz = Command::new("cargo");
    fuzz.args(["test", "--lib", "--target-dir"])
        .arg(target_dir())
        .current_dir(paths::workspace_root().join("oci-attest/fuzz"))
        .env("PATH", paths::search_path())
        .env(REQUIRE_ALL_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    fuzz
}

/// `cargo build -p oci-attest` (debug, for the host): the binary the tests run, and the one
/// that attests the release build.
pub fn build_host_binary() -> anyhow::Result<std::path::PathBuf> {
    let status = Command::new("cargo")
        .args(["build", "-p", "oci-attest"])
        .env("PATH", paths::search_path())
        .current_dir(paths::workspace_root())
        .status()
        .context("cannot start cargo build")?;
    ensure!(
        status.success(),
        "`cargo build -p oci-attest` failed ({status})"
    );
    Ok(target_dir().join("debug/oci-attest"))
}

pub fn target_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| paths::workspace_root().join("target"), Into::into)
}

/// Ctrl-C reaches the whole foreground process group; cargo test stops, and xtask must live on
/// to stop the daemons. A no-op handler (unlike SIG_IGN) is reset for the children at exec.
fn survive_interrupts() -> anyhow::Result<()> {
    extern "C" fn note_signal(_: std::ffi::c_int) {}
    let action = SigAction::new(
        SigHandler::Handler(note_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler does nothing, so it is async-signal-safe.
        unsafe { sigaction(signal, &action) }.with_context(|| format!("cannot handle {signal}"))?;
    }
    Ok(())
}

fn run_with_daemons(
    temp: &std::path::Path,
    binary: &std::path::Path,
    release: Release,
    cargo_test_args: &[String],
) -> anyhow::Result<ExitCode> {
    let mut daemons = Daemons::start(&temp.join("daemons"))?;
    println!(
        "test: containerd at {}, dockerd at {}",
        daemons.containerd_address.display(),
        daemons.docker_host
    );
    // On error, dropping `daemons` stops them.
    let mut registries = Registries::start(&temp.join("registries"))?;
    println!(
        "test: registries at {} (plain HTTP) and {} (TLS, basic auth)",
        registries.handles.plain, registries.handles.tls
    );
    let result = build_fixtures_and_test(
        temp,
        binary,
        release,
        &daemons,
        &registries,
        cargo_test_args,
    );
    let stopped_registries = registries.stop();
    let stopped = daemons.stop();
    let code = result?;
    stopped_registries?;
    stopped?;
    Ok(code)
}

fn build_fixtures_and_test(
    temp: &std::path::Path,
    binary: &std::path::Path,
    release: Release,
    daemons: &Daemons,
    registries: &Registries,
    cargo_test_args: &[String],
) -> anyhow::Result<ExitCode> {
    let fixtures_dir = std::env::var_os("OCI_ATTEST_FIXTURES")
        .map_or_else(paths::default_fixtures_dir, Into::into);
    let fixtures = fixtures::ensure_built(&std::path::absolute(fixtures_dir)?, &daemons.handles())?;
    println!(
        "test: {} fixtures in {}",
        fixtures.index.fixtures.len(),
        fixtures.dir.display()
    );
    let storage = ContainersStorage::create(&temp.join("storage"))?;

    let cargo_test = |args: &[String], release: Option<&std::path::Path>| {
        let mut cargo = Command::new("cargo");
        cargo
            .args(["test", "--no-fail-fast"])
            .args(args)
            .current_dir(paths::workspace_root())
            .env("PATH", paths::search_path())
            .env(REQUIRE_ALL_ENV, "1")
            .env("OCI_ATTEST_BIN", binary)
            .env("OCI_ATTEST_FIXTURES", &fixtures.dir)
            .env("OCI_ATTEST_PYTHON", paths::venv_python())
            .envs(daemons.env())
            .envs(registries.env())
            .envs(storage.env())
            .envs(release.map(|dir| (RELEASE_DIR_ENV, dir)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cargo
    };
    // The eBPF crate is no_std for the bpf target; oci-attest's build.rs builds it.
    let whole_workspace = strings(&["--workspace", "--exclude", "oci-attest-ebpf"]);
    let mut totals = Totals::default();
    let status = match release {
        Release::None => stream_tests(
            &mut cargo_test(&[whole_workspace, cargo_test_args.to_vec()].concat(), None),
            &mut totals,
        )?,
        Release::Ready(dir) => {
            let status = stream_tests(
                &mut cargo_test(
                    &[whole_workspace, cargo_test_args.to_vec()].concat(),
                    Some(&dir),
                ),
                &mut totals,
            )?;
            if cargo_test_args.is_empty() && status.success() {
                stream_tests(&mut fuzz_seed_tests(), &mut totals)?
            } else {
                status
            }
        }
        Release::Building(dist) => {
            let mut statuses = vec![
                stream_tests(
                    &mut cargo_test(
                        &[whole_workspace, strings(&["--exclude", "oci-attest-tests"])].concat(),
                        None,
                    ),
                    &mut totals,
                )?,
                stream_tests(
                    &mut cargo_test(&tests_crate_targets(false)?, None),
                    &mut totals,
                )?,
            ];
            // While the release still builds: the workspace's debug build is done and its lock
            // free for the fuzz crate's.
            statuses.push(stream_tests(&mut fuzz_seed_tests(), &mut totals)?);
            // What the release adds to the suite's wall time: the wait for it once the other
            // tests are done, and its own tests (the CI budget for dist is 5 minutes).
            let waiting = std::time::Instant::now();
            let release = dist
                .join()
                .map_err(|_| anyhow::anyhow!("cargo xtask dist panicked"))??;
            let waited = waiting.elapsed();
            statuses.push(stream_tests(
                &mut cargo_test(&tests_crate_targets(true)?, Some(&release)),
                &mut totals,
            )?);
            println!(
                "test: the release added {:.0?} to the suite (waited {waited:.0?} for cargo \
                 xtask dist after the other tests, then its tests)",
                waiting.elapsed()
            );
            statuses
                .into_iter()
                .find(|status| !status.success())
                .unwrap_or_default()
        }
    };
    println!(
        "test: {} passed, {} failed, {} skipped, {} ignored (exit {})",
        totals.passed(),
        totals.failed,
        totals.skipped,
        totals.ignored,
        status
            .code()
            .map_or_else(|| "by signal".to_owned(), |code| code.to_string())
    );
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

fn strings(words: &[&str]) -> Vec<String> {
    words.iter().map(|word| (*word).to_owned()).collect()
}

/// `cargo test` arguments selecting the `oci-attest-tests` targets that read the release
/// ([`RELEASE_TESTS`]), or all the others (its library, binaries and other test files).
fn tests_crate_targets(release: bool) -> anyhow::Result<Vec<String>> {
    let dir = paths::workspace_root().join("tests/tests");
    let mut args = strings(&["-p", "oci-attest-tests"]);
    if !release {
        args.extend(strings(&["--lib", "--bins"]));
    }
    let mut names = Vec::new();
    for entry in
        std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?
    {
        let path = entry?.path();
        if path.extension().is_some_and(|extension| extension == "rs") {
            let name = path.file_stem().context("a test file without a name")?;
            names.push(name.to_string_lossy().into_owned());
        }
    }
    names.sort();
    for name in names {
        if RELEASE_TESTS.contains(&name.as_str()) == release {
            args.extend(["--test".to_owned(), name]);
        }
    }
    Ok(args)
}

/// Runs a `cargo test` command, echoing its output and adding its results to `totals`.
fn stream_tests(cargo: &mut Command, totals: &mut Totals) -> anyhow::Result<ExitStatus> {
    let mut child = cargo.spawn().context("cannot start cargo test")?;
    let stdout = child.stdout.take().context("cargo test stdout")?;
    let stderr = child.stderr.take().context("cargo test stderr")?;
    // Skips are reported on stderr (libtest does not capture a direct write to it).
    let skips = std::thread::spawn(move || -> std::io::Result<u64> {
        let mut skipped = 0;
        for line in BufReader::new(stderr).lines() {
            let line = line?;
            eprintln!("{line}");
            skipped += u64::from(line.starts_with(SKIPPED));
        }
        Ok(skipped)
    });
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test output")?;
        println!("{line}");
        totals.add(&line);
    }
    let status = child.wait().context("waiting for cargo test")?;
    totals.skipped += skips
        .join()
        .map_err(|_| anyhow::anyhow!("the stderr reader panicked"))?
        .context("reading cargo test stderr")?;
    Ok(status)
}

/// How `oci_attest_tests::skip` starts its line.
const SKIPPED: &str = "SKIPPED ";

/// Sums libtest's `test result: ok. 3 passed; 0 failed; 1 ignored; ...` lines, and the skips.
#[derive(Debug, Default, PartialEq)]
struct Totals {
    /// As libtest counts them: a skipped test returned early and "passed".
    ran_ok: u64,
    failed: u64,
    ignored: u64,
    skipped: u64,
}

impl Totals {
    /// Tests that passed and did not skip.
    fn passed(&self) -> u64 {
        self.ran_ok.saturating_sub(self.skipped)
    }

    fn add(&mut self, line: &str) {
        let Some(summary) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in summary.split(['.', ';']) {
            let mut words = part.split_whitespace();
            let (Some(count), Some(kind)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(count) = count.parse::<u64>() else {
                continue;
            };
            match kind {
                "passed" => self.ran_ok += count,
                "failed" => self.failed += count,
                "ignored" => self.ignored += count,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libtest_summaries_are_summed() {
        let mut totals = Totals::default();
        totals.add("test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s");
        totals.add("running 2 tests");
        totals
            .add("test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out");
        totals.skipped = 1;
        assert_eq!(
            totals,
            Totals {
                ran_ok: 4,
                failed: 1,
                ignored: 1,
                skipped: 1,
            }
        );
        assert_eq!(totals.passed(), 3);
    }
}
