//! Documents the verifying commands write: [`vsa`], the SLSA verification summary `verify -p`
//! signs for deploy gates that cannot evaluate the policy themselves.

pub mod vsa;
