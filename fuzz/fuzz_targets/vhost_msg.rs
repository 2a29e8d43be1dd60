//! vhost-user messages from a frontend, as valed's relay reads and judges them before
//! the vhost crate sees them (memory tables checked and sealed, rings enabled for QEMU
//! 7.2). See `valed::fuzzing::vhost_messages`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| valed::fuzzing::vhost_messages(data));
