//! One module per subcommand: its clap `Args` and its `execute`.

pub mod doctor;
pub mod inspect;
pub mod keygen;
pub mod run;
pub mod sign;
pub mod tools;
pub mod verify;
pub mod verify_policy;
