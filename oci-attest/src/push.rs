//! A pushed image is a subject. `skopeo copy … docker://REF`, `podman push`, `buildah push`,
//! `docker push`, `crane push` and `crane copy` send an image to a registry and leave no archive
//! behind; what identifies the image is the manifest digest the registry stored. skopeo, podman
//! and buildah write it to `--digestfile` (added to their argv when the user did not give one);
//! for the others the reference is resolved against the registry after the push.
//!
//! The options the push tool was given to reach the registry (`--dest-creds`, `--authfile`,
//! `--cert-dir`, `--tls-verify=false`, …) are read too, so that resolving the digest and
//! `run --attach` use the same access without asking for it twice.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{bail, Context as _};
use serde_json::json;

use crate::attestors::{oci, Attestation};
use crate::digest::{sha256_hex, sha256_set};
use crate::registry::client::check_digest;
use crate::registry::RegistryArgs;
use crate::save_command::{
    basename, skip_options, strip_wrappers, BUILDAH_OPTIONS, DOCKER_OPTIONS, PODMAN_OPTIONS,
    SKOPEO_OPTIONS,
};

/// A push command: program, subcommand words, the program's global options that take a value
/// (skipped before the subcommand, shared with the save commands), the subcommand's own options
/// that take one, where the destination reference is, whether `--digestfile` exists, and its
/// options that say how to reach the destination registry.
struct PushCommand {
    program: &'static str,
    subcommand: &'static [&'static str],
    global_options: &'static [&'static str],
    options: &'static [&'static str],
    destination: Destination,
    digestfile: bool,
    access: &'static [(&'static str, AccessOption)],
}

/// What an access option of a push tool sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AccessOption {
    Creds,
    Username,
    Password,
    Authfile,
    CertDir,
    TlsVerify,
}

/// skopeo copy's options for the destination; later entries win over earlier ones
/// (`--dest-authfile` over `--authfile`).
const SKOPEO_COPY_ACCESS: &[(&str, AccessOption)] = &[
    ("--authfile", AccessOption::Authfile),
    ("--dest-authfile", AccessOption::Authfile),
    ("--dest-creds", AccessOption::Creds),
    ("--dest-username", AccessOption::Username),
    ("--dest-password", AccessOption::Password),
    ("--dest-cert-dir", AccessOption::CertDir),
    ("--dest-tls-verify", AccessOption::TlsVerify),
];

/// podman push's and buildah push's.
const PODMAN_PUSH_ACCESS: &[(&str, AccessOption)] = &[
    ("--authfile", AccessOption::Authfile),
    ("--creds", AccessOption::Creds),
    ("--cert-dir", AccessOption::CertDir),
    ("--tls-verify", AccessOption::TlsVerify),
];

/// How the push command reached the registry, as its options said (all `None` for docker and
/// crane, which read the same auth files oci-attest reads). `Debug` hides the credentials.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PushAccess {
    /// `USER:PASSWORD`, and the option it came from.
    pub creds: Option<(String, String)>,
    pub authfile: Option<PathBuf>,
    pub cert_dir: Option<PathBuf>,
    pub tls_verify: Option<bool>,
}

impl std::fmt::Debug for PushAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushAccess")
            .field("creds", &self.creds.as_ref().map(|(_, from)| from))
            .field("authfile", &self.authfile)
            .field("cert_dir", &self.cert_dir)
            .field("tls_verify", &self.tls_verify)
            .finish()
    }
}

impl PushAccess {
    /// `registry` with what the user did not give filled in from the push command (relative
    /// paths are relative to `working_dir`, where the push ran), and what was taken, for a log
    /// line.
    pub fn fill(&self, registry: &RegistryArgs, working_dir: &Path) -> (RegistryArgs, Vec<String>) {
        let mut filled = registry.clone();
        let mut taken = Vec::new();
        if registry.creds.is_none() && registry.authfile.is_none() {
            if let Some((creds, option)) = &self.creds {
                filled.creds = Some(creds.clone());
                filled.creds_source = Some(format!("the push command's {option}"));
                taken.push(option.clone());
            } else if let Some(authfile) = &self.authfile {
                filled.authfile = Some(working_dir.join(authfile));
                taken.push("--authfile".to_owned());
            }
        }
        if registry.cert_dir.is_none() && registry.ca_file.is_none() {
            if let Some(cert_dir) = &self.cert_dir {
                filled.cert_dir = Some(working_dir.join(cert_dir));
                taken.push("--cert-dir".to_owned());
            }
        }
        if registry.tls_verify.is_none() && !registry.plain_http {
            if let Some(verify) = self.tls_verify {
                filled.tls_verify = Some(verify);
                taken.push(format!("--tls-verify={verify}"));
            }
        }
        (filled, taken)
    }
}

#[derive(Clone, Copy)]
enum Destination {
    /// `skopeo copy SRC DST`, `crane push TAR REF`, `crane copy SRC REF`.
    Second,
    /// `podman push IMAGE [DEST]`: DEST when given, else IMAGE.
    LastOfOneOrTwo,
    /// `docker push NAME[:TAG]`.
    First,
}

/// `skopeo copy`'s options that take a value.
const SKOPEO_COPY_OPTIONS: &[&str] = &[
    "--authfile",
    "--src-authfile",
    "--dest-authfile",
    "--creds",
    "--src-creds",
    "--dest-creds",
    "--src-username",
    "--src-password",
    "--dest-username",
    "--dest-password",
    "--src-cert-dir",
    "--dest-cert-dir",
    "--src-registry-token",
    "--dest-registry-token",
    "--src-daemon-host",
    "--dest-daemon-host",
    "--src-shared-blob-dir",
    "--dest-shared-blob-dir",
    "--digestfile",
    "--format",
    "-f",
    "--additional-tag",
    "--sign-by",
    "--sign-by-sigstore",
    "--sign-by-sigstore-private-key",
    "--sign-passphrase-file",
    "--sign-identity",
    "--encryption-key",
    "--encrypt-layer",
    "--decryption-key",
    "--multi-arch",
    "--dest-compress-format",
    "--dest-compress-level",
    "--retry-times",
    "--retry-delay",
    "--image-parallel-copies",
];

/// `podman push`'s and `buildah push`'s options that take a value.
const PODMAN_PUSH_OPTIONS: &[&str] = &[
    "--authfile",
    "--cert-dir",
    "--creds",
    "--digestfile",
    "--format",
    "-f",
    "--sign-by",
    "--sign-by-sigstore",
    "--sign-by-sigstore-private-key",
    "--sign-passphrase-file",
    "--compression-format",
    "--compression-level",
    "--encryption-key",
    "--encrypt-layer",
    "--retry",
    "--retry-delay",
    "--signature-policy",
];

const DOCKER_PUSH_OPTIONS: &[&str] = &["--platform"];

const CRANE_OPTIONS: &[&str] = &["--platform", "--image-refs", "-j", "--jobs"];

const PUSH_COMMANDS: &[PushCommand] = &[
    PushCommand {
        program: "skopeo",
        subcommand: &["copy"],
        global_options: SKOPEO_OPTIONS,
        options: SKOPEO_COPY_OPTIONS,
        destination: Destination::Second,
        digestfile: true,
        access: SKOPEO_COPY_ACCESS,
    },
    PushCommand {
        program: "podman",
        subcommand: &["push"],
        global_options: PODMAN_OPTIONS,
        options: PODMAN_PUSH_OPTIONS,
        destination: Destination::LastOfOneOrTwo,
        digestfile: true,
        access: PODMAN_PUSH_ACCESS,
    },
    PushCommand {
        program: "podman",
        subcommand: &["image", "push"],
        global_options: PODMAN_OPTIONS,
        options: PODMAN_PUSH_OPTIONS,
        destination: Destination::LastOfOneOrTwo,
        digestfile: true,
        access: PODMAN_PUSH_ACCESS,
    },
    PushCommand {
        program: "buildah",
        subcommand: &["push"],
        global_options: BUILDAH_OPTIONS,
        options: PODMAN_PUSH_OPTIONS,
        destination: Destination::LastOfOneOrTwo,
        digestfile: true,
        access: PODMAN_PUSH_ACCESS,
    },
    PushCommand {
        program: "docker",
        subcommand: &["push"],
        global_options: DOCKER_OPTIONS,
        options: DOCKER_PUSH_OPTIONS,
        destination: Destination::First,
        digestfile: false,
        access: &[],
    },
    PushCommand {
        program: "docker",
        subcommand: &["image", "push"],
        global_options: DOCKER_OPTIONS,
        options: DOCKER_PUSH_OPTIONS,
        destination: Destination::First,
        digestfile: false,
        access: &[],
    },
    PushCommand {
        program: "crane",
        subcommand: &["push"],
        global_options: CRANE_OPTIONS,
        options: CRANE_OPTIONS,
        destination: Destination::Second,
        digestfile: false,
        access: &[],
    },
    PushCommand {
        program: "crane",
        subcommand: &["copy"],
        global_options: CRANE_OPTIONS,
        options: CRANE_OPTIONS,
        destination: Destination::Second,
        digestfile: false,
        access: &[],
    },
    PushCommand {
        program: "crane",
        subcommand: &["cp"],
        global_options: CRANE_OPTIONS,
        options: CRANE_OPTIONS,
        destination: Destination::Second,
        digestfile: false,
        access: &[],
    },
];

/// containers/image transports that are not a registry.
const LOCAL_TRANSPORTS: &[&str] = &[
    "containers-storage:",
    "dir:",
    "docker-archive:",
    "docker-daemon:",
    "oci:",
    "oci-archive:",
    "sif:",
    "tarball:",
];

/// A recognised push: the tool, the destination reference (without `docker://`), the
/// `--digestfile` the user gave, where in argv one can be added, and how it reached the registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Push {
    pub tool: String,
    pub reference: String,
    pub digestfile: Option<PathBuf>,
    /// Index in argv right after the subcommand, when the tool takes `--digestfile`.
    pub digestfile_insert_at: Option<usize>,
    pub access: PushAccess,
}

/// The push `argv` performs, if it is one of the push commands (after wrappers such as `sudo`).
pub fn recognise(argv: &[String]) -> Option<Push> {
    let command = strip_wrappers(argv);
    let offset = argv.len() - command.len();
    let (program, rest) = command.split_first()?;
    let program = basename(program);
    PUSH_COMMANDS
        .iter()
        .filter(|push| push.program == program)
        .find_map(|push| {
            let words = skip_options(rest, push.global_options);
            let matches = words.len() >= push.subcommand.len()
                && words
                    .iter()
                    .zip(push.subcommand)
                    .all(|(word, expected)| word == expected);
            if !matches {
                return None;
            }
            let after_subcommand = &words[push.subcommand.len()..];
            let (operands, options) = operands(after_subcommand, push.options);
            let value = |name: &str| {
                options
                    .iter()
                    .rev()
                    .find(|(option, _)| option == name)
                    .map(|(_, value)| value.clone())
            };
            let digestfile = value("--digestfile").flatten().map(PathBuf::from);
            let destination = match (push.destination, operands.as_slice()) {
                (Destination::Second, [_, destination, ..])
                | (Destination::LastOfOneOrTwo, [_, destination] | [destination])
                | (Destination::First, [destination, ..]) => destination.as_str(),
                _ => return None,
            };
            let reference = registry_reference(destination, push.program == "skopeo")?;
            let insert_at = offset + (command.len() - after_subcommand.len());
            Some(Push {
                tool: std::iter::once(push.program)
                    .chain(push.subcommand.iter().copied())
                    .collect::<Vec<_>>()
                    .join(" "),
                reference,
                digestfile,
                digestfile_insert_at: push.digestfile.then_some(insert_at),
                access: access(push.access, value),
            })
        })
}

/// The operands, and the options with their values (`None` for a flag without one), in order.
fn operands(
    args: &[String],
    value_options: &[&str],
) -> (Vec<String>, Vec<(String, Option<String>)>) {
    let mut operands = Vec::new();
    let mut options = Vec::new();
    let mut words = args.iter();
    while let Some(word) = words.next() {
        if word == "--" {
            operands.extend(words.by_ref().cloned());
            break;
        }
        if word.starts_with('-') && word != "-" {
            let (name, value) = match word.split_once('=') {
                Some((name, value)) => (name, Some(value.to_owned())),
                None if value_options.contains(&word.as_str()) || word == "--digestfile" => {
                    (word.as_str(), words.next().cloned())
                }
                None => (word.as_str(), None),
            };
            options.push((name.to_owned(), value));
        } else {
            operands.push(word.clone());
        }
    }
    (operands, options)
}

/// The push command's access options (`value(name)` is the last value given to `name`: `None`
/// when absent, `Some(None)` for a flag without a value).
fn access(
    table: &[(&str, AccessOption)],
    value: impl Fn(&str) -> Option<Option<String>>,
) -> PushAccess {
    let mut access = PushAccess::default();
    let mut username = None;
    let mut password = None;
    for (name, option) in table {
        let Some(given) = value(name) else { continue };
        match option {
            AccessOption::Creds => access.creds = given.map(|creds| (creds, (*name).to_owned())),
            AccessOption::Username => username = given,
            AccessOption::Password => password = given,
            AccessOption::Authfile => access.authfile = given.map(PathBuf::from),
            AccessOption::CertDir => access.cert_dir = given.map(PathBuf::from),
            AccessOption::TlsVerify => {
                access.tls_verify = Some(given.as_deref() != Some("false"));
            }
        }
    }
    if let (None, Some(username), Some(password)) = (&access.creds, username, password) {
        access.creds = Some((
            format!("{username}:{password}"),
            "--dest-username/--dest-password".to_owned(),
        ));
    }
    access
}

/// `docker://REF` → `REF`; a bare reference stays; other transports are not registries.
/// skopeo always names its transport, so a bare word is not a registry there.
fn registry_reference(destination: &str, transport_required: bool) -> Option<String> {
    if let Some(reference) = destination.strip_prefix("docker://") {
        return Some(reference.to_owned());
    }
    if transport_required
        || LOCAL_TRANSPORTS
            .iter()
            .any(|transport| destination.starts_with(transport))
    {
        return None;
    }
    Some(destination.to_owned())
}

/// Reads the digest a tool wrote to its `--digestfile` (`sha256:<hex>`).
pub fn read_digestfile(path: &Path) -> anyhow::Result<String> {
    const MAX_DIGESTFILE_BYTES: u64 = 1024;
    let metadata = std::fs::metadata(path)
        .with_context(|| format!("{}: the pushed digest was not written", path.display()))?;
    if !metadata.is_file() || metadata.len() > MAX_DIGESTFILE_BYTES {
        bail!("{}: not a digest file", path.display());
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let digest = text.trim().to_owned();
    check_digest(&digest).with_context(|| format!("{}: bad digest", path.display()))?;
    Ok(digest)
}

/// The oci attestation of a pushed image: subjects `manifestdigest:<hex>` and
/// `imagereference:<reference>` (digest: the SHA-256 of the reference text, as tags are).
pub fn attest(push: &Push, digest: &str, how: &str, started: SystemTime) -> Attestation {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    let manifest = (format!("manifestdigest:{hex}"), sha256_set(hex));
    let reference = (
        format!("imagereference:{}", push.reference),
        sha256_set(sha256_hex(push.reference.as_bytes())),
    );
    Attestation {
        type_uri: oci::TYPE_URI,
        predicate: json!({
            "manifestdigest": {"sha256": hex},
            "imagereference": push.reference,
            "pushedby": push.tool,
            "digestsource": how,
        }),
        subjects: vec![manifest.clone(), reference],
        backrefs: vec![manifest],
        started,
        ended: SystemTime::now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn recognises_each_push_and_its_destination() {
        let cases = [
            (
                "skopeo copy --dest-creds u:p docker-archive:a.tar docker://reg:5000/app:1",
                "skopeo copy",
                "reg:5000/app:1",
                Some(2),
            ),
            (
                "sudo podman push app:1 docker://reg/app:1",
                "podman push",
                "reg/app:1",
                Some(3),
            ),
            ("podman push reg/app:1", "podman push", "reg/app:1", Some(2)),
            (
                "buildah --root /x push --creds a:b app reg/app",
                "buildah push",
                "reg/app",
                Some(4),
            ),
            (
                "docker -H unix:///s push reg/app:1",
                "docker push",
                "reg/app:1",
                None,
            ),
            (
                "crane push img.tar reg/app:1",
                "crane push",
                "reg/app:1",
                None,
            ),
            ("crane copy reg/a:1 reg/b:1", "crane copy", "reg/b:1", None),
        ];
        for (line, tool, reference, insert_at) in cases {
            let push = recognise(&argv(line)).unwrap_or_else(|| panic!("{line}"));
            assert_eq!(push.tool, tool, "{line}");
            assert_eq!(push.reference, reference, "{line}");
            assert_eq!(push.digestfile_insert_at, insert_at, "{line}");
        }
    }

    #[test]
    fn local_destinations_are_not_pushes_and_digestfiles_are_found() {
        for line in [
            "skopeo copy docker://reg/app:1 oci-archive:app.tar",
            "skopeo copy docker://reg/app:1 reg/app:2",
            "podman push app:1 oci-archive:/tmp/app.tar",
            "podman save app:1",
            "crane manifest reg/app:1",
        ] {
            assert_eq!(recognise(&argv(line)), None, "{line}");
        }
        let push = recognise(&argv("skopeo copy --digestfile=d.txt dir:x docker://reg/a")).unwrap();
        assert_eq!(push.digestfile, Some(PathBuf::from("d.txt")));
        let push = recognise(&argv("podman push --digestfile d2 app reg/a")).unwrap();
        assert_eq!(push.digestfile, Some(PathBuf::from("d2")));
    }

    #[test]
    fn the_push_commands_registry_access_is_read() {
        let push = recognise(&argv(
            "skopeo copy --authfile a.json --dest-authfile d.json --dest-creds u:p:q \
             --dest-cert-dir certs --dest-tls-verify=false dir:x docker://reg/a",
        ))
        .unwrap();
        assert_eq!(
            push.access.creds,
            Some(("u:p:q".to_owned(), "--dest-creds".to_owned()))
        );
        assert_eq!(push.access.authfile, Some(PathBuf::from("d.json")));
        assert_eq!(push.access.cert_dir, Some(PathBuf::from("certs")));
        assert_eq!(push.access.tls_verify, Some(false));
        assert!(!format!("{:?}", push.access).contains("u:p:q"));
        let split = recognise(&argv(
            "skopeo copy --dest-username u --dest-password p --src-creds s:s dir:x docker://reg/a",
        ))
        .unwrap();
        assert_eq!(split.access.creds.unwrap().0, "u:p");
        let podman = recognise(&argv("podman push --tls-verify --creds a:b app reg/a")).unwrap();
        assert_eq!(podman.access.tls_verify, Some(true));
        assert_eq!(podman.access.creds.unwrap().0, "a:b");
        let docker = recognise(&argv("docker push reg/app:1")).unwrap();
        assert_eq!(docker.access, PushAccess::default());
    }

    #[test]
    fn what_the_user_gave_wins_over_the_push_commands_access() {
        let push = recognise(&argv(
            "podman push --creds a:b --cert-dir c --tls-verify=false app reg/a",
        ))
        .unwrap();
        let dir = Path::new("/work");
        let (filled, taken) = push.access.fill(&RegistryArgs::default(), dir);
        assert_eq!(filled.creds.as_deref(), Some("a:b"));
        assert_eq!(
            filled.creds_source.as_deref(),
            Some("the push command's --creds")
        );
        assert_eq!(filled.cert_dir, Some(PathBuf::from("/work/c")));
        assert_eq!(filled.tls_verify, Some(false));
        assert_eq!(taken, ["--creds", "--cert-dir", "--tls-verify=false"]);
        let given = RegistryArgs {
            authfile: Some(PathBuf::from("mine.json")),
            ca_file: Some(PathBuf::from("ca.pem")),
            tls_verify: Some(true),
            ..RegistryArgs::default()
        };
        let (kept, taken) = push.access.fill(&given, dir);
        assert_eq!(kept.creds, None);
        assert_eq!(kept.cert_dir, None);
        assert_eq!(kept.tls_verify, Some(true));
        assert!(taken.is_empty());
    }

    #[test]
    fn digest_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        let digest = format!("sha256:{}", "a".repeat(64));
        std::fs::write(&good, format!("{digest}\n")).unwrap();
        assert_eq!(read_digestfile(&good).unwrap(), digest);
        let bad = dir.path().join("bad");
        std::fs::write(&bad, "sha256:zz").unwrap();
        assert!(read_digestfile(&bad).is_err());
        assert!(read_digestfile(&dir.path().join("missing")).is_err());
    }
}
