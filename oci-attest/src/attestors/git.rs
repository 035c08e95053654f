//! The `git` attestor (v0.1): the commit, status, refs and remotes of the working tree, read
//! with the `git` binary. Outside a work tree it is skipped with a notice (cilock fails the run).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::attestors::{Attach, Attestation, Attestor, RunContext, Stage, GIT_TYPE_URI};
use crate::digest::{sha256_hex, sha256_reader, sha256_set, DigestSet};
use crate::redact::Redaction;
use crate::rfc3339::rfc3339_nano;

#[derive(Debug, Serialize)]
struct GitPredicate {
    gittool: &'static str,
    gitbinpath: String,
    gitbinhash: DigestSet,
    commithash: String,
    author: String,
    authoremail: String,
    committername: String,
    committeremail: String,
    commitdate: String,
    commitmessage: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    status: BTreeMap<String, FileStatus>,
    commitdigest: DigestSet,
    signature: String,
    parenthashes: Vec<String>,
    treehash: String,
    refs: Vec<String>,
    remotes: Vec<String>,
    tags: Vec<Tag>,
    branch: String,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
struct FileStatus {
    staging: &'static str,
    worktree: &'static str,
}

#[derive(Debug, Serialize)]
struct Tag {
    name: String,
    taggername: String,
    taggeremail: String,
    when: String,
    pgpsignature: String,
    message: String,
}

/// Runs git in `dir` with settings that keep it from writing (no optional index refresh, which
/// would show up as a changed file) or running repository-configured programs (fsmonitor).
struct Git {
    binary: PathBuf,
    dir: PathBuf,
}

impl Git {
    fn output(&self, args: &[&str]) -> anyhow::Result<Vec<u8>> {
        let output = Command::new(&self.binary)
            .args(["-c", "core.fsmonitor=false", "-c", "core.quotepath=off"])
            .args(args)
            .current_dir(&self.dir)
            .env("GIT_OPTIONAL_LOCKS", "0")
            .env("LC_ALL", "C")
            .output()
            .with_context(|| format!("cannot run {}", self.binary.display()))?;
        if !output.status.success() {
            bail!(
                "`git {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(output.stdout)
    }

    fn text(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = self.output(args)?;
        Ok(String::from_utf8_lossy(&output).trim_end().to_owned())
    }

    fn lines(&self, args: &[&str]) -> anyhow::Result<Vec<String>> {
        Ok(self
            .text(args)?
            .lines()
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect())
    }
}

/// A person line of a commit or tag: `Name <email> 1700000000 +0100`.
#[derive(Debug, Default, PartialEq, Eq)]
struct Person {
    name: String,
    email: String,
    when: String,
}

fn parse_person(line: &str) -> Person {
    let (name, rest) = line.split_once(" <").unwrap_or((line, ""));
    let (email, rest) = rest
        .split_once("> ")
        .unwrap_or((rest.trim_end_matches('>'), ""));
    let seconds = rest
        .split_whitespace()
        .next()
        .and_then(|seconds| seconds.parse::<u64>().ok());
    Person {
        name: name.to_owned(),
        email: email.to_owned(),
        when: seconds
            .map(|seconds| rfc3339_nano(UNIX_EPOCH + Duration::from_secs(seconds)))
            .unwrap_or_default(),
    }
}

/// A commit or tag object: its headers (continuation lines joined) and message.
#[derive(Debug, Default)]
struct GitObject {
    headers: Vec<(String, String)>,
    message: String,
}

fn parse_object(raw: &str) -> GitObject {
    let (head, message) = raw.split_once("\n\n").unwrap_or((raw, ""));
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if let Some(continuation) = line.strip_prefix(' ') {
            if let Some((_, value)) = headers.last_mut() {
                value.push('\n');
                value.push_str(continuation);
            }
        } else if let Some((key, value)) = line.split_once(' ') {
            headers.push((key.to_owned(), value.to_owned()));
        }
    }
    GitObject {
        headers,
        message: message.to_owned(),
    }
}

impl GitObject {
    fn header(&self, key: &str) -> &str {
        self.headers
            .iter()
            .find(|(name, _)| name == key)
            .map_or("", |(_, value)| value.as_str())
    }

    fn all(&self, key: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(name, _)| name == key)
            .map(|(_, value)| value.clone())
            .collect()
    }

    /// The PGP/SSH signature: `gpgsig` (commits), or the armour at the end of a tag message.
    fn signature(&self) -> String {
        let header = self.header("gpgsig");
        if !header.is_empty() {
            return header.to_owned();
        }
        self.message
            .find("-----BEGIN ")
            .map_or(String::new(), |start| self.message[start..].to_owned())
    }
}

fn status_name(code: u8) -> &'static str {
    match code {
        b' ' => "unmodified",
        b'?' => "untracked",
        b'M' => "modified",
        b'A' => "added",
        b'D' => "deleted",
        b'R' => "renamed",
        b'C' => "copied",
        b'U' => "updated",
        b'T' => "typechanged",
        b'!' => "ignored",
        _ => "unknown",
    }
}

/// `git status --porcelain=v1 -z`: `XY path\0`, renames and copies followed by `orig\0`.
fn parse_status(raw: &[u8]) -> BTreeMap<String, FileStatus> {
    let mut status = BTreeMap::new();
    let mut entries = raw
        .split(|byte| *byte == 0)
        .filter(|entry| !entry.is_empty());
    while let Some(entry) = entries.next() {
        let [staging, worktree, b' ', path @ ..] = entry else {
            continue;
        };
        if matches!(staging, b'R' | b'C') {
            entries.next();
        }
        status.insert(
            String::from_utf8_lossy(path).into_owned(),
            FileStatus {
                staging: status_name(*staging),
                worktree: status_name(*worktree),
            },
        );
    }
    status
}

pub const ATTESTOR: Attestor = Attestor {
    name: "git",
    predicate_type: GIT_TYPE_URI,
    aliases: &["https://witness.dev/attestations/git/v0.1"],
    stage: Stage::PreMaterial,
    attach: Attach::OnRequest,
    summary: "commit, author, status, refs and remotes of the working tree",
    fields: &[],
    attest: from_run,
};

fn from_run(run: &RunContext) -> anyhow::Result<Vec<Attestation>> {
    Ok(
        attest(&run.working_dir, SystemTime::now(), &run.options.redaction)?
            .into_iter()
            .collect(),
    )
}

/// The git attestation for the work tree containing `dir`, or `None` (with a logged notice)
/// when `dir` is not in a git work tree, it has no commit yet, or git is not installed.
/// Remotes and messages go through `redaction` (credentials in remote URLs are removed, so the
/// `remote:` subjects of a checkout with and without a token in its URL agree).
pub fn attest(
    dir: &Path,
    started: SystemTime,
    redaction: &Redaction,
) -> anyhow::Result<Option<Attestation>> {
    let binary = match crate::program_path::resolve_trusted_program("git") {
        Ok(binary) => binary,
        Err(reason) => {
            tracing::warn!("git attestor skipped: {reason}");
            return Ok(None);
        }
    };
    let git = Git {
        binary,
        dir: dir.to_owned(),
    };
    match git.text(&["rev-parse", "--is-inside-work-tree"]) {
        Ok(answer) if answer == "true" => {}
        Ok(_) | Err(_) => {
            tracing::warn!(
                "git attestor skipped: {} is not inside a git work tree",
                dir.display()
            );
            return Ok(None);
        }
    }
    let Ok(commithash) = git.text(&["rev-parse", "--verify", "-q", "HEAD"]) else {
        tracing::warn!("git attestor skipped: the repository has no commit yet");
        return Ok(None);
    };
    let commit = parse_object(&String::from_utf8_lossy(&git.output(&[
        "cat-file",
        "commit",
        &commithash,
    ])?));
    let author = parse_person(commit.header("author"));
    let committer = parse_person(commit.header("committer"));
    let parenthashes = commit.all("parent");
    let status =
        parse_status(&git.output(&["status", "--porcelain=v1", "-z", "--untracked-files=all"])?);
    let refs = git.lines(&[
        "for-each-ref",
        "--points-at",
        &commithash,
        "--format=%(refname)",
    ])?;
    let remotes: Vec<String> = git
        .lines(&["remote"])?
        .iter()
        .filter_map(|remote| {
            git.text(&["remote", "get-url", "--all", remote])
                .ok()
                .map(|urls| {
                    urls.lines()
                        .map(|url| redaction.text(url))
                        .collect::<Vec<_>>()
                })
        })
        .flatten()
        .collect();
    let tags = git
        .lines(&["tag", "--points-at", &commithash])?
        .into_iter()
        .map(|name| tag(&git, name, redaction))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let branch = git
        .text(&["symbolic-ref", "--short", "-q", "HEAD"])
        .unwrap_or_default();
    let gitbinhash = sha256_set(
        File::open(&git.binary)
            .and_then(sha256_reader)
            .with_context(|| format!("cannot hash {}", git.binary.display()))?,
    );
    let commit_algorithm = if commithash.len() == 64 {
        "sha256"
    } else {
        "sha1"
    };

    let mut subjects = vec![(
        format!("commithash:{commithash}"),
        DigestSet::from([(commit_algorithm.to_owned(), commithash.clone())]),
    )];
    subjects.extend(parenthashes.iter().map(|parent| {
        (
            format!("parenthash:{parent}"),
            DigestSet::from([(commit_algorithm.to_owned(), parent.clone())]),
        )
    }));
    let string_subject = |key: &str, value: &str| {
        (
            format!("{key}:{value}"),
            sha256_set(sha256_hex(value.as_bytes())),
        )
    };
    subjects.push(string_subject("authoremail", &author.email));
    subjects.push(string_subject("committeremail", &committer.email));
    if !branch.is_empty() {
        subjects.push(string_subject("refnameshort", &branch));
    }
    subjects.extend(remotes.iter().map(|url| string_subject("remote", url)));

    let predicate = GitPredicate {
        gittool: "git",
        gitbinpath: git.binary.to_string_lossy().into_owned(),
        gitbinhash,
        commitdigest: DigestSet::from([(commit_algorithm.to_owned(), commithash.clone())]),
        commithash,
        author: author.name,
        authoremail: author.email,
        committername: committer.name,
        committeremail: committer.email,
        commitdate: author.when,
        signature: commit.signature(),
        treehash: commit.header("tree").to_owned(),
        commitmessage: redaction.text(&commit.message),
        status,
        parenthashes,
        refs,
        remotes,
        tags,
        branch,
    };
    Ok(Some(Attestation {
        type_uri: GIT_TYPE_URI,
        predicate: serde_json::to_value(&predicate)?,
        subjects,
        backrefs: Vec::new(),
        started,
        ended: SystemTime::now(),
    }))
}

fn tag(git: &Git, name: String, redaction: &Redaction) -> anyhow::Result<Tag> {
    let reference = format!("refs/tags/{name}");
    let kind = git.text(&["cat-file", "-t", &reference])?;
    if kind != "tag" {
        // A lightweight tag is just a name.
        return Ok(Tag {
            name,
            taggername: String::new(),
            taggeremail: String::new(),
            when: String::new(),
            pgpsignature: String::new(),
            message: String::new(),
        });
    }
    let object = parse_object(&String::from_utf8_lossy(
        &git.output(&["cat-file", "tag", &reference])?,
    ));
    let tagger = parse_person(object.header("tagger"));
    let signature = object.signature();
    let message = object
        .message
        .strip_suffix(signature.as_str())
        .unwrap_or(&object.message)
        .to_owned();
    Ok(Tag {
        name,
        taggername: tagger.name,
        taggeremail: tagger.email,
        when: tagger.when,
        pgpsignature: signature,
        message: redaction.text(&message),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_git(dir: &Path, args: &[&str]) {
        let status = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "A <Author>")
            .env("GIT_AUTHOR_EMAIL", "author@example.com")
            .env("GIT_AUTHOR_DATE", "1700000000 +0100")
            .env("GIT_COMMITTER_NAME", "Committer")
            .env("GIT_COMMITTER_EMAIL", "committer@example.com")
            .env("GIT_COMMITTER_DATE", "1700000100 +0000")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    }

    #[test]
    fn attests_a_real_repository() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        run_git(d, &["init", "-q", "-b", "main"]);
        std::fs::write(d.join("a.txt"), "a").unwrap();
        run_git(d, &["add", "a.txt"]);
        run_git(d, &["commit", "-q", "-m", "first\n\nbody"]);
        std::fs::write(d.join("a.txt"), "changed").unwrap();
        std::fs::write(d.join("new file.txt"), "n").unwrap();
        run_git(
            d,
            &[
                "remote",
                "add",
                "origin",
                "https://bot:ghp_secret@example.com/o/r.git",
            ],
        );
        run_git(d, &["tag", "-a", "v1", "-m", "release one"]);
        run_git(d, &["tag", "light"]);

        let attestation = attest(d, SystemTime::now(), &Redaction::default())
            .unwrap()
            .unwrap();
        let p = &attestation.predicate;
        let keys: Vec<&String> = p.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "gittool",
                "gitbinpath",
                "gitbinhash",
                "commithash",
                "author",
                "authoremail",
                "committername",
                "committeremail",
                "commitdate",
                "commitmessage",
                "status",
                "commitdigest",
                "signature",
                "parenthashes",
                "treehash",
                "refs",
                "remotes",
                "tags",
                "branch"
            ]
        );
        let head = String::from_utf8(
            Command::new("git")
                .args(["rev-parse", "HEAD"])
                .current_dir(d)
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        let head = head.trim();
        assert_eq!(p["commithash"], head);
        assert_eq!(p["commitdigest"]["sha1"], head);
        assert_eq!(p["author"], "A Author");
        assert_eq!(p["authoremail"], "author@example.com");
        assert_eq!(p["committername"], "Committer");
        assert_eq!(p["commitdate"], "2023-11-14T22:13:20Z");
        assert_eq!(p["commitmessage"], "first\n\nbody\n");
        assert_eq!(p["status"]["a.txt"]["worktree"], "modified");
        assert_eq!(p["status"]["a.txt"]["staging"], "unmodified");
        assert_eq!(p["status"]["new file.txt"]["staging"], "untracked");
        assert_eq!(
            p["remotes"],
            serde_json::json!(["https://example.com/o/r.git"])
        );
        assert_eq!(p["branch"], "main");
        assert_eq!(p["parenthashes"], serde_json::json!([]));
        assert_eq!(p["tags"][0]["name"], "light");
        assert_eq!(p["tags"][1]["name"], "v1");
        assert_eq!(p["tags"][1]["message"], "release one\n");
        assert_eq!(p["tags"][1]["taggername"], "Committer");
        let refs = p["refs"].as_array().unwrap();
        assert!(refs.contains(&"refs/heads/main".into()), "{refs:?}");
        let subject_keys: Vec<&str> = attestation
            .subjects
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(
            subject_keys,
            [
                format!("commithash:{head}").as_str(),
                "authoremail:author@example.com",
                "committeremail:committer@example.com",
                "refnameshort:main",
                "remote:https://example.com/o/r.git"
            ]
        );
        assert_eq!(attestation.subjects[3].1["sha256"], sha256_hex(b"main"),);
        assert!(!serde_json::to_string(p).unwrap().contains("ghp_secret"));
    }

    #[test]
    fn outside_a_work_tree_it_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        assert!(attest(dir.path(), SystemTime::now(), &Redaction::default())
            .unwrap()
            .is_none());
    }

    #[test]
    fn credentials_are_stripped_from_urls() {
        use crate::redact::without_url_userinfo;
        assert_eq!(
            without_url_userinfo("https://u:p@h.example/x@y"),
            "https://h.example/x@y"
        );
        assert_eq!(without_url_userinfo("ssh://git@h/x"), "ssh://h/x");
        assert_eq!(
            without_url_userinfo("git@github.com:o/r"),
            "git@github.com:o/r"
        );
        assert_eq!(without_url_userinfo("https://h/x"), "https://h/x");
    }

    #[test]
    fn status_parses_renames() {
        let status = parse_status(b"R  new\0old\0 M b\0?? c d\0");
        assert_eq!(status.len(), 3);
        assert_eq!(status["new"].staging, "renamed");
        assert_eq!(status["b"].worktree, "modified");
        assert_eq!(status["c d"].worktree, "untracked");
    }
}
