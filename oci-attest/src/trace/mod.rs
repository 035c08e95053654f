//! eBPF tracing of the wrapped command's process tree. STUB.
