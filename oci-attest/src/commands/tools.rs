//! `oci-attest tools list | show NAME`: the attestor catalogue and its attach rules.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;

use crate::attestors::{catalogue, Attach, Attestor, PredicateField, Stage};
use crate::gojson;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  oci-attest tools list\n  oci-attest tools show oci --format json"
)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Every attestor: name, predicate type, stage, when it attaches.
    List {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
        /// Same as --format json.
        #[arg(long)]
        json: bool,
    },
    /// One attestor in full: its rules and (for oci) the predicate's fields.
    Show {
        /// Attestor name, as in `tools list`.
        name: String,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
        /// Same as --format json.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, Debug, Default, clap::ValueEnum)]
enum Format {
    #[default]
    Text,
    Json,
}

/// When an attestor is part of a run, as `tools` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum AttachPolicy {
    Always,
    OnRequest,
    Auto,
}

/// One row of the attestor table, as `tools` shows it.
#[derive(Clone, Debug, Serialize)]
struct CatalogueEntry {
    name: &'static str,
    #[serde(rename = "predicateType")]
    predicate_type: &'static str,
    stage: Stage,
    attach: AttachPolicy,
    summary: &'static str,
    /// The auto-attach rules, in words (empty unless `attach` is `auto`).
    rules: Vec<String>,
    /// Predicate fields and what they hold.
    fields: &'static [PredicateField],
}

impl CatalogueEntry {
    fn of(row: &Attestor) -> CatalogueEntry {
        let (attach, rules) = match row.attach {
            Attach::Always => (AttachPolicy::Always, Vec::new()),
            Attach::OnRequest => (AttachPolicy::OnRequest, Vec::new()),
            Attach::Auto(rule) => (AttachPolicy::Auto, (rule.describe)()),
        };
        CatalogueEntry {
            name: row.name,
            predicate_type: row.predicate_type,
            stage: row.stage,
            attach,
            summary: row.summary,
            rules,
            fields: row.fields,
        }
    }
}

pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    let entries: Vec<CatalogueEntry> = catalogue().into_iter().map(CatalogueEntry::of).collect();
    let as_json = |format: Format, json: bool| json || matches!(format, Format::Json);
    let text = match args.action {
        Action::List { format, json: flag } if as_json(format, flag) => json(&entries)?,
        Action::List { .. } => list_text(&entries),
        Action::Show {
            name,
            format,
            json: flag,
        } => {
            let entry = entries
                .iter()
                .find(|entry| entry.name == name)
                .with_context(|| {
                    let names: Vec<_> = entries.iter().map(|entry| entry.name).collect();
                    format!("no attestor named {name:?}; known: {}", names.join(", "))
                })?;
            if as_json(format, flag) {
                json(entry)?
            } else {
                show_text(entry)
            }
        }
    };
    println!("{text}");
    Ok(ExitCode::SUCCESS)
}

fn json<T: serde::Serialize + ?Sized>(value: &T) -> anyhow::Result<String> {
    Ok(gojson::to_string(value)?)
}

fn attach_words(entry: &CatalogueEntry) -> String {
    match entry.attach {
        AttachPolicy::Always => "always".to_owned(),
        AttachPolicy::OnRequest => format!("with -a {}", entry.name),
        AttachPolicy::Auto => format!("auto (or -a {})", entry.name),
    }
}

fn list_text(entries: &[CatalogueEntry]) -> String {
    let mut out = format!(
        "{:<12} {:<13} {:<20} PREDICATE TYPE\n",
        "NAME", "STAGE", "ATTACHES"
    );
    for entry in entries {
        let stage = serde_json::to_value(entry.stage).unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<12} {:<13} {:<20} {}",
            entry.name,
            stage.as_str().unwrap_or_default(),
            attach_words(entry),
            entry.predicate_type
        );
    }
    out.push_str("\nDetails: oci-attest tools show NAME");
    out
}

fn show_text(entry: &CatalogueEntry) -> String {
    let stage = serde_json::to_value(entry.stage).unwrap_or_default();
    let mut out = format!(
        "{}: {}\n  predicate type: {}\n  stage:          {}\n  attaches:       {}\n",
        entry.name,
        entry.summary,
        entry.predicate_type,
        stage.as_str().unwrap_or_default(),
        attach_words(entry)
    );
    if !entry.rules.is_empty() {
        out.push_str("  rules (any one attaches it):\n");
        for rule in &entry.rules {
            let _ = writeln!(out, "    - {rule}");
        }
    }
    if !entry.fields.is_empty() {
        out.push_str("  predicate fields:\n");
        for field in entry.fields {
            let _ = writeln!(out, "    {:<15} {}", field.name, field.meaning);
        }
    }
    out.trim_end().to_owned()
}
