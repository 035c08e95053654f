//! oci-attest: wrap a container image save command, trace it with eBPF, analyse the image
//! archives it produced and emit a signed in-toto attestation.
//!
//! The pipeline, in the order a `run` goes through it:
//! [`launch`] and [`trace`] (start the command stopped, trace its process tree) →
//! [`products`] (which files it produced) → [`attach`] (which attestors apply) →
//! [`attestors`] (one predicate each; `oci` reads archives through [`inspect`]) →
//! [`collection`] (the collection and in-toto statement) → [`dsse`] and [`keys`] (signing) →
//! [`output`] (atomic write). [`inspect`] stands alone: it knows nothing of the rest.
//! [`registry`] puts signed attestations beside their image in an OCI registry and reads them back.

pub mod attach;
pub mod attestors;
pub mod collection;
pub mod commands;
pub mod digest;
pub mod dsse;
pub mod exit;
pub mod gojson;
pub mod inspect;
pub mod keys;
pub mod launch;
pub mod logging;
pub mod observed;
pub mod output;
pub mod products;
pub mod push;
pub mod registry;
pub mod trace;
