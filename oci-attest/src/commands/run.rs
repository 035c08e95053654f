//! `oci-attest run [OPTIONS] -- CMD...`: run a save command, observe it, attest what it
//! produced, sign, write atomically.
//!
//! Everything that can be checked before the command runs is checked first (key, output
//! location, options, eBPF availability for `--trace ebpf`), so a misconfigured CI step fails
//! without having run the save. After the command: products, attestors, statement, signature.
//! Any failure after the command leaves an existing `--outfile` untouched.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;

use crate::attest::slsa;
use crate::attestors::environment;
use crate::attestors::{self, Attestation, Attestor, AttestorOptions, Outcome, RunContext};
use crate::certificate::CertChain;
use crate::exit::{failure, FailureKind};
use crate::identity::{self, CommandIdentity, IdentitySource};
use crate::keys::{self, PrivateKey};
use crate::observed::{Incomplete, IncompleteReason, Observation, TraceMode};
use crate::product_scope::ProductScope;
use crate::products;
use crate::push::{self, Push};
use crate::reconcile;
use crate::redact::Redaction;
use crate::registry::{ImageRef, RegistryArgs};
use crate::run_options::{self, DirIdentity, RunOptions, Setting, Settings};
use crate::snapshot::{FileStamp, Snapshot};
use crate::trace::{self, Tracer};
use crate::{collection, dsse, launch, output};

#[derive(Debug, clap::Args)]
#[command(after_help = concat!("Examples:\n  \
    oci-attest run -k key.pem -o att.json -- docker save -o image.tar app:1\n  \
    oci-attest run -k key.pem -o att.json -a environment,git -- make image\n  \
    oci-attest run --unsigned --trace off -- skopeo copy containers-storage:app:1 oci-archive:app.oci.tar\n  \
    oci-attest run -k key.pem -o att.json --json -- skopeo copy ... | jq .products\n  \
    oci-attest run -k key.pem -o att.json --json-out summary.json -a github -- docker save -o app.tar app:1\n\n", crate::exit_codes_help!()))]
pub struct Args {
    /// Step name recorded in the collection (default: `oci-push` when the command pushes an
    /// image, whichever tool, else `oci-save` when an image save was recognised, else `run`).
    #[arg(short = 's', long)]
    pub step: Option<String>,
    /// Private key (PEM: PKCS#8, PKCS#1, SEC1; Ed25519, ECDSA P-256/P-384, RSA) to sign with.
    #[arg(short = 'k', long = "signer-file-key-path", value_name = "KEY.pem")]
    pub key: Option<PathBuf>,
    /// File holding the passphrase of an encrypted key (else env OCI_ATTEST_KEY_PASSPHRASE).
    #[arg(long = "signer-file-key-passphrase-path", value_name = "FILE")]
    pub passphrase: Option<PathBuf>,
    #[command(flatten)]
    pub certificate: crate::certificate::CertArgs,
    /// RFC 3161 timestamp servers (comma separated or repeated): each signature gets a token
    /// from each, stored as witness stores it. A server failing fails the run; nothing is signed.
    #[arg(
        long = "timestamp-servers",
        value_name = "URL",
        value_delimiter = ',',
        conflicts_with = "unsigned"
    )]
    pub timestamp_servers: Vec<String>,
    /// Write the bare in-toto Statement instead of a signed envelope.
    #[arg(long, conflicts_with_all = ["key", "passphrase", "cert"])]
    pub unsigned: bool,
    /// Where to write the attestation: a file is replaced atomically, a symlink written through,
    /// a device or FIFO written directly; `-` is stdout. Default: stdout, only when it is a
    /// terminal.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub outfile: Option<PathBuf>,
    /// Attestors to run besides the always-on product, material and command-run, comma
    /// separated; the default is environment,git as in witness (`-a command-run` for none).
    /// oci also attaches by itself when an image save is recognised.
    #[arg(
        short = 'a',
        long = "attestations",
        value_enum,
        value_delimiter = ',',
        default_value = "environment,git"
    )]
    pub attestations: Vec<Attestor>,
    /// With -a github: a file holding the job's OIDC token (JWT); its claims are recorded,
    /// decoded but not verified (no network access; see docs/format.md).
    #[arg(long, value_name = "FILE")]
    pub attestor_github_jwt_path: Option<PathBuf>,
    /// With -a gitlab: a file holding the job's ID token (JWT, e.g. from `id_tokens:`); its
    /// claims are recorded, decoded but not verified.
    #[arg(long, value_name = "FILE")]
    pub attestor_gitlab_jwt_path: Option<PathBuf>,
    /// Kernel tracing: auto (eBPF if it loads, else untraced with a warning), ebpf (required),
    /// off. A bare `--trace` or `-r` is witness's boolean: ebpf; `true`/`false` are ebpf/off.
    #[arg(
        short = 'r',
        long,
        value_enum,
        value_name = "MODE",
        default_value = "auto",
        num_args = 0..=1,
        default_missing_value = "ebpf"
    )]
    pub trace: TraceChoice,
    /// Sign even when the trace is incomplete (lost events, unmodelled syscalls, unverified
    /// products...): the reasons are recorded in `summary.incomplete`.
    #[arg(long)]
    pub allow_incomplete_trace: bool,
    /// After the command exits, how long to wait for the rest of its process tree (orphans,
    /// daemons); those still running then make the trace incomplete.
    #[arg(long, value_name = "SECONDS", default_value_t = run_options::DEFAULT_WAIT_FOR_TREE)]
    pub wait_for_tree: u64,
    /// Size of the eBPF event ring buffer in bytes (a power of two).
    #[arg(long, value_name = "BYTES", default_value_t = trace::DEFAULT_RING_BUFFER_BYTES)]
    pub trace_buffer_bytes: u32,
    /// Digest algorithms for files.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "sha256")]
    pub hashes: Vec<HashAlgorithm>,
    /// Directory the command runs in and where materials and products are looked for
    /// (default: the current directory).
    #[arg(short = 'd', long, value_name = "DIR")]
    pub workingdir: Option<PathBuf>,
    /// Also record as products the written files matching this glob, even outside the working
    /// directory (relative paths inside it, absolute outside; repeatable).
    #[arg(long, value_name = "GLOB")]
    pub attestor_product_include_glob: Vec<String>,
    /// Do not record as products the files matching this glob (adds to the built-in cache and
    /// lock patterns; repeatable).
    #[arg(long, value_name = "GLOB")]
    pub attestor_product_exclude_glob: Vec<String>,
    /// Also hide the values of these environment variables (globs, case-insensitive).
    #[arg(long, value_name = "GLOB")]
    pub env_add_sensitive_key: Vec<String>,
    /// Show these variables even though their names look sensitive (globs, case-insensitive).
    #[arg(long, value_name = "GLOB", alias = "env-exclude-sensitive-key")]
    pub env_allow_sensitive_key: Vec<String>,
    /// Leave sensitive variables out of the environment attestation instead of showing them
    /// as `******`.
    #[arg(long)]
    pub env_filter_sensitive_vars: bool,
    /// Hide only the variables named by --env-add-sensitive-key, not the built-in list of
    /// secret-looking names (witness's flag; recorded as weakening the run).
    #[arg(long)]
    pub env_disable_default_sensitive_vars: bool,
    /// Also hide every match of this regular expression in every recorded string (only the
    /// capture groups, if it has any; repeatable).
    #[arg(long, value_name = "PATTERN")]
    pub redact_regex: Vec<String>,
    /// Record the command lines (`cmd`, every exec's argv and cmdline) only as sha256 digests
    /// of their redacted words, never as text.
    #[arg(long)]
    pub argv_digests: bool,
    /// Print a JSON summary (step, outfile, exit code, subjects, products, trace counters and
    /// incomplete reasons; on failure the exit code and reason) as the only thing on stdout:
    /// the wrapped command's own stdout goes to stderr instead. Needs -o. To leave the
    /// command's stdout where it is, use --json-out.
    #[arg(long, conflicts_with = "json_out")]
    pub json: bool,
    /// Write the JSON summary to FILE (replaced atomically; `/dev/fd/N` writes to a descriptor
    /// you opened, e.g. `--json-out /dev/fd/3 3>summary.json`) and leave stdout to the command.
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<PathBuf>,
    /// After signing, attach the attestation to the image the command pushed, in its registry
    /// (as `oci-attest attach`; registry options below). If that fails, the signed attestation
    /// is kept at --outfile and the exit code is 9.
    #[arg(long, conflicts_with = "unsigned")]
    pub attach: bool,
    /// With --attach: also add the attestation to cosign's `sha256-<hex>.att` tag.
    #[arg(long, requires = "attach")]
    pub cosign_tag: bool,
    /// Sign even when the pushed image's digest cannot be found (no manifest-digest subject).
    #[arg(long)]
    pub allow_missing_subjects: bool,
    /// Also write SLSA provenance v1 of the run (in-toto Statement v1, signed with the same key)
    /// to PATH; `--attach` attaches it too. Not written when the command fails.
    #[arg(long, value_name = "PATH")]
    pub slsa_out: Option<PathBuf>,
    /// witness's spelling of --slsa-out: the provenance goes to `<OUTFILE>-slsa.json`.
    #[arg(long, requires = "outfile", conflicts_with = "slsa_out")]
    pub attestor_slsa_export: bool,
    /// The provenance's `runDetails.builder.id` (default: the CI job URL on GitHub Actions and
    /// GitLab CI, else https://oci-attest.dev/builders/local/v1).
    #[arg(long, value_name = "URI")]
    pub slsa_builder_id: Option<String>,
    #[command(flatten)]
    pub isolation: IsolationArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// The command to run, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
    /// Where each option came from (command line, environment, config file).
    #[arg(skip)]
    pub provenance: crate::config::Provenance,
}

/// Who the command runs as, and what it may reach (SECURITY.md).
#[derive(Debug, Default, clap::Args)]
#[command(next_help_heading = "Command identity")]
pub struct IsolationArgs {
    /// Run the command as USER (a name or uid), with GROUP as its primary group if given. By
    /// default the command runs as the user who started oci-attest through sudo
    /// (SUDO_UID/SUDO_GID), or as oci-attest's own user when oci-attest is not root.
    /// `--run-as root` runs it as root: it could then read the key and tamper with the tracer,
    /// and `verify` rejects the attestation unless given --allow-root-command.
    #[arg(long, value_name = "USER[:GROUP]")]
    pub run_as: Option<String>,
    /// Do not set no_new_privs on the command, so setuid programs inside it work (rootless
    /// podman and buildah need the setuid newuidmap/newgidmap). Recorded as
    /// identity.nonewprivs=false.
    #[arg(long)]
    pub allow_new_privileges: bool,
    /// Start the command even when its user can read the signing key or the passphrase file
    /// (it could sign a statement of its own); recorded as identity.keyreadable=true.
    #[arg(long)]
    pub allow_readable_key: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TraceChoice {
    Auto,
    #[value(alias = "true")]
    Ebpf,
    #[value(alias = "false")]
    Off,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum HashAlgorithm {
    Sha256,
}

/// What `run` knows before the command starts.
struct Prepared {
    /// Who the command runs as.
    identity: CommandIdentity,
    /// `None` with `--unsigned`: the bare statement is written.
    signer: Option<PrivateKey>,
    /// The signer's certificate chain, recorded in the signature.
    chain: Option<CertChain>,
    destination: output::Destination,
    /// Which written files are products.
    scope: ProductScope,
    tracer: Result<Tracer, String>,
    /// The attached attestors and what they look at.
    context: RunContext,
    /// Pre-material and material attestations, taken before the command.
    early: Vec<Attestation>,
    /// Where the SLSA provenance goes (`--slsa-out`, `--attestor-slsa-export`).
    provenance: Option<output::Destination>,
}

pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    let summary_out = SummaryOut::open(&args)?;
    let outcome = attest_run(&args);
    let Some(summary_out) = summary_out else {
        return outcome.map(|(_, code)| code);
    };
    let summary = match &outcome {
        Ok((summary, _)) => summary.clone(),
        Err(error) => {
            let kind = crate::exit::kind_of(error);
            serde_json::json!({
                "exitcode": kind.run_code(),
                "reason": kind.reason(),
                "error": format!("{error:#}"),
            })
        }
    };
    let written = summary_out.write(&summary);
    let code = outcome?.1;
    written?;
    Ok(code)
}

/// Where the `--json` summary goes. It never shares a stream with the command's own output:
/// `--json-out FILE` is a file or descriptor of the user's choosing; `--json` keeps this
/// process's stdout for the summary alone and gives the command stderr as its stdout.
enum SummaryOut {
    /// The original stdout, kept aside; descriptor 1 now points at stderr.
    Stdout(std::fs::File),
    Destination(output::Destination),
}

impl SummaryOut {
    fn open(args: &Args) -> anyhow::Result<Option<SummaryOut>> {
        if let Some(path) = &args.json_out {
            if args.outfile.as_deref() == Some(path.as_path()) {
                anyhow::bail!("--json-out and --outfile name the same file: give two files");
            }
            let destination = output::Destination::choose(Some(path))
                .context("--json-out: the command was not started")?;
            return Ok(Some(SummaryOut::Destination(destination)));
        }
        if !args.json {
            return Ok(None);
        }
        use std::os::fd::AsFd as _;
        let stdout = std::io::stdout();
        let kept = stdout
            .as_fd()
            .try_clone_to_owned()
            .context("--json: cannot duplicate stdout")?;
        // Descriptor 1 becomes a copy of stderr, for this process and the command it starts:
        // whatever the command prints (progress lines, a listing) lands on stderr.
        nix::unistd::dup2_stdout(std::io::stderr().as_fd())
            .context("--json: cannot point the command's stdout at stderr")?;
        Ok(Some(SummaryOut::Stdout(std::fs::File::from(kept))))
    }

    fn write(self, summary: &serde_json::Value) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(summary)?;
        line.push(b'\n');
        match self {
            SummaryOut::Stdout(mut stdout) => {
                use std::io::Write as _;
                stdout
                    .write_all(&line)
                    .context("--json: cannot write the summary to stdout")
            }
            SummaryOut::Destination(destination) => destination
                .write(&line, Path::new("."))
                .map(drop)
                .context("--json-out: cannot write the summary"),
        }
    }
}

/// The run itself; returns the `--json` summary and the exit code.
fn attest_run(args: &Args) -> anyhow::Result<(serde_json::Value, ExitCode)> {
    let mut prepared = prepare(args)?;
    let mut command = args.command.clone();
    let push = PushPlan::prepare(&mut command, &mut prepared.context.argv, &prepared.identity)?;
    let (mut observation, after) = observe(
        &command,
        &prepared.context.argv,
        &prepared.context.working_dir,
        &prepared.identity,
        prepared.tracer,
        Duration::from_secs(args.wait_for_tree),
    )?;
    let products = select_products(&mut observation, &after, &prepared.context, &prepared.scope);
    refuse_if_incomplete(&observation.incomplete, args.allow_incomplete_trace)?;
    // A push inside the command (a script, a make target) is seen by the trace; its digest is
    // resolved against the registry.
    let push = push.or_else(|| PushPlan::observed(&observation));
    let registry = match &push {
        Some(plan) => plan.registry_args(&args.registry, &observation.working_dir),
        None => args.registry.clone(),
    };
    let pushed = match &push {
        Some(plan) => plan.subject(&observation, &registry, args.allow_missing_subjects)?,
        None => None,
    };
    prepared.context.pushed = push.as_ref().map(|plan| plan.push.reference.clone());
    let mut attestations =
        attest_observation(&mut prepared.context, observation, products, prepared.early)?;
    // Reading the products can find more gaps (a product that keeps changing).
    refuse_if_incomplete(
        &prepared.context.late_gaps.borrow(),
        args.allow_incomplete_trace,
    )?;
    attestations.extend(pushed.iter().map(|(_, attestation)| attestation.clone()));
    let context = &prepared.context;
    let observation = &context.outcome("run")?.observation;
    let step = args
        .step
        .clone()
        .unwrap_or_else(|| context.default_step().to_owned());
    let statement = collection::statement_json(&step, &attestations)?;
    let document = match &prepared.signer {
        Some(key) => sign(
            &statement,
            key,
            prepared.chain.as_ref(),
            &args.timestamp_servers,
        )?,
        None => statement,
    };
    let written = prepared
        .destination
        .write(&document, &context.working_dir)?;
    let code = observation.termination.exit_code();
    let provenance = match &prepared.provenance {
        Some(_) if code != 0 => {
            tracing::warn!("no SLSA provenance: the command failed (exit code {code})");
            None
        }
        Some(destination) => Some(write_provenance(
            args,
            &step,
            &attestations,
            (&document, &written),
            (prepared.signer.as_ref(), prepared.chain.as_ref()),
            destination,
            &context.working_dir,
        )?),
        None => None,
    };
    summarise(
        &step,
        &attestations,
        observation,
        &written,
        prepared.signer.is_some(),
    );
    let summary = json_summary(
        &step,
        &attestations,
        observation,
        &written,
        prepared.signer.is_some(),
    );
    if code != 0 {
        tracing::warn!("the command failed with exit code {code}; the attestation records it");
        if let Some((helper, pid)) = observation.refused_id_mapping() {
            tracing::warn!(
                "{helper} (pid {pid}) failed under no_new_privs, which keeps its setuid bit from \
                 working: rootless podman, buildah and skopeo's containers-storage need it to map \
                 the user's subordinate ids. Pass --allow-new-privileges (recorded in the \
                 attestation; any other program that gains privileges still makes the trace \
                 incomplete)"
            );
        }
        return Ok((
            summary,
            ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX)),
        ));
    }
    if args.attach {
        let mut envelopes = vec![(written.describe(), document)];
        envelopes.extend(provenance);
        attach_to_pushed(
            &envelopes,
            pushed.as_ref().map(|(image, _)| image),
            &registry,
            args,
        )?;
    }
    Ok((summary, ExitCode::SUCCESS))
}

/// Exit 3 (nothing signed) when there are gaps, unless `--allow-incomplete-trace`; then they
/// are only warned about (they are recorded in the statement).
fn refuse_if_incomplete(gaps: &[Incomplete], allowed: bool) -> anyhow::Result<()> {
    if gaps.is_empty() {
        return Ok(());
    }
    if !allowed {
        let reasons: Vec<String> = gaps.iter().map(ToString::to_string).collect();
        return Err(failure(
            FailureKind::TraceIncomplete,
            format!(
                "the observation is incomplete ({}): nothing was signed (pass \
                 --allow-incomplete-trace to sign it with these reasons recorded)",
                reasons.join("; ")
            ),
        ));
    }
    for entry in gaps {
        tracing::warn!("signed although incomplete (--allow-incomplete-trace): {entry}");
    }
    Ok(())
}

/// The `--json` summary: what a CI script needs without decoding the envelope.
fn json_summary(
    step: &str,
    attestations: &[Attestation],
    observation: &Observation,
    written: &output::Written,
    signed: bool,
) -> serde_json::Value {
    let subjects: Vec<String> = attestations
        .iter()
        .flat_map(|attestation| {
            attestation
                .subjects
                .iter()
                .map(|(key, _)| format!("{}/{key}", attestation.type_uri))
        })
        .collect();
    let mut products: Vec<&str> = attestations
        .iter()
        .filter(|attestation| attestation.type_uri == attestors::PRODUCT_TYPE_URI)
        .flat_map(|attestation| {
            attestation.predicate["leaves"]
                .as_array()
                .into_iter()
                .flatten()
        })
        .filter_map(|leaf| leaf["path"].as_str())
        .collect();
    products.sort_unstable();
    // The command-run summary holds the trace counters and every incomplete reason.
    let trace = attestations
        .iter()
        .find(|attestation| attestation.type_uri == attestors::COMMAND_RUN_TYPE_URI)
        .map(|attestation| attestation.predicate["summary"].clone())
        .unwrap_or_default();
    serde_json::json!({
        "step": step,
        "outfile": written.describe(),
        "fallback": matches!(written, output::Written::Fallback(_)),
        "signed": signed,
        "exitcode": observation.termination.exit_code(),
        "subjects": subjects,
        "products": products,
        "trace": trace,
    })
}

/// A recognised push, with the `--digestfile` oci-attest added when the user gave none.
struct PushPlan {
    push: Push,
    /// Holds the injected digest file until it has been read.
    injected: Option<tempfile::TempDir>,
}

impl PushPlan {
    const DIGESTFILE_NAME: &'static str = "pushed-digest";

    fn prepare(
        command: &mut Vec<OsString>,
        argv: &mut Vec<String>,
        identity: &CommandIdentity,
    ) -> anyhow::Result<Option<Self>> {
        let Some(push) = push::recognise(argv) else {
            return Ok(None);
        };
        tracing::info!("the command pushes {} ({})", push.reference, push.tool);
        let mut plan = PushPlan {
            push,
            injected: None,
        };
        if let (None, Some(at)) = (&plan.push.digestfile, plan.push.digestfile_insert_at) {
            let dir = tempfile::Builder::new()
                .prefix("oci-attest-push.")
                .tempdir()
                .context("cannot create a temp dir for the pushed digest")?;
            // The push tool writes the digest file as the command's user.
            nix::unistd::chown(
                dir.path(),
                Some(nix::unistd::Uid::from_raw(identity.uid)),
                Some(nix::unistd::Gid::from_raw(identity.gid)),
            )
            .context("cannot give the pushed-digest temp dir to the command's user")?;
            let path = dir.path().join(Self::DIGESTFILE_NAME);
            for (offset, word) in [OsString::from("--digestfile"), path.into()]
                .into_iter()
                .enumerate()
            {
                argv.insert(at + offset, word.to_string_lossy().into_owned());
                command.insert(at + offset, word);
            }
            plan.injected = Some(dir);
        }
        Ok(Some(plan))
    }

    /// The first push the trace saw exec'd in the command's tree. A `--digestfile` it was given
    /// is relative to a directory oci-attest does not know, so the registry is asked instead.
    fn observed(observation: &Observation) -> Option<Self> {
        let mut push = observation.exec_argvs().find_map(push::recognise)?;
        tracing::info!(
            "`{}` pushed {} inside the command",
            push.tool,
            push.reference
        );
        push.digestfile = None;
        push.digestfile_insert_at = None;
        Some(PushPlan {
            push,
            injected: None,
        })
    }

    /// oci-attest's registry options, with what the user did not give taken from the push
    /// command's own (`--dest-creds`, `--authfile`, `--cert-dir`, `--tls-verify`).
    fn registry_args(&self, registry: &RegistryArgs, working_dir: &Path) -> RegistryArgs {
        let (filled, taken) = self.push.access.fill(registry, working_dir);
        if !taken.is_empty() {
            tracing::info!(
                "reaching {} as the push did: its {}",
                self.push.reference,
                taken.join(", ")
            );
        }
        filled
    }

    /// The pushed image and its oci attestation; `None` when the push failed (the command's exit
    /// code says so) or, with --allow-missing-subjects, when its digest cannot be found.
    fn subject(
        &self,
        observation: &Observation,
        registry: &RegistryArgs,
        allow_missing_subjects: bool,
    ) -> anyhow::Result<Option<(String, Attestation)>> {
        if observation.termination.exit_code() != 0 {
            tracing::warn!(
                "the push to {} failed: no pushed-image subject",
                self.push.reference
            );
            return Ok(None);
        }
        let started = SystemTime::now();
        let digestfile = match (&self.push.digestfile, &self.injected) {
            (Some(path), _) => Some(observation.working_dir.join(path)),
            (None, Some(dir)) => Some(dir.path().join(Self::DIGESTFILE_NAME)),
            (None, None) => None,
        };
        let found = match &digestfile {
            Some(path) => push::read_digestfile(path).and_then(|digest| {
                cross_check_pushed(&self.push.reference, &digest, &observation.argv, registry)?;
                Ok((digest, "--digestfile"))
            }),
            None => {
                resolve_pushed(&self.push.reference, registry).map(|digest| (digest, "registry"))
            }
        };
        match found {
            Ok((digest, how)) => {
                tracing::info!(
                    "pushed {} as {digest} (digest from {how})",
                    self.push.reference
                );
                let image = ImageRef::parse(&self.push.reference)?
                    .at_digest(&digest)
                    .to_string();
                Ok(Some((
                    image,
                    push::attest(&self.push, &digest, how, started),
                )))
            }
            Err(error) if crate::exit::kind_of(&error) == FailureKind::PushedDigestMismatch => {
                Err(error)
            }
            Err(error) if allow_missing_subjects => {
                tracing::warn!(
                    "the pushed image {} has no subject: {error:#} (--allow-missing-subjects)",
                    self.push.reference
                );
                Ok(None)
            }
            Err(error) => Err(anyhow::anyhow!(
                "the command pushed {} but its manifest digest is unknown: {error:#}; nothing was \
                 signed (--allow-missing-subjects signs without it)",
                self.push.reference
            )),
        }
    }
}

/// The digest a push tool wrote to its `--digestfile` is the command's word: the registry is
/// asked for the reference after the push, and a disagreement is `pushed-digest-mismatch`
/// (exit 3, nothing signed). Not even `--allow-missing-subjects` signs over it.
fn cross_check_pushed(
    reference: &str,
    digest: &str,
    push_argv: &[String],
    registry_args: &RegistryArgs,
) -> anyhow::Result<()> {
    let mut answer = Err(anyhow::anyhow!("no way to reach the registry"));
    for attempt in reach_as_the_push_did(push_argv, registry_args) {
        answer = resolve_pushed(reference, &attempt);
        if answer.is_ok() {
            break;
        }
    }
    let answer = answer.with_context(|| {
        format!("cannot cross-check the pushed digest {digest} with the registry")
    })?;
    if answer != digest {
        return Err(failure(
            FailureKind::PushedDigestMismatch,
            format!(
                "the command says it pushed {reference} as {digest}, but the registry answers \
                 {answer}: nothing was signed"
            ),
        ));
    }
    Ok(())
}

/// How to reach the registry the push reached, in order: `given` (oci-attest's options, filled
/// from the push's by `PushPlan::registry_args`), then with the push tool's own credentials
/// (`--dest-creds`/`--creds`) where the user gave others (the push worked with them); each also
/// (when the tool was told not to verify TLS, as skopeo's `--dest-tls-verify=false`) with
/// unverified TLS, then plain HTTP, as the tool tries them.
fn reach_as_the_push_did(push_argv: &[String], given: &RegistryArgs) -> Vec<RegistryArgs> {
    let value_of = |names: &[&str]| {
        push_argv.iter().enumerate().find_map(|(index, word)| {
            names.iter().find_map(|name| match word.strip_prefix(name) {
                Some(rest) if rest.starts_with('=') => Some(rest[1..].to_owned()),
                Some("") => push_argv.get(index + 1).cloned(),
                _ => None,
            })
        })
    };
    let mut bases = vec![given.clone()];
    let push_creds = value_of(&["--dest-creds", "--creds"]);
    if push_creds.is_some() && push_creds != given.creds {
        bases.push(RegistryArgs {
            creds: push_creds,
            ..given.clone()
        });
    }
    let unverified = value_of(&["--dest-tls-verify", "--tls-verify"]).as_deref() == Some("false");
    let mut attempts = Vec::new();
    for base in bases {
        attempts.push(base.clone());
        if unverified && !given.plain_http {
            attempts.push(RegistryArgs {
                tls_verify: Some(false),
                ..base.clone()
            });
            attempts.push(RegistryArgs {
                plain_http: true,
                ..base
            });
        }
    }
    attempts
}

/// The digest a reference names in its registry, found after the push.
fn resolve_pushed(reference: &str, registry_args: &RegistryArgs) -> anyhow::Result<String> {
    let image = ImageRef::parse(reference)?;
    let session =
        crate::registry::Session::open(&image, registry_args, crate::registry::Access::Pull)?;
    let (_, descriptor) = session.manifest(&image.tag_or_digest())?;
    Ok(descriptor.digest)
}

/// `--attach`: the signed envelopes (name, bytes) go to the pushed image. They are already
/// written, so a failure here says where they are and exits with the registry code.
fn attach_to_pushed(
    envelopes: &[(String, Vec<u8>)],
    pushed: Option<&String>,
    registry: &RegistryArgs,
    args: &Args,
) -> anyhow::Result<()> {
    let kept = envelopes
        .iter()
        .map(|(name, _)| name.as_str())
        .collect::<Vec<_>>()
        .join(" and ");
    let Some(image) = pushed else {
        return Err(failure(
            FailureKind::Registry,
            format!(
                "--attach: the command pushed no image with a known digest; the signed \
                 attestation is at {kept}"
            ),
        ));
    };
    let envelopes: Vec<crate::registry::Envelope<'_>> = envelopes
        .iter()
        .map(|(name, bytes)| crate::registry::Envelope {
            name: name.clone(),
            bytes,
        })
        .collect();
    let attached = ImageRef::parse(image).and_then(|image| {
        crate::registry::attach(&envelopes, &image, registry, false, args.cosign_tag)
            .map(|attached| super::attach::report(&envelopes, &image, &attached))
    });
    match attached {
        Ok(lines) => {
            for line in lines {
                tracing::info!("{line}");
            }
            Ok(())
        }
        Err(error) => Err(super::attach::as_registry_failure(
            error,
            &format!("--attach to {image} failed; the signed attestation is kept at {kept}"),
        )),
    }
}

/// `--slsa-out`: the SLSA provenance of the run, derived from the collection just written and
/// signed with the same key; returns where it went and its bytes (for `--attach`).
fn write_provenance(
    args: &Args,
    step: &str,
    attestations: &[Attestation],
    (collection, written): (&[u8], &output::Written),
    (signer, chain): (Option<&PrivateKey>, Option<&CertChain>),
    destination: &output::Destination,
    working_dir: &Path,
) -> anyhow::Result<(String, Vec<u8>)> {
    let ci_job = slsa::ci_job_url(|name| std::env::var(name).ok());
    let builder_id = args
        .slsa_builder_id
        .clone()
        .or_else(|| ci_job.clone())
        .unwrap_or_else(|| slsa::DEFAULT_BUILDER_ID.to_owned());
    let invocation_id = ci_job.unwrap_or_else(random_invocation_id);
    let run = slsa::Run {
        step,
        attestations,
        builder_id: &builder_id,
        invocation_id: &invocation_id,
        collection,
        collection_signed: signer.is_some(),
        collection_name: &written.describe(),
    };
    let statement = slsa::statement_json(&run).with_context(|| {
        format!(
            "no SLSA provenance written (the attestation is at {})",
            written.describe()
        )
    })?;
    let document = match signer {
        Some(key) => sign(&statement, key, chain, &args.timestamp_servers)?,
        None => statement,
    };
    let written = destination.write(&document, working_dir)?;
    tracing::info!("wrote SLSA provenance to {}", written.describe());
    Ok((written.describe(), document))
}

/// The envelope of an in-toto statement (with the key's certificate chain, if any), its
/// signature timestamped by every server given.
fn sign(
    statement: &[u8],
    key: &PrivateKey,
    chain: Option<&CertChain>,
    timestamp_servers: &[String],
) -> anyhow::Result<Vec<u8>> {
    let stamp_failed = std::cell::Cell::new(false);
    let stamp = |signature: &[u8]| {
        crate::timestamp::tokens(timestamp_servers, signature)
            .inspect_err(|_| stamp_failed.set(true))
    };
    dsse::sign_with_chain(dsse::IN_TOTO_PAYLOAD_TYPE, statement, key, chain, &stamp).map_err(
        |error| {
            if stamp_failed.get() {
                anyhow::anyhow!("timestamping failed, nothing was signed: {error:#}")
            } else {
                failure(FailureKind::Key, format!("signing failed: {error:#}"))
            }
        },
    )
}

/// A fresh id for a run outside CI: 128 random bits in hex.
fn random_invocation_id() -> String {
    let mut bytes = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    hex::encode(bytes)
}

/// A few lines on stderr saying what was attested, so a CI log shows it without decoding the
/// envelope (`--quiet` hides them).
fn summarise(
    step: &str,
    attestations: &[Attestation],
    observation: &Observation,
    written: &output::Written,
    signed: bool,
) {
    let destination = written.describe();
    let kind = if signed {
        "signed attestation"
    } else {
        "unsigned statement"
    };
    tracing::info!(
        outfile = %destination,
        step,
        signed,
        "wrote {kind} for step {step:?} to {destination}"
    );
    for attestation in attestations {
        let predicate = &attestation.predicate;
        match attestation.type_uri {
            attestors::oci::TYPE_URI if predicate.get("imagereference").is_some() => {
                tracing::info!(
                    "  pushed image {} manifest sha256:{}",
                    predicate["imagereference"].as_str().unwrap_or("?"),
                    predicate["manifestdigest"]["sha256"]
                        .as_str()
                        .unwrap_or("?"),
                );
            }
            attestors::oci::TYPE_URI => {
                let tags = predicate["imagetags"]
                    .as_array()
                    .map(|tags| {
                        tags.iter()
                            .filter_map(|tag| tag.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_else(|| "(untagged)".to_owned());
                let imageid = predicate["imageid"]["sha256"].as_str().unwrap_or("?");
                let tardigest = predicate["tardigest"]["sha256"].as_str().unwrap_or("-");
                let layers = predicate["diffids"].as_array().map_or(0, Vec::len);
                let format = predicate["format"].as_str().unwrap_or("?");
                tracing::info!(
                    imageid,
                    tags,
                    layers,
                    tardigest,
                    format,
                    "  image {imageid} [{tags}] {layers} {}, archive sha256:{tardigest} \
                     ({format})",
                    super::plural(layers, "layer", "layers"),
                );
            }
            attestors::PRODUCT_TYPE_URI => {
                // The leaves are in Merkle order (by digest); a reader wants them by path.
                let mut paths: Vec<&str> = predicate["leaves"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|leaf| leaf["path"].as_str().unwrap_or("?"))
                    .collect();
                paths.sort_unstable();
                for path in paths {
                    tracing::info!(path, "  product {path}");
                }
            }
            _ => {}
        }
    }
    let trace = match &observation.trace {
        TraceMode::Ebpf => {
            let processes = observation.processes.len();
            format!(
                "traced with eBPF: {processes} {}, {} events, {} lost",
                super::plural(processes, "process", "processes"),
                observation.counts.events,
                observation.counts.lost
            )
        }
        TraceMode::Off { reason } => format!("UNTRACED ({reason})"),
    };
    let exitcode = observation.termination.exit_code();
    tracing::info!(
        exitcode,
        events = observation.counts.events,
        lost = observation.counts.lost,
        "  command exited {exitcode} — {trace}"
    );
}

fn prepare(args: &Args) -> anyhow::Result<Prepared> {
    let mut identity = command_identity(args)?;
    let mut redaction = Redaction::new(
        &args.env_add_sensitive_key,
        &args.env_allow_sensitive_key,
        !args.env_disable_default_sensitive_vars,
    )?
    .with_patterns(&args.redact_regex)?
    .with_secret_values_of(&environment::process_variables());
    let signer = if args.unsigned {
        None
    } else {
        let Some(path) = &args.key else {
            return Err(failure(
                FailureKind::Key,
                "no signing key: give -k/--signer-file-key-path KEY.pem (or --unsigned for a bare statement)",
            ));
        };
        let passphrase = keys::read_passphrase(args.passphrase.as_deref())?;
        if let Some(passphrase) = &passphrase {
            redaction = redaction.with_secret(&String::from_utf8_lossy(passphrase));
        }
        let key = keys::load_private_key(path, passphrase.as_deref())?;
        keep_key_out_of_reach(&mut identity, args)?;
        Some(key)
    };
    let chain = match &signer {
        Some(key) => args.certificate.load(key.public())?,
        None => None,
    };
    // The wrapped build has no business with the signing key's passphrase. Still single-threaded
    // here (the tracer's thread starts later), so changing the environment is sound.
    std::env::remove_var(keys::PASSPHRASE_ENV);
    let working_dir = match &args.workingdir {
        Some(dir) => dir.clone(),
        None => std::env::current_dir().context("cannot determine the current directory")?,
    };
    let working_dir = working_dir
        .canonicalize()
        .with_context(|| format!("{}: working directory not found", working_dir.display()))?;
    if !working_dir.is_dir() {
        anyhow::bail!(
            "{}: working directory is not a directory",
            working_dir.display()
        );
    }
    let outfile_is_stdout = args.outfile.as_deref().is_none_or(|outfile| {
        [output::STDOUT_NAME, "/dev/stdout"]
            .iter()
            .any(|name| outfile == Path::new(name))
    });
    if args.json && outfile_is_stdout {
        anyhow::bail!(
            "--json prints the summary on stdout: pass -o/--outfile FILE for the attestation \
             (or --json-out FILE for the summary)"
        );
    }
    crate::timestamp::check_servers(&args.timestamp_servers)?;
    let destination = output::Destination::choose(args.outfile.as_deref())?;
    let provenance_path = provenance_path(args);
    let provenance = provenance_path
        .as_deref()
        .map(|path| output::Destination::choose(Some(path)))
        .transpose()?;
    if let Some(same) = provenance
        .as_ref()
        .and_then(output::Destination::file_path)
        .filter(|path| destination.file_path() == Some(*path))
    {
        anyhow::bail!(
            "{}: the SLSA provenance and the attestation cannot go to the same file",
            same.display()
        );
    }
    let argv: Vec<String> = args
        .command
        .iter()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    let [github_jwt, gitlab_jwt] = [
        (args.attestor_github_jwt_path.as_deref(), "github"),
        (args.attestor_gitlab_jwt_path.as_deref(), "gitlab"),
    ]
    .map(|(path, attestor)| job_token(path, attestor, &args.attestations, &mut redaction));
    let options = AttestorOptions {
        redaction,
        env_filter_sensitive_vars: args.env_filter_sensitive_vars,
        argv_digests: args.argv_digests,
        run_options: Some(run_options(args, &working_dir)?),
        github_jwt: github_jwt?,
        gitlab_jwt: gitlab_jwt?,
    };
    let private_files: Vec<&Path> = [
        args.key.as_deref(),
        args.passphrase.as_deref(),
        destination.file_path(),
        args.attestor_github_jwt_path.as_deref(),
        args.attestor_gitlab_jwt_path.as_deref(),
        provenance.as_ref().and_then(output::Destination::file_path),
    ]
    .into_iter()
    .flatten()
    .collect();
    let scope = ProductScope::new(
        &working_dir,
        &args.attestor_product_include_glob,
        &args.attestor_product_exclude_glob,
        &private_files,
    )?;
    let mut before = Snapshot::take(&working_dir)?;
    before.retain(|path| !scope.is_private_found(path));
    let context =
        RunContext::before_command(working_dir, argv, options, before, &args.attestations);
    // Loading the tracer is mostly the kernel's verifier (one CPU): it runs while the
    // pre-material and material attestors hash the working directory.
    let (tracer, early) = std::thread::scope(|scope| {
        let loading = scope.spawn(|| load_tracer(args));
        let early = context.attest();
        let tracer = loading
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (tracer, early)
    });
    let tracer = tracer?;
    let early = early?;
    announce(&identity);
    Ok(Prepared {
        identity,
        signer,
        chain,
        destination,
        scope,
        tracer,
        context,
        early,
        provenance,
    })
}

/// Who the command runs as; refuses (exit 125) a root command nobody asked for.
fn command_identity(args: &Args) -> anyhow::Result<CommandIdentity> {
    let request = identity::Request {
        run_as: args.isolation.run_as.clone(),
        allow_new_privileges: args.isolation.allow_new_privileges,
    };
    identity::resolve(&request, &identity::Invoker::current())
}

/// Says on stderr whom the command runs as, loudly when that weakens the attestation.
fn announce(identity: &CommandIdentity) {
    let privileges = if identity.nonewprivs {
        "no capabilities, no_new_privs"
    } else {
        "no capabilities, new privileges allowed (--allow-new-privileges)"
    };
    match identity.source {
        _ if identity.root => tracing::warn!(
            "the command runs as ROOT (--run-as root): it can read the signing key and tamper \
             with the tracer; verify rejects this attestation unless --allow-root-command"
        ),
        IdentitySource::SameUser => tracing::warn!(
            "oci-attest is not root: the command runs as its own user {} ({privileges}); that \
             user can reach oci-attest and what it can read",
            identity.describe()
        ),
        IdentitySource::Sudo | IdentitySource::RunAs => {
            tracing::info!("the command runs as {} ({privileges})", identity.describe())
        }
    }
    if let Some(docker) = identity.docker_group() {
        tracing::warn!(
            "{} is in the docker group (gid {docker}), which is root-equivalent: through the \
             docker daemon the command can read any file, the signing key included (SECURITY.md)",
            identity.user
        );
    }
}

/// Refuses (exit 125, `key-readable-by-command`) a signing key or passphrase file the command's
/// user can open, unless `--allow-readable-key` (then recorded). A root command can read
/// anything: that was accepted with `--run-as root`.
fn keep_key_out_of_reach(identity: &mut CommandIdentity, args: &Args) -> anyhow::Result<()> {
    if identity.root {
        return Ok(());
    }
    let mut readable = Vec::new();
    for path in [args.key.as_deref(), args.passphrase.as_deref()]
        .into_iter()
        .flatten()
    {
        if identity.can_open(path)? {
            readable.push(path.display().to_string());
        }
    }
    if readable.is_empty() {
        return Ok(());
    }
    let readable = readable.join(" and ");
    if args.isolation.allow_readable_key {
        tracing::warn!(
            "{} can read {readable}: the command could sign a statement of its own \
             (--allow-readable-key; recorded as identity.keyreadable)",
            identity.user
        );
        identity.keyreadable = true;
        return Ok(());
    }
    Err(failure(
        FailureKind::KeyReadableByCommand,
        format!(
            "{readable} can be read by {}, who runs the command: it could sign a statement of \
             its own. Put the key out of that user's reach: owned by root with mode 0600 \
             (`sudo chown root: KEY && sudo chmod 600 KEY`), or in a directory the user cannot \
             enter; the command was not started",
            identity.describe()
        ),
    ))
}

/// `--slsa-out PATH`, or with `--attestor-slsa-export` witness's `<OUTFILE>-slsa.json`.
fn provenance_path(args: &Args) -> Option<PathBuf> {
    if let Some(path) = &args.slsa_out {
        return Some(path.clone());
    }
    let outfile = args
        .outfile
        .as_ref()
        .filter(|_| args.attestor_slsa_export)?;
    let mut name = outfile.as_os_str().to_owned();
    name.push("-slsa.json");
    Some(PathBuf::from(name))
}

/// Every option that shapes the statement, with its source, as signed in the command-run
/// predicate. A step left to the default is filled in by the command-run attestor, once the
/// attestors' rules have fired.
/// The options record of a run: each option of `args` with its effective value and where it
/// came from (its config file and key, the command line, or the default), and the options that
/// weaken the run. Public for the fuzz crate's `config` target, which checks what a config file
/// can set.
pub fn run_options(args: &Args, working_dir: &Path) -> anyhow::Result<RunOptions> {
    fn setting<T>(args: &Args, working_dir: &Path, long: &str, value: T) -> Setting<T> {
        Setting::new(value, args.provenance.source(long, working_dir))
    }
    let s = |long: &str, value| setting(args, working_dir, long, value);
    let list = |long: &str, values: &[String]| setting(args, working_dir, long, values.to_vec());
    let invocation = std::env::current_dir()
        .and_then(|dir| dir.canonicalize())
        .context("cannot determine the current directory")?;
    let settings = Settings {
        step: setting(
            args,
            working_dir,
            "step",
            args.step.clone().unwrap_or_default(),
        ),
        workingdir: setting(
            args,
            working_dir,
            "workingdir",
            DirIdentity::of(working_dir)?,
        ),
        trace: setting(args, working_dir, "trace", value_name(&args.trace)),
        allow_incomplete_trace: s("allow-incomplete-trace", args.allow_incomplete_trace),
        allow_missing_subjects: s("allow-missing-subjects", args.allow_missing_subjects),
        wait_for_tree: setting(args, working_dir, "wait-for-tree", args.wait_for_tree),
        trace_buffer_bytes: setting(
            args,
            working_dir,
            "trace-buffer-bytes",
            args.trace_buffer_bytes,
        ),
        hashes: setting(
            args,
            working_dir,
            "hashes",
            args.hashes.iter().map(value_name).collect(),
        ),
        attestations: setting(
            args,
            working_dir,
            "attestations",
            args.attestations
                .iter()
                .map(|attestor| attestor.name.to_owned())
                .collect(),
        ),
        attestor_product_include_glob: list(
            "attestor-product-include-glob",
            &args.attestor_product_include_glob,
        ),
        attestor_product_exclude_glob: list(
            "attestor-product-exclude-glob",
            &args.attestor_product_exclude_glob,
        ),
        env_add_sensitive_key: list("env-add-sensitive-key", &args.env_add_sensitive_key),
        env_allow_sensitive_key: list("env-allow-sensitive-key", &args.env_allow_sensitive_key),
        env_filter_sensitive_vars: s("env-filter-sensitive-vars", args.env_filter_sensitive_vars),
        env_disable_default_sensitive_vars: s(
            "env-disable-default-sensitive-vars",
            args.env_disable_default_sensitive_vars,
        ),
        redact_regex: list("redact-regex", &args.redact_regex),
        argv_digests: s("argv-digests", args.argv_digests),
        run_as: setting(
            args,
            working_dir,
            "run-as",
            args.isolation.run_as.clone().unwrap_or_default(),
        ),
        allow_new_privileges: s("allow-new-privileges", args.isolation.allow_new_privileges),
        allow_readable_key: s("allow-readable-key", args.isolation.allow_readable_key),
    };
    let options = RunOptions::new(
        DirIdentity::of(&invocation)?,
        args.provenance.records(working_dir),
        settings,
        trace::DEFAULT_RING_BUFFER_BYTES,
    );
    for weakening in &options.weakening {
        tracing::warn!(
            "{} = {} ({}): {}",
            weakening.option,
            weakening.value,
            weakening.source.describe(),
            weakening.why
        );
    }
    Ok(options)
}

/// The name clap knows a value-enum value by.
fn value_name(value: &impl clap::ValueEnum) -> String {
    value
        .to_possible_value()
        .map(|value| value.get_name().to_owned())
        .unwrap_or_default()
}

/// The claims of the CI token in `path` for `attestor`, which must be requested with `-a`; the
/// token itself is hidden wherever the run would record it.
fn job_token(
    path: Option<&Path>,
    attestor: &str,
    requested: &[Attestor],
    redaction: &mut Redaction,
) -> anyhow::Result<Option<attestors::ci_job::Claims>> {
    let Some(path) = path else {
        return Ok(None);
    };
    if !requested.iter().any(|row| row.name == attestor) {
        anyhow::bail!(
            "--attestor-{attestor}-jwt-path is for the {attestor} attestor: add -a {attestor}"
        );
    }
    let (claims, token) = attestors::ci_job::Claims::read(path)?;
    *redaction = std::mem::take(redaction).with_secret(&token);
    Ok(Some(claims))
}

/// The tracer, or why the run goes untraced. `--trace ebpf` turns unavailability into an error.
fn load_tracer(args: &Args) -> anyhow::Result<Result<Tracer, String>> {
    if args.trace == TraceChoice::Off {
        return Ok(Err("disabled with --trace off".to_owned()));
    }
    let config = trace::TraceConfig {
        ring_buffer_bytes: args.trace_buffer_bytes,
        // Signed runs only: the key of an unsigned run is not read.
        protected_files: [args.key.as_deref(), args.passphrase.as_deref()]
            .into_iter()
            .flatten()
            .filter(|_| !args.unsigned)
            .map(Path::to_path_buf)
            .collect(),
    };
    match Tracer::load(&config) {
        Ok(tracer) => Ok(Ok(tracer)),
        Err(unavailable) if args.trace == TraceChoice::Ebpf => Err(failure(
            FailureKind::TraceUnavailable,
            format!("--trace ebpf: {unavailable}; the command was not started"),
        )),
        Err(unavailable) => {
            tracing::warn!(
                "{unavailable}; running UNTRACED: products come from a before/after scan of the \
                 working directory and the attestation records trace \"off\""
            );
            Ok(Err(unavailable.reason))
        }
    }
}

/// Runs the command (traced when a tracer is given) until its whole process tree has ended, or
/// `wait_for_tree` after the command itself exited, and returns what was observed, with the
/// working directory as it is then.
fn observe(
    command: &[OsString],
    argv: &[String],
    working_dir: &Path,
    identity: &CommandIdentity,
    tracer: Result<Tracer, String>,
    wait_for_tree: Duration,
) -> anyhow::Result<(Observation, Snapshot)> {
    let started = SystemTime::now();
    launch::become_subreaper()?;
    let child = launch::spawn_stopped(command, working_dir, identity)?;
    let mut tracer = tracer;
    if let Ok(active) = &mut tracer {
        active.track(child.pid())?;
    }
    let termination = child.release()?.wait()?;
    let mut incomplete: Vec<Incomplete> = launch::wait_for_tree(wait_for_tree)?
        .into_iter()
        .map(|process| Incomplete {
            reason: IncompleteReason::TreeStillRunning,
            detail: format!(
                "pid {} ({}) still running {}s after the command exited (--wait-for-tree){}",
                process.pid,
                process.program,
                wait_for_tree.as_secs(),
                lingering_hint(&process.program)
            ),
        })
        .collect();
    let ended = SystemTime::now();
    let walking = std::time::Instant::now();
    let after = Snapshot::take(working_dir)?;
    tracing::debug!(
        "working directory after the command: {} files in {:?}",
        after.len(),
        walking.elapsed()
    );
    let (trace, outcome) = match tracer {
        Ok(active) => {
            let outcome = active.finish(working_dir, &after)?;
            tracing::debug!(
                "eBPF phases: load {:?}, attach {:?}, detach {:?}",
                outcome.phases.load,
                outcome.phases.attach,
                outcome.phases.detach
            );
            (TraceMode::Ebpf, Some(outcome))
        }
        Err(reason) => (TraceMode::Off { reason }, None),
    };
    let outcome = outcome.unwrap_or_default();
    incomplete.extend(outcome.incomplete);
    let observation = Observation {
        argv: argv.to_vec(),
        identity: identity.clone(),
        working_dir: working_dir.to_path_buf(),
        started,
        ended,
        termination,
        trace,
        counts: outcome.counts,
        processes: outcome.processes,
        written: outcome.written,
        outside_writes: outcome.outside_writes,
        incomplete,
    };
    Ok((observation, after))
}

/// What to do about a process that outlived the command, when it is one that does so by
/// design: rootless podman keeps a pause process (podman itself, or catatonit) holding the
/// user namespace it created, for every later podman command of that user to join.
fn lingering_hint(program: &str) -> &'static str {
    match program.rsplit('/').next() {
        Some("podman" | "catatonit") => {
            "; rootless podman leaves a pause process behind when it creates the user's \
             namespace: run any podman command as this user before the attested step, so that \
             the step joins that namespace instead"
        }
        _ => "",
    }
}

/// The products, with their stamps when the command ended where known. Traced, they are the
/// paths of the written inodes, checked against the second witness (`reconcile`): changes of
/// the working directory the trace does not explain, and writes by processes outside the tree
/// to products, are gaps added to the observation; written files that did not change are no
/// products. Untraced, they are the files new or changed since the snapshot before the command.
fn select_products(
    observation: &mut Observation,
    after: &Snapshot,
    context: &RunContext,
    scope: &ProductScope,
) -> (Vec<PathBuf>, HashMap<PathBuf, FileStamp>) {
    let stamps: HashMap<PathBuf, FileStamp> = after
        .files()
        .map(|(path, stamp)| (path.to_path_buf(), *stamp))
        .collect();
    let written = match observation.trace {
        TraceMode::Off { .. } => {
            let mut changed = after.changed_since(&context.before);
            changed.retain(|path| !scope.is_private_found(path));
            return (scope.products(changed), stamps);
        }
        TraceMode::Ebpf => products::traced_products(&observation.written),
    };
    let reconciling = std::time::Instant::now();
    let reconciled = reconcile::reconcile(
        observation,
        &context.before,
        after,
        &context.material_digests.borrow(),
        |path| scope.is_private_found(path) || scope.is_excluded(path),
    );
    tracing::debug!(
        "trace and working directory compared in {:?}: {} unexplained change(s)",
        reconciling.elapsed(),
        reconciled.unexplained.len()
    );
    observation
        .incomplete
        .extend(reconciled.gap(&observation.working_dir));
    let products = scope.products(
        written
            .into_iter()
            .filter(|path| !reconciled.unchanged_written.contains(path))
            .filter(|path| changed_during_run(path, observation.started))
            .collect(),
    );
    for product in &products {
        let Ok(metadata) = std::fs::symlink_metadata(product) else {
            continue;
        };
        let writers = observation
            .outside_writes
            .iter()
            .filter(|write| (write.dev, write.ino) == (metadata.dev(), metadata.ino()));
        for writer in writers {
            observation.incomplete.push(Incomplete {
                reason: IncompleteReason::UntracedChange,
                detail: format!(
                    "{}: also written by pid {} ({}), a process outside the traced tree",
                    products::recorded_path(product, &observation.working_dir),
                    writer.pid,
                    writer.program
                ),
            });
        }
    }
    observation.incomplete.sort();
    observation.incomplete.dedup();
    (products, stamps)
}

/// How far the kernel's coarse timestamp clock may lag the wall clock read when the run started.
const CTIME_MARGIN: Duration = Duration::from_secs(1);

/// Whether `path`'s status changed since shortly before the command started. A write, a
/// truncation, a clone or a new file always moves ctime to now, and nothing can set it back; a
/// file the trace calls written whose ctime is older was changed by nobody during the run (the
/// file another thread `dup2`ed over the fd while the kernel wrote elsewhere, docs/tracing.md) and
/// is no product, also outside the working directory, where the snapshots do not reach. A file
/// that cannot be read now stays: hashing it names the problem.
fn changed_during_run(path: &Path, started: SystemTime) -> bool {
    let Ok(metadata) = std::fs::symlink_metadata(path) else {
        return true;
    };
    let Ok(seconds) = u64::try_from(metadata.ctime()) else {
        return false;
    };
    let ctime = SystemTime::UNIX_EPOCH
        + Duration::new(seconds, u32::try_from(metadata.ctime_nsec()).unwrap_or(0));
    ctime + CTIME_MARGIN >= started
}

/// Everything after the command: the attestations of the attestors that run after it (the
/// table says which), appended to the `early` (pre-material and material) ones. Traced or not,
/// it only needs the [`Observation`] and its products.
fn attest_observation(
    context: &mut RunContext,
    observation: Observation,
    (products, product_stamps): (Vec<PathBuf>, HashMap<PathBuf, FileStamp>),
    early: Vec<Attestation>,
) -> anyhow::Result<Vec<Attestation>> {
    context.command_ran(Outcome {
        observation,
        products,
        product_stamps,
    });
    let mut attestations = early;
    attestations.extend(context.attest()?);
    Ok(attestations)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::observed::{Fate, SettledFile, Termination, TraceCounts};

    /// The traced path: products are the paths that name the written inodes now.
    #[test]
    fn traced_observation_yields_the_settled_products() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().canonicalize().unwrap();
        std::fs::write(d.join("input"), "in").unwrap();
        let before = Snapshot::take(&d).unwrap();
        std::fs::write(d.join("image.tar"), "not really a tar").unwrap();
        std::fs::write(d.join("untraced-noise"), "written by someone else").unwrap();
        let at = |seconds: u64| UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seconds);
        let observation = Observation {
            argv: vec!["save".into()],
            identity: crate::identity::CommandIdentity::current(),
            working_dir: d.clone(),
            started: at(0),
            ended: at(1),
            termination: Termination::Exited(0),
            trace: TraceMode::Ebpf,
            counts: TraceCounts::default(),
            processes: Vec::new(),
            written: vec![SettledFile {
                dev: 1,
                ino: 2,
                written_as: d.join(".image.tar.tmp"),
                fate: Fate::Present(vec![d.join("image.tar")]),
            }],
            outside_writes: Vec::new(),
            incomplete: Vec::new(),
        };
        let mut observation = observation;
        let mut context = RunContext::before_command(
            d.clone(),
            observation.argv.clone(),
            AttestorOptions::default(),
            before,
            &[],
        );
        let scope = ProductScope::new(&d, &[], &[], &[]).unwrap();
        let after = Snapshot::take(&d).unwrap();
        let products = select_products(&mut observation, &after, &context, &scope);
        // The second witness: the noise was not written by the traced tree.
        assert_eq!(
            observation.incomplete.len(),
            1,
            "{:?}",
            observation.incomplete
        );
        assert_eq!(
            observation.incomplete[0].reason,
            IncompleteReason::UntracedChange
        );
        assert!(observation.incomplete[0]
            .detail
            .contains("created untraced-noise"));
        let attestations =
            attest_observation(&mut context, observation, products, Vec::new()).unwrap();
        assert_eq!(context.reason(attestors::oci::ATTESTOR.name), None);
        let product = attestations
            .iter()
            .find(|attestation| attestation.type_uri == attestors::PRODUCT_TYPE_URI)
            .unwrap();
        let leaves = product.predicate["leaves"].as_array().unwrap();
        assert_eq!(leaves.len(), 1, "{leaves:?}");
        assert_eq!(leaves[0]["path"], "image.tar");
    }
}
