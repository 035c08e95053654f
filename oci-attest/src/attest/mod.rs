//! Statements written beside the collection, in the in-toto Statement v1 form the rest of the
//! ecosystem reads (cosign, Kyverno, slsa-verifier, in-toto's libraries): [`statement`] is the
//! envelope-independent Statement v1 and its resource descriptors, [`slsa`] the SLSA
//! provenance v1 predicate a run derives from its collection.

pub mod slsa;
pub mod statement;
