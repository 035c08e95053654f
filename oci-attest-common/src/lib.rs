//! Events shared by the kernel programs (`oci-attest-ebpf`) and userspace (`oci-attest`).
//!
//! Every type here is a plain `#[repr(C)]` struct so both sides agree on the byte layout
//! without serialisation; the kernel writes them into the ring buffer as they are.
#![no_std]

/// Bytes of argv captured per exec event (NUL-separated, as in the kernel's argv block).
pub const ARGV_CAPACITY: usize = 4096;

/// Kind of record in the ring buffer; the first field of every event.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Fork = 1,
    Exec = 2,
    Exit = 3,
}

/// Common prefix of every event.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    pub kind: u32,
    /// Thread-group id (the userspace "pid").
    pub pid: u32,
    /// Nanoseconds since boot (`bpf_ktime_get_boot_ns`).
    pub timestamp_ns: u64,
}
