//! oci-attest: wrap a container image save command, trace it with eBPF, analyse the image
//! archives it produced and emit a signed in-toto attestation.
//!
//! The pipeline, in the order a `run` goes through it:
//! [`launch`] and [`trace`] (start the command stopped, trace its process tree) →
//! [`reconcile`] (the trace against a before/after [`snapshot`] of the working directory) →
//! [`products`] (which files it produced) → [`attestors`] (the attestor table: which apply, one
//! predicate each; `oci` recognises saves through [`save_command`] and reads archives through
//! [`inspect`]) →
//! [`collection`] (the collection and in-toto statement; [`attest`] the Statement v1 documents
//! derived from it, SLSA provenance) → [`dsse`] and [`keys`] (signing) →
//! [`output`] (atomic write). [`inspect`] stands alone: it knows nothing of the rest.
//! [`policy`] checks witness/cilock policies against attestations (`verify -p`); [`verify`]
//! holds what verification writes (SLSA verification summaries); [`timestamp`] requests and
//! checks RFC 3161 timestamps over signatures.
//! [`registry`] puts signed attestations beside their image in an OCI registry and reads them back.

pub mod attest;
pub mod attestors;
pub mod certificate;
#[cfg(feature = "tracer")]
pub mod cli_compat;
pub mod collection;
#[cfg(feature = "tracer")]
pub mod commands;
#[cfg(feature = "tracer")]
pub mod config;
pub mod config_file;
pub mod digest;
pub mod dsse;
pub mod exit;
pub mod gojson;
pub mod identity;
pub mod inspect;
pub mod keys;
pub mod launch;
pub mod logging;
pub mod observed;
pub mod output;
pub mod pathtext;
pub mod policy;
pub mod product_scope;
pub mod products;
pub mod program_path;
pub mod progress;
#[cfg(feature = "tracer")]
pub mod push;
pub mod reconcile;
pub mod redact;
#[cfg(feature = "registry")]
pub mod registry;
pub mod rfc3339;
pub mod run_options;
pub mod save_command;
pub mod snapshot;
pub mod strict_json;
pub mod timestamp;
#[cfg(feature = "tracer")]
pub mod trace;
pub mod verify;
pub mod version;
