//! One module per subcommand: its clap `Args` and its `execute`.

pub mod attach;
pub mod discover;
pub mod doctor;
pub mod inspect;
pub mod keygen;
pub mod policy;
pub mod run;
pub mod sign;
pub mod tools;
pub mod verify;
pub mod verify_image_ref;
pub mod verify_policy;

/// The noun for `count` things: "1 attestation", "2 attestations".
pub fn plural<'a>(count: usize, one: &'a str, many: &'a str) -> &'a str {
    if count == 1 {
        one
    } else {
        many
    }
}
